#!/usr/bin/env bash
# The CUDA backend is a plugin (engine/cuda_plugin.h): emoe links no CUDA
# library; the loader finds libemoe-cuda.so, checks its ABI, and turns every
# failure into a clear error for --backend cuda and a CPU fallback with one log
# line for --backend auto. Fake plugins (tests/gpu/fake_plugin.c) stand in for
# the real one, so this runs on any machine.
set -euo pipefail
BIN=${EMOE_BIN:-build/emoe}
SH=${EMOE_SHARED:-../shared}
M=$SH/fixtures/models/tiny-mixtral
[ -d "$M" ] || { echo "SKIP: needs ../shared/fixtures (set EMOE_SHARED)"; exit 77; }
CC=${CC:-cc}
command -v "$CC" >/dev/null || { echo "SKIP: no C compiler to build the fake plugins"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# No CUDA library in the executable.
if ldd "$BIN" | grep -Ei 'libcuda|libcudart|libcublas'; then fail "$BIN links a CUDA library"; fi

for v in NODEV DEV BADABI UNDEF; do
    "$CC" -shared -fPIC -I. -D_GNU_SOURCE -DFAKE_$v tests/gpu/fake_plugin.c -o "$T/fake-$v.so"
done
bench() { EMOE_CUDA_PLUGIN=$1 "$BIN" bench -m "$M" --backend "$2" --prompt-len 4 --gen 1 --warmup 0 2>&1; }

# Missing plugin: cuda is an error naming the path, auto is the CPU with one log line.
set +e
out=$(bench "$T/none.so" cuda); rc=$?
[ $rc -eq 1 ] && grep -q "backend cuda: no CUDA support: cannot load $T/none.so" <<<"$out" || fail "missing plugin: $out"
out=$(bench "$T/none.so" auto); rc=$?
[ $rc -eq 0 ] && grep -q "backend cpu" <<<"$out" || fail "auto without plugin: $out"
[ "$(grep -c 'backend auto:' <<<"$out")" = 1 ] || fail "auto fallback must log one line: $out"
# Plugin present, no device.
out=$(bench "$T/fake-NODEV.so" cuda); rc=$?
[ $rc -eq 1 ] && grep -q "no usable CUDA device (fake: no driver)" <<<"$out" || fail "no device: $out"
out=$(bench "$T/fake-NODEV.so" auto); rc=$?
[ $rc -eq 0 ] && grep -q "backend auto: no usable CUDA device (fake: no driver); using cpu" <<<"$out" || fail "auto no device: $out"
# A device: the plugin's backend is used; its init calls back into emoe (emoe_errf).
out=$(bench "$T/fake-DEV.so" cuda); rc=$?
[ $rc -eq 1 ] && grep -q "backend fake: fake init refused (now > 0)" <<<"$out" || fail "plugin backend: $out"
# Wrong ABI, unresolved symbol: refused with the reason.
out=$(bench "$T/fake-BADABI.so" cuda); rc=$?
[ $rc -eq 1 ] && grep -q "was built for another emoe" <<<"$out" || fail "bad ABI: $out"
out=$(bench "$T/fake-UNDEF.so" cuda); rc=$?
[ $rc -eq 1 ] && grep -q "emoe_no_such_symbol" <<<"$out" || fail "undefined symbol: $out"
out=$(bench "$T/fake-UNDEF.so" auto); rc=$?
[ $rc -eq 0 ] && grep -q "backend cpu" <<<"$out" || fail "auto with a broken plugin: $out"
# emoe info names the plugin and its devices.
out=$(EMOE_CUDA_PLUGIN=$T/fake-DEV.so "$BIN" info)
grep -q "CUDA support compiled in (plugin: $T/fake-DEV.so); 1 device(s)" <<<"$out" || fail "info: $out"
# Found beside the executable without EMOE_CUDA_PLUGIN.
mkdir "$T/bin" && cp "$BIN" "$T/bin/emoe" && cp "$T/fake-NODEV.so" "$T/bin/libemoe-cuda.so"
out=$(env -u EMOE_CUDA_PLUGIN "$T/bin/emoe" info)
grep -q "plugin: $T/bin/libemoe-cuda.so); 0 device(s): " <<<"$out" || fail "beside the binary: $out"
echo ok

#!/usr/bin/env bash
# make test-gpu: builds the GPU test harness (tests/gpu/test_kernels.cu) and runs
# it: every CUDA kernel against a CPU reference, the GPU expert cache, then the
# fixture models end to end on the cuda backend. Skips (exit 0, with the reason)
# where the build has no CUDA or the machine no CUDA device; the harness is still
# compiled and linked whenever the build has CUDA, so CI without a GPU checks that.
set -u
cd "$(dirname "$0")/../.." || exit 2
BUILD_DIR=${BUILD_DIR:-build}
BIN=$BUILD_DIR/emoe
export EMOE_SHARED=${EMOE_SHARED:-$PWD/../shared}
info=$("$BIN" info 2>&1)
if ! grep -q "CUDA support compiled in" <<<"$info"; then echo "SKIP: this build has no CUDA (make CUDA=1)"; echo "0 passed, 0 failed, 1 skipped"; exit 0; fi
if ! ${MAKE:-make} --no-print-directory CUDA=1 BUILD="$BUILD_DIR" "$BUILD_DIR/tests/gpu/test_kernels"; then
    echo "FAIL: the GPU test harness does not build"; echo "0 passed, 1 failed, 0 skipped"; exit 1
fi
if grep -q "; 0 device(s)" <<<"$info"; then echo "SKIP: no CUDA device: ${info#*: }"; echo "0 passed, 0 failed, 1 skipped"; exit 0; fi
echo "$info"
"$BUILD_DIR/tests/gpu/test_kernels"; rc=$?
# emoe bench on the cuda backend: device figures reported, batched greedy
# tokens equal to `emoe run` on the CPU and to the reference.
if EMOE_BIN=$BIN EMOE_BENCH_BACKEND=cuda bash tests/e2e/bench.sh; then echo "PASS bench on cuda"; else echo "FAIL bench on cuda"; rc=1; fi
# emoe bench --budget through the expert cache's device tier, graphs on/off.
if EMOE_BIN=$BIN bash tests/gpu/bench_budget.sh; then echo "PASS bench --budget on cuda"; else echo "FAIL bench --budget on cuda"; rc=1; fi
exit $rc

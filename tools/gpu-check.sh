#!/usr/bin/env bash
# tools/gpu-check.sh — the one-call check of the CUDA backend on a GPU machine,
# also one without a package registry. In order, each step time-limited, all
# in under ~8 minutes on an H100/H200-class machine:
#   1. dependencies: if the system lacks the C libraries' headers, unpack the
#      .debs fetched by ../shared/scripts/fetch-debs.sh (EMOE_DEBS, default
#      .deps-debs) into build-deps/ and build with DEPS_PREFIX;
#   2. build: make CUDA=1 (plugin build/libemoe-cuda.so) for this GPU's
#      architecture only, and the GPU test harness;
#   3. make test-gpu (kernels vs the CPU reference, the fixture models end to
#      end, the expert cache's device tier bitwise vs all-resident);
#   3b. q8/q4 experts: the q8/q4 kernels vs the CPU reference
#      (test_quant_kernels) and the generation check (test_kernels
#      --quant-only: the fixture models with q8 and q4 expert stores on the
#      cuda backend vs the CPU backend's q8/q4 path, batch 1 and 3, budgets
#      100% and 25%), compute-sanitizer memcheck on the q8/q4 kernels;
#   4. compute-sanitizer memcheck, racecheck, synccheck on the kernel tests
#      (route plan, fused q/k-norm+RoPE+KV, split-KV attention, fused
#      combine/residual/norm among them), memcheck on emoe run through the
#      device-routed graph path and through the expert cache at one slot;
#   5. an OLMoE-1B-7B-shaped model (emoe mkmodel, random weights, ~14 GB;
#      EMOE_GPU_CHECK_LAYERS=N for fewer layers), then a bitwise differential:
#      greedy tokens and last logits, all experts resident (device routing,
#      CUDA graphs) = the same with graphs off = the expert cache's device
#      tier at 25% (per-layer host routing) = the backend's own slots at 3
#      experts; and with q8 experts: all resident (device routing, graphs) =
#      the device tier at 25%;
#   6. emoe bench at batch 1/8/32: all experts resident in the backend's
#      slots, in the expert cache's device tier (--budget 100%), at 25%
#      (--budget 25%), and batch 1 with graphs off; q8 and q4 experts at
#      batch 1 (--expert-format, 100% preloaded);
#   7. a summary with decode tok/s as % of the HBM floor (bytes each decode
#      step must read / memory bandwidth: EMOE_HBM_GBPS, or known from the GPU
#      name).
# Logs and summary.txt go to $OUT (default gpu-check-out/). Exit status 0 when
# every step passed. --dry-run: steps 1-2 only, without a GPU (CUDA=1 build);
# EMOE_FORCE_DEBS=1 unpacks the .debs even where the system has the headers.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT"
DEBS=${EMOE_DEBS:-$ROOT/.deps-debs}
DRY=0
[ "${1:-}" = --dry-run ] && DRY=1
exec > >(tee -a "$OUT/gpu-check.log") 2>&1
T0=$(date +%s)
declare -a SUMMARY=()
FAILED=0
note() { SUMMARY+=("$1"); echo "== $1"; }
fail() { FAILED=1; note "FAIL $1"; }
elapsed() { echo $(($(date +%s) - T0)); }

echo "gpu-check $(date -u +%FT%TZ) in $ROOT (OUT=$OUT)"
git log -1 --oneline 2>/dev/null || true
NPROC=$(nproc)
if [ $DRY = 0 ]; then
    if ! nvidia-smi -L >"$OUT/nvidia-smi.txt" 2>&1; then
        echo "no GPU answers nvidia-smi: $(cat "$OUT/nvidia-smi.txt")"; exit 2
    fi
    nvidia-smi >>"$OUT/nvidia-smi.txt" 2>&1
    GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
    CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '. ')
    note "GPU: $GPU (sm_$CC)"
else
    CC=90
    GPU="(dry run: no GPU)"
fi
CUARCH="-gencode arch=compute_${CC},code=sm_${CC}"
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$NVCC" ] || { echo "no nvcc (CUDA toolkit) found"; exit 2; }
"$NVCC" --version | tail -2

# ---- 1. dependencies --------------------------------------------------------
DEPS_PREFIX=
have_headers() {
    local inc=$1 h
    for h in microhttpd.h jansson.h liburing.h ini.h pcre2.h utf8proc.h systemd/sd-daemon.h check.h; do
        [ -f "$inc/$h" ] || return 1
    done
}
if [ -z "${EMOE_FORCE_DEBS:-}" ] && have_headers /usr/include; then
    note "deps: system headers present"
else
    compgen -G "$DEBS/*.deb" >/dev/null || { echo "missing C library headers and no .debs in $DEBS (run ../shared/scripts/fetch-debs.sh $DEBS where a registry answers)"; exit 2; }
    DEPS_PREFIX=$ROOT/build-deps
    mkdir -p "$DEPS_PREFIX"
    for f in "$DEBS"/*.deb; do
        if command -v dpkg-deb >/dev/null; then
            dpkg-deb -x "$f" "$DEPS_PREFIX"
        else # ar + tar: a .deb is an ar archive holding data.tar.*
            tmp=$(mktemp -d)
            (cd "$tmp" && ar x "$f" && tar -xf data.tar.* -C "$DEPS_PREFIX")
            rm -rf "$tmp"
        fi
    done
    have_headers "$DEPS_PREFIX/usr/include" || { fail "deps: headers still missing after unpacking $DEBS"; exit 1; }
    export LD_LIBRARY_PATH=$DEPS_PREFIX/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    n_debs=$(find "$DEBS" -maxdepth 1 -name '*.deb' | wc -l)
    note "deps: $n_debs .debs unpacked into $DEPS_PREFIX"
fi

# ---- 2. build ---------------------------------------------------------------
MK=(make -j"$NPROC" CUDA=1 "CUARCH=$CUARCH" ${DEPS_PREFIX:+"DEPS_PREFIX=$DEPS_PREFIX"})
t=$(date +%s)
if timeout "${EMOE_GPU_CHECK_BUILD_S:-420}" "${MK[@]}" all build/tests/gpu/test_kernels build/tests/gpu/test_quant_kernels >"$OUT/build.log" 2>&1; then
    note "build: emoe + libemoe-cuda.so + GPU harness in $(($(date +%s) - t)) s ($(ldd build/emoe | grep -ci cuda) CUDA libraries linked by build/emoe)"
else
    tail -30 "$OUT/build.log"; fail "build (see build.log)"; exit 1
fi
ldd build/libemoe-cuda.so >"$OUT/ldd-plugin.txt" 2>&1
grep -q libcublas "$OUT/ldd-plugin.txt" || fail "the plugin does not link cuBLAS"
build/emoe info | tee "$OUT/info.txt"
if [ $DRY = 1 ]; then
    note "dry run: stopped after the build ($(elapsed) s)"
    printf '%s\n' "${SUMMARY[@]}" >"$OUT/summary.txt"
    exit $FAILED
fi
grep -q "CUDA support compiled in.*; [1-9]" "$OUT/info.txt" || { fail "emoe info finds no device through the plugin"; exit 1; }

# ---- 3. make test-gpu -------------------------------------------------------
t=$(date +%s)
if timeout 240 env BUILD_DIR=build bash tests/gpu/run.sh >"$OUT/test-gpu.log" 2>&1; then
    note "test-gpu: $(grep -E '^[0-9]+ passed' "$OUT/test-gpu.log" | tail -1) in $(($(date +%s) - t)) s"
else
    grep -E "^FAIL" "$OUT/test-gpu.log" | head -20
    fail "test-gpu: $(grep -E '^[0-9]+ passed' "$OUT/test-gpu.log" | tail -1) (see test-gpu.log)"
fi

# ---- 3b. q8/q4 experts -------------------------------------------------------
t=$(date +%s)
if timeout 120 build/tests/gpu/test_quant_kernels >"$OUT/test-quant-kernels.log" 2>&1; then
    note "q8/q4 kernels vs CPU reference: $(tail -1 "$OUT/test-quant-kernels.log") in $(($(date +%s) - t)) s"
else
    grep -E "^FAIL" "$OUT/test-quant-kernels.log" | head -10
    fail "q8/q4 kernels: $(tail -1 "$OUT/test-quant-kernels.log") (see test-quant-kernels.log)"
fi
t=$(date +%s)
if timeout 240 env EMOE_SHARED="${EMOE_SHARED:-$ROOT/../shared}" build/tests/gpu/test_kernels --quant-only >"$OUT/test-quant-models.log" 2>&1; then
    note "q8/q4 generation (cuda vs cpu, fixture models): $(grep -E '^[0-9]+ passed' "$OUT/test-quant-models.log" | tail -1) in $(($(date +%s) - t)) s"
else
    grep -E "^FAIL" "$OUT/test-quant-models.log" | head -10
    fail "q8/q4 generation: $(grep -E '^[0-9]+ passed' "$OUT/test-quant-models.log" | tail -1) (see test-quant-models.log)"
fi

# ---- 4. compute-sanitizer ---------------------------------------------------
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ -x "$CS" ]; then
    for tool in memcheck racecheck synccheck; do
        t=$(date +%s)
        timeout 150 "$CS" --tool "$tool" --error-exitcode 9 build/tests/gpu/test_kernels --kernels-only >"$OUT/sanitizer-$tool.log" 2>&1
        rc=$?
        s=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitizer-$tool.log" | tail -1)
        if [ $rc = 0 ]; then note "compute-sanitizer $tool: clean ($s) in $(($(date +%s) - t)) s"
        else fail "compute-sanitizer $tool: rc $rc ($s; see sanitizer-$tool.log)"; fi
    done
    # the q8/q4 kernels (grouped MoE kernels of the backend's expert path included)
    timeout 150 "$CS" --tool memcheck --error-exitcode 9 build/tests/gpu/test_quant_kernels >"$OUT/sanitizer-memcheck-quant.log" 2>&1
    rc=$?
    if [ $rc = 0 ]; then note "compute-sanitizer memcheck: q8/q4 kernels clean"
    else fail "compute-sanitizer memcheck on the q8/q4 kernels: rc $rc (see sanitizer-memcheck-quant.log)"; fi
    # the expert cache's GPU tier end to end (events, slot reuse, one slot)
    FX=${EMOE_SHARED:-$ROOT/../shared}/fixtures/models/tiny-mixtral
    if [ -d "$FX" ]; then
        timeout 150 "$CS" --tool memcheck --error-exitcode 9 build/emoe run -m "$FX" --backend cuda --prompt-ids 1,2,3,4,5 \
            -n 8 --budget 1B --store "$ROOT/build/gpu-check-fixture.store" >"$OUT/sanitizer-memcheck-run.log" 2>&1
        rc=$?
        # --budget 1B is refused (below one slot) with a clear message: use one slot
        if grep -q "holds no expert" "$OUT/sanitizer-memcheck-run.log"; then
            slot=$(grep -o "one expert slot is [0-9]*" "$OUT/sanitizer-memcheck-run.log" | grep -o "[0-9]*$")
            timeout 150 "$CS" --tool memcheck --error-exitcode 9 build/emoe run -m "$FX" --backend cuda --prompt-ids 1,2,3,4,5 \
                -n 8 --budget "${slot}B" --store "$ROOT/build/gpu-check-fixture.store" >"$OUT/sanitizer-memcheck-run.log" 2>&1
            rc=$?
        fi
        if [ $rc = 0 ]; then note "compute-sanitizer memcheck: emoe run through the expert cache's GPU tier at one slot: clean"
        else fail "compute-sanitizer memcheck on emoe run (one slot): rc $rc (see sanitizer-memcheck-run.log)"; fi
        # all experts resident: device-side routing and CUDA graph replays
        timeout 150 "$CS" --tool memcheck --error-exitcode 9 build/emoe run -m "$FX" --backend cuda --prompt-ids 1,2,3,4,5 \
            -n 8 >"$OUT/sanitizer-memcheck-graphs.log" 2>&1
        rc=$?
        if [ $rc = 0 ]; then note "compute-sanitizer memcheck: emoe run all-resident (device routing, graphs): clean"
        else fail "compute-sanitizer memcheck on emoe run all-resident (graphs): rc $rc (see sanitizer-memcheck-graphs.log)"; fi
    fi
else
    fail "compute-sanitizer not found"
fi

# ---- 5. OLMoE-shaped model, bitwise differential ------------------------------
M=${EMOE_GPU_CHECK_MODEL:-$ROOT/build/olmoe-check}
if [ ! -f "$M/config.json" ]; then
    t=$(date +%s)
    LAYERS=${EMOE_GPU_CHECK_LAYERS:+--layers $EMOE_GPU_CHECK_LAYERS}
    # shellcheck disable=SC2086 # LAYERS is two words or none
    timeout 240 build/emoe mkmodel --preset olmoe-1b-7b $LAYERS --seed 1 -o "$M" >"$OUT/mkmodel.log" 2>&1 ||
        { fail "mkmodel olmoe-1b-7b (see mkmodel.log)"; M=; }
    [ -n "$M" ] && note "model: $M made in $(($(date +%s) - t)) s ($(du -sh "$M" | cut -f1))"
fi
if [ -n "$M" ]; then
    build/emoe info -m "$M" >"$OUT/model-info.txt" 2>&1
    # Bytes a batch-1 decode step must read: every weight but the embedding
    # table and the unused experts (routed top-k experts per layer).
    read -r W_ALL EXP_ALL EXP_ONE LAYERS K VOCAB DIM < <(python3 - "$M" <<'EOF'
import json, os, sys
m = sys.argv[1]
c = json.load(open(os.path.join(m, "config.json")))
w = sum(os.path.getsize(os.path.join(m, f)) for f in os.listdir(m) if f.endswith(".safetensors"))
L, E = c["num_hidden_layers"], c.get("num_experts", c.get("num_local_experts"))
k = c.get("num_experts_per_tok")
ffn, d = c.get("moe_intermediate_size", c.get("intermediate_size")), c["hidden_size"]
one = 3 * ffn * d * 2
print(w, L * E * one, one, L, k, c["vocab_size"], d)
EOF
)
    IDS=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16
    run() { timeout 120 build/emoe run -m "$M" --backend cuda --prompt-ids $IDS -n 16 --json "$@" 2>>"$OUT/differential.log"; }
    A=$(run); D=$(run --cuda-graphs off); B=$(run --budget 25% --store "$ROOT/build/olmoe-check.store")
    # the backend's own slots: 3 experts (--gpu-budget is MiB)
    C=$(run --gpu-budget $(((3 * EXP_ONE + 1048575) / 1048576)))
    key() { jq -c '[.generated_ids, .last_logits]' 2>/dev/null <<<"$1" | md5sum | cut -c1-12; }
    ka=$(key "$A"); kb=$(key "$B"); kc=$(key "$C"); kd=$(key "$D")
    if [ -n "$A" ] && [ "$ka" = "$kb" ] && [ "$ka" = "$kc" ] && [ "$ka" = "$kd" ]; then
        note "differential: all-resident (graphs) = graphs off = device tier 25% = 3 own slots, bitwise (ids + last logits, digest $ka)"
    else
        fail "differential: all-resident $ka, graphs off $kd, device tier 25% $kb, 3 slots $kc (see differential.log)"
    fi
    # q8 experts (store packed on first use): all resident, preloaded by
    # 100% = the device tier at 25% (host routing, grouped re-uploads)
    QA=$(run --expert-format q8 --store "$ROOT/build/olmoe-check.q8.store")
    QB=$(run --expert-format q8 --budget 25% --store "$ROOT/build/olmoe-check.q8.store")
    kqa=$(key "$QA"); kqb=$(key "$QB")
    if [ -n "$QA" ] && [ "$kqa" = "$kqb" ] && [ "$kqa" != "$ka" ]; then
        note "differential q8: all-resident = device tier 25%, bitwise (digest $kqa; differs from bf16 $ka)"
    else
        fail "differential q8: all-resident $kqa, device tier 25% $kqb, bf16 $ka (see differential.log)"
    fi
fi

# ---- 6. bench + 7. summary ------------------------------------------------------
if [ -n "$M" ]; then
    if [ -n "${EMOE_HBM_GBPS:-}" ]; then BW=$EMOE_HBM_GBPS
    else case "$GPU" in
        *H200*) BW=4800 ;; *H100*SXM*|*H100\ 80GB\ HBM3*) BW=3350 ;; *H100*) BW=2000 ;;
        *A100*80GB*) BW=2039 ;; *A100*) BW=1555 ;; *L40S*) BW=864 ;; *) BW= ;;
    esac; fi
    STEP_BYTES=$((W_ALL - EXP_ALL - VOCAB * DIM * 2 + LAYERS * K * EXP_ONE))
    note "decode floor: $((STEP_BYTES / 1000000)) MB per batch-1 step; bandwidth ${BW:-unknown} GB/s"
    printf '%-10s %-6s %12s %12s %10s %8s\n' experts batch "decode tok/s" "prefill t/s" "% floor" graphs | tee "$OUT/bench.txt"
    # own: the backend's own slots, all resident; tier100/tier25: the expert
    # cache's device tier (--budget; 100% preloaded); nograph: own, graphs off
    for cfg in own tier100 tier25 nograph q8 q4; do
        for b in 1 8 32; do
            case $cfg in nograph|q8|q4) [ $b != 1 ] && continue ;; esac
            opt=()
            case $cfg in
                q8|q4) opt=(--expert-format "$cfg" --budget 100% --store "$ROOT/build/olmoe-check.$cfg.store") ;;
                tier100) opt=(--budget 100% --store "$ROOT/build/olmoe-check.store") ;;
                tier25) opt=(--budget 25% --store "$ROOT/build/olmoe-check.store") ;;
                nograph) opt=(--cuda-graphs off) ;;
            esac
            j=$(timeout 120 build/emoe bench -m "$M" --backend cuda --batch $b --prompt-len 128 --gen 32 \
                "${opt[@]}" --json 2>>"$OUT/bench.log")
            echo "$j" >>"$OUT/bench.jsonl"
            dec=$(jq -r '.decode_tokens_per_s // empty' <<<"$j" 2>/dev/null)
            pre=$(jq -r '.prefill_tokens_per_s // empty' <<<"$j" 2>/dev/null)
            gl=$(jq -r '"\(.graph_launches // 0)/\(.decode_steps // 0)"' <<<"$j" 2>/dev/null)
            if [ -z "$dec" ]; then fail "bench $cfg batch $b (see bench.log)"; continue; fi
            pct=-
            # batch-1 floor only (larger batches read more experts per step)
            # q8/q4: the routed experts' bytes are 17/32 and 9/32 of bf16 (34 and 18 bytes per 32 weights)
            sb=$STEP_BYTES
            case $cfg in q8) sb=$((STEP_BYTES - LAYERS * K * EXP_ONE * 15 / 32)) ;; q4) sb=$((STEP_BYTES - LAYERS * K * EXP_ONE * 23 / 32)) ;; esac
            [ -n "$BW" ] && [ $b = 1 ] && pct=$(python3 -c "print(f'{100*$dec/($BW*1e9/$sb):.1f}')")
            printf '%-10s %-6s %12.1f %12.1f %10s %8s\n' "$cfg" "$b" "$dec" "$pre" "$pct" "$gl" | tee -a "$OUT/bench.txt"
        done
    done
    note "bench: $(awk 'NR>1' "$OUT/bench.txt" | tr -s ' ' | paste -sd ';' -)"
fi

note "total $(elapsed) s"
echo
echo "===== gpu-check summary ($GPU) ====="
printf '%s\n' "${SUMMARY[@]}" | tee "$OUT/summary.txt"
exit $FAILED

#!/usr/bin/env bash
# emoe bench on the CPU backend (works on any machine): the JSON report has its
# figures, and the N sequences decoded together through eng_step produce exactly
# the greedy tokens `emoe run` produces for the same prompt alone. Bad options
# and an unavailable backend are refused with a clear message.
# EMOE_BENCH_BACKEND=cuda (make test-gpu-emu) runs the same checks on the cuda
# backend, which must then report device memory and expert-cache figures
# (slot hits only on the host-routed path: with every expert in its slots the
# backend loads them all once and routes on the device, steps_device_routed).
set -euo pipefail
BACKEND=${EMOE_BENCH_BACKEND:-cpu}
MODELS=${EMOE_BENCH_MODELS:-tiny-mixtral tiny-qwen2-moe tiny-olmoe tiny-qwen3-moe}
BIN=${EMOE_BIN:-build/emoe}
command -v jq >/dev/null || { echo "SKIP: jq is not installed"; exit 77; }
SH=${EMOE_SHARED:-../shared}
[ -d "$SH/fixtures/models" ] || { echo "SKIP: bench test needs ../shared/fixtures (set EMOE_SHARED)"; exit 77; }
for m in $MODELS; do
    dir=$SH/fixtures/models/$m
    ids=$(jq -r --arg m "$m" '.models[$m].cases[0].prompt_ids | map(tostring) | join(",")' "$SH/fixtures/reference/models.json")
    j=$("$BIN" bench -m "$dir" --backend "$BACKEND" --batch 3 --prompt-ids "$ids" --gen 6 --threads 2 --json)
    [ "$(jq -r .backend <<<"$j")" = "$BACKEND" ] || { echo "$m: backend"; exit 1; }
    [ "$(jq .decode_steps <<<"$j")" = 5 ] || { echo "$m: decode_steps"; exit 1; }
    jq -e '.prefill_tokens_per_s > 0 and .decode_tokens_per_s > 0 and .ttft_s > 0 and .decode_step_max_s >= .decode_step_mean_s' <<<"$j" >/dev/null \
        || { echo "$m: bad figures: $j"; exit 1; }
    if [ "$BACKEND" = cpu ]; then
        jq -e 'has("device_memory") | not' <<<"$j" >/dev/null || { echo "$m: device memory reported on cpu"; exit 1; }
    else
        jq -e '.device_memory.weights_bytes > 0 and .device_memory.kv_bytes > 0 and .device_memory.workspace_bytes > 0 and
               .device_memory.expert_budget_bytes > 0 and .device_memory.peak_bytes >= .device_memory.weights_bytes and
               .expert_cache.misses > 0 and .expert_cache.slots > 0 and
               (.expert_cache.hits > 0 or .steps_device_routed > 0)' <<<"$j" >/dev/null \
            || { echo "$m: device figures: $j"; exit 1; }
    fi
    want=$("$BIN" run -m "$dir" --prompt-ids "$ids" -n 6 --ignore-eos --json | jq -c .generated_ids)
    for s in 0 1 2; do
        got=$(jq -c ".generated[$s]" <<<"$j")
        [ "$got" = "$want" ] || { echo "$m: sequence $s of the batch generated $got, run alone $want"; exit 1; }
    done
    # the reference's own greedy tokens (first 6)
    ref=$(jq -c --arg m "$m" '.models[$m].cases[0].greedy_16[:6]' "$SH/fixtures/reference/models.json")
    [ "$want" = "$ref" ] || { echo "$m: greedy $want, reference $ref"; exit 1; }
    echo "$m ok: $want"
done
t=$("$BIN" bench -m "$SH/fixtures/models/tiny-mixtral" --backend "$BACKEND" --batch 2 --prompt-len 9 --gen 3 --warmup 0)
grep -q "^prefill: 18 tokens" <<<"$t" || { echo "text report: $t"; exit 1; }
set +e
out=$("$BIN" bench -m "$SH/fixtures/models/tiny-mixtral" --backend gpu 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q "expected cpu, cuda or auto" <<<"$out" || { echo "bad backend not refused: $out"; exit 1; }
if [ "$BACKEND" = cpu ] && ! "$BIN" info | grep -q "CUDA support compiled in.*; [1-9]"; then
    out=$("$BIN" bench -m "$SH/fixtures/models/tiny-mixtral" --backend cuda 2>&1); rc=$?
    [ $rc -eq 1 ] && grep -Eq "no usable CUDA device|no CUDA support" <<<"$out" || { echo "cuda without a device: $out"; exit 1; }
fi
out=$("$BIN" bench -m "$SH/fixtures/models/tiny-mixtral" --prompt-len 4000 --gen 200 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "exceed the context length" <<<"$out" || { echo "context overflow not refused: $out"; exit 1; }
echo ok

#!/usr/bin/env bash
# kv_dtype_config.sh — issue 17: `[engine] kv_dtype` from --config / --set
# reaches the engine of `emoe run`, `emoe bench` and `emoe perplexity` (each
# reports the engine's own KV dtype), `emoe run --kv-dtype` still wins, and the
# dtype really changes the computation: a bf16 KV cache gives the logits of
# `--kv-dtype bf16`, which differ from float32's.
cd "$(dirname "$0")/../.."
. tests/e2e/lib/server.bash
need_model
B=$EMOE_BIN
P=$(seq -s, 1 12)

kv_of() { json_key "$1" kv_dtype; }

run_json "$TMPD/f32.json"
run_json "$TMPD/cli_bf16.json" --kv-dtype bf16
run_json "$TMPD/set_bf16.json" --set engine.kv_dtype=bf16
run_json "$TMPD/cli_wins.json" --set engine.kv_dtype=bf16 --kv-dtype f32
printf '[engine]\nkv_dtype = f16\nthreads = 1\n' >"$TMPD/kv.conf"
run_json "$TMPD/conf_f16.json" --config "$TMPD/kv.conf"
check "run without a setting uses f32 ($(kv_of "$TMPD/f32.json"))" test "$(kv_of "$TMPD/f32.json")" = f32
check "run --set engine.kv_dtype=bf16 opens a bf16 KV cache ($(kv_of "$TMPD/set_bf16.json"))" \
    test "$(kv_of "$TMPD/set_bf16.json")" = bf16
check "run --config with [engine] kv_dtype = f16 opens an f16 KV cache ($(kv_of "$TMPD/conf_f16.json"))" \
    test "$(kv_of "$TMPD/conf_f16.json")" = f16
check "run --kv-dtype f32 wins over --set engine.kv_dtype=bf16 ($(kv_of "$TMPD/cli_wins.json"))" \
    test "$(kv_of "$TMPD/cli_wins.json")" = f32
check "the configured bf16 KV cache gives the logits of --kv-dtype bf16" same_logits "$TMPD/set_bf16.json" "$TMPD/cli_bf16.json"
if same_logits "$TMPD/set_bf16.json" "$TMPD/f32.json"; then bad "bf16 KV logits identical to f32: the dtype did not reach the step"
else ok "bf16 KV logits differ from f32"; fi
check "CLI f32 over a bf16 config gives float32's logits" same_logits "$TMPD/cli_wins.json" "$TMPD/f32.json"

"$B" bench -m "$MODEL" --prompt-len 4 --gen 2 --threads 1 --backend cpu --json --set engine.kv_dtype=f16 >"$TMPD/bench.json" 2>"$TMPD/err"
check "bench --set engine.kv_dtype=f16 opens an f16 KV cache ($(kv_of "$TMPD/bench.json" 2>/dev/null))" \
    test "$(kv_of "$TMPD/bench.json" 2>/dev/null)" = f16

M7=$EMOE_SHARED/models/tiny-moe-7task
if [ -f "$M7/eval_docs.jsonl" ]; then
    pp() { "$B" perplexity -m "$M7" --docs "$M7/eval_docs.jsonl" --max-docs 2 --max-len 48 --threads 1 --json "$@" 2>"$TMPD/err"; }
    pp >"$TMPD/pp_f32.json"
    pp --set engine.kv_dtype=bf16 >"$TMPD/pp_bf16.json"
    check "perplexity --set engine.kv_dtype=bf16 opens a bf16 KV cache ($(kv_of "$TMPD/pp_bf16.json" 2>/dev/null))" \
        test "$(kv_of "$TMPD/pp_bf16.json" 2>/dev/null)" = bf16
    check "perplexity without a setting uses f32" test "$(kv_of "$TMPD/pp_f32.json" 2>/dev/null)" = f32
    check "and the bf16 KV cache changes its figure" python3 -c 'import json,sys
a, b = (json.load(open(f))["ppl_all_tasks"] for f in sys.argv[1:3])
sys.exit(0 if a != b else 1)' "$TMPD/pp_f32.json" "$TMPD/pp_bf16.json"
else
    echo "skip perplexity part: $M7 absent"
fi
finish

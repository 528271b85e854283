#!/usr/bin/env bash
# dense_format.sh — `[engine] dense_format` (docs/quant.md): `--dense-format q8`
# and `--set engine.dense_format=q8` reach the engine of `emoe run`, `bench` and
# `perplexity` (each reports the engine's own dense_format) and change the
# logits; native (and its synonym bf16) gives the default's logits exactly;
# bad values are refused with a message naming them (CLI, --set, serve's config).
cd "$(dirname "$0")/../.."
. tests/e2e/lib/server.bash
need_model
B=$EMOE_BIN
P=$(seq -s, 1 12)

RUN_TOKENS=2
df_of() { json_key "$1" dense_format; }

run_json "$TMPD/def.json"
run_json "$TMPD/native.json" --dense-format native
run_json "$TMPD/bf16.json" --dense-format bf16
run_json "$TMPD/q8.json" --dense-format q8
run_json "$TMPD/set_q8.json" --set engine.dense_format=q8
run_json "$TMPD/cli_wins.json" --set engine.dense_format=q8 --dense-format native
check "run without a setting is native ($(df_of "$TMPD/def.json"))" test "$(df_of "$TMPD/def.json")" = native
check "run --dense-format q8 reports q8 ($(df_of "$TMPD/q8.json"))" test "$(df_of "$TMPD/q8.json")" = q8
check "run --set engine.dense_format=q8 reports q8 ($(df_of "$TMPD/set_q8.json"))" test "$(df_of "$TMPD/set_q8.json")" = q8
check "--dense-format native wins over --set engine.dense_format=q8" test "$(df_of "$TMPD/cli_wins.json")" = native
check "native gives the default's logits exactly" same_logits "$TMPD/native.json" "$TMPD/def.json"
check "bf16 (synonym) gives the default's logits exactly" same_logits "$TMPD/bf16.json" "$TMPD/def.json"
check "--set q8 gives --dense-format q8's logits" same_logits "$TMPD/set_q8.json" "$TMPD/q8.json"
if same_logits "$TMPD/q8.json" "$TMPD/def.json"; then bad "q8 dense logits identical to native: the format did not reach the step"
else ok "q8 dense logits differ from native"; fi

"$B" run -m "$MODEL" --prompt-ids "$P" -n 1 --dense-format q4 >"$TMPD/o" 2>"$TMPD/err"
rc=$?
check "run --dense-format q4 exits 2 (rc $rc)" test "$rc" = 2
check "and names the value: $(head -c 200 "$TMPD/err")" grep -q "dense-format.*'q4'" "$TMPD/err"
"$B" run -m "$MODEL" --prompt-ids "$P" -n 1 --set engine.dense_format=int4 >"$TMPD/o" 2>"$TMPD/err"
rc=$?
check "run --set engine.dense_format=int4 is refused (rc $rc)" test "$rc" != 0
check "and names the key: $(head -c 200 "$TMPD/err")" grep -q "dense_format" "$TMPD/err"
printf '[model]\npath = %s\n[engine]\ndense_format = q16\n' "$MODEL" >"$TMPD/bad.conf"
"$B" config --check --config "$TMPD/bad.conf" >"$TMPD/o" 2>"$TMPD/err"
rc=$?
check "config --check refuses dense_format = q16 (rc $rc)" test "$rc" != 0
check "and names the key: $(head -c 200 "$TMPD/err" "$TMPD/o" | tr '\n' ' ')" grep -q "dense_format" "$TMPD/err" "$TMPD/o"

"$B" bench -m "$MODEL" --prompt-len 4 --gen 2 --threads 1 --backend cpu --json --dense-format q8 >"$TMPD/bench.json" 2>"$TMPD/err"
check "bench --dense-format q8 reports q8 ($(df_of "$TMPD/bench.json" 2>/dev/null))" test "$(df_of "$TMPD/bench.json" 2>/dev/null)" = q8

M7=$EMOE_SHARED/models/tiny-moe-7task
if [ -f "$M7/eval_docs.jsonl" ]; then
    pp() { "$B" perplexity -m "$M7" --docs "$M7/eval_docs.jsonl" --max-docs 2 --max-len 48 --threads 1 --json "$@" 2>"$TMPD/err"; }
    pp >"$TMPD/pp.json"
    pp --set engine.dense_format=q8 >"$TMPD/pp_q8.json"
    check "perplexity --set engine.dense_format=q8 reports q8" test "$(df_of "$TMPD/pp_q8.json" 2>/dev/null)" = q8
    check "and q8 dense changes its figure, by under 1%" python3 -c 'import json,sys
a, b = (json.load(open(f))["ppl_all_tasks"] for f in sys.argv[1:3])
sys.exit(0 if a != b and abs(b / a - 1) < 0.01 else 1)' "$TMPD/pp.json" "$TMPD/pp_q8.json"
else
    echo "skip perplexity part: $M7 absent"
fi
finish

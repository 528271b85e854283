#!/usr/bin/env bash
# tests/e2e/perplexity.sh — `emoe perplexity` on tiny-moe-7task reproduces every
# task's ppl_all_experts of reference_perplexity.json within 1%; exact mode under
# a 25% expert budget gives the same figures; substitute mode at 25% on one task
# substitutes experts and loses perplexity (so the policy is really on).
set -u
: "${EMOE_BIN:?}"
EMOE_SHARED=${EMOE_SHARED:-../shared}
M="$EMOE_SHARED/models/tiny-moe-7task"
if [ ! -f "$M/reference_perplexity.json" ]; then
    echo "SKIP: $M/reference_perplexity.json absent (needs ../shared; set EMOE_SHARED)"
    exit 77
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail=0
"$EMOE_BIN" perplexity -m "$M" --docs "$M/eval_docs.jsonl" --json >"$TMP/all.json" 2>"$TMP/err.txt" ||
    { echo "FAIL: perplexity run: $(tail -2 "$TMP/err.txt")"; exit 1; }

# task -> reference ppl_all_experts (the reference file is pretty-printed JSON)
awk '/^  "[a-z_]+": \{/ { gsub(/[":{ ]/, "", $1); t = $1 }
     /"ppl_all_experts"/ { v = $2; gsub(/,/, "", v); print t, v }' "$M/reference_perplexity.json" >"$TMP/ref.txt"
[ -s "$TMP/ref.txt" ] || { echo "FAIL: could not read the reference figures"; exit 1; }
ours() { grep -o "\"$2\":{\"ppl\":[0-9.e+-]*" "$1" | head -1 | sed 's/.*"ppl"://'; }
n=0
while read -r task ref; do
    got=$(ours "$TMP/all.json" "$task")
    if [ -z "$got" ]; then echo "FAIL: no figure for task $task"; fail=1; continue; fi
    if awk -v a="$got" -v b="$ref" 'BEGIN { d = (a - b) / b; if (d < 0) d = -d; exit !(d <= 0.01) }'; then
        echo "ok $task: ppl $got (reference $ref)"
    else
        echo "FAIL: $task: ppl $got, reference $ref (more than 1% apart)"; fail=1
    fi
    n=$((n + 1))
done <"$TMP/ref.txt"
[ $n -eq 7 ] || { echo "FAIL: expected 7 tasks in the reference, read $n"; fail=1; }

# Exact mode under a budget: the same NLL, digit for digit.
"$EMOE_BIN" perplexity -m "$M" --docs "$M/eval_docs.jsonl" --task quotes --json --budget 25% --store "$TMP/s.emoe" \
    >"$TMP/q25.json" 2>"$TMP/err.txt" || { echo "FAIL: budget run: $(tail -2 "$TMP/err.txt")"; exit 1; }
a=$(ours "$TMP/all.json" quotes); b=$(ours "$TMP/q25.json" quotes)
[ "$a" = "$b" ] && echo "ok quotes exact at 25%: $b" || { echo "FAIL: quotes exact at 25%: $b != $a"; fail=1; }
# Substitute mode (3 documents, token by token): experts substituted, perplexity
# higher than all-experts on the same documents.
"$EMOE_BIN" perplexity -m "$M" --docs "$M/eval_docs.jsonl" --task quotes --max-docs 3 --json >"$TMP/q3.json" 2>"$TMP/err.txt" ||
    { echo "FAIL: 3-doc run: $(tail -2 "$TMP/err.txt")"; exit 1; }
"$EMOE_BIN" perplexity -m "$M" --docs "$M/eval_docs.jsonl" --task quotes --max-docs 3 --json --budget 25% --store "$TMP/s.emoe" \
    --miss-policy substitute >"$TMP/qs.json" 2>"$TMP/err.txt" || { echo "FAIL: substitute run: $(tail -2 "$TMP/err.txt")"; exit 1; }
a=$(ours "$TMP/q3.json" quotes); s=$(ours "$TMP/qs.json" quotes)
subst=$(grep -o '"substituted":[0-9]*' "$TMP/qs.json" | head -1 | cut -d: -f2)
if [ "${subst:-0}" -gt 0 ] && awk -v s="$s" -v a="$a" 'BEGIN { exit !(s > a) }'; then
    echo "ok quotes substitute at 25%: ppl $s (all experts $a), $subst experts substituted"
else
    echo "FAIL: quotes substitute at 25%: ppl $s (all experts $a), substituted ${subst:-none}"; fail=1
fi
exit $fail

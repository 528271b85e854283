#!/usr/bin/env bash
# tests/e2e/quant.sh — quantized experts through the CLI (docs/quant.md):
#  * `emoe pack --expert-format bf16|q8|q4` then `--verify` of each store; the
#    q8/q4 stores' sizes against the bf16 one (q8 <= 0.56x, q4 <= 0.32x);
#  * `emoe run --expert-format q8` builds DIR/experts.q8.emoe on first use, and at
#    10%/25% budgets in exact mode gives logits identical to q8 all-resident;
#  * a store of the wrong format (and `--verify` asking for the wrong format) is
#    refused with a message naming both formats;
#  * `--miss-policy lowbit` runs and reports lowbit_uses in --json.
set -u
: "${EMOE_BIN:?}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail=0
die() { echo "FAIL: $*"; fail=1; }
field() { grep -o "\"$2\":[0-9]*" "$1" | head -1 | cut -d: -f2; }
logits() { grep -o '"last_logits":\[[^]]*\]' "$1"; }
gen() { grep -o '"generated_ids":\[[^]]*\]' "$1"; }

M="$TMP/m"
# tiny-moe-7task's expert shape (dim 256, expert ffn 96), so 4 KiB extent padding is realistic
"$EMOE_BIN" mkmodel --preset tiny --dim 256 --expert-ffn 96 --layers 2 --experts 8 --seed 5 -o "$M" >/dev/null 2>&1 ||
    { echo "FAIL: mkmodel"; exit 1; }
declare -A size
for f in bf16 q8 q4; do
    "$EMOE_BIN" pack -m "$M" --expert-format $f -o "$TMP/$f.emoe" --no-progress >"$TMP/pack.txt" 2>&1 ||
        { die "pack $f: $(tail -1 "$TMP/pack.txt")"; continue; }
    "$EMOE_BIN" pack -m "$M" --expert-format $f --verify -o "$TMP/$f.emoe" >"$TMP/v.txt" 2>&1 || die "verify $f: $(cat "$TMP/v.txt")"
    grep -q ": ok" "$TMP/v.txt" || die "verify $f printed no ok"
    size[$f]=$(stat -c %s "$TMP/$f.emoe")
done
echo "ok pack/verify: bf16 ${size[bf16]} q8 ${size[q8]} q4 ${size[q4]} bytes"
[ $((size[q8] * 100)) -le $((size[bf16] * 56)) ] || die "q8 store ${size[q8]} > 0.56 x bf16 ${size[bf16]}"
[ $((size[q4] * 100)) -le $((size[bf16] * 32)) ] || die "q4 store ${size[q4]} > 0.32 x bf16 ${size[bf16]}"

expect_fail() { # label pattern args...
    local label=$1 pat=$2; shift 2
    if "$EMOE_BIN" "$@" >"$TMP/out.txt" 2>&1; then die "$label: succeeded"; return; fi
    grep -q -- "$pat" "$TMP/out.txt" || { die "$label: message lacks '$pat': $(tail -2 "$TMP/out.txt")"; return; }
    echo "ok $label: $(grep -m1 -- "$pat" "$TMP/out.txt" | sed 's/^.*emoe [a-z]*: //')"
}
RUN=(run -m "$M" --prompt-ids 1,5,9,33,2,7,11,4 -n 6 --threads 1 --json)
expect_fail "q4 store as q8" "holds q4 experts, q8 were asked for" "${RUN[@]}" --expert-format q8 --store "$TMP/q4.emoe"
expect_fail "bf16 store as q4" "holds bf16 experts, q4 were asked for" "${RUN[@]}" --expert-format q4 --budget 50% --store "$TMP/bf16.emoe"
expect_fail "q8 store as bf16" "holds q8 experts, bf16 were asked for" "${RUN[@]}" --budget 50% --store "$TMP/q8.emoe"
expect_fail "verify wrong format" "holds q8 experts" pack -m "$M" --expert-format q4 --verify -o "$TMP/q8.emoe"
expect_fail "bad format name" "is not bf16, q8 or q4" "${RUN[@]}" --expert-format q3

# q8 all-resident, building DIR/experts.q8.emoe on first use.
"$EMOE_BIN" "${RUN[@]}" --expert-format q8 >"$TMP/q8all.json" 2>"$TMP/err.txt" || die "q8 all-resident: $(tail -1 "$TMP/err.txt")"
[ -f "$M/experts.q8.emoe" ] || die "DIR/experts.q8.emoe was not built on first use"
"$EMOE_BIN" "${RUN[@]}" >"$TMP/bf16.json" 2>/dev/null || die "bf16 run"
[ -n "$(logits "$TMP/q8all.json")" ] || die "no logits in the q8 output"
[ "$(logits "$TMP/q8all.json")" != "$(logits "$TMP/bf16.json")" ] || die "q8 logits equal bf16: quantized path not used"
for b in 10% 25%; do
    "$EMOE_BIN" "${RUN[@]}" --expert-format q8 --budget $b >"$TMP/q8b.json" 2>"$TMP/err.txt" || { die "q8 $b: $(tail -1 "$TMP/err.txt")"; continue; }
    [ "$(logits "$TMP/q8b.json")" = "$(logits "$TMP/q8all.json")" ] || die "q8 at $b: logits differ from q8 all-resident"
    [ "$(gen "$TMP/q8b.json")" = "$(gen "$TMP/q8all.json")" ] || die "q8 at $b: generated ids differ"
    misses=$(field "$TMP/q8b.json" misses)
    [ "${misses:-0}" -gt 0 ] || die "q8 at $b: no misses"
    echo "ok q8 exact at $b: logits identical to q8 all-resident ($misses misses)"
done

# lowbit: runs, counts its uses.
"$EMOE_BIN" "${RUN[@]}" --budget 10% --miss-policy lowbit >"$TMP/lb.json" 2>"$TMP/err.txt" || die "lowbit: $(tail -1 "$TMP/err.txt")"
uses=$(field "$TMP/lb.json" lowbit_uses)
[ "${uses:-0}" -gt 0 ] || die "lowbit: no lowbit_uses in --json"
[ -f "$M/experts.q4.emoe" ] || die "lowbit did not build DIR/experts.q4.emoe"
echo "ok lowbit at 10%: $uses low-bit uses"

[ $fail -eq 0 ] && echo "quant e2e: pack/verify x3, 5 refusals, q8 exact at 2 budgets, lowbit"
exit $fail

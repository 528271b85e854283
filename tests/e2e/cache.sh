#!/usr/bin/env bash
# tests/e2e/cache.sh — the expert cache end to end through `emoe pack` / `emoe run`:
#  * every fixture model and a synthesized OLMoE-1B-7B-shaped model (real
#    per-expert shape, 2 layers, 16 experts, top-8): at 10/25/50% device budgets,
#    logits (every vocab entry) and generated ids equal to the unconstrained run,
#    and the cache's peak resident bytes never above its budget;
#  * fault cases: truncated store, corrupted extent, injected I/O error, store of
#    another model: each a non-zero exit with a clear message.
set -u
: "${EMOE_BIN:?}"
EMOE_SHARED=${EMOE_SHARED:-../shared}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail=0
die() { echo "FAIL: $*"; fail=1; }

field() { grep -o "\"$2\":[0-9]*" "$1" | head -1 | cut -d: -f2; }
logits() { grep -o '"last_logits":\[[^]]*\]' "$1"; }
gen() { grep -o '"generated_ids":\[[^]]*\]' "$1"; }

check_model() { # name dir prompt
    local name=$1 dir=$2 prompt=$3
    local store="$TMP/$name.emoe"
    "$EMOE_BIN" pack -m "$dir" -o "$store" --no-progress >/dev/null || { die "$name: pack"; return; }
    "$EMOE_BIN" run -m "$dir" --prompt-ids "$prompt" -n 6 --threads 1 --json >"$TMP/ref.json" 2>/dev/null ||
        { die "$name: reference run"; return; }
    for b in 10% 25% 50%; do
        local host=()
        [ "$b" = 25% ] && host=(--host-budget 60%) # the pinned host tier on the way, once per model
        if ! "$EMOE_BIN" run -m "$dir" --prompt-ids "$prompt" -n 6 --threads 1 --json --budget "$b" --store "$store" \
            "${host[@]}" >"$TMP/got.json" 2>"$TMP/err.txt"; then
            die "$name $b: run failed: $(tail -1 "$TMP/err.txt")"; continue
        fi
        [ -n "$(logits "$TMP/ref.json")" ] || { die "$name: no logits in the reference output"; continue; }
        [ "$(logits "$TMP/ref.json")" = "$(logits "$TMP/got.json")" ] || die "$name $b: logits differ from the all-resident run"
        [ "$(gen "$TMP/ref.json")" = "$(gen "$TMP/got.json")" ] || die "$name $b: generated ids differ"
        local peak budget misses evictions
        peak=$(field "$TMP/got.json" peak_resident_bytes)
        budget=$(field "$TMP/got.json" budget_bytes)
        misses=$(field "$TMP/got.json" misses)
        evictions=$(field "$TMP/got.json" evictions)
        [ -n "$peak" ] && [ -n "$budget" ] || { die "$name $b: no cache object in --json"; continue; }
        [ "$peak" -le "$budget" ] || die "$name $b: peak resident $peak > budget $budget"
        # the forward pass computes resident experts first, so a load it asked for
        # may be ready by its acquire (a hit): evictions show the budget bit
        [ "$misses" -gt 0 ] || [ "${evictions:-0}" -gt 0 ] || die "$name $b: no misses, no evictions: the budget did not constrain anything"
        if [ ${#host[@]} -gt 0 ]; then
            grep -q '"tier":"host","hits":[1-9]' "$TMP/got.json" || die "$name $b: the host tier served nothing"
        fi
        echo "ok $name $b${host[*]:+ ${host[*]}}: peak $peak <= budget $budget, misses $misses, evictions ${evictions:-0}, logits identical"
    done
}

n=0
if [ -d "$EMOE_SHARED/fixtures/models" ]; then
    for d in "$EMOE_SHARED"/fixtures/models/*/; do
        check_model "$(basename "$d")" "$d" 1,5,9,33,2,7,11,4
        n=$((n + 1))
    done
else
    echo "note: $EMOE_SHARED/fixtures absent; only the synthesized model is checked"
fi

# Synthesized OLMoE-1B-7B-shaped model (dim 2048, expert ffn 1024: 12 MiB per expert).
OL="$TMP/olmoe"
"$EMOE_BIN" mkmodel --preset olmoe-1b-7b --layers 2 --experts 16 --vocab 1024 --seed 3 -o "$OL" >/dev/null 2>&1 ||
    die "mkmodel olmoe-shaped"
check_model olmoe-1b-7b-shaped "$OL" 1,5,9,33
rm -rf "$OL"

# ---- fault cases on a small model --------------------------------------------
"$EMOE_BIN" mkmodel --preset tiny --seed 1 -o "$TMP/m1" >/dev/null 2>&1 || die "mkmodel m1"
"$EMOE_BIN" mkmodel --preset tiny --seed 2 -o "$TMP/m2" >/dev/null 2>&1 || die "mkmodel m2"
"$EMOE_BIN" pack -m "$TMP/m1" --no-progress >/dev/null || die "pack m1"
S="$TMP/m1/experts.emoe"
"$EMOE_BIN" pack -m "$TMP/m1" --verify >/dev/null || die "verify of a good store"
expect_fail() { # label pattern args...
    local label=$1 pat=$2; shift 2
    if "$EMOE_BIN" "$@" >"$TMP/out.txt" 2>&1; then die "$label: succeeded"; return; fi
    grep -q -- "$pat" "$TMP/out.txt" || { die "$label: message lacks '$pat': $(tail -2 "$TMP/out.txt")"; return; }
    echo "ok $label: $(grep -m1 -- "$pat" "$TMP/out.txt" | sed 's/^.*emoe run: //')"
}
RUN=(run --prompt-ids 1,2,3,4 -n 3 --threads 1 --budget 25%)
# another model's store
expect_fail "foreign store" "packed from another model" "${RUN[@]}" -m "$TMP/m2" --store "$S"
# injected I/O error: the step fails with the extent named
expect_fail "injected EIO" "Input/output error" "${RUN[@]}" -m "$TMP/m1" --inject-read-error 2
# corrupted extent: one byte flipped inside the first extent's payload
cp "$S" "$TMP/corrupt.emoe"
printf '\x5a' | dd of="$TMP/corrupt.emoe" bs=1 seek=$((4096 * 1 + 100)) conv=notrunc status=none
expect_fail "corrupted extent" "checksum mismatch" "${RUN[@]}" -m "$TMP/m1" --store "$TMP/corrupt.emoe"
expect_fail "verify corrupted" "checksum mismatch" pack -m "$TMP/m1" --verify -o "$TMP/corrupt.emoe"
# truncated store
cp "$S" "$TMP/trunc.emoe"
truncate -s -4096 "$TMP/trunc.emoe"
expect_fail "truncated store" "truncated" "${RUN[@]}" -m "$TMP/m1" --store "$TMP/trunc.emoe"
# the good store still works after all that
"$EMOE_BIN" "${RUN[@]}" -m "$TMP/m1" >/dev/null 2>&1 || die "good store after the fault cases"

[ $fail -eq 0 ] && echo "cache e2e: $((n + 1)) models x 3 budgets exact, 5 fault cases"
exit $fail

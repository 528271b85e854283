#!/usr/bin/env bash
# replay-table.sh — the policy table of docs/predictor.md: `emoe replay` on the
# real routing traces (tiny-moe-7task; the Mixtral-8x7B GSM8K + HumanEval pair),
# interleaved and grouped, at 25/50/75% of the (layer, expert) slots, under LRU,
# LFU, the predictor and Belady: hit rate and bytes loaded (prefetches included),
# then an ablation of the predictor's parts. Prints Markdown.
# usage: tools/replay-table.sh [EMOE_BIN] [TRACES_DIR]
set -euo pipefail
BIN=${1:-${EMOE_BIN:-build/emoe}}
T=${2:-${EMOE_SHARED:-../shared}/traces}
command -v jq >/dev/null || { echo "replay-table.sh: needs jq" >&2; exit 1; }
[ -f "$T/tiny-moe-7task.jsonl" ] || { echo "replay-table.sh: no traces in $T" >&2; exit 1; }
# Bytes of one expert: tiny-moe: 3 matrices of 256x96 in bf16; Mixtral-8x7B
# (the traces come from an FP8 deployment): 3 matrices of 4096x14336, 1 byte each.
TINY_EB=$((3 * 256 * 96 * 2))
MIX_EB=$((3 * 4096 * 14336))
tiny=(--trace "$T/tiny-moe-7task.jsonl" --expert-bytes $TINY_EB)
mix=(--trace "$T/mixtral-8x7b-instruct.gsm8k.jsonl" --trace "$T/mixtral-8x7b-instruct.humaneval.jsonl" --expert-bytes $MIX_EB)
human() { # bytes -> MB or GB
    awk -v b="$1" 'BEGIN { if (b >= 1e9) printf "%.1f GB", b / 1e9; else printf "%.1f MB", b / 1e6 }'
}
cell() { # json -> "hit (bytes)"
    printf '%.3f (%s)' "$(jq .hit_rate <<<"$1")" "$(human "$(jq .bytes_loaded <<<"$1")")"
}
echo "| trace | order | budget | LRU | LFU | predictor | Belady | predictor's share of the LRU→Belady gap |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for set in tiny mix; do
    if [ $set = tiny ]; then args=("${tiny[@]}"); name="tiny-moe-7task (28 req.)"; else args=("${mix[@]}"); name="Mixtral gsm8k+humaneval (4 req.)"; fi
    for order in interleaved grouped; do
        for b in 25 50 75; do
            declare -A J
            for p in lru lfu predictor belady; do
                J[$p]=$("$BIN" replay "${args[@]}" --budget $b% --policy $p --order $order --json)
            done
            gap=$(jq -n --argjson l "$(jq .hit_rate <<<"${J[lru]}")" --argjson p "$(jq .hit_rate <<<"${J[predictor]}")" \
                --argjson b "$(jq .hit_rate <<<"${J[belady]}")" '(($p - $l) / ($b - $l) * 100 | floor | tostring) + "%"')
            echo "| $name | $order | $b% | $(cell "${J[lru]}") | $(cell "${J[lfu]}") | $(cell "${J[predictor]}") | $(cell "${J[belady]}") | ${gap//\"/} |"
        done
    done
done
echo
echo "Ablation (interleaved order): hit rate (bytes loaded) of the predictor's variants."
echo
echo "| trace | budget | LRU | predictor (default) | no task prior (--no-prior) | pin plan + LRU (--evict pin-lru) | + lookahead 2 (--lookahead 2) |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for set in tiny mix; do
    if [ $set = tiny ]; then args=("${tiny[@]}"); name="tiny-moe-7task"; else args=("${mix[@]}"); name="Mixtral pair"; fi
    for b in 25 50 75; do
        row="| $name | $b% | $(cell "$("$BIN" replay "${args[@]}" --budget $b% --policy lru --json)")"
        for extra in "" "--no-prior" "--evict pin-lru" "--lookahead 2"; do
            # shellcheck disable=SC2086
            row="$row | $(cell "$("$BIN" replay "${args[@]}" --budget $b% --policy predictor $extra --json)")"
        done
        echo "$row |"
    done
done
echo
echo "Prompts as one engine step (--prefill-step: per layer, each distinct expert of the prompt once), tiny-moe-7task: hit rate (bytes loaded). The Mixtral traces hold no prefill tokens, so their rows equal the first table's."
echo
echo "| order | budget | LRU | LFU | predictor | predictor --no-prior | Belady | predictor's share of the LRU→Belady gap |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for order in interleaved grouped; do
    for b in 25 50 75; do
        declare -A J
        for p in lru lfu predictor belady; do
            J[$p]=$("$BIN" replay "${tiny[@]}" --budget $b% --policy $p --order $order --prefill-step --json)
        done
        np=$("$BIN" replay "${tiny[@]}" --budget $b% --policy predictor --order $order --prefill-step --no-prior --json)
        gap=$(jq -n --argjson l "$(jq .hit_rate <<<"${J[lru]}")" --argjson p "$(jq .hit_rate <<<"${J[predictor]}")" \
            --argjson b "$(jq .hit_rate <<<"${J[belady]}")" '(($p - $l) / ($b - $l) * 100 | floor | tostring) + "%"')
        echo "| $order | $b% | $(cell "${J[lru]}") | $(cell "${J[lfu]}") | $(cell "${J[predictor]}") | $(cell "$np") | $(cell "${J[belady]}") | ${gap//\"/} |"
    done
done
echo
echo "Per-layer pools (--per-layer: each layer owns X% of its experts), interleaved order: hit rate (bytes loaded)."
echo
echo "| trace | budget | LRU | LFU | predictor | Belady |"
echo "| --- | --- | --- | --- | --- | --- |"
for set in tiny mix; do
    if [ $set = tiny ]; then args=("${tiny[@]}"); name="tiny-moe-7task"; else args=("${mix[@]}"); name="Mixtral pair"; fi
    for b in 25 50 75; do
        row="| $name | $b%"
        for p in lru lfu predictor belady; do
            row="$row | $(cell "$("$BIN" replay "${args[@]}" --budget $b% --policy $p --per-layer --json)")"
        done
        echo "$row |"
    done
done

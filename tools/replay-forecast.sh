#!/usr/bin/env bash
# replay-forecast.sh — the forecast tables of docs/predictor.md ("Forecast"):
# `emoe replay` token by token on the real routing traces, hit rate with the
# loads beside it (misses + prefetches), LRU / LFU / Belady / predictor /
# lookahead / forecast, then the forecast's variants. A policy counts against
# the issue's bar only where its loads are <= LRU's at that budget (marked).
# Prints Markdown. About a minute of CPU.
# usage: tools/replay-forecast.sh [EMOE_BIN] [TRACES_DIR]
set -euo pipefail
BIN=${1:-${EMOE_BIN:-build/emoe}}
T=${2:-${EMOE_SHARED:-../shared}/traces}
command -v jq >/dev/null || { echo "replay-forecast.sh: needs jq" >&2; exit 1; }
[ -f "$T/tiny-moe-7task.jsonl" ] || { echo "replay-forecast.sh: no traces in $T" >&2; exit 1; }
tiny=(--trace "$T/tiny-moe-7task.jsonl")
mix=(--trace "$T/mixtral-8x7b-instruct.gsm8k.jsonl" --trace "$T/mixtral-8x7b-instruct.humaneval.jsonl")
declare -A LRU_LOADS
cell() { # json [lru_loads] -> "hit (loads)", with ✓ when loads <= LRU's
    local h l mark=""
    h=$(jq .hit_rate <<<"$1"); l=$(jq .loads <<<"$1")
    if [ -n "${2:-}" ] && [ "$l" -le "$2" ]; then mark=" ✓"; fi
    printf '%.3f (%s%s)' "$h" "$(printf "%'d" "$l")" "$mark"
}
run() { "$BIN" replay "$@" --json; }
args_of() { if [ "$1" = tiny ]; then echo tiny; else echo mix; fi; }

echo "| trace | order | budget | LRU | LFU | Belady | predictor | lookahead | forecast | forecast − max(LRU, LFU) | Belady − forecast |"
echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for set in tiny mix; do
    if [ $set = tiny ]; then a=("${tiny[@]}"); name="tiny-moe-7task"; else a=("${mix[@]}"); name="Mixtral pair"; fi
    for order in interleaved grouped; do
        for b in 25 50 75; do
            lru=$(run "${a[@]}" --budget $b% --order $order --policy lru)
            ll=$(jq .loads <<<"$lru")
            LRU_LOADS[$set$b$order]=$ll
            lfu=$(run "${a[@]}" --budget $b% --order $order --policy lfu)
            bel=$(run "${a[@]}" --budget $b% --order $order --policy belady)
            pre=$(run "${a[@]}" --budget $b% --order $order --policy predictor)
            la=$(run "${a[@]}" --budget $b% --order $order --policy lookahead)
            fc=$(run "${a[@]}" --budget $b% --order $order --policy forecast)
            gain=$(jq -n --argjson a "$lru" --argjson b "$lfu" --argjson f "$fc" \
                '(($f.hit_rate - ([$a.hit_rate, $b.hit_rate] | max)) * 1000 | round) / 10')
            gap=$(jq -n --argjson z "$bel" --argjson f "$fc" '(($z.hit_rate - $f.hit_rate) * 1000 | round) / 10')
            echo "| $name | $order | $b% | $(cell "$lru" "$ll") | $(cell "$lfu" "$ll") | $(cell "$bel" "$ll") | $(cell "$pre" "$ll") | $(cell "$la" "$ll") | **$(cell "$fc" "$ll")** | +$gain | $gap |"
        done
    done
done

echo
echo "Forecast variants, interleaved (✓: loads <= LRU's):"
echo
echo "| trace | budget | LRU | demand only | fixed threshold 0.3, no budget | precision 0.7, no budget | precision 0.7 + budget | default (precision 0.6 + budget) | no path memory context (--fc-ctx 0 --fc-power 1) |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for set in tiny mix; do
    if [ $set = tiny ]; then a=("${tiny[@]}"); name="tiny-moe-7task"; else a=("${mix[@]}"); name="Mixtral pair"; fi
    for b in 25 50 75; do
        ll=${LRU_LOADS[${set}${b}interleaved]}
        lru=$(run "${a[@]}" --budget $b% --policy lru)
        v1=$(run "${a[@]}" --budget $b% --policy forecast --fc-threshold 2 --fc-precision 0)
        v2=$(run "${a[@]}" --budget $b% --policy forecast --fc-precision 0 --fc-no-lru-budget)
        v3=$(run "${a[@]}" --budget $b% --policy forecast --fc-precision 0.7 --fc-no-lru-budget)
        v4=$(run "${a[@]}" --budget $b% --policy forecast --fc-precision 0.7)
        v5=$(run "${a[@]}" --budget $b% --policy forecast)
        v6=$(run "${a[@]}" --budget $b% --policy forecast --fc-ctx 0 --fc-power 1)
        echo "| $name | $b% | $(cell "$lru" "$ll") | $(cell "$v1" "$ll") | $(cell "$v2" "$ll") | $(cell "$v3" "$ll") | $(cell "$v4" "$ll") | $(cell "$v5" "$ll") | $(cell "$v6" "$ll") |"
    done
done

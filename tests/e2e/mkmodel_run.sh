#!/usr/bin/env bash
# mkmodel + run for every family at a non-tiny shape: the checkpoint loads,
# generation is deterministic in the seed, sharded output (index.json) loads,
# and bad arguments give a clear message with exit code 2.
set -euo pipefail
BIN=${EMOE_BIN:-build/emoe}
command -v jq >/dev/null || { echo "SKIP: jq is not installed"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for fam in qwen3_moe qwen2_moe mixtral olmoe; do
    "$BIN" mkmodel --family "$fam" --dim 512 --layers 3 --heads 8 --kv-heads 4 --head-dim 64 \
        --experts 16 --top-k 4 --expert-ffn 384 --vocab 32000 --seed 3 --shard-size 16777216 -o "$tmp/$fam" 2>/dev/null
    [ -f "$tmp/$fam/model.safetensors.index.json" ] || { echo "$fam: expected a sharded checkpoint"; exit 1; }
    a=$("$BIN" run -m "$tmp/$fam" --prompt-ids 1,2,3,4,5,6,7,8 -n 8 --ignore-eos --json)
    b=$("$BIN" run -m "$tmp/$fam" --prompt-ids 1,2,3,4,5,6,7,8 -n 8 --ignore-eos --json --threads 1)
    n=$(jq '.generated_ids | length' <<<"$a")
    [ "$n" = 8 ] || { echo "$fam: generated $n tokens, expected 8"; exit 1; }
    [ "$(jq -c .generated_ids <<<"$a")" = "$(jq -c .generated_ids <<<"$b")" ] || { echo "$fam: threads changed the output"; exit 1; }
    [ "$(jq '.last_logits | length' <<<"$a")" = 32000 ] || { echo "$fam: wrong logits length"; exit 1; }
    [ "$(jq '[.last_logits[] | select(. != .)] | length' <<<"$a")" = 0 ] || { echo "$fam: NaN logits"; exit 1; }
    [ "$(jq '.routing | length' <<<"$a")" = 3 ] || { echo "$fam: routing layers"; exit 1; }
    [ "$(jq '.routing[0] | length' <<<"$a")" = 8 ] || { echo "$fam: routing positions"; exit 1; }
    # sampled runs: same seed same tokens, other seed other tokens
    s1=$("$BIN" run -m "$tmp/$fam" --prompt-ids 1,2,3 -n 12 --ignore-eos --temperature 1.5 --seed 11)
    s2=$("$BIN" run -m "$tmp/$fam" --prompt-ids 1,2,3 -n 12 --ignore-eos --temperature 1.5 --seed 11)
    s3=$("$BIN" run -m "$tmp/$fam" --prompt-ids 1,2,3 -n 12 --ignore-eos --temperature 1.5 --seed 12)
    g() { grep '^generated' <<<"$1"; }
    [ "$(g "$s1")" = "$(g "$s2")" ] || { echo "$fam: same seed, different tokens"; exit 1; }
    [ "$(g "$s1")" != "$(g "$s3")" ] || { echo "$fam: different seeds, same tokens"; exit 1; }
    echo "$fam ok: $(jq -c .generated_ids <<<"$a")"
done
# bad input to the CLI
set +e
out=$("$BIN" run -m "$tmp/olmoe" --prompt-ids 1,99999 -n 2 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "outside the vocabulary" <<<"$out" || { echo "out-of-vocab id not refused: $out"; exit 1; }
out=$("$BIN" run -m "$tmp/olmoe" --prompt-ids 1,x -n 2 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q "comma-separated" <<<"$out" || { echo "bad id list not refused: $out"; exit 1; }
out=$("$BIN" run -m "$tmp/nonexistent" --prompt-ids 1 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "config.json" <<<"$out" || { echo "missing model not refused: $out"; exit 1; }
out=$("$BIN" mkmodel --preset nope -o "$tmp/x" 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q "unknown preset" <<<"$out" || { echo "bad preset not refused: $out"; exit 1; }
echo ok

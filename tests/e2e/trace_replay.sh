#!/usr/bin/env bash
# `emoe trace` on the tiny-moe-7task model and its prompts reproduces the
# routing recorded with Hugging Face transformers (tiny-moe-7task.jsonl):
# every request's prefill routing exactly (token by token, layer by layer,
# expert order included) and the first decode token's; `emoe replay` reads the
# recorded trace and, the routing being the same, reports the same hit rates as
# on the reference trace.
set -euo pipefail
BIN=${EMOE_BIN:-build/emoe}
S=${EMOE_SHARED:-../shared}
M=$S/models/tiny-moe-7task
P=$S/traces/tiny-moe-7task.prompts.jsonl
R=$S/traces/tiny-moe-7task.jsonl
command -v jq >/dev/null || { echo "SKIP: jq is not installed"; exit 77; }
[ -f "$M/config.json" ] && [ -f "$P" ] && [ -f "$R" ] ||
    { echo "SKIP: tiny-moe-7task model or traces not found under $S (set EMOE_SHARED)"; exit 77; }
"$BIN" trace --help >/dev/null 2>&1 || { echo "SKIP: this emoe has no trace command"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

"$BIN" trace -m "$M" --prompts "$P" -o "$tmp/rec.jsonl" --threads 2
n=$(wc -l < "$tmp/rec.jsonl")
[ "$n" = "$(wc -l < "$R")" ] || { echo "recorded $n requests, reference has $(wc -l < "$R")"; exit 1; }

pre='[.task, [.tokens[] | select(.phase == "prefill") | .pos]] , [.tokens[] | select(.phase == "prefill") | .experts]'
jq -c "$pre" "$tmp/rec.jsonl" > "$tmp/rec.pre"
jq -c "$pre" "$R" > "$tmp/ref.pre"
if ! cmp -s "$tmp/rec.pre" "$tmp/ref.pre"; then
    echo "FAIL: prefill routing differs from the reference"; diff <(cut -c1-200 "$tmp/rec.pre") <(cut -c1-200 "$tmp/ref.pre") | head -20; exit 1
fi
first='[.tokens[] | select(.phase == "decode")][0].experts'
cmp -s <(jq -c "$first" "$tmp/rec.jsonl") <(jq -c "$first" "$R") ||
    { echo "FAIL: the first decode token's routing differs from the reference"; exit 1; }
dec='[.tokens[] | select(.phase == "decode") | .experts]'
same=$(paste -d'\n' <(jq -c "$dec" "$tmp/rec.jsonl") <(jq -c "$dec" "$R") | paste - - | awk -F'\t' '$1 == $2' | wc -l)
echo "prefill routing identical for all $n requests; decode routing identical for $same of $n"
# weights are recorded and well-formed: each layer's top-k weights sum to 1 (norm_topk_prob)
jq -e '[.tokens[0].weights[] | add] | all(. > 0.999 and . < 1.001)' <(head -n1 "$tmp/rec.jsonl") >/dev/null ||
    { echo "FAIL: recorded weights do not sum to 1"; exit 1; }

# replay reads it; same routing, same results
for p in lru belady predictor; do
    a=$("$BIN" replay --trace "$tmp/rec.jsonl" --budget 50% --policy $p --phases prefill --json | jq .hit_rate)
    b=$("$BIN" replay --trace "$R" --budget 50% --policy $p --phases prefill --json | jq .hit_rate)
    [ "$a" = "$b" ] || { echo "FAIL: $p prefill hit rate $a on the recorded trace, $b on the reference"; exit 1; }
    echo "replay $p (prefill, 50%): $a on both"
done

# "messages": rendered with the model's chat template. The tiny model has none;
# give it one that yields "<s>" + the content, whose encoding (no added
# specials) must equal the text prompt's (BOS added): same routing as request 0.
mkdir "$tmp/chat"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do ln -s "$(cd "$M" && pwd)/$f" "$tmp/chat/$f"; done
printf '%s' "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}" > "$tmp/chat/chat_template.jinja"
head -n1 "$P" | jq -c '{task, messages: [{role: "user", content: .prompt}], max_tokens}' > "$tmp/msg.jsonl"
"$BIN" trace -m "$tmp/chat" --prompts "$tmp/msg.jsonl" -o "$tmp/msg.trace" 2>/dev/null
cmp -s <(jq -c '[.tokens[] | .experts]' "$tmp/msg.trace") <(head -n1 "$R" | jq -c '[.tokens[] | .experts]') ||
    { echo "FAIL: a messages prompt does not route like the same text prompt"; exit 1; }
echo "messages prompt (chat template) routes like the text prompt"

# prompt_ids prompts and clear errors
printf '{"task": "ids", "prompt_ids": [1, 450, 4996], "max_tokens": 3}\n' > "$tmp/ids.jsonl"
"$BIN" trace -m "$M" --prompts "$tmp/ids.jsonl" -o "$tmp/ids.trace" 2>/dev/null
[ "$(jq '[.tokens[] | .phase] | join(",")' "$tmp/ids.trace")" = '"prefill,prefill,prefill,decode,decode"' ] ||
    { echo "FAIL: prompt_ids trace has the wrong token rows"; exit 1; }
printf '{"task": "x", "prompt": "a"}\n{"task": "y"}\n' > "$tmp/bad.jsonl"
set +e; msg=$("$BIN" trace -m "$M" --prompts "$tmp/bad.jsonl" -o "$tmp/bad.trace" 2>&1); rc=$?; set -e
[ $rc = 1 ] && grep -q 'bad.jsonl:2' <<<"$msg" || { echo "FAIL: bad prompts line not reported: rc $rc '$msg'"; exit 1; }
echo "trace_replay ok"

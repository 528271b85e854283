#!/usr/bin/env bash
# server_api.sh — the real server driven with curl: health, models, completions
# (text and token ids), streaming (role/deltas/one finish/usage/[DONE]),
# streamed == non-streamed at temperature 0, stop strings never leak, seeds
# reproduce, tokenize/detokenize, 8 parallel greedy requests equal sequential
# runs, a client disconnect mid-stream frees its slot, 429 under overload.
cd "$(dirname "$0")/../.."
. tests/e2e/lib/server.bash
need_model
start_server --set scheduler.max_running=4 --set scheduler.max_queued=64

# Health and models.
post /health '' >/dev/null
curl -s -m 10 -o "$TMPD/h" -w '%{http_code}' "$BASE/health" >"$TMPD/status"
check "GET /health is 200" [ "$(status)" = 200 ]
MODELS=$(curl -s -m 10 "$BASE/v1/models")
check "/v1/models lists tiny-qwen3-moe" [ "$(echo "$MODELS" | jget 'd["data"][0]["id"]')" = tiny-qwen3-moe ]

# Reference: the Hugging Face greedy continuation of fixture prompt 0.
REF=$(python3 -c "
import json; d=json.load(open('$EMOE_SHARED/fixtures/reference/models.json'))['models']['tiny-qwen3-moe']['cases'][0]
print(json.dumps(d['prompt_ids'],separators=(',',':')), json.dumps(d['greedy_16'],separators=(',',':')))")
PIDS=$(echo "$REF" | cut -d' ' -f1)
GREEDY=$(echo "$REF" | cut -d' ' -f2-)

# Completions with token ids: greedy tokens equal the reference.
R=$(post /v1/completions "{\"prompt\":$PIDS,\"max_tokens\":16,\"temperature\":0,\"ignore_eos\":true,\"return_token_ids\":true}")
check "completions (ids) 200" [ "$(status)" = 200 ]
check "greedy ids equal the HF reference" [ "$(echo "$R" | jget 'json.dumps(d["choices"][0]["token_ids"])')" = "$(echo "$GREEDY" | python3 -c 'import json,sys;print(json.dumps(json.load(sys.stdin)))')" ]
check "usage counts" [ "$(echo "$R" | jget 'd["usage"]["prompt_tokens"],d["usage"]["completion_tokens"],d["usage"]["total_tokens"]')" = "5 16 21" ]
check "finish_reason length" [ "$(echo "$R" | jget 'd["choices"][0]["finish_reason"]')" = length ]

# Text prompt: /tokenize gives the same ids as the fixture; the text output
# equals detokenizing the returned ids.
T=$(post /tokenize '{"prompt":"The capital of France is"}')
check "tokenize matches the fixture's prompt ids" [ "$(echo "$T" | jget 'json.dumps(d["tokens"])')" = "$(echo "$PIDS" | python3 -c 'import json,sys;print(json.dumps(json.load(sys.stdin)))')" ]
R=$(post /v1/completions '{"prompt":"The capital of France is","max_tokens":12,"ignore_eos":true,"return_token_ids":true}')
TEXT=$(echo "$R" | jget 'd["choices"][0]["text"]')
IDS=$(echo "$R" | jget 'json.dumps(d["choices"][0]["token_ids"])')
D=$(post /detokenize "{\"tokens\":$IDS}")
check "completion text == detokenize(token_ids)" [ "$(echo "$D" | jget 'd["prompt"]')" = "$TEXT" ]
check "completion text is not empty" [ -n "$TEXT" ]

# Chat: the templated prompt ids equal the Hugging Face reference for every
# chat fixture (via /tokenize with messages), and a chat completion counts
# exactly those prompt tokens; streamed chat == non-streamed chat.
python3 - "$EMOE_SHARED/fixtures/reference/tokenizer_qwen3.json" "$BASE" >"$TMPD/chat_check" <<'PY'
import json, sys, urllib.request
ref = json.load(open(sys.argv[1]))["chat"]
base = sys.argv[2]
def post(path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read().decode()
bad = 0
for i, c in enumerate(ref):
    got = json.loads(post("/tokenize", {"messages": c["messages"], "chat_template_kwargs": c["kwargs"],
                                       "add_generation_prompt": c["add_generation_prompt"]}))["tokens"]
    if got != c["ids"]:
        bad += 1; print("case %d: %s != %s" % (i, got[:12], c["ids"][:12]))
    r = json.loads(post("/v1/chat/completions", {"messages": c["messages"], "chat_template_kwargs": c["kwargs"], "max_tokens": 6, "ignore_eos": True}))
    if r["usage"]["prompt_tokens"] != len(c["ids"]) or r["object"] != "chat.completion" or r["choices"][0]["message"]["role"] != "assistant":
        bad += 1; print("case %d: chat usage %s" % (i, r["usage"]))
    ev = [l[6:] for l in post("/v1/chat/completions", {"messages": c["messages"], "chat_template_kwargs": c["kwargs"], "max_tokens": 6,
                                                       "ignore_eos": True, "stream": True}).split("\n") if l.startswith("data: ")]
    chunks = [json.loads(x) for x in ev[:-1]]
    text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks)
    if ev[-1] != "[DONE]" or chunks[0]["choices"][0]["delta"].get("role") != "assistant" or text != r["choices"][0]["message"]["content"] \
       or [ch["choices"][0]["finish_reason"] for ch in chunks].count("length") != 1 or chunks[0]["object"] != "chat.completion.chunk":
        bad += 1; print("case %d: streamed chat %r != %r" % (i, text, r["choices"][0]["message"]["content"]))
print("ok" if bad == 0 else "bad %d" % bad)
PY
check "chat: template ids == HF reference (8 cases), usage, streamed == non-streamed" [ "$(tail -n1 "$TMPD/chat_check")" = ok ]
[ "$(tail -n1 "$TMPD/chat_check")" = ok ] || cat "$TMPD/chat_check"
R=$(post /v1/chat/completions '{"messages":[{"role":"user","content":[{"type":"text","text":"Hel"},{"type":"text","text":"lo!"}]}],"max_tokens":3}')
check "chat: text content parts are concatenated" [ "$(echo "$R" | jget 'd["usage"]["prompt_tokens"]')" = 10 ]
R=$(post /v1/chat/completions '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":4}' -H 'X-Emoe-Task: chat.test')
check "chat with an X-Emoe-Task header" [ "$(status)" = 200 ]

# Streaming: text equals the non-streamed text; exactly one finish_reason;
# usage chunk with empty choices; [DONE] last.
curl -s -N -m 60 -H 'Content-Type: application/json' --data-binary \
  '{"prompt":"The capital of France is","max_tokens":12,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}' \
  "$BASE/v1/completions" >"$TMPD/sse"
python3 - "$TMPD/sse" "$TEXT" <<'PY' >"$TMPD/sse_check"
import json, sys
lines = [l for l in open(sys.argv[1], encoding="utf-8").read().split("\n") if l.startswith("data: ")]
assert lines[-1] == "data: [DONE]", "last event is not [DONE]"
chunks = [json.loads(l[6:]) for l in lines[:-1]]
fin = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] is not None]
assert len(fin) == 1, "finish chunks: %d" % len(fin)
assert fin[0]["choices"][0]["finish_reason"] == "length"
text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
assert text == sys.argv[2], "streamed %r != %r" % (text, sys.argv[2])
u = chunks[-1]
assert u["choices"] == [] and u["usage"]["completion_tokens"] == 12, "usage chunk"
assert all(c["object"] == "text_completion" for c in chunks)
print("ok")
PY
check "stream: one finish, usage, [DONE], text == non-streamed" [ "$(cat "$TMPD/sse_check")" = ok ]

# Stop strings: cut the known text in the middle of a later token; the stop
# string never appears and the output is the prefix before it.
python3 - "$TEXT" >"$TMPD/stop" <<'PY'
import sys, json
t = sys.argv[1]
# a 3-character stop string starting at character 5 (spans token boundaries in general)
s = t[5:8]
print(json.dumps(s)); print(json.dumps(t[:t.find(s)]))
PY
STOP=$(sed -n 1p "$TMPD/stop"); WANT=$(sed -n 2p "$TMPD/stop")
for STREAM in false true; do
  if [ $STREAM = false ]; then
    R=$(post /v1/completions "{\"prompt\":\"The capital of France is\",\"max_tokens\":12,\"ignore_eos\":true,\"stop\":[\"zzzz\",$STOP]}")
    GOT=$(echo "$R" | jget 'json.dumps(d["choices"][0]["text"]) + " " + d["choices"][0]["finish_reason"]')
  else
    curl -s -N -m 60 --data-binary "{\"prompt\":\"The capital of France is\",\"max_tokens\":12,\"ignore_eos\":true,\"stream\":true,\"stop\":$STOP}" "$BASE/v1/completions" >"$TMPD/sse2"
    GOT=$(python3 -c "
import json,sys
ev=[json.loads(l[6:]) for l in open('$TMPD/sse2').read().split('\n') if l.startswith('data: {')]
print(json.dumps(''.join(c['choices'][0]['text'] for c in ev if c['choices'])) + ' ' + [c['choices'][0]['finish_reason'] for c in ev if c['choices'] and c['choices'][0]['finish_reason']][0])")
  fi
  check "stop string (stream=$STREAM) cuts before the match, finish stop" [ "$GOT" = "$WANT stop" ]
done

# Seeds: same seed -> same sampled text; the sampled text differs from greedy
# for at least one of a few seeds.
S1=$(post /v1/completions '{"prompt":"The capital of France is","max_tokens":10,"ignore_eos":true,"temperature":1.0,"top_p":0.9,"seed":1234}' | jget 'd["choices"][0]["text"]')
S2=$(post /v1/completions '{"prompt":"The capital of France is","max_tokens":10,"ignore_eos":true,"temperature":1.0,"top_p":0.9,"seed":1234}' | jget 'd["choices"][0]["text"]')
check "same seed, same text" [ "$S1" = "$S2" ]
DIFF=0
for seed in 1 2 3; do
  S=$(post /v1/completions "{\"prompt\":\"The capital of France is\",\"max_tokens\":10,\"ignore_eos\":true,\"temperature\":1.0,\"seed\":$seed}" | jget 'd["choices"][0]["text"]')
  [ "$S" != "$S1" ] && DIFF=1
done
check "different seeds give different text" [ $DIFF = 1 ]

# Concurrency: 8 parallel greedy requests (different prompts) equal their
# sequential results.
PROMPTS=("Hello" "The capital of France is" "1 2 3 4" "Once upon a time" "def main():" "Bonjour" "MoE routing" "zebra")
for i in "${!PROMPTS[@]}"; do
  post /v1/completions "{\"prompt\":\"${PROMPTS[$i]}\",\"max_tokens\":24,\"ignore_eos\":true,\"return_token_ids\":true}" | jget 'json.dumps(d["choices"][0]["token_ids"])' >"$TMPD/seq_$i"
done
for i in "${!PROMPTS[@]}"; do
  curl -s -m 60 --data-binary "{\"prompt\":\"${PROMPTS[$i]}\",\"max_tokens\":24,\"ignore_eos\":true,\"return_token_ids\":true}" "$BASE/v1/completions" >"$TMPD/par_raw_$i" &
done
wait $(jobs -p | grep -v "^$SRV_PID\$") 2>/dev/null
SAME=1
for i in "${!PROMPTS[@]}"; do
  P=$(jget 'json.dumps(d["choices"][0]["token_ids"])' <"$TMPD/par_raw_$i")
  [ "$P" = "$(cat "$TMPD/seq_$i")" ] || { SAME=0; echo "  prompt $i: parallel $P != sequential $(cat "$TMPD/seq_$i")"; }
done
check "8 parallel greedy requests == sequential" [ $SAME = 1 ]

# Disconnect mid-stream: the request is cancelled and the slot frees.
curl -s -N -m 60 --data-binary '{"prompt":"Hello","max_tokens":3500,"ignore_eos":true,"stream":true}' "$BASE/v1/completions" >"$TMPD/long" &
CPID=$!
for i in $(seq 1 100); do [ "$(metric emoe_requests_running)" = 1 ] && break; sleep 0.05; done
check "long stream is running" [ "$(metric emoe_requests_running)" = 1 ]
kill -TERM $CPID; wait $CPID 2>/dev/null
check "after disconnect: running returns to 0" wait_metric emoe_requests_running 0 5
check "after disconnect: inflight returns to 0" wait_metric emoe_http_inflight 0 5
check "disconnect counted" [ "$(metric emoe_client_disconnects_total)" -ge 1 ]
check "cancelled counted" [ "$(metric 'emoe_requests_finished_total{reason="cancelled"}')" -ge 1 ]

# Metrics histograms have observations.
check "ttft histogram observed" [ "$(metric emoe_time_to_first_token_seconds_count)" -ge 10 ]
check "prompt token counter" [ "$(metric emoe_prompt_tokens_total)" -ge 20 ]
stop_server; check "exit 0 on SIGTERM" [ $? = 0 ]

# Overload: one slot, one queue place -> the third request gets 429 + Retry-After.
start_server --set scheduler.max_running=1 --set scheduler.max_queued=1
curl -s -N -m 60 --data-binary '{"prompt":"Hello","max_tokens":3000,"ignore_eos":true,"stream":true}' "$BASE/v1/completions" >/dev/null &
A=$!
for i in $(seq 1 100); do [ "$(metric emoe_requests_running)" = 1 ] && break; sleep 0.05; done
curl -s -N -m 60 --data-binary '{"prompt":"Hello","max_tokens":3000,"ignore_eos":true,"stream":true}' "$BASE/v1/completions" >/dev/null &
B=$!
for i in $(seq 1 100); do [ "$(metric emoe_requests_waiting)" = 1 ] && break; sleep 0.05; done
curl -s -m 10 -D "$TMPD/hdr" -o "$TMPD/body429" -w '%{http_code}' --data-binary '{"prompt":"Hello","max_tokens":5}' "$BASE/v1/completions" >"$TMPD/status"
check "429 when the queue is full" [ "$(status)" = 429 ]
check "429 carries Retry-After" grep -qi '^Retry-After: 1' "$TMPD/hdr"
check "429 is an OpenAI error object" [ "$(jget 'd["error"]["type"], d["error"]["code"]' <"$TMPD/body429")" = "rate_limit_error queue_full" ]
check "rejection counted" [ "$(metric 'emoe_requests_rejected_total{reason="queue_full"}')" = 1 ]
kill -TERM $A $B; wait $A $B 2>/dev/null
check "slots free after both clients left" wait_metric emoe_requests_running 0 5
check "queue empty after both clients left" wait_metric emoe_requests_waiting 0 5
stop_server; check "exit 0 on SIGTERM" [ $? = 0 ]
finish

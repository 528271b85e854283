#!/usr/bin/env bash
# server_request_limits.sh — issue 14, items 2, 3 and 6 against the real
# server: a prompt that cannot fit the context is refused by its byte length
# before tokenizing; a configured max_prompt_bytes caps prompts and rendered
# chat templates; chat_template_kwargs cannot replace messages or the special
# tokens; over-context on /v1/completions names "prompt"; OPTIONS carries CORS
# headers only when cors_origins is set; the Bearer scheme is case-insensitive;
# a stream is logged once.
cd "$(dirname "$0")/../.."
. tests/e2e/lib/server.bash
need_model
# A 64-token context makes the automatic byte bound (context x longest token x 4) small.
start_server --set server.api_keys=sk-limits --set log.level=info --set model.context_length=64
AUTH='Authorization: Bearer sk-limits'
CTX=$(curl -s -m 5 -H "$AUTH" "$BASE/v1/models" | jget 'd["data"][0]["max_model_len"]')

# 2. A 3.9 MB prompt: refused by its byte length (the message names bytes),
#    not after tokenizing it (the old message named tokens): 64 x longest token x 4 < 3.9 MB.
python3 -c 'import sys; sys.stdout.write("{\"prompt\":\"" + "hello world " * 325000 + "\",\"max_tokens\":1}")' >"$TMPD/big.json"
curl -s -m 120 -o "$TMPD/body" -w '%{http_code}' -H "$AUTH" -H 'Content-Type: application/json' \
    --data-binary @"$TMPD/big.json" "$BASE/v1/completions" >"$TMPD/status"
check "3.9 MB prompt -> 400 ($(status))" test "$(status)" = 400
P=$(jget 'd["error"]["param"]' <"$TMPD/body")
M=$(jget 'd["error"]["message"]' <"$TMPD/body")
check "names param prompt ($P)" test "$P" = prompt
check "refused by byte length before tokenizing: $M" grep -q 'bytes' <<<"$M"

# 2. Under the byte bound but over the context in tokens: tokenizing stops at
#    the context length instead of going through the whole text.
BODY=$(python3 -c "import json; print(json.dumps({'prompt': 'hello ' * 3000, 'max_tokens': 1}))")
post /v1/completions "$BODY" -H "$AUTH" >"$TMPD/b1"
M=$(jget 'd["error"]["message"]' <"$TMPD/b1")
C=$(jget 'd["error"]["code"]' <"$TMPD/b1")
STOPPED=no; grep -q 'stopped at 64' <<<"$M" && STOPPED=yes
check "18 KB prompt over a 64-token context -> 400 $C, tokenizing stopped early: $M" \
    test "$(status)" = 400 -a "$C" = context_length_exceeded -a "$STOPPED" = yes

post /tokenize "$BODY" -H "$AUTH" >/dev/null
check "/tokenize refuses the same over-context text ($(status))" test "$(status)" = 400
post /tokenize '{"prompt":"hello world"}' -H "$AUTH" >"$TMPD/tk"
check "/tokenize still counts a short text ($(status))" test "$(status)" = 200

# 6. Over-context by tokens on /v1/completions names "prompt".
N=$((CTX + 8))
BODY=$(python3 -c "import json; print(json.dumps({'prompt': ' hello' * $N}))")
post /v1/completions "$BODY" -H "$AUTH" >"$TMPD/b2"
check "over-context completion -> 400 ($(status))" test "$(status)" = 400
P=$(jget 'd["error"]["param"]' <"$TMPD/b2")
check "over-context completion names param prompt ($P)" test "$P" = prompt

# 3. chat_template_kwargs may not set messages / add_generation_prompt / special tokens.
for k in '"messages":[{"role":"user","content":"x"}]' '"add_generation_prompt":false' '"eos_token":"x"' '"tools":[]'; do
    post /v1/chat/completions "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":1,\"chat_template_kwargs\":{$k}}" -H "$AUTH" >"$TMPD/b3"
    P=$(jget 'd["error"]["param"]' <"$TMPD/b3" 2>/dev/null)
    check "chat_template_kwargs {$k} -> 400 chat_template_kwargs ($(status), $P)" test "$(status)" = 400 -a "$P" = chat_template_kwargs
done
post /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"max_tokens":1,"chat_template_kwargs":{"enable_thinking":false}}' -H "$AUTH" >/dev/null
check "other chat_template_kwargs still accepted ($(status))" test "$(status)" = 200

# 6. Bearer scheme is case-insensitive.
for scheme in bearer BEARER Bearer; do
    H=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: $scheme sk-limits" "$BASE/v1/models")
    check "Authorization: $scheme <key> -> 200 ($H)" test "$H" = 200
done

# 6. OPTIONS: no CORS headers unless cors_origins is set.
curl -s -m 10 -D "$TMPD/opt" -o /dev/null -X OPTIONS -H 'Origin: http://evil.example' \
    -H 'Access-Control-Request-Method: POST' "$BASE/v1/chat/completions"
check "OPTIONS without cors_origins: no Access-Control-* headers" sh -c "! grep -qi '^access-control-' '$TMPD/opt'"

# 6. A streamed request is logged once (one line carrying its request id).
curl -s -m 60 -N -D "$TMPD/sh" -o /dev/null -H "$AUTH" -H 'Content-Type: application/json' \
    -d '{"prompt":"hi","max_tokens":3,"stream":true}' "$BASE/v1/completions"
RID=$(grep -i '^x-request-id:' "$TMPD/sh" | tr -d '\r' | awk '{print $2}')
sleep 0.5
L=$(grep -c "req=$RID " "$TMPD/server.log")
check "streamed request req=$RID logged once ($L lines)" test "$L" = 1
stop_server || bad "server exit status"

# 2. A configured max_prompt_bytes caps prompts and the rendered chat template;
# CORS preflight headers appear once cors_origins is set.
start_server --set model.max_prompt_bytes=4KiB --set server.cors_origins=http://ok.example
BODY=$(python3 -c "import json; print(json.dumps({'prompt': 'x' * 5000, 'max_tokens': 1}))")
post /v1/completions "$BODY" >"$TMPD/b4"
check "5000-byte prompt over max_prompt_bytes=4KiB -> 400 ($(status))" test "$(status)" = 400
BODY=$(python3 -c "import json; print(json.dumps({'messages': [{'role': 'user', 'content': 'x y ' * 600}] * 2, 'max_tokens': 1}))")
post /v1/chat/completions "$BODY" >"$TMPD/b5"
P=$(jget 'd["error"]["param"]' <"$TMPD/b5" 2>/dev/null)
check "chat rendering past 4KiB -> 400 messages ($(status), $P: $(jget 'd["error"]["message"]' <"$TMPD/b5" 2>/dev/null))" test "$(status)" = 400 -a "$P" = messages
post /v1/completions '{"prompt":"hello","max_tokens":1}' >/dev/null
check "a short prompt is still served ($(status))" test "$(status)" = 200
curl -s -m 10 -D "$TMPD/opt2" -o /dev/null -X OPTIONS -H 'Origin: http://ok.example' "$BASE/v1/chat/completions"
check "OPTIONS with cors_origins: Access-Control-Allow-Methods present" grep -qi '^access-control-allow-methods' "$TMPD/opt2"
stop_server || bad "server exit status"
finish

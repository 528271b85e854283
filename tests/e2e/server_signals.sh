#!/usr/bin/env bash
# server_signals.sh — operations: SIGTERM drains (open streams finish, new work
# and /health get 503, exit 0), a drain that times out cancels the streams
# cleanly, SIGHUP reloads the reloadable settings and keeps the running
# configuration when the new file is invalid, --check-config.
cd "$(dirname "$0")/../.."
. tests/e2e/lib/server.bash
need_model

# --check-config: valid and invalid files.
CONF=$TMPD/emoe.conf
cat >"$CONF" <<CONF
[server]
host = 127.0.0.1
port = 0
api_keys = key-one
cors_origins = https://a.example
[model]
path = $MODEL
[scheduler]
max_running = 4
CONF
"$EMOE_BIN" serve --check-config --config "$CONF" >"$TMPD/cc" 2>&1
check "--check-config accepts a valid file" [ $? = 0 ]
printf '[server]\nport = 80\nbogus_key = 1\n' >"$TMPD/bad.conf"
"$EMOE_BIN" serve --check-config --config "$TMPD/bad.conf" >"$TMPD/cc" 2>&1
RC=$?
check "--check-config rejects an unknown key" [ $RC != 0 ]
check "... naming file, line and key" grep -q "bad.conf:3:.*bogus_key" "$TMPD/cc"
"$EMOE_BIN" config --dump --config "$CONF" >"$TMPD/dump"
check "config --dump shows file values and defaults" grep -q "^api_keys = key-one" "$TMPD/dump"

# SIGTERM with open streams: they complete; meanwhile new work gets 503.
start_server --set scheduler.max_running=4
for i in 1 2 3; do
  curl -s -N -m 60 --data-binary '{"prompt":"Hello","max_tokens":400,"ignore_eos":true,"stream":true}' "$BASE/v1/completions" >"$TMPD/drain_$i" &
done
for i in $(seq 1 100); do [ "$(metric emoe_requests_running)" = 3 ] && break; sleep 0.05; done
check "three streams running" [ "$(metric emoe_requests_running)" = 3 ]
kill -TERM "$SRV_PID"
sleep 0.2
H=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$BASE/health")
check "/health is 503 while draining" [ "$H" = 503 ]
N=$(curl -s -m 5 -o "$TMPD/n" -w '%{http_code}' --data-binary '{"prompt":"Hello","max_tokens":2}' "$BASE/v1/completions")
check "new work is refused with 503 while draining" [ "$N" = 503 ]
wait $(jobs -p) 2>/dev/null
for i in 1 2 3; do
  check "stream $i finished normally during the drain" python3 -c "
import json,sys
ev=open('$TMPD/drain_$i').read().split('\n')
d=[l for l in ev if l.startswith('data: ')]
assert d[-1]=='data: [DONE]'
fin=[json.loads(l[6:])['choices'][0]['finish_reason'] for l in d[:-1]]
assert fin.count('length')==1 and fin[-1]=='length', fin[-3:]
"
done
stop_server; check "exit 0 after the drain" [ $? = 0 ]

# Drain timeout: long streams are cancelled with an error event, then exit 0.
start_server --set server.drain_timeout=300ms
curl -s -N -m 60 --data-binary '{"prompt":"Hello","max_tokens":3500,"ignore_eos":true,"stream":true}' "$BASE/v1/completions" >"$TMPD/cut" &
C=$!
for i in $(seq 1 100); do [ "$(metric emoe_requests_running)" = 1 ] && break; sleep 0.05; done
T0=$SECONDS
stop_server; RC=$?
check "exit 0 after a drain timeout" [ $RC = 0 ]
check "... within a few seconds" [ $((SECONDS - T0)) -le 5 ]
wait $C 2>/dev/null
check "cut stream got an error event and [DONE]" python3 -c "
import json
d=[l for l in open('$TMPD/cut').read().split('\n') if l.startswith('data: ')]
assert d[-1]=='data: [DONE]'
assert json.loads(d[-2][6:])['error']['code']=='server_shutting_down', d[-2]
"

# SIGHUP reload: keys change; an invalid file keeps the running config.
"$EMOE_BIN" serve --config "$CONF" --set engine.threads=1 >"$TMPD/server.log" 2>&1 &
SRV_PID=$!
for i in $(seq 1 600); do grep -q ready "$TMPD/server.log" && break; sleep 0.1; done
PORT=$(grep -m1 -o 'listening on 127.0.0.1:[0-9]*' "$TMPD/server.log" | sed 's/.*://'); BASE="http://127.0.0.1:$PORT"
code() { curl -s -m 20 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $1" "$BASE/v1/models"; }
check "key-one accepted" [ "$(code key-one)" = 200 ]
check "missing key -> 401" [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$BASE/v1/models")" = 401 ]
check "/health needs no key" [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$BASE/health")" = 200 ]
curl -s -m 5 -D "$TMPD/cors" -o /dev/null -X OPTIONS -H 'Origin: https://a.example' -H 'Access-Control-Request-Method: POST' "$BASE/v1/chat/completions" >/dev/null
check "CORS preflight: 204 with the allowed origin, no key needed" grep -q "^HTTP/1.1 204" "$TMPD/cors"
check "... Access-Control-Allow-Origin echoes the origin" grep -qi "^Access-Control-Allow-Origin: https://a.example" "$TMPD/cors"
check "... Authorization is an allowed header" grep -qi "^Access-Control-Allow-Headers:.*Authorization" "$TMPD/cors"
curl -s -m 5 -D "$TMPD/cors2" -o /dev/null -H 'Origin: https://evil.example' -H 'Authorization: Bearer key-one' "$BASE/v1/models"
check "CORS: other origins get no Allow-Origin header" bash -c "! grep -qi '^Access-Control-Allow-Origin' '$TMPD/cors2'"
sed -i 's/^api_keys = key-one/api_keys = key-two/; s/^port = 0/port = 1/' "$CONF"
kill -HUP "$SRV_PID"
for i in $(seq 1 300); do grep -q "reloaded configuration" "$TMPD/server.log" && break; sleep 0.1; done
check "after SIGHUP key-one -> 401" [ "$(code key-one)" = 401 ]
check "after SIGHUP key-two -> 200" [ "$(code key-two)" = 200 ]
check "non-reloadable change (port) is reported, not applied" grep -q "server.port changed but need a restart" "$TMPD/server.log"
printf '[server]\napi_keys = key-three\nmax_body = lots\n' >"$CONF"
kill -HUP "$SRV_PID"
for i in $(seq 1 300); do grep -q "reload failed" "$TMPD/server.log" && break; sleep 0.1; done
check "invalid file: reload failed is logged with file:line:key" grep -q "reload failed.*emoe.conf:3:.*max_body" "$TMPD/server.log"
check "invalid file: running config kept (key-two -> 200)" [ "$(code key-two)" = 200 ]
check "invalid file: key-three not applied" [ "$(code key-three)" = 401 ]
check "server still generates after reloads" [ "$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer key-two' --data-binary '{"prompt":"Hi","max_tokens":2}' "$BASE/v1/completions")" = 200 ]
stop_server; check "exit 0" [ $? = 0 ]
finish

#!/usr/bin/env bash
# server_badinput.sh — the bad-input suite (tests/e2e/bad_input.mjs): 60+
# malformed requests, each answered with the right 4xx, while a well-formed
# stream completes unharmed; then the server is still healthy.
cd "$(dirname "$0")/../.."
. tests/e2e/lib/server.bash
need_model
command -v node >/dev/null || { echo "SKIP: node is not installed"; exit 77; }
start_server --set server.api_keys=sk-bad-input-key --set server.max_body=64KiB --set server.connection_timeout=2s
CTX=$(curl -s -m 5 -H 'Authorization: Bearer sk-bad-input-key' "$BASE/v1/models" | sed -n 's/.*"max_model_len":\([0-9]*\).*/\1/p')
EMOE_BASE=$BASE EMOE_KEY=sk-bad-input-key EMOE_VOCAB=151936 EMOE_CTX=$CTX timeout 100 node tests/e2e/bad_input.mjs
RC=$?
H=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$BASE/health")
[ "$H" = 200 ] || { echo "FAIL: /health is $H after the suite"; RC=1; }
[ $RC = 0 ] || { echo "--- server log (tail) ---"; tail -n 20 "$TMPD/server.log"; }
stop_server || RC=1
exit $RC

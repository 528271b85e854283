#!/usr/bin/env bash
# server_openai.sh — the real server driven by the official openai npm client
# (tests/e2e/openai_client.mjs), with an API key configured.
cd "$(dirname "$0")/../.."
. tests/e2e/lib/server.bash
need_model
command -v node >/dev/null || { echo "SKIP: node is not installed"; exit 77; }
[ -d tests/e2e/node_modules/openai ] || { echo "SKIP: run 'npm install' in tests/e2e (openai npm package missing)"; exit 77; }
start_server --set server.api_keys=sk-test-1,sk-test-2 --set scheduler.max_running=8
EMOE_BASE=$BASE EMOE_KEY=sk-test-2 timeout 90 node tests/e2e/openai_client.mjs
RC=$?
[ $RC = 0 ] || { echo "--- server log (tail) ---"; tail -n 20 "$TMPD/server.log"; }
stop_server || RC=1
exit $RC

#!/usr/bin/env bash
# server_openai_api.sh — logprobs, n, logit_bias, tools and structured output
# through the official openai npm client (tests/e2e/openai_api.mjs). Runs the
# sanitized binary ($SAN_BUILD_DIR/emoe, built by `make test`) when there is
# one, so these paths run under ASan+UBSan.
cd "$(dirname "$0")/../.."
if [ -n "${SAN_BUILD_DIR:-}" ] && [ -x "$SAN_BUILD_DIR/emoe" ]; then EMOE_BIN=$PWD/$SAN_BUILD_DIR/emoe; fi
. tests/e2e/lib/server.bash
need_model
command -v node >/dev/null || { echo "SKIP: node is not installed"; exit 77; }
[ -d tests/e2e/node_modules/openai ] || { echo "SKIP: run 'npm install' in tests/e2e (openai npm package missing)"; exit 77; }
echo "binary: $EMOE_BIN"
start_server --set scheduler.max_running=4
EMOE_BASE=$BASE timeout 240 node tests/e2e/openai_api.mjs
RC=$?
[ $RC = 0 ] || { echo "--- server log (tail) ---"; tail -n 20 "$TMPD/server.log"; }
stop_server || RC=1
if grep -q "ERROR: AddressSanitizer\|runtime error:\|LeakSanitizer" "$TMPD/server.log"; then
    echo "FAIL: sanitizer report in the server log"; grep -A20 "Sanitizer\|runtime error" "$TMPD/server.log" | head -40; RC=1
fi
exit $RC

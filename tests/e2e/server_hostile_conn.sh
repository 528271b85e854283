#!/usr/bin/env bash
# server_hostile_conn.sh — issue 14, items 1, 4, 5: slowloris and idle-socket
# floods (per-address limit, a read deadline not reset by each byte, a
# keep-alive idle timeout), RFC 9112 framing errors answered 400, and a second
# server on a port in use failing with "Address already in use".
# Quick: tight configured timeouts (2 s read, 1 s keep-alive), ~20 s in all.
cd "$(dirname "$0")/../.."
. tests/e2e/lib/server.bash
need_model
start_server --set server.max_connections=64 --set server.max_connections_per_ip=16 \
    --set server.request_read_timeout=2s --set server.keepalive_timeout=1s --set server.connection_timeout=30s
timeout 120 python3 tests/e2e/lib/hostile_conn.py "$PORT" || bad "hostile connection checks (above)"
R=$(metric 'emoe_http_connections_timed_out_total{reason="read"}')
check "read deadline closes counted in /metrics ($R)" test "${R:-0}" -ge 1
K=$(metric 'emoe_http_connections_timed_out_total{reason="keepalive"}')
check "keep-alive closes counted in /metrics ($K)" test "${K:-0}" -ge 1

# A second server on the same port must fail, not share it (SO_REUSEPORT).
timeout 60 "$EMOE_BIN" serve -m "$MODEL" --host 127.0.0.1 --port "$PORT" --set engine.threads=1 >"$TMPD/second.log" 2>&1
RC=$?
check "a second emoe serve on port $PORT exits non-zero (rc=$RC)" test "$RC" -ne 0 -a "$RC" -ne 124
check "it says the address is in use" grep -qi 'address already in use' "$TMPD/second.log"
H=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$BASE/health")
check "the first server still answers ($H)" test "$H" = 200
stop_server || bad "server exit status"
finish

#!/usr/bin/env bash
# server_systemd.sh — systemd integration: the unit file passes
# `systemd-analyze verify` (with ExecStart pointed at the binary under test),
# and the server speaks the sd_notify protocol on $NOTIFY_SOCKET: STATUS while
# loading, READY=1 after, WATCHDOG=1 pings from the run loop (WATCHDOG_USEC
# set), RELOADING=1 + READY=1 on SIGHUP, STOPPING=1 on SIGTERM.
cd "$(dirname "$0")/../.."
. tests/e2e/lib/server.bash
need_model
if command -v systemd-analyze >/dev/null; then
    sed "s|/usr/local/bin/emoe|$EMOE_BIN|g" config/emoe.service >"$TMPD/emoe.service"
    OUT=$(systemd-analyze verify "$TMPD/emoe.service" 2>&1); RC=$?
    check "systemd-analyze verify emoe.service is clean" [ $RC = 0 -a -z "$OUT" ]
    [ -z "$OUT" ] || echo "$OUT"
else
    echo "SKIP (part): systemd-analyze is not installed (apt package: systemd)"
fi

# A notify socket listener (bounded: 20 s).
SOCK=$TMPD/notify.sock
python3 - "$SOCK" >"$TMPD/notify.log" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); s.settimeout(0.5)
t0 = time.time()
while time.time() - t0 < 20:
    try:
        m = s.recv(4096).decode()
    except socket.timeout:
        continue
    print(m.replace("\n", " | "), flush=True)
    if "STOPPING=1" in m:
        break
PY
LPID=$!
for i in $(seq 1 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
NOTIFY_SOCKET=$SOCK WATCHDOG_USEC=600000 start_server
sleep 0.6   # a few watchdog periods (ping every WATCHDOG_USEC/3)
kill -HUP "$SRV_PID"
for i in $(seq 1 50); do grep -q RELOADING "$TMPD/notify.log" && break; sleep 0.1; done
stop_server; RC=$?
check "exit 0" [ $RC = 0 ]
for i in $(seq 1 50); do kill -0 $LPID 2>/dev/null || break; sleep 0.1; done
kill $LPID 2>/dev/null
check "STATUS while loading" grep -q "^STATUS=loading model" "$TMPD/notify.log"
check "READY=1 after loading" grep -q "^READY=1 | STATUS=serving" "$TMPD/notify.log"
check "WATCHDOG=1 pings (>= 2)" [ "$(grep -c '^WATCHDOG=1' "$TMPD/notify.log")" -ge 2 ]
check "RELOADING=1 on SIGHUP" grep -q "^RELOADING=1" "$TMPD/notify.log"
check "STOPPING=1 on SIGTERM" grep -q "^STOPPING=1" "$TMPD/notify.log"
check "READY before STOPPING" [ "$(grep -n '^READY=1' "$TMPD/notify.log" | head -1 | cut -d: -f1)" -lt "$(grep -n '^STOPPING=1' "$TMPD/notify.log" | cut -d: -f1)" ]
[ $FAILS = 0 ] || cat "$TMPD/notify.log"
finish

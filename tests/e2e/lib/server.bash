# server_lib.sh — helpers for the server end-to-end tests (sourced). Starts the
# real binary on a loopback port chosen by the kernel (port 0; the port is read
# from the log), with bounded waits everywhere.
set -u
EMOE_BIN=${EMOE_BIN:-$PWD/build/emoe}
EMOE_SHARED=${EMOE_SHARED:-$PWD/../shared}
MODEL=${EMOE_TEST_MODEL:-$EMOE_SHARED/fixtures/models/tiny-qwen3-moe}
TMPD=$(mktemp -d /tmp/emoe_e2e.XXXXXX)
SRV_PID=
PORT=
BASE=
FAILS=0

cleanup() {
    if [ -n "$SRV_PID" ] && kill -0 "$SRV_PID" 2>/dev/null; then kill -KILL "$SRV_PID" 2>/dev/null; fi
    [ -n "${KEEP_TMP:-}" ] || [ -n "${KEEP_TMP:-}" ] || [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMPD"
}
trap cleanup EXIT

need_model() {
    if [ ! -f "$MODEL/config.json" ] || [ ! -f "$MODEL/tokenizer.json" ]; then
        echo "SKIP: needs the tiny-qwen3-moe fixture at $MODEL (set EMOE_SHARED)"
        exit 77
    fi
    [ -x "$EMOE_BIN" ] || { echo "FAIL: no binary at $EMOE_BIN"; exit 1; }
    command -v curl >/dev/null || { echo "SKIP: curl is not installed"; exit 77; }
    command -v python3 >/dev/null || { echo "SKIP: python3 is not installed (JSON checks)"; exit 77; }
}

# start_server [args...]: starts emoe serve on 127.0.0.1:0 with the test model.
start_server() {
    : >"$TMPD/server.log"
    "$EMOE_BIN" serve -m "$MODEL" --host 127.0.0.1 --port 0 --set engine.threads=1 "$@" >"$TMPD/server.log" 2>&1 &
    SRV_PID=$!
    local i
    for i in $(seq 1 600); do
        PORT=$(grep -m1 -o 'listening on 127.0.0.1:[0-9]*' "$TMPD/server.log" | sed 's/.*://')
        if [ -n "$PORT" ] && grep -q 'ready' "$TMPD/server.log"; then BASE="http://127.0.0.1:$PORT"; return 0; fi
        kill -0 "$SRV_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "FAIL: server did not start"; cat "$TMPD/server.log"; exit 1
}

# stop_server: SIGTERM, bounded wait; returns the exit status.
stop_server() {
    kill -TERM "$SRV_PID" 2>/dev/null
    local i
    for i in $(seq 1 150); do
        kill -0 "$SRV_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$SRV_PID" 2>/dev/null; then echo "FAIL: server did not exit after SIGTERM"; kill -KILL "$SRV_PID"; wait "$SRV_PID" 2>/dev/null; SRV_PID=; return 1; fi
    wait "$SRV_PID"; local rc=$?
    SRV_PID=
    return $rc
}

ok()   { echo "ok   $*"; }
bad()  { echo "FAIL $*"; FAILS=$((FAILS+1)); }
check() { # description, condition command...
    local d=$1; shift
    if "$@"; then ok "$d"; else bad "$d"; fi
}

# post PATH JSON [curl args...]: prints the body; HTTP status into $TMPD/status.
post() {
    local path=$1 body=$2; shift 2
    curl -s -m 60 -o "$TMPD/body" -w '%{http_code}' -H 'Content-Type: application/json' "$@" \
        --data-binary "$body" "$BASE$path" >"$TMPD/status"
    cat "$TMPD/body"
}
status() { cat "$TMPD/status"; }
jget() { # JSON text on stdin, python expression on `d`
    python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"
}
metric() { # name -> value
    curl -s -m 10 "$BASE/metrics" | awk -v n="$1" '$1==n {print $2}'
}
# wait_metric NAME VALUE SECONDS: bounded poll until the metric equals VALUE.
wait_metric() {
    local i n=$(( $3 * 10 ))
    for i in $(seq 1 $n); do
        [ "$(metric "$1")" = "$2" ] && return 0
        sleep 0.1
    done
    return 1
}
# run_json OUT [args...]: `emoe run --json` on $MODEL with the prompt ids $P,
# $RUN_TOKENS tokens (default 1), 1 thread; a failure is a FAIL naming it.
run_json() {
    local out=$1; shift
    "$EMOE_BIN" run -m "$MODEL" --prompt-ids "$P" -n "${RUN_TOKENS:-1}" --threads 1 --json "$@" >"$out" 2>"$TMPD/err" ||
        { bad "run $* failed: $(tail -c 300 "$TMPD/err")"; return 1; }
}
json_key() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2]))' "$1" "$2"; }
same_logits() { # a b -> exit 0 when the two runs' last logits are identical
    python3 -c 'import json,sys
a, b = (json.load(open(f))["last_logits"] for f in sys.argv[1:3])
sys.exit(0 if a == b else 1)' "$1" "$2"
}
finish() {
    if [ $FAILS -gt 0 ]; then echo "$FAILS check(s) failed"; echo "--- server log (tail) ---"; tail -n 30 "$TMPD/server.log"; exit 1; fi
    exit 0
}

#!/usr/bin/env bash
# scale_out.sh — 3 emoe replicas behind nginx (tools/cluster.sh with the
# shipped config/nginx/emoe.conf), all on loopback as the test user:
#  * config/emoe@.service passes `systemd-analyze verify` (as an instance);
#    config/k8s renders with `kubectl kustomize` (where kubectl is installed);
#  * 42 requests over 7 tasks (X-Emoe-Task): every response names its replica
#    (X-Emoe-Replica), each task always lands on one replica, >= 2 replicas
#    are used; requests without the header are served too; a 2 MiB body
#    passes, one over 4 MiB gets 413; the openai npm
#    client's defaultHeaders / per-request headers land on the same replicas;
#  * kill -9 of the (idle) replica serving one task: the next requests of
#    that task succeed on another replica with no client error (nginx's log
#    shows the refused connect passed on), the other replicas' tasks stay put;
#  * kill -9 of a replica while it runs a request: that request gets nginx's
#    502 JSON error and is not retried on another replica (it had started);
#    the killed replica's tasks then go to the last replica;
#  * SSE streams pass through; the balancer's /health stays 200 while one
#    replica is left;
#  * tools/cluster.sh down stops nginx and the replicas and removes the pid files.
# Model: ../shared/models/tiny-moe-7task if present, else `emoe mkmodel`.
cd "$(dirname "$0")/../.."
. tests/e2e/lib/server.bash
[ -x "$EMOE_BIN" ] || { echo "FAIL: no binary at $EMOE_BIN"; exit 1; }
command -v curl >/dev/null || { echo "SKIP: curl is not installed"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed (JSON checks)"; exit 77; }
EMOE_NGINX=${EMOE_NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[ -x "$EMOE_NGINX" ] || { echo "SKIP: nginx is not installed (apt package nginx-light; tools/install-deps.sh)"; exit 77; }
export EMOE_NGINX EMOE_BIN

RUN=$TMPD/cluster
cleanup_cluster() {
    tools/cluster.sh down --run-dir "$RUN" --timeout 5 >/dev/null 2>&1
    cleanup
}
trap cleanup_cluster EXIT

# The template unit, verified as an instance (ExecStart at the binary under test).
if command -v systemd-analyze >/dev/null; then
    mkdir -p "$TMPD/units"
    sed "s|/usr/local/bin/emoe|$EMOE_BIN|g" config/emoe@.service >"$TMPD/units/emoe@.service"
    OUT=$(cd "$TMPD/units" && systemd-analyze verify "$TMPD/units/emoe@8081.service" 2>&1); RC=$?
    check "systemd-analyze verify emoe@8081.service is clean" [ $RC = 0 -a -z "$OUT" ]
    [ -z "$OUT" ] || echo "$OUT"
else
    echo "SKIP (part): systemd-analyze is not installed (apt package: systemd)"
fi

# The Kubernetes manifests are not run here (no cluster); check that they render.
if command -v kubectl >/dev/null; then
    kubectl kustomize config/k8s >"$TMPD/k8s.yaml" 2>&1; RC=$?
    check "kubectl kustomize config/k8s renders" [ $RC = 0 ]
    check "config/k8s: the Ingress hashes on X-Emoe-Task" grep -qF 'upstream-hash-by: $http_x_emoe_task' "$TMPD/k8s.yaml"
    check "config/k8s: readiness on /health" grep -q 'path: /health' "$TMPD/k8s.yaml"
    check "config/k8s: a GPU request" grep -q 'nvidia.com/gpu: 1' "$TMPD/k8s.yaml"
else
    echo "SKIP (part): kubectl is not installed (config/k8s syntax check)"
fi

MODEL=${EMOE_SHARED}/models/tiny-moe-7task
if [ ! -f "$MODEL/config.json" ]; then
    echo "note: no tiny-moe-7task at $MODEL; using a synthesized model"
    MODEL=$TMPD/model
    "$EMOE_BIN" mkmodel --preset tiny --layers 2 --experts 8 --top-k 2 --seed 7 -o "$MODEL" >/dev/null 2>&1 ||
        { echo "FAIL: emoe mkmodel"; exit 1; }
fi
LB_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if ! tools/cluster.sh up --replicas 3 --port "$LB_PORT" --run-dir "$RUN" --timeout 120 -- \
        -m "$MODEL" --set engine.threads=1 --set scheduler.max_running=4 >"$TMPD/up.log" 2>&1; then
    cat "$TMPD/up.log"; echo "FAIL: tools/cluster.sh up"; exit 1
fi
BASE=http://127.0.0.1:$LB_PORT
for id in r0 r1 r2; do
    check "pid file of $id names a running replica" kill -0 "$(cat "$RUN/replica-$id.pid")"
done
check "nginx pid file names a running nginx" kill -0 "$(cat "$RUN/nginx.pid")"
check "balancer /health is 200" [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health")" = 200 ]

TASKS="c_code dictionary english_docs french_docs italian_docs python_code quotes"
# req TASK MAX_TOKENS [extra curl args]: prints "STATUS REPLICA" (REPLICA "-" if none).
N_REQ=0
req() {
    local task=$1 mt=$2; shift 2
    N_REQ=$((N_REQ + 1))
    local hdr=()
    [ -n "$task" ] && hdr=(-H "X-Emoe-Task: $task")
    local body="{\"prompt\":[$((N_REQ % 300 + 5)),17,29,$((N_REQ % 7 + 40))],\"max_tokens\":$mt,\"temperature\":0,\"ignore_eos\":true}"
    local st
    st=$(curl -s -m 60 -D "$TMPD/hdr" -o "$TMPD/out" -w '%{http_code}' -H 'Content-Type: application/json' \
        "${hdr[@]}" "$@" --data-binary "$body" "$BASE/v1/completions")
    local rep
    rep=$(tr -d '\r' <"$TMPD/hdr" | awk 'tolower($1)=="x-emoe-replica:" {print $2}')
    echo "$st ${rep:--}"
}

# 1. 42 requests, 6 rounds over the 7 tasks.
: >"$TMPD/map"
for round in 1 2 3 4 5 6; do
    for t in $TASKS; do
        echo "$t $(req "$t" 3)" >>"$TMPD/map"
    done
done
check "42 requests answered 200" [ "$(awk '$2==200' "$TMPD/map" | wc -l)" = 42 ]
check "every response names a replica r0..r2" [ "$(awk '$3 ~ /^r[012]$/' "$TMPD/map" | wc -l)" = 42 ]
check "each task always landed on one replica" [ "$(awk '{print $1, $3}' "$TMPD/map" | sort -u | wc -l)" = 7 ]
USED=$(awk '{print $3}' "$TMPD/map" | sort -u | wc -l)
check "at least 2 replicas used ($USED)" [ "$USED" -ge 2 ]
awk '{print $1, $3}' "$TMPD/map" | sort -u | tr '\n' ';'; echo
NOHDR=$(req "" 3)
check "a request without X-Emoe-Task is served ($NOHDR)" [ "${NOHDR%% *}" = 200 ]
# Body limits: nginx buffers a 2 MiB body to its temp dir and passes it on;
# above [server] max_body (4 MiB) it answers 413 itself. (The padding is in
# `user`, a field emoe accepts: unknown fields are refused with a 400.)
python3 -c "import json; print(json.dumps({'prompt': [5, 6], 'max_tokens': 1, 'user': 'x' * (2 << 20)}))" >"$TMPD/big2"
python3 -c "import json; print(json.dumps({'prompt': [5, 6], 'max_tokens': 1, 'user': 'x' * (4 << 20)}))" >"$TMPD/big4"
ST2=$(curl -s -m 60 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -H 'X-Emoe-Task: quotes' \
    --data-binary @"$TMPD/big2" "$BASE/v1/completions")
check "a 2 MiB body passes through nginx ($ST2)" [ "$ST2" = 200 ]
ST4=$(curl -s -m 60 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
    --data-binary @"$TMPD/big4" "$BASE/v1/completions")
check "a body over 4 MiB gets 413 ($ST4)" [ "$ST4" = 413 ]
# SSE through the balancer (proxy_buffering off): the 4 tokens' events and [DONE].
curl -s -N -m 60 -H 'Content-Type: application/json' -H 'X-Emoe-Task: quotes' \
    --data '{"prompt":[5,17,29],"max_tokens":4,"temperature":0,"ignore_eos":true,"stream":true,"return_token_ids":true}' \
    "$BASE/v1/completions" >"$TMPD/sse"
check "a streamed request through nginx: events with 4 token ids, then [DONE]" python3 -c "
import json, sys
ev = [l[6:] for l in open('$TMPD/sse').read().splitlines() if l.startswith('data: ')]
ids = sum(len(json.loads(e)['choices'][0].get('token_ids') or []) for e in ev[:-1])
sys.exit(0 if ev and ev[-1] == '[DONE]' and ids == 4 else 1)"
owner() { awk -v t="$1" '$1==t {print $3; exit}' "$TMPD/map"; }

# The openai client's defaultHeaders (docs/deployment.md): same replicas as above.
if command -v node >/dev/null && [ -d tests/e2e/node_modules/openai ]; then
    # Two tasks on different replicas, so the per-request override is visible.
    TA=c_code TB=
    for t in $TASKS; do [ "$(owner $t)" != "$(owner $TA)" ] && TB=$t && break; done
    EMOE_BASE=$BASE node tests/e2e/scale_out_client.mjs $TA $TB >"$TMPD/client.log" 2>&1
    RC=$?
    cat "$TMPD/client.log"
    check "openai client (defaultHeaders, per-request headers) through nginx" [ $RC = 0 ]
    for t in $TA $TB; do
        check "openai client's $t landed on $(owner $t) like curl's" grep -q "^$t $(owner $t)\$" "$TMPD/client.log"
    done
else
    echo "SKIP (part): the openai client check needs node and tests/e2e/node_modules (cd tests/e2e && npm install)"
fi

# 2. kill -9 the idle replica serving the first task; its next requests succeed elsewhere.
T1=$(echo $TASKS | cut -d' ' -f1)
R1=$(owner "$T1")
P1=$(cat "$RUN/replica-$R1.port")
kill -KILL "$(cat "$RUN/replica-$R1.pid")"
for i in $(seq 1 50); do kill -0 "$(cat "$RUN/replica-$R1.pid")" 2>/dev/null || break; sleep 0.1; done
: >"$TMPD/after1"
for round in 1 2 3; do
    for t in $TASKS; do
        echo "$t $(req "$t" 3)" >>"$TMPD/after1"
    done
done
check "after kill -9 of $R1: all 21 requests answered 200" [ "$(awk '$2==200' "$TMPD/after1" | wc -l)" = 21 ]
check "$T1 moved off $R1, to one other replica" \
    [ "$(awk -v t="$T1" '$1==t {print $3}' "$TMPD/after1" | sort -u | grep -c "^r")" = 1 -a \
      "$(awk -v t="$T1" -v r="$R1" '$1==t && $3==r' "$TMPD/after1" | wc -l)" = 0 ]
MOVED=0
for t in $TASKS; do
    o=$(owner "$t")
    n=$(awk -v t="$t" '$1==t {print $3}' "$TMPD/after1" | sort -u | tr '\n' ' ')
    if [ "$o" != "$R1" ] && [ "$n" != "$o " ]; then MOVED=$((MOVED + 1)); echo "task $t moved $o -> $n"; fi
done
check "tasks of the surviving replicas stayed where they were (consistent hash)" [ $MOVED = 0 ]
check "nginx passed the refused connect to $R1 on to another replica" \
    grep -q "task=\"$T1\" upstream=127.0.0.1:$P1, 127.0.0.1:[0-9]* .*replica=\"r[0-9]\"" "$RUN/nginx-access.log"

# 3. kill -9 a replica while it runs a request: 502, not retried elsewhere.
T2=
for t in $TASKS; do o=$(awk -v t="$t" '$1==t {print $3; exit}' "$TMPD/after1"); [ "$t" != "$T1" ] && T2=$t && R2=$o && break; done
P2=$(cat "$RUN/replica-$R2.port")
req "$T2" 1900 >"$TMPD/long" &
LONG=$!
for i in $(seq 1 400); do
    [ "$(curl -s -m 5 "http://127.0.0.1:$P2/metrics" | awk '$1=="emoe_requests_running" {print $2}')" = 1 ] && break
    sleep 0.05
done
kill -KILL "$(cat "$RUN/replica-$R2.pid")"
wait $LONG
read -r LST _ <"$TMPD/long"
check "request in flight on $R2 when it died: 502 ($LST)" [ "$LST" = 502 ]
check "the 502 carries the OpenAI-style error" python3 -c "
import json,sys; e=json.load(open('$TMPD/out'))['error']; sys.exit(0 if e['code']=='upstream_unavailable' else 1)"
check "that request was not retried (one upstream in nginx's log)" \
    grep -q "task=\"$T2\" upstream=127.0.0.1:$P2 replica=\"-\"" "$RUN/nginx-access.log"
LAST=$(for id in r0 r1 r2; do [ "$id" != "$R1" ] && [ "$id" != "$R2" ] && echo $id; done)
: >"$TMPD/after2"
for t in $TASKS; do echo "$t $(req "$t" 3)" >>"$TMPD/after2"; done
check "then all 7 tasks answered 200 by the last replica $LAST" \
    [ "$(awk -v r="$LAST" '$2==200 && $3==r' "$TMPD/after2" | wc -l)" = 7 ]
check "balancer /health is still 200 with one replica left" [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health")" = 200 ]
[ $FAILS = 0 ] || { cat "$TMPD/map" "$TMPD/after1" "$TMPD/after2"; tail -n 20 "$RUN/nginx-access.log" "$RUN/nginx-error.log"; }

# 4. down.
NGX_PID=$(cat "$RUN/nginx.pid")
LAST_PID=$(cat "$RUN/replica-$LAST.pid")
tools/cluster.sh down --run-dir "$RUN" --timeout 20
check "cluster.sh down: nginx stopped" bash -c "! kill -0 $NGX_PID 2>/dev/null"
check "cluster.sh down: the last replica stopped" bash -c "! kill -0 $LAST_PID 2>/dev/null"
check "cluster.sh down: pid files removed" [ -z "$(ls "$RUN"/*.pid 2>/dev/null)" ]
SRV_PID=
cp "$RUN/replica-$LAST.log" "$TMPD/server.log" 2>/dev/null
finish

#!/usr/bin/env bash
# cluster.sh — a local emoe cluster: N replicas on loopback behind nginx with
# task affinity (config/nginx/emoe.conf). For local use and tests; production
# uses config/emoe@.service + nginx, or config/k8s/ (docs/deployment.md).
#
#   tools/cluster.sh up --replicas N --port P --run-dir DIR [--timeout S] -- [emoe serve args...]
#   tools/cluster.sh down --run-dir DIR [--timeout S]
#   tools/cluster.sh status --run-dir DIR
#
# up: starts replicas r0..r{N-1} (`emoe serve ARGS --host 127.0.0.1 --port 0
# --set server.replica_id=rI`; pid DIR/replica-rI.pid, port DIR/replica-rI.port,
# log DIR/replica-rI.log; without a cache.store_path in ARGS each replica gets
# its own store DIR/replica-rI.emoe), then nginx on 127.0.0.1:P with a config
# generated from config/nginx/emoe.conf (pid DIR/nginx.pid, logs and temp files
# under DIR, runs as the calling user). Returns when every replica's /health
# and nginx's /health answer 200, or fails (exit 1, everything it started is
# stopped) after --timeout seconds (default 300).
# down: SIGQUIT to nginx, SIGTERM to the replicas (they drain), SIGKILL after
# --timeout seconds (default 60); removes the pid files.
# Environment: EMOE_BIN (default build/emoe beside this script, else `emoe`),
# EMOE_NGINX (default `nginx`, or /usr/sbin/nginx; not NGINX,
# which nginx itself reads as inherited sockets), EMOE_NGINX_CONF (default
# config/nginx/emoe.conf beside this script).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")

die() { echo "cluster.sh: $*" >&2; exit 1; }
usage() {
    sed -n '5,7p' "$0" | sed 's/^# *//' >&2
    exit 2
}

CMD=${1:-}
[ -n "$CMD" ] || usage
shift
REPLICAS='' PORT='' DIR='' TIMEOUT=''
while [ $# -gt 0 ]; do
    case $1 in
    --replicas) REPLICAS=${2:-}; shift 2 ;;
    --port) PORT=${2:-}; shift 2 ;;
    --run-dir) DIR=${2:-}; shift 2 ;;
    --timeout) TIMEOUT=${2:-}; shift 2 ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) die "unknown option '$1' (emoe serve arguments go after --)" ;;
    esac
done
[ -n "$DIR" ] || die "--run-dir DIR is required"
case $DIR in *[[:space:]\;\'\"\{\}\$]*) die "--run-dir '$DIR': no spaces, quotes, ';', '{}' or '\$' (it goes into nginx.conf)" ;; esac
is_uint() { case $1 in ''|*[!0-9]*) return 1 ;; esac; }

# pid_is PIDFILE WORD: the pid in PIDFILE is alive and its command line has WORD
# (so a stale pid file never makes us signal an unrelated process).
pid_is() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    is_uint "$pid" || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}

# stop_pidfile PIDFILE WORD SIGNAL SECONDS: signal, bounded wait, then SIGKILL.
stop_pidfile() {
    local f=$1 word=$2 sig=$3 secs=$4 pid i
    if pid_is "$f" "$word"; then
        pid=$(cat "$f")
        kill "-$sig" "$pid" 2>/dev/null
        for i in $(seq 1 $((secs * 10))); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "cluster.sh: $(basename "$f" .pid) (pid $pid) did not stop in ${secs}s: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    rm -f "$f"
}

cmd_down() {
    local t=${TIMEOUT:-60} f
    is_uint "$t" || die "--timeout '$t' is not a number of seconds"
    [ -d "$DIR" ] || return 0
    stop_pidfile "$DIR/nginx.pid" nginx QUIT "$t"
    for f in "$DIR"/replica-*.pid; do
        [ -e "$f" ] || continue
        stop_pidfile "$f" serve TERM "$t" &
    done
    wait
    return 0
}

cmd_status() {
    local f id rc=0
    if pid_is "$DIR/nginx.pid" nginx; then echo "nginx up pid $(cat "$DIR/nginx.pid")"; else echo "nginx down"; rc=1; fi
    for f in "$DIR"/replica-*.pid; do
        [ -e "$f" ] || continue
        id=$(basename "$f" .pid); id=${id#replica-}
        if pid_is "$f" serve; then
            echo "$id up pid $(cat "$f") port $(cat "$DIR/replica-$id.port" 2>/dev/null)"
        else
            echo "$id down"; rc=1
        fi
    done
    return $rc
}

http_status() { curl -s -o /dev/null -m 5 -w '%{http_code}' "$1" 2>/dev/null; }

cmd_up() {
    local t=${TIMEOUT:-300}
    is_uint "$REPLICAS" && [ "$REPLICAS" -ge 1 ] && [ "$REPLICAS" -le 64 ] || die "--replicas N: 1..64 (got '${REPLICAS}')"
    is_uint "$PORT" && [ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || die "--port P: 1..65535 (got '${PORT}')"
    is_uint "$t" || die "--timeout '$t' is not a number of seconds"
    local bin=${EMOE_BIN:-}
    if [ -z "$bin" ]; then
        if [ -x "$ROOT/build/emoe" ]; then bin=$ROOT/build/emoe; else bin=$(command -v emoe) || die "no emoe binary (set EMOE_BIN)"; fi
    fi
    [ -x "$bin" ] || die "EMOE_BIN '$bin' is not executable"
    local ngx=${EMOE_NGINX:-}
    if [ -z "$ngx" ]; then ngx=$(command -v nginx || echo /usr/sbin/nginx); fi
    [ -x "$ngx" ] || die "nginx not found (apt-get install nginx-light, or set EMOE_NGINX)"
    command -v curl >/dev/null || die "curl is needed"
    local tmpl=${EMOE_NGINX_CONF:-$ROOT/config/nginx/emoe.conf}
    [ -f "$tmpl" ] || die "no nginx config template at $tmpl"
    mkdir -p "$DIR" || die "cannot create $DIR"
    DIR=$(cd "$DIR" && pwd)
    if pid_is "$DIR/nginx.pid" nginx; then die "a cluster is already up in $DIR (tools/cluster.sh down --run-dir $DIR)"; fi
    local own_store=1 a
    for a in "$@"; do case $a in *cache.store_path=*) own_store=0 ;; esac; done

    trap 'cmd_down >/dev/null 2>&1' EXIT
    local i id
    for ((i = 0; i < REPLICAS; i++)); do
        id=r$i
        local extra=()
        [ $own_store = 1 ] && extra=(--set "cache.store_path=$DIR/replica-$id.emoe")
        rm -f "$DIR/replica-$id.port"
        # All of a replica's connections come from nginx on 127.0.0.1: no
        # per-address connection limit (the arguments may still set one).
        "$bin" serve --set server.max_connections_per_ip=0 "$@" "${extra[@]}" \
            --host 127.0.0.1 --port 0 --set "server.replica_id=$id" \
            </dev/null >"$DIR/replica-$id.log" 2>&1 &
        echo $! >"$DIR/replica-$id.pid"
    done

    # Wait for every replica: its port in the log, then /health 200.
    local deadline=$((SECONDS + t)) port st pending
    while :; do
        pending=0
        for ((i = 0; i < REPLICAS; i++)); do
            id=r$i
            [ -s "$DIR/replica-$id.ready" ] && continue
            if ! pid_is "$DIR/replica-$id.pid" serve; then
                echo "cluster.sh: replica $id exited; its log:" >&2
                tail -n 20 "$DIR/replica-$id.log" >&2
                exit 1
            fi
            port=$(grep -m1 -o 'listening on 127.0.0.1:[0-9]*' "$DIR/replica-$id.log" | sed 's/.*://')
            if [ -n "$port" ]; then
                echo "$port" >"$DIR/replica-$id.port"
                st=$(http_status "http://127.0.0.1:$port/health")
                if [ "$st" = 200 ]; then echo 1 >"$DIR/replica-$id.ready"; continue; fi
            fi
            pending=$((pending + 1))
        done
        [ $pending = 0 ] && break
        if [ $SECONDS -ge $deadline ]; then
            echo "cluster.sh: $pending replica(s) not ready after ${t}s" >&2
            exit 1
        fi
        sleep 0.2
    done
    rm -f "$DIR"/replica-*.ready

    # nginx: the shipped config with the replica list, listen port and access
    # log pointed at this cluster; everything else as in config/nginx/emoe.conf.
    mkdir -p "$DIR/nginx-tmp"
    : >"$DIR/replicas.conf"
    for ((i = 0; i < REPLICAS; i++)); do
        echo "server 127.0.0.1:$(cat "$DIR/replica-r$i.port") max_fails=1 fail_timeout=10s;  # r$i" >>"$DIR/replicas.conf"
    done
    sed -e "s|include /etc/nginx/emoe-replicas.conf;|include $DIR/replicas.conf;|" \
        -e "s|^\( *\)listen 8080;|\1listen 127.0.0.1:$PORT;|" \
        -e "s|access_log /var/log/nginx/emoe.access.log|access_log $DIR/nginx-access.log|" \
        "$tmpl" >"$DIR/emoe.conf"
    [ "$(grep -c "include $DIR/replicas.conf;" "$DIR/emoe.conf")" = 2 ] && grep -q "listen 127.0.0.1:$PORT;" "$DIR/emoe.conf" ||
        die "$tmpl: the lines marked 'cluster.sh' were not found"
    # Workers run as the calling user (as root, nginx would switch them to
    # nobody, who cannot reach the temp files under DIR).
    local user_line=""
    [ "$(id -u)" = 0 ] && user_line="user root;"
    cat >"$DIR/nginx.conf" <<EOF
# Generated by tools/cluster.sh for the cluster in $DIR.
$user_line
daemon on;
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/nginx-error.log notice;
events { worker_connections 1024; }
http {
    client_body_temp_path $DIR/nginx-tmp/body;
    proxy_temp_path $DIR/nginx-tmp/proxy;
    fastcgi_temp_path $DIR/nginx-tmp/fastcgi;
    uwsgi_temp_path $DIR/nginx-tmp/uwsgi;
    scgi_temp_path $DIR/nginx-tmp/scgi;
    include $DIR/emoe.conf;
}
EOF
    local nargs=(-p "$DIR/" -c "$DIR/nginx.conf" -e "$DIR/nginx-error.log")
    if ! env -u NGINX "$ngx" "${nargs[@]}" -t -q 2>"$DIR/nginx-check.log"; then
        cat "$DIR/nginx-check.log" >&2
        die "nginx rejected the generated config $DIR/nginx.conf"
    fi
    env -u NGINX "$ngx" "${nargs[@]}" </dev/null >>"$DIR/nginx-error.log" 2>&1 || { tail -n 20 "$DIR/nginx-error.log" >&2; die "nginx did not start"; }
    while :; do
        st=$(http_status "http://127.0.0.1:$PORT/health")
        [ "$st" = 200 ] && break
        if [ $SECONDS -ge $deadline ]; then
            tail -n 20 "$DIR/nginx-error.log" >&2
            die "nginx on 127.0.0.1:$PORT: /health answered '$st' after ${t}s"
        fi
        sleep 0.1
    done
    trap - EXIT
    echo "cluster up: $REPLICAS replica(s) behind http://127.0.0.1:$PORT (run dir $DIR)"
    return 0
}

case $CMD in
up) cmd_up "$@" ;;
down) cmd_down ;;
status) cmd_status ;;
*) usage ;;
esac

#!/usr/bin/env bash
# bench_prefetch.sh MODEL PROMPTS.jsonl [REPEATS] [BUDGET] [CLIENTS] [-- --set k=v ...]
# The serving benchmark of issue 11 (docs/performance.md): `emoe serve` at
# [cache] device_budget=BUDGET (default 25%, predictor on with its defaults
# plus the --set overrides after --) against the same server with every
# expert resident, run back to back REPEATS times (default 2, alternating
# which goes first). Each run sends every task-labelled prompt of PROMPTS
# ({"task", "prompt", "max_tokens"} per line) twice, tasks interleaved, from
# CLIENTS (default 4) concurrent clients, greedy, `task` set; prints wall
# time, and from /metrics the device hit rate (hits / (hits + misses)), the
# expert-load stall (emoe_expert_cache_stall_seconds_total) as a share of the
# wall time, prefetch loads by source and the lookahead accuracy; then the
# budgeted/all-resident wall ratio per repeat. Checks that the generated ids
# are identical in both configurations (exact mode). Loopback only; bounded
# waits. The machine's noise: compare the ratios of one repeat.
set -u
MODEL=$1 PROMPTS=$2 REPEATS=${3:-2} BUDGET=${4:-25%} CLIENTS=${5:-4}
shift $(( $# < 5 ? $# : 5 ))
[ "${1:-}" = "--" ] && shift
EXTRA=("$@")
BIN=${EMOE_BIN:-build/emoe}
T=$(mktemp -d /tmp/emoe_bench_pf.XXXXXX)
PID=
trap '[ -n "$PID" ] && kill -KILL $PID 2>/dev/null; rm -rf "$T"' EXIT
run() { # name, --set args...
    local name=$1; shift
    "$BIN" serve -m "$MODEL" --host 127.0.0.1 --port 0 --set engine.threads=1 \
        --set cache.store_path="$T/experts.emoe" "$@" >"$T/log.$name" 2>&1 &
    PID=$!
    local port="" i
    for i in $(seq 1 600); do
        port=$(grep -m1 -o 'listening on 127.0.0.1:[0-9]*' "$T/log.$name" | sed 's/.*://')
        [ -n "$port" ] && grep -q ready "$T/log.$name" && break
        sleep 0.1
    done
    python3 - "http://127.0.0.1:$port" "$PROMPTS" "$CLIENTS" "$name" "$T/ids.$name" "$T/res.$name" <<'PY'
import json, sys, time, threading, urllib.request
base, path, clients, name, out, res = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
ps = [json.loads(l) for l in open(path) if l.strip()]
by = {}
for p in ps: by.setdefault(p["task"], []).append(p)
order = []
for i in range(max(len(v) for v in by.values())):
    for t in sorted(by):
        if i < len(by[t]): order.append(by[t][i])
order = order + order  # every prompt twice
ids = [None] * len(order)
nxt = [0]
lock = threading.Lock()
def worker():
    while True:
        with lock:
            i = nxt[0]; nxt[0] += 1
        if i >= len(order): return
        p = order[i]
        body = {"prompt": p["prompt"], "max_tokens": p.get("max_tokens", 32), "temperature": 0, "ignore_eos": True,
                "return_token_ids": True, "task": p["task"]}
        req = urllib.request.Request(base + "/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as f:
            ids[i] = json.loads(f.read())["choices"][0]["token_ids"]
t0 = time.time()
th = [threading.Thread(target=worker) for _ in range(clients)]
for x in th: x.start()
for x in th: x.join()
wall = time.time() - t0
m = {}
for l in urllib.request.urlopen(base + "/metrics", timeout=30).read().decode().splitlines():
    if l and not l.startswith("#"):
        k, v = l.rsplit(" ", 1); m[k] = float(v)
json.dump(ids, open(out, "w"))
h = m.get('emoe_expert_cache_hits_total{tier="device"}'); mi = m.get('emoe_expert_cache_misses_total{tier="device"}')
stall = m.get("emoe_expert_cache_stall_seconds_total", 0.0)
line = "%-10s requests %3d  wall %7.2f s" % (name, len(ids), wall)
if h is not None:
    lk = sum(v for k, v in m.items() if k.startswith("emoe_expert_cache_task_lookups_total{"))
    th = sum(v for k, v in m.items() if k.startswith("emoe_expert_cache_task_hits_total{"))
    line += "  hit rate %.3f (routed-resident %.3f)  stall %.2f s (%.1f%% of wall)" % (h / max(1.0, h + mi), th / max(1.0, lk), stall, 100 * stall / wall)
    src = ["engine", "plan", "queue", "lookahead"]
    line += "  prefetch " + " ".join("%s=%d/%d" % (s, m.get('emoe_expert_cache_prefetch_loads_total{source="%s"}' % s, 0),
                                                   m.get('emoe_expert_cache_prefetch_used_total{source="%s"}' % s, 0)) for s in src)
    line += "  loads %d mean lat %.0f us" % (m.get("emoe_expert_cache_loads_total", 0), 1e6 * m.get("emoe_expert_cache_load_latency_seconds_sum", 0) / max(1, m.get("emoe_expert_cache_load_latency_seconds_count", 1)))
    steps = max(1.0, m.get("emoe_expert_cache_steps_total", 0)); by = m.get("emoe_expert_cache_bytes_loaded_total", 0)
    busy = m.get("emoe_expert_cache_busy_seconds_total", 0); sb = m.get("emoe_expert_cache_stall_bytes_total", 0)
    line += "\n           steps %d  loads/step %.1f  MB/step %.2f  MB read %.0f  in flight max %d mean %.1f  disk busy %.2f s (%.0f MB/s)  during stalls %.0f MB/s" % (
        steps, m.get("emoe_expert_cache_loads_total", 0) / steps, by / steps / 1e6, by / 1e6,
        m.get("emoe_expert_cache_inflight_max", 0), m.get("emoe_expert_cache_inflight_mean", 0),
        busy, by / 1e6 / max(1e-9, busy), sb / 1e6 / max(1e-9, stall))
    if "emoe_predictor_lookahead_accuracy" in m:
        line += "  lookahead acc %.3f" % m["emoe_predictor_lookahead_accuracy"]
print(line, flush=True)
json.dump({"wall": wall}, open(res, "w"))
PY
    kill -TERM $PID; wait $PID 2>/dev/null; PID=
}
echo "budget $BUDGET vs all resident, $CLIENTS clients, 2 x $(grep -c . "$PROMPTS") prompts, $MODEL, extra: ${EXTRA[*]:-none}"
for r in $(seq 1 "$REPEATS"); do
    if [ $((r % 2)) = 1 ]; then
        run resident --set cache.device_budget=100%
        run budget --set cache.device_budget="$BUDGET" "${EXTRA[@]}"
    else
        run budget --set cache.device_budget="$BUDGET" "${EXTRA[@]}"
        run resident --set cache.device_budget=100%
    fi
    python3 -c "
import json,sys
a=json.load(open('$T/res.budget'))['wall']; b=json.load(open('$T/res.resident'))['wall']
print('repeat $r: wall ratio budget/resident %.3f' % (a/b))"
    cmp -s "$T/ids.resident" "$T/ids.budget" && echo "ids: identical" || echo "ids: DIFFER"
done

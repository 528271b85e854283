#!/usr/bin/env bash
# scale_bench.sh — expert-cache hit rate of N replicas behind nginx, with task
# affinity (config/nginx/emoe.conf as shipped: hash on X-Emoe-Task) against
# round-robin (the same config with the hash line removed), on the same
# requests. Prints a markdown table (docs/performance.md, "Scale-out").
#
#   tools/scale_bench.sh [--replicas 3] [--budget 25%] [--passes 5] [--concurrency 3]
#                        [--model DIR] [--prompts FILE] [--seed 1] [--threads 1]
#
# Requests: every prompt of FILE (JSONL with task, prompt, max_tokens; default
# ../shared/traces/tiny-moe-7task.prompts.jsonl), in a shuffled order (--seed)
# per pass, sent with X-Emoe-Task: <task>, greedy, ignore_eos (so every request
# decodes max_tokens). The replicas share one expert store, packed once.
# Hit rate = device-tier hits / (hits + misses), summed over the replicas'
# /metrics; "warm" counts only passes 2.. (deltas after pass 1).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
SHARED=${EMOE_SHARED:-$ROOT/../shared}
REPLICAS=3 BUDGET=25% PASSES=5 CONC=3 SEED=1 THREADS=1
MODEL=$SHARED/models/tiny-moe-7task
PROMPTS=$SHARED/traces/tiny-moe-7task.prompts.jsonl
while [ $# -gt 0 ]; do
    case $1 in
    --replicas) REPLICAS=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --passes) PASSES=$2; shift 2 ;;
    --concurrency) CONC=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --prompts) PROMPTS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    *) sed -n '7,9p' "$0" | sed 's/^# *//' >&2; exit 2 ;;
    esac
done
EMOE_BIN=${EMOE_BIN:-$ROOT/build/emoe}
export EMOE_BIN
[ -x "$EMOE_BIN" ] || { echo "scale_bench.sh: no emoe binary at $EMOE_BIN" >&2; exit 1; }
[ -f "$MODEL/config.json" ] || { echo "scale_bench.sh: no model at $MODEL" >&2; exit 1; }
[ -f "$PROMPTS" ] || { echo "scale_bench.sh: no prompts at $PROMPTS" >&2; exit 1; }
WORK=$(mktemp -d /tmp/emoe_scale_bench.XXXXXX)
RUN=$WORK/cluster
trap '"$HERE/cluster.sh" down --run-dir "$RUN" --timeout 10 >/dev/null 2>&1; rm -rf "$WORK"' EXIT

STORE=$WORK/experts.emoe
"$EMOE_BIN" pack -m "$MODEL" -o "$STORE" --no-progress >"$WORK/pack.log" 2>&1 || { cat "$WORK/pack.log"; exit 1; }
sed '/hash \$http_x_emoe_task consistent;/d' "$ROOT/config/nginx/emoe.conf" >"$WORK/round-robin.conf"
grep -q 'hash \$http_x_emoe_task' "$WORK/round-robin.conf" && { echo "scale_bench.sh: could not derive the round-robin config" >&2; exit 1; }

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run POLICY CONF: one cluster, PASSES passes; prints one JSON line of results.
run() {
    local policy=$1 conf=$2 lb
    lb=$(port)
    EMOE_NGINX_CONF=$conf "$HERE/cluster.sh" up --replicas "$REPLICAS" --port "$lb" --run-dir "$RUN" --timeout 300 -- \
        -m "$MODEL" --set engine.threads="$THREADS" --set cache.device_budget="$BUDGET" \
        --set cache.store_path="$STORE" >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; exit 1; }
    local ports=()
    local i
    for ((i = 0; i < REPLICAS; i++)); do ports+=("$(cat "$RUN/replica-r$i.port")"); done
    python3 - "$policy" "$lb" "$PROMPTS" "$PASSES" "$CONC" "$SEED" "${ports[@]}" <<'PY'
import json, random, sys, threading, time, urllib.request
policy, lb, prompts, passes, conc, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
ports = sys.argv[7:]
reqs = [json.loads(l) for l in open(prompts) if l.strip()]

def metrics():
    tot = {"hits": 0, "misses": 0, "loads": 0, "bytes": 0}
    for p in ports:
        txt = urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=30).read().decode()
        for line in txt.splitlines():
            if line.startswith("#"):
                continue
            k, _, v = line.rpartition(" ")
            if k == 'emoe_expert_cache_hits_total{tier="device"}': tot["hits"] += float(v)
            elif k == 'emoe_expert_cache_misses_total{tier="device"}': tot["misses"] += float(v)
            elif k == "emoe_expert_cache_loads_total": tot["loads"] += float(v)
            elif k == "emoe_expert_cache_bytes_loaded_total": tot["bytes"] += float(v)
    return tot

placed = {}
errors = 0
lock = threading.Lock()
def send(r):
    global errors
    body = json.dumps({"prompt": r["prompt"], "max_tokens": r.get("max_tokens", 32), "temperature": 0,
                       "ignore_eos": True}).encode()
    q = urllib.request.Request(f"http://127.0.0.1:{lb}/v1/completions", data=body,
                               headers={"Content-Type": "application/json", "X-Emoe-Task": r["task"]})
    try:
        with urllib.request.urlopen(q, timeout=600) as resp:
            rep = resp.headers.get("X-Emoe-Replica")
            resp.read()
        with lock:
            placed.setdefault(r["task"], set()).add(rep)
    except Exception as e:  # counted, reported
        with lock:
            errors += 1
        print("request error:", e, file=sys.stderr)

def one_pass(order):
    it = iter(order)
    def worker():
        while True:
            with lock:
                r = next(it, None)
            if r is None:
                return
            send(r)
    ts = [threading.Thread(target=worker) for _ in range(conc)]
    for t in ts: t.start()
    for t in ts: t.join()

rng = random.Random(seed)
m0 = metrics()
t0 = time.time()
marks = []
for p in range(passes):
    order = reqs[:]
    rng.shuffle(order)
    one_pass(order)
    marks.append(metrics())
dt = time.time() - t0
def rate(a, b):
    h, m = b["hits"] - a["hits"], b["misses"] - a["misses"]
    return h / (h + m) if h + m else float("nan")
res = {
    "policy": policy, "requests": passes * len(reqs), "errors": errors,
    "hit_all": rate(m0, marks[-1]), "hit_warm": rate(marks[0], marks[-1]) if passes > 1 else float("nan"),
    "loads": marks[-1]["loads"] - m0["loads"], "mib_read": (marks[-1]["bytes"] - m0["bytes"]) / 2**20,
    "replicas_per_task": sum(len(v) for v in placed.values()) / max(1, len(placed)),
    "wall_s": dt,
}
print(json.dumps(res))
PY
    "$HERE/cluster.sh" down --run-dir "$RUN" --timeout 30 >/dev/null 2>&1
}

{
    run affinity "$ROOT/config/nginx/emoe.conf"
    run round-robin "$WORK/round-robin.conf"
} >"$WORK/results.jsonl" || exit 1
echo "$REPLICAS replicas, device_budget $BUDGET each, $(wc -l <"$PROMPTS") prompts x $PASSES passes, concurrency $CONC, model $(basename "$MODEL")"
python3 - "$WORK/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| balancing | requests (errors) | replicas per task | device hit rate, all passes | device hit rate, passes 2.. | expert loads | MiB read from the store | wall s |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    print(f"| {r['policy']} | {r['requests']} ({r['errors']}) | {r['replicas_per_task']:.2f} | {100*r['hit_all']:.1f}% | "
          f"{100*r['hit_warm']:.1f}% | {r['loads']:.0f} | {r['mib_read']:.1f} | {r['wall_s']:.0f} |")
PY

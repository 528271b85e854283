#!/usr/bin/env bash
# bench_serve_cache.sh MODEL PROMPTS.jsonl [ROUNDS] [BUDGET] — `emoe serve` under
# an expert budget with the predictor off, on, and its two halves alone
# (prefetch only, eviction order only): sends every task-labelled prompt of
# PROMPTS ({"task", "prompt", "max_tokens"} per line) ROUNDS times, tasks
# interleaved, one request at a time, greedy; prints device misses, bytes
# loaded, stall time and wall time per configuration from /metrics, and
# checks that the generated ids are identical in all of them (exact mode).
# Loopback only; bounded waits. Used for docs/performance.md.
set -u
MODEL=$1 PROMPTS=$2 ROUNDS=${3:-2} BUDGET=${4:-25%}
BIN=${EMOE_BIN:-build/emoe}
T=$(mktemp -d /tmp/emoe_bench_sc.XXXXXX)
trap 'kill -KILL $PID 2>/dev/null; rm -rf "$T"' EXIT
PID=
run() { # name, --set args...
    local name=$1; shift
    "$BIN" serve -m "$MODEL" --host 127.0.0.1 --port 0 --set engine.threads=1 --set cache.device_budget="$BUDGET" \
        --set cache.store_path="$T/experts.emoe" "$@" >"$T/log" 2>&1 &
    PID=$!
    local port="" i
    for i in $(seq 1 300); do
        port=$(grep -m1 -o 'listening on 127.0.0.1:[0-9]*' "$T/log" | sed 's/.*://')
        [ -n "$port" ] && grep -q ready "$T/log" && break
        sleep 0.1
    done
    python3 - "http://127.0.0.1:$port" "$PROMPTS" "$ROUNDS" "$name" "$T/ids.$name" <<'PY'
import json, sys, time, urllib.request
base, path, rounds, name, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
ps = [json.loads(l) for l in open(path) if l.strip()]
by = {}
for p in ps: by.setdefault(p["task"], []).append(p)
order = []
for i in range(max(len(v) for v in by.values())):
    for t in sorted(by):
        if i < len(by[t]): order.append(by[t][i])
ids = []
t0 = time.time()
for r in range(rounds):
    for p in order:
        body = {"prompt": p["prompt"], "max_tokens": p.get("max_tokens", 32), "temperature": 0, "ignore_eos": True,
                "return_token_ids": True, "task": p["task"]}
        req = urllib.request.Request(base + "/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as f:
            ids.append(json.loads(f.read())["choices"][0]["token_ids"])
wall = time.time() - t0
m = {}
for l in urllib.request.urlopen(base + "/metrics", timeout=30).read().decode().splitlines():
    if l and not l.startswith("#"):
        k, v = l.rsplit(" ", 1); m[k] = float(v)
json.dump(ids, open(out, "w"))
print("%-14s requests %3d  device misses %6d  hits %7d  bytes loaded %11d  stall %7.3f s  wall %7.2f s  plans %d (computed %d)"
      % (name, len(ids), m['emoe_expert_cache_misses_total{tier="device"}'], m['emoe_expert_cache_hits_total{tier="device"}'],
         m["emoe_expert_cache_bytes_loaded_total"], m["emoe_expert_cache_stall_seconds_total"], wall,
         m.get("emoe_predictor_plans_total", 0), m.get("emoe_predictor_plans_computed_total", 0)))
PY
    kill -TERM $PID; wait $PID 2>/dev/null; PID=
}
echo "budget $BUDGET, $ROUNDS round(s) of $(grep -c . "$PROMPTS") prompts, $MODEL"
run lru --set predictor.enabled=false
run predictor
run prefetch-only --set predictor.evict_hint=false
run evict-only --set predictor.prefetch_share=0
for n in predictor prefetch-only evict-only; do
    cmp -s "$T/ids.lru" "$T/ids.$n" && echo "ids: $n == lru" || echo "ids: $n DIFFER from lru"
done

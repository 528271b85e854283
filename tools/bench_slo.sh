#!/usr/bin/env bash
# bench_slo.sh — FIFO vs the SLO-aware scheduler under open-loop load with
# `emoe loadgen` on tiny-moe-7task: two classes (interactive: TTFT 500 ms,
# TPOT 60 ms, 16 tokens; batch: no SLO, 128 tokens; 50/50), Poisson arrival
# rates from light load to 2x FIFO's saturation, expert budgets 100% and 25%.
# Writes docs/perf-slo.tsv (one row per run), a markdown table on stdout and
# docs/perf-slo.png (gnuplot).
#
#   tools/bench_slo.sh [RATES] [DURATION_S]      e.g. tools/bench_slo.sh "1 2 4 6 8" 10
#   (env: REPS=3 runs per point with seeds 1..REPS, BUDGETS="100% 25%", POLICIES="fifo slo",
#    OUT=docs/perf-slo.tsv, PNG=docs/perf-slo.png). The table and plot show the mean over the runs.
#   REPLOT=1 tools/bench_slo.sh: no runs; the table and plot from the rows already in $OUT (e.g.
#   the TSVs of separate runs per budget concatenated).
#
# Needs build/emoe (make CUDA=0) and ../shared/models/tiny-moe-7task.
set -eu
cd "$(dirname "$0")/.."
RATES=${1:-"1 2 4 6 8"}
DUR=${2:-10}
REPS=${REPS:-3}
BIN=${EMOE_BIN:-build/emoe}
SHARED=${EMOE_SHARED:-$PWD/../shared}
MODEL=$SHARED/models/tiny-moe-7task
OUT=${OUT:-docs/perf-slo.tsv}
PNG=${PNG:-docs/perf-slo.png}
TMP=$(mktemp -d /tmp/emoe_bench_slo.XXXXXX)
SP=
cleanup() { [ -n "$SP" ] && kill "$SP" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
if [ -z "${REPLOT:-}" ]; then
python3 tests/e2e/lib/slo_mix.py poisson "$MODEL/eval_docs.jsonl" "$TMP/mix.jsonl" --ttft-ms 500 --tpot-ms 60 \
    --inter-share 0.5 --batch-tokens 128
printf 'budget\tpolicy\trate\tsent\tinter_attain\tbatch_attain\tgoodput\tinter_ttft_p90_ms\trejected\thit_rate\trep\tarr_rps_2h\tdone_rps_2h\tdone_rps\tdrain_s\tload1\n' >"$OUT"
# FIFO and slo run back to back at each point, so they see similar machine load.
for budget in ${BUDGETS:-100% 25%}; do
  for rate in $RATES; do
    for rep in $(seq 1 "$REPS"); do
        for policy in ${POLICIES:-fifo slo}; do
            "$BIN" serve -m "$MODEL" --host 127.0.0.1 --port 0 --set engine.threads=1 --set scheduler.max_running=4 \
                --set scheduler.policy=$policy --set cache.device_budget=$budget \
                --set cache.store_path="$TMP/experts.emoe" >"$TMP/server.log" 2>&1 &
            SP=$!
            PORT=
            for _ in $(seq 1 300); do
                PORT=$(grep -m1 -o 'listening on 127.0.0.1:[0-9]*' "$TMP/server.log" | sed 's/.*://' || true)
                [ -n "$PORT" ] && grep -q ready "$TMP/server.log" && break
                sleep 0.1
            done
            "$BIN" loadgen --url "http://127.0.0.1:$PORT" --mix "$TMP/mix.jsonl" --rate "$rate" --duration "$DUR" \
                --drain 60 --seed "$rep" --quiet --json "$TMP/r.json" --label "$budget $policy $rate" >&2
            kill "$SP"; wait "$SP" 2>/dev/null || true; SP=
            python3 - "$TMP/r.json" "$budget" "$policy" "$rate" "$rep" "$(cut -d' ' -f1 /proc/loadavg)" >>"$OUT" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
c = d["classes"]
i, b = c.get("interactive", {}), c.get("batch", {})
p90 = (i.get("ttft_ms") or {}).get("p90")
hr = d["expert_cache_hit_rate"]
print("\t".join([sys.argv[2], sys.argv[3], sys.argv[4], str(d["requests"]),
                 "%.3f" % i.get("attainment", 0), "%.3f" % b.get("attainment", 0),
                 "%.3f" % d["all"]["goodput_rps"], "-" if p90 is None else "%.0f" % p90,
                 str(d["all"]["rejected"]), "-" if hr is None else "%.3f" % hr, sys.argv[5],
                 "%.2f" % d["throughput"]["arrival_rps_2nd_half"], "%.2f" % d["throughput"]["completion_rps_2nd_half"],
                 "%.2f" % d["throughput"]["completed_rps"], "%.1f" % d["throughput"]["drain_s"], sys.argv[6]]))
EOF
        done
    done
  done
done
fi
# markdown table (means over the repetitions; the slo columns also give the
# worst seed: its interactive attainment, and its goodput over FIFO's on the
# same seed)
python3 - "$OUT" "$TMP" <<'EOF'
import sys, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
acc = collections.OrderedDict()
for r in rows:
    k = (r[0], r[1], r[2])
    a = acc.setdefault(k, {"ia": [], "ba": [], "gp": [], "p90": [], "rej": 0, "n": 0, "sent": 0, "seed": {}, "thr": []})
    a["ia"].append(float(r[4])); a["ba"].append(float(r[5])); a["gp"].append(float(r[6]))
    if r[7] != "-": a["p90"].append(float(r[7]))
    a["rej"] += int(r[8]); a["n"] += 1; a["sent"] += int(r[3])
    a["seed"][r[10]] = (float(r[4]), float(r[6]))
    if len(r) > 14: a["thr"].append(float(r[13]))
mean = lambda v: sum(v) / len(v) if v else float("nan")
print("| budget | rate (req/s) | runs | FIFO completed req/s | FIFO interactive | slo interactive (worst seed) | FIFO batch | slo batch | FIFO goodput | slo goodput | slo/FIFO goodput (worst seed) | slo 429s | interactive TTFT p90 ms FIFO / slo |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for (bud, pol, rate), f in acc.items():
    if pol != "fifo" or (bud, "slo", rate) not in acc:
        continue
    s = acc[(bud, "slo", rate)]
    pct = lambda v: "%.0f%%" % (100 * mean(v))
    pairs = [(s["seed"][k][1] / f["seed"][k][1]) for k in s["seed"] if k in f["seed"] and f["seed"][k][1] > 0]
    print("| %s | %s | %d | %.2f | %s | %s (%.0f%%) | %s | %s | %.2f | %.2f | %.2fx (%.2fx) | %d | %.0f / %.0f |" % (bud, rate, f["n"],
          mean(f["thr"]), pct(f["ia"]), pct(s["ia"]), 100 * min(s["ia"]), pct(f["ba"]), pct(s["ba"]), mean(f["gp"]),
          mean(s["gp"]), mean(s["gp"]) / mean(f["gp"]), min(pairs) if pairs else float("nan"), s["rej"],
          mean(f["p90"]), mean(s["p90"])))
# FIFO's saturation rate = its capacity: the mean completed requests per
# second (first send to last completion) of its runs that were backlogged, i.e.
# still draining a queue more than 5 s after the last arrival
# (docs/performance.md, "FIFO's saturation rate").
for bud in sorted({k[0] for k in acc}, reverse=True):
    caps = [float(r[13]) for r in rows if r[0] == bud and r[1] == "fifo" and len(r) > 14 and float(r[14]) > 5]
    if caps:
        c = mean(caps)
        print("\n%s: FIFO capacity (saturation rate) %.2f req/s from %d overloaded runs; 1.5x = %.2f, 2x = %.2f req/s" % (bud, c, len(caps), 1.5 * c, 2 * c))
for (bud, pol, rate), a in acc.items():
    with open("%s/%s-%s.dat" % (sys.argv[2], bud.rstrip("%"), pol), "a") as f:
        f.write("%s %.2f %.3f\n" % (rate, 100 * mean(a["ia"]), mean(a["gp"])))
EOF
if command -v gnuplot >/dev/null; then
    for f in 100-fifo 100-slo 25-fifo 25-slo; do [ -f "$TMP/$f.dat" ] || echo "1 0 0" >"$TMP/$f.dat"; done
    gnuplot <<EOF
set terminal pngcairo size 1000,420 font ",10" noenhanced
set output "$PNG"
set multiplot layout 1,2 title "tiny-moe-7task, max_running=4, 1 engine thread, shared 2-vCPU VM (noisy); mean of the runs per point"
set xlabel "arrival rate (req/s)"
set key bottom left
set grid
set ylabel "interactive SLO attainment (%)"
set yrange [0:105]
plot "$TMP/100-fifo.dat" u 1:2 w lp t "FIFO, 100%", "$TMP/100-slo.dat" u 1:2 w lp t "slo, 100%", \
     "$TMP/25-fifo.dat" u 1:2 w lp dt 2 t "FIFO, 25%", "$TMP/25-slo.dat" u 1:2 w lp dt 2 t "slo, 25%"
set ylabel "goodput (requests meeting their SLO / s)"
set yrange [0:*]
set key top left
plot "$TMP/100-fifo.dat" u 1:3 w lp t "FIFO, 100%", "$TMP/100-slo.dat" u 1:3 w lp t "slo, 100%", \
     "$TMP/25-fifo.dat" u 1:3 w lp dt 2 t "FIFO, 25%", "$TMP/25-slo.dat" u 1:3 w lp dt 2 t "slo, 25%"
unset multiplot
EOF
    echo "plot: $PNG" >&2
fi

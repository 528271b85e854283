#!/usr/bin/env bash
# bench_slo.sh — FIFO vs the SLO-aware scheduler under open-loop load with
# `emoe loadgen` on tiny-moe-7task: two classes (interactive: TTFT 500 ms,
# TPOT 60 ms, 16 tokens; batch: no SLO, 128 tokens; 50/50), Poisson arrival
# rates from light load to 2x FIFO's saturation, expert budgets 100% and 25%.
# Writes docs/perf-slo.tsv (one row per run), a markdown table on stdout and
# docs/perf-slo.png (gnuplot).
#
#   tools/bench_slo.sh [RATES] [DURATION_S]      e.g. tools/bench_slo.sh "1 2 4 6 8" 10
#
# Needs build/emoe (make CUDA=0) and ../shared/models/tiny-moe-7task.
set -eu
cd "$(dirname "$0")/.."
RATES=${1:-"1 2 4 6 8"}
DUR=${2:-10}
BIN=${EMOE_BIN:-build/emoe}
SHARED=${EMOE_SHARED:-$PWD/../shared}
MODEL=$SHARED/models/tiny-moe-7task
OUT=${OUT:-docs/perf-slo.tsv}
PNG=${PNG:-docs/perf-slo.png}
TMP=$(mktemp -d /tmp/emoe_bench_slo.XXXXXX)
SP=
cleanup() { [ -n "$SP" ] && kill "$SP" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
python3 tests/e2e/lib/slo_mix.py poisson "$MODEL/eval_docs.jsonl" "$TMP/mix.jsonl" --ttft-ms 500 --tpot-ms 60 \
    --inter-share 0.5 --batch-tokens 128
printf 'budget\tpolicy\trate\tsent\tinter_attain\tbatch_attain\tgoodput\tinter_ttft_p90_ms\trejected\thit_rate\n' >"$OUT"
for budget in 100% 25%; do
    for policy in fifo slo; do
        for rate in $RATES; do
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
                --drain 60 --seed 7 --quiet --json "$TMP/r.json" --label "$budget $policy $rate" >&2
            kill "$SP"; wait "$SP" 2>/dev/null || true; SP=
            python3 - "$TMP/r.json" "$budget" "$policy" "$rate" >>"$OUT" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
c = d["classes"]
i, b = c.get("interactive", {}), c.get("batch", {})
p90 = (i.get("ttft_ms") or {}).get("p90")
hr = d["expert_cache_hit_rate"]
print("\t".join([sys.argv[2], sys.argv[3], sys.argv[4], str(d["requests"]),
                 "%.3f" % i.get("attainment", 0), "%.3f" % b.get("attainment", 0),
                 "%.3f" % d["all"]["goodput_rps"], "-" if p90 is None else "%.0f" % p90,
                 str(d["all"]["rejected"]), "-" if hr is None else "%.3f" % hr]))
EOF
        done
    done
done
# markdown table
python3 - "$OUT" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
print("| budget | rate (req/s) | FIFO interactive | slo interactive | FIFO batch | slo batch | FIFO goodput | slo goodput | slo 429s | FIFO / slo interactive TTFT p90 (ms) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
key = {}
for r in rows:
    key[(r[0], r[1], r[2])] = r
for (bud, pol, rate), r in key.items():
    if pol != "fifo":
        continue
    s = key.get((bud, "slo", rate))
    if not s:
        continue
    pct = lambda x: "%.0f%%" % (100 * float(x))
    print("| %s | %s | %s | %s | %s | %s | %.2f | %.2f | %s | %s / %s |" % (bud, rate, pct(r[4]), pct(s[4]), pct(r[5]), pct(s[5]),
          float(r[6]), float(s[6]), s[8], r[7], s[7]))
EOF
if command -v gnuplot >/dev/null; then
    for b in 100 25; do
        for p in fifo slo; do awk -F'\t' -v b="$b%" -v p=$p 'NR > 1 && $1 == b && $2 == p {print $3, $5 * 100, $7}' "$OUT" >"$TMP/$b-$p.dat"; done
    done
    gnuplot <<EOF
set terminal pngcairo size 1000,420 font ",10"
set output "$PNG"
set multiplot layout 1,2 title "tiny-moe-7task, max\\_running=4, 1 engine thread, shared 2-vCPU VM (noisy)"
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

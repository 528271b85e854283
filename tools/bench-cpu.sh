#!/usr/bin/env bash
# tools/bench-cpu.sh — the CPU engine against this machine's memory-bandwidth
# floor (`make bench-cpu`). Steps:
#   1. read bandwidth: build/bench_membw (STREAM-like sum over 1 GiB), 1 and
#      $THREADS threads, best of 5;
#   2. an OLMoE-width model (`emoe mkmodel --preset olmoe-1b-7b --layers 4`,
#      made once under $DIR), its active bytes per decoded token (every dense
#      weight + top_k experts per layer) from config.json;
#   3. `emoe run` prefill (32 tokens) and decode (64 steps) at $THREADS threads,
#      $REPS runs back to back; each as % of the floor = bandwidth / active bytes
#      per token (prefill can pass 100%: a batch reads each weight once);
#      then at 1 thread, also per second of CPU time (what the engine costs
#      apart from waiting for a core on a shared machine);
#   4. with valgrind: instructions per active weight (decode, 1 thread: the
#      difference between 6 and 2 generated tokens) and per token-weight
#      (prefill: between 24- and 8-token prompts) under callgrind;
#   5. with COLD=1: the model's files evicted from the page cache (posix_fadvise
#      DONTNEED; no root) before each measurement, $REPS rounds of: reading
#      the dense weights once (dd, O_DIRECT); `emoe serve` from process start
#      until /health says ready (the dense weights in memory) against that,
#      then its first completion (1 prompt id, 1 token: the dense weights and
#      top_k experts per layer) against those bytes at the dd rate; `emoe run
#      --prompt-ids 1 -n 1` (open + first token, process wall time) likewise;
#      after each, the bytes in the page cache (fincore): what it read.
# Env: BUILD_DIR (build), DIR (/tmp/emoe-bench-cpu), THREADS (physical cores),
#      REPS (3), CALLGRIND (1 = run step 4 when valgrind exists), COLD (0; 1;
#      only = step 5 alone), LAYERS (4: the model's layers, made as DIR/olmoeN).
# Timings on a shared machine are noisy: compare within one run, repeat.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD_DIR:-build}
DIR=${DIR:-/tmp/emoe-bench-cpu}
REPS=${REPS:-3}
CALLGRIND=${CALLGRIND:-1}
COLD=${COLD:-0}
EMOE=$B/emoe
[ -x "$EMOE" ] && [ -x "$B/bench_membw" ] || { echo "bench-cpu: build first (make $B/emoe $B/bench_membw)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "bench-cpu: needs python3" >&2; exit 2; }
if [ -z "${THREADS:-}" ]; then
    THREADS=$(lscpu -p=Core,Socket 2>/dev/null | grep -v '^#' | sort -u | wc -l)
    [ "$THREADS" -ge 1 ] 2>/dev/null || THREADS=$(nproc)
fi
LAYERS=${LAYERS:-4}
M=$DIR/olmoe$LAYERS
mkdir -p "$DIR"
echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs online, load average $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$COLD" != only ]; then
echo "== read bandwidth (bench_membw 1024 MB, best of 5)"
OUT1=$("$B/bench_membw" 1024 1 5)
BW1=$(echo "$OUT1" | sed -n 's/.* GB\/s=\([0-9.]*\).*/\1/p'); BW1C=$(echo "$OUT1" | sed -n 's/.*GB\/cpu-s=\([0-9.]*\).*/\1/p')
BWN=$("$B/bench_membw" 1024 "$THREADS" 5 | sed -n 's/.* GB\/s=\([0-9.]*\).*/\1/p')
echo "1 thread: $BW1 GB/s ($BW1C GB per CPU-second); $THREADS threads: $BWN GB/s"
if [ -x "$B/bench_gemv" ]; then
    echo "== the decode kernel (1 token, bf16) against a plain read of the same 1 GiB, same pool, alternated"
    "$B/bench_gemv" 1024 "$THREADS" 7
fi
fi

if [ ! -f "$M/config.json" ]; then
    echo "== making $M"
    "$EMOE" mkmodel --preset olmoe-1b-7b --layers "$LAYERS" --seed 7 -o "$M" >/dev/null
fi
read -r ACTIVE_W DENSE_B ACTIVE_B NLAYERS TOPK < <(python3 - "$M/config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
d, L, h = c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"]
kv = c.get("num_key_value_heads", h); hd = c.get("head_dim", d // h)
E, k, f, V = c["num_experts"], c["num_experts_per_tok"], c["intermediate_size"], c["vocab_size"]
attn = d * h * hd * 2 + d * kv * hd * 2          # q, o; k, v
dense = L * (attn + E * d) + V * d                # + router; + lm_head
experts = L * k * 3 * f * d
bpe = 2 if c.get("torch_dtype", "bfloat16") in ("bfloat16", "float16") else 4
print(dense + experts, dense * bpe, (dense + experts) * bpe, L, k)
EOF
)
NEED_B=$ACTIVE_B # what one token reads: the dense weights and top_k experts per layer (norms, one embedding row aside)
echo "== model: $M; active weights per token $ACTIVE_W ($((ACTIVE_B / 1000000)) MB, dense $((DENSE_B / 1000000)) MB)"
if [ "$COLD" != only ]; then
FLOOR=$(python3 -c "print(f'{$BWN * 1e9 / $ACTIVE_B:.2f}')")
echo "floor at $THREADS threads: $BWN GB/s / $((ACTIVE_B / 1000000)) MB = $FLOOR tok/s"

echo "== emoe run: 32-token prompt, 64 decode steps, $THREADS threads, $REPS runs"
P=$(seq -s, 1 32)
cat "$M"/*.safetensors >/dev/null # the whole model in the page cache (decode touches every expert)
"$EMOE" run -m "$M" --prompt-ids 1 -n 1 --ignore-eos --threads "$THREADS" --json >/dev/null
for i in $(seq 1 "$REPS"); do
    "$EMOE" run -m "$M" --prompt-ids "$P" -n 65 --ignore-eos --threads "$THREADS" --json |
        python3 -c "
import json, sys
t = json.load(sys.stdin)['timing']; f = $FLOOR
print(f\"run $i: prefill {t['prefill_tokens_per_s']:.2f} tok/s ({100 * t['prefill_tokens_per_s'] / f:.0f}% of the floor), \"
      f\"decode {t['decode_tokens_per_s']:.2f} tok/s ({100 * t['decode_tokens_per_s'] / f:.0f}% of the floor)\")"
done
echo "== the same at 1 thread; decode per second of wall time against the 1-thread floor, and per second of"
echo "   its own CPU time against the probe's GB per CPU-second (what a core does while it runs)"
for i in $(seq 1 "$REPS"); do
    "$EMOE" run -m "$M" --prompt-ids "$P" -n 65 --ignore-eos --threads 1 --json |
        python3 -c "
import json, sys
t = json.load(sys.stdin)['timing']; f1 = $BW1 * 1e9 / $ACTIVE_B; f1c = $BW1C * 1e9 / $ACTIVE_B
cpu_tok = 64 / t['decode_cpu_s']
print(f\"run $i: decode {t['decode_tokens_per_s']:.2f} tok/s ({100 * t['decode_tokens_per_s'] / f1:.0f}% of the 1-thread floor {f1:.2f}), \"
      f\"{cpu_tok:.2f} tok per CPU-second ({100 * cpu_tok / f1c:.0f}% of {f1c:.2f}); kernels {t.get('cpu_kernels', '?')}\")"
done

if [ "$CALLGRIND" = 1 ] && command -v valgrind >/dev/null; then
    echo "== callgrind, 1 thread (instructions; kernels as dispatched under valgrind's CPU)"
    ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$EMOE" run -m "$M" --prompt-ids "$1" -n "$2" \
               --ignore-eos --threads 1 --json 2>&1 >/dev/null | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'; }
    D2=$(ir 1 2); D6=$(ir 1 6)
    python3 -c "print(f'decode: {($D6 - $D2) / (4 * $ACTIVE_W):.3f} instructions per active weight ({$D6 - $D2} for 4 tokens)')"
    P8=$(seq -s, 1 8); P24=$(seq -s, 1 24)
    R8=$(ir "$P8" 1); R24=$(ir "$P24" 1)
    python3 -c "print(f'prefill: {($R24 - $R8) / (16 * $ACTIVE_W):.3f} instructions per token-weight ({$R24 - $R8} for 16 tokens)')"
fi
fi # COLD != only

if [ "$COLD" != 0 ]; then
    # The model's files are evicted from the page cache with posix_fadvise
    # DONTNEED (dd iflag=nocache count=0): no root, nothing else on the machine
    # loses its cache. Note: on a VM the host may still cache the blocks.
    command -v fincore >/dev/null || { echo "bench-cpu: COLD needs fincore (util-linux)" >&2; exit 2; }
    echo "== cold start (the model's files evicted from the page cache before each measurement), $REPS rounds"
    python3 -c "
print(f'bytes: the dense weights {$DENSE_B / 1e6:.0f} MB; the first token of a 1-token prompt needs {$NEED_B / 1e6:.0f} MB '
      f'(the dense weights + $TOPK experts x $NLAYERS layers, {($NEED_B - $DENSE_B) / 1e6:.0f} MB)')"
    evict() { for f in "$M"/*.safetensors; do dd if="$f" iflag=nocache count=0 status=none; done; }
    incache() { fincore -b -n -o RES "$M"/*.safetensors 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
    F=$(ls "$M"/*.safetensors | head -1)
    for i in $(seq 1 "$REPS"); do
        evict
        T0=$(date +%s.%N); dd if="$F" of=/dev/null bs=16M count=$((DENSE_B / 16777216 + 1)) iflag=direct 2>/dev/null; T1=$(date +%s.%N)
        evict
        # emoe serve: process start until /health answers 200 (ready = the dense
        # weights in memory) and the page cache then; then one completion (1
        # prompt id, 1 token) and the page cache after it.
        read -r S_READY S_READ1 S_FIRST S_READ2 < <(python3 - "$EMOE" "$M" "$THREADS" "$DIR/serve-cold.log" <<'EOF'
import http.client, json, re, subprocess, sys, time
emoe, model, threads, log = sys.argv[1:5]
def incache():
    out = subprocess.run(f"fincore -b -n -o RES {model}/*.safetensors", shell=True, capture_output=True, text=True).stdout
    return sum(int(x) for x in out.split())
t0 = time.monotonic()
p = subprocess.Popen([emoe, "serve", "-m", model, "--port", "0", "--set", f"engine.threads={threads}"],
                     stdout=subprocess.DEVNULL, stderr=open(log, "w"))
try:
    port = None
    while True:
        if p.poll() is not None:
            sys.exit(f"emoe serve exited ({p.returncode}); see {log}")
        if port is None:
            m = re.search(r"listening on [^ ]*:(\d+)", open(log).read())
            port = m and int(m.group(1))
        if port:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
        time.sleep(0.002)
    ready = time.monotonic() - t0
    read1 = incache()
    t1 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/completions", json.dumps({"prompt": [1], "max_tokens": 1, "ignore_eos": True}),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit(f"completion: HTTP {r.status}: {body[:200]}")
    first = time.monotonic() - t1
    print(f"{ready:.3f} {read1} {first:.3f} {incache()}")
finally:
    p.terminate()
    p.wait()
EOF
        )
        evict
        T2=$(date +%s.%N); "$EMOE" run -m "$M" --prompt-ids 1 -n 1 --ignore-eos --threads "$THREADS" --json >/dev/null; T3=$(date +%s.%N)
        READ=$(incache)
        python3 -c "
r = $T1 - $T0; s = $T3 - $T2; rate = ($DENSE_B / 16777216 + 1) * 16777216 / r; need = $NEED_B / rate
print(f'round $i: the dense weights read once (dd O_DIRECT, bs 16M): {r:.2f} s ({rate / 1e6:.0f} MB/s); '
      f'the first token\'s {$NEED_B / 1e6:.0f} MB at that rate: {need:.2f} s')
print(f'  emoe serve ready (process start to /health 200): {$S_READY:.2f} s = {$S_READY / r:.2f}x the dense read; '
      f'{$S_READ1 / 1e6:.0f} MB read by then ({$S_READ1 / $DENSE_B:.2f}x the dense bytes)')
print(f'  then the first completion (1 prompt id, max_tokens 1): {$S_FIRST:.2f} s; ready + first token {$S_READY + $S_FIRST:.2f} s '
      f'= {($S_READY + $S_FIRST) / need:.2f}x its bytes at the dd rate; {$S_READ2 / 1e6:.0f} MB read ({$S_READ2 / $NEED_B:.2f}x needed)')
print(f'  emoe run --prompt-ids 1 -n 1 (process wall time, open + first token): {s:.2f} s = {s / r:.2f}x the dense read, '
      f'{s / need:.2f}x its bytes at the dd rate; {$READ / 1e6:.0f} MB read ({$READ / $NEED_B:.2f}x needed)')"
    done
    evict
fi

#!/usr/bin/env bash
# server_quant.sh — quantized experts and the lowbit miss policy in `emoe serve`
# (synthesized model, no fixtures needed):
#  * cache.expert_format=q8 at 100%: requests are served (the q8 store is built
#    on first use), and a 25% exact run gives the same greedy ids as 100%;
#  * cache.miss_policy=lowbit at 25%: requests are served, /metrics counts
#    low-bit uses overall and per task (emoe_expert_cache_lowbit_uses_by_task_total)
#    and reports the low-bit copy's bytes.
cd "$(dirname "$0")/../.."
. tests/e2e/lib/server.bash
[ -x "$EMOE_BIN" ] || { echo "FAIL: no binary at $EMOE_BIN"; exit 1; }
command -v curl >/dev/null || { echo "SKIP: curl is not installed"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed (JSON checks)"; exit 77; }
MODEL=$TMPD/model
"$EMOE_BIN" mkmodel --preset tiny --layers 3 --experts 16 --top-k 2 --seed 7 -o "$MODEL" >/dev/null 2>&1 ||
    { echo "FAIL: emoe mkmodel"; exit 1; }
DRIVE="python3 tests/e2e/lib/drive_ids.py"

# 1. q8 experts, all resident.
start_server --set scheduler.max_running=4 --set cache.expert_format=q8 --set predictor.enabled=false
$DRIVE "$BASE" seq 6 >"$TMPD/q8all"
check "q8: 6 requests answered" [ "$(grep -c '^ok ' "$TMPD/q8all")" = 6 ]
check "q8 store built on first use" [ -f "$MODEL/experts.q8.emoe" ]
stop_server || bad "q8 server exit status"

# 2. q8 at 25%, exact: the same ids.
start_server --set scheduler.max_running=4 --set cache.expert_format=q8 --set cache.device_budget=25% --set predictor.enabled=false
$DRIVE "$BASE" seq 6 >"$TMPD/q8b"
check "q8 at 25% exact: ids == q8 all-resident" cmp -s "$TMPD/q8all" "$TMPD/q8b"
MISS=$(metric 'emoe_expert_cache_misses_total{tier="device"}')
check "q8 at 25%: device misses > 0" python3 -c "import sys; sys.exit(0 if float('${MISS:-0}') > 0 else 1)"
stop_server || bad "q8 25% server exit status"

# 3. lowbit at 25% (bf16 experts, a q4 copy resident).
start_server --set scheduler.max_running=4 --set cache.device_budget=25% --set cache.miss_policy=lowbit --set predictor.enabled=false
$DRIVE "$BASE" seq 6 alpha,beta >"$TMPD/lb"
check "lowbit: 6 requests answered" [ "$(grep -c '^ok ' "$TMPD/lb")" = 6 ]
USES=$(metric emoe_expert_cache_lowbit_uses_total)
BYTES=$(metric emoe_expert_cache_lowbit_bytes)
TA=$(metric 'emoe_expert_cache_lowbit_uses_by_task_total{task="alpha"}')
RA=$(metric 'emoe_expert_cache_lowbit_requests_by_task_total{task="alpha"}')
echo "lowbit uses $USES, bytes $BYTES, task alpha: $TA uses in $RA requests"
check "lowbit uses > 0" python3 -c "import sys; sys.exit(0 if float('${USES:-0}') > 0 else 1)"
check "lowbit bytes > 0" python3 -c "import sys; sys.exit(0 if float('${BYTES:-0}') > 0 else 1)"
check "per-task lowbit uses > 0 (alpha)" python3 -c "import sys; sys.exit(0 if float('${TA:-0}') > 0 and 0 < float('${RA:-0}') <= 3 else 1)"
stop_server || bad "lowbit server exit status"

[ "$FAILS" -eq 0 ] && echo "server quant e2e: q8 all-resident and at 25%, lowbit metrics"
exit $((FAILS > 0))

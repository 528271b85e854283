#!/usr/bin/env bash
# server_cache.sh — `emoe serve` through the tiered expert cache and the
# expert predictor, on a synthesized model (`emoe mkmodel`: 3 layers, 16
# experts, top-2; no fixtures needed):
#  * a 25% device budget in exact mode: greedy ids of 8 requests, sequential
#    and 8 in parallel, equal those of a server without a budget; /metrics
#    shows device misses > 0 and resident bytes <= budget bytes;
#  * the predictor on, tasks given in the body and in X-Emoe-Task, one task
#    marked insensitive: /metrics counts plans, re-plans (every plan_every),
#    prefetched experts, observed tokens and insensitive requests, and the
#    ids still equal the reference;
#  * substitute mode serves and counts substituted experts;
#  * fault isolation: an injected expert read error (hidden test flag
#    --inject-read-error) fails only the request whose step hit it, with an
#    OpenAI error object (non-streamed) or an SSE error event (streamed);
#    requests in flight at the same time and later ones complete with the
#    reference ids; a read error inside a batched step is retried request by
#    request, so nobody fails.
cd "$(dirname "$0")/../.."
. tests/e2e/lib/server.bash
[ -x "$EMOE_BIN" ] || { echo "FAIL: no binary at $EMOE_BIN"; exit 1; }
command -v curl >/dev/null || { echo "SKIP: curl is not installed"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed (JSON checks)"; exit 77; }
MODEL=$TMPD/model
STORE=$TMPD/experts.emoe
"$EMOE_BIN" mkmodel --preset tiny --layers 3 --experts 16 --top-k 2 --seed 5 -o "$MODEL" >/dev/null 2>&1 ||
    { echo "FAIL: emoe mkmodel"; exit 1; }
DRIVE="python3 tests/e2e/lib/drive_ids.py"
CACHE=(--set cache.device_budget=25% --set cache.store_path="$STORE")

# Reference: all experts resident (no cache).
start_server --set scheduler.max_running=8
$DRIVE "$BASE" seq 8 >"$TMPD/ref"
check "reference: 8 requests answered" [ "$(grep -c '^ok ' "$TMPD/ref")" = 8 ]
check "no cache metrics without a budget" [ -z "$(metric emoe_expert_cache_budget_bytes)" ]
stop_server || bad "reference server exit status"

# 1. 25% budget, exact, predictor off.
start_server --set scheduler.max_running=8 "${CACHE[@]}" --set predictor.enabled=false
check "start-up log reports the budget" grep -q 'expert cache: device budget 25% = [0-9]* bytes (12 slots' "$TMPD/server.log"
$DRIVE "$BASE" seq 8 >"$TMPD/seq"
check "25% exact: sequential ids == no-budget ids" cmp -s "$TMPD/ref" "$TMPD/seq"
$DRIVE "$BASE" par 8 >"$TMPD/par"
check "25% exact: 8 parallel ids == no-budget ids" cmp -s "$TMPD/ref" "$TMPD/par"
MISS=$(metric 'emoe_expert_cache_misses_total{tier="device"}')
RES=$(metric emoe_expert_cache_resident_bytes)
PEAK=$(metric emoe_expert_cache_peak_resident_bytes)
BUD=$(metric emoe_expert_cache_budget_bytes)
echo "device misses $MISS, resident $RES, peak $PEAK, budget $BUD bytes"
check "device misses > 0" python3 -c "import sys; sys.exit(0 if float('${MISS:-0}') > 0 else 1)"
check "0 < peak resident <= budget" python3 -c "import sys; sys.exit(0 if 0 < float('${PEAK:-0}') <= float('${BUD:-0}') and float('${RES:-0}') <= float('${BUD:-0}') else 1)"
check "bytes loaded > 0" python3 -c "import sys; sys.exit(0 if float('$(metric emoe_expert_cache_bytes_loaded_total)' or 0) > 0 else 1)"
check "load latency histogram counts every load" [ "$(metric emoe_expert_cache_load_latency_seconds_count)" = "$(metric emoe_expert_cache_loads_total)" ]
check "no predictor metrics when it is off" [ -z "$(metric emoe_predictor_plans_total)" ]
stop_server || bad "cache server exit status"

# 2. Predictor on: plan every 4 requests of a task; task b insensitive.
start_server --set scheduler.max_running=8 "${CACHE[@]}" --set predictor.plan_every=4 --set predictor.insensitive_tasks=b
check "start-up log reports the predictor" grep -q 'expert predictor: plans of 6 of 12 slots, re-planned every 4' "$TMPD/server.log"
# 8 sequential requests of task a: the planner runs for request 1 (nothing
# known: empty global plan), request 2 (a's first statistics) and request 6
# (4 requests of a folded since), i.e. 3 times; the other 5 reuse a plan.
$DRIVE "$BASE" seq 8 a >"$TMPD/pa"
check "task a: ids == no-budget ids" cmp -s "$TMPD/ref" "$TMPD/pa"
check "task a: the planner ran 3 times for 8 requests (plan_every 4)" [ "$(metric emoe_predictor_plans_computed_total)" = 3 ]
check "task a: 8 plans taken" [ "$(metric emoe_predictor_plans_total)" = 8 ]
$DRIVE "$BASE" seq 8 a,h:c,b,a >"$TMPD/pseq"
check "predictor: sequential ids == no-budget ids" cmp -s "$TMPD/ref" "$TMPD/pseq"
$DRIVE "$BASE" par 8 a,h:c,b,a >"$TMPD/ppar"
check "predictor: 8 parallel ids == no-budget ids" cmp -s "$TMPD/ref" "$TMPD/ppar"
$DRIVE "$BASE" seq 8 >"$TMPD/pdef"
check "predictor: requests without a task (task default) == no-budget ids" cmp -s "$TMPD/ref" "$TMPD/pdef"
M=$(curl -s -m 10 "$BASE/metrics")
echo "$M" | grep '^emoe_predictor_'
val() { echo "$M" | awk -v n="$1" '$1==n {print $2}'; }
check "32 plans taken (one per request)" [ "$(val emoe_predictor_plans_total)" = 32 ]
check "32 requests folded" [ "$(val emoe_predictor_requests_total)" = 32 ]
check "planner ran fewer times than plans were taken" \
    python3 -c "import sys; c=int('$(val emoe_predictor_plans_computed_total)'); sys.exit(0 if 3 < c < 32 else 1)"
check "experts prefetched > 0" python3 -c "import sys; sys.exit(0 if int('$(val emoe_predictor_prefetched_experts_total)' or 0) > 0 else 1)"
# Tokens routed: per request, the prompt plus 11 decode steps (the 12th token needs no step).
TOK=$(python3 -c "print(4*sum(3 + (i*5) % 17 + 11 for i in range(8)))")
check "observed tokens == prompt + decode tokens of 32 requests ($TOK)" [ "$(val emoe_predictor_observed_tokens_total)" = "$TOK" ]
check "4 tasks known (a, c, b, default)" [ "$(val emoe_predictor_tasks)" = 4 ]
check "insensitive requests counted (b: 4 of 24)" [ "$(val emoe_predictor_insensitive_requests_total)" = 4 ]
check "no predictor errors" [ "$(val emoe_predictor_errors_total)" = 0 ]
# issue 11: prefetch loads by source, lookahead accuracy, per-task hit rate
for src in engine plan queue lookahead; do
    check "prefetch loads by source: $src present" grep -q "^emoe_expert_cache_prefetch_loads_total{source=\"$src\"} [0-9]" <<<"$M"
done
check "lookahead loads > 0" python3 -c "import sys; sys.exit(0 if int('$(val 'emoe_expert_cache_prefetch_loads_total{source="lookahead"}')' or 0) > 0 else 1)"
check "lookahead accuracy in (0, 1]" python3 -c "import sys; a=float('$(val emoe_predictor_lookahead_accuracy)' or -1); sys.exit(0 if 0 < a <= 1 else 1)"
check "per-task hit rate of task a in [0, 1]" python3 -c "import sys; a=float('$(val 'emoe_expert_cache_task_hit_rate{task="a"}')' or -1); sys.exit(0 if 0 <= a <= 1 else 1)"
check "exact mode: nothing substituted" [ "$(val emoe_expert_cache_substituted_experts_total)" = 0 ]
stop_server || bad "predictor server exit status"

# Substitute mode: requests complete and the substitutions are counted.
start_server --set scheduler.max_running=8 "${CACHE[@]}" --set cache.miss_policy=substitute
$DRIVE "$BASE" par 8 a >"$TMPD/sub"
check "substitute: 8 parallel requests answered" [ "$(grep -c '^ok ' "$TMPD/sub")" = 8 ]
check "substitute: substituted experts counted" \
    python3 -c "import sys; sys.exit(0 if float('$(metric emoe_expert_cache_substituted_experts_total)' or 0) > 0 else 1)"
check "substitute: the log names the policy" grep -q 'miss policy substitute' "$TMPD/server.log"
stop_server || bad "substitute server exit status"

# 3a. Fault isolation, requests queued behind the failing one: max_running 1,
# read #1 fails, so the first admitted request's first step fails alone.
start_server --set scheduler.max_running=1 "${CACHE[@]}" --set predictor.enabled=false --inject-read-error 1
$DRIVE "$BASE" par 4 >"$TMPD/f1"
cat "$TMPD/f1"
check "exactly one of 4 concurrent requests failed" [ "$(grep -c '^err ' "$TMPD/f1")" = 1 ]
check "it failed with 500 naming the I/O error" grep -q '^err 500 generation failed: .*Input/output error' "$TMPD/f1"
check "the 3 others completed with the reference ids" \
    python3 -c "
import sys
ref = open('$TMPD/ref').read().split('\n'); got = open('$TMPD/f1').read().split('\n')
sys.exit(0 if sum(1 for i in range(4) if got[i].startswith('ok ') and got[i] == ref[i]) == 3 else 1)"
$DRIVE "$BASE" seq 8 >"$TMPD/f1b"
check "later requests succeed with the reference ids" cmp -s "$TMPD/ref" "$TMPD/f1b"
check "metrics: one request finished with an error" [ "$(metric 'emoe_requests_finished_total{reason="error"}')" = 1 ]
check "metrics: one failed store read" [ "$(metric 'emoe_expert_cache_misses_total{tier="store"}')" = 1 ]
stop_server || bad "fault server exit status"

# 3b. Streamed: the error arrives as an SSE error event, then [DONE].
start_server "${CACHE[@]}" --set predictor.enabled=false --inject-read-error 1
curl -s -N -m 30 -H 'Content-Type: application/json' \
    -d '{"prompt":[5,6,7],"max_tokens":4,"stream":true}' "$BASE/v1/completions" >"$TMPD/sse"
check "stream: an OpenAI error event" grep -q '^data: {"error":{"message":"generation failed: .*Input/output error' "$TMPD/sse"
check "stream: ends with [DONE]" [ "$(grep '^data: ' "$TMPD/sse" | tail -n1)" = "data: [DONE]" ]
# issue 14: a stream that fails after its 200 header counts as an error.
check "stream: the failed stream counts as 5xx in emoe_http_responses_total" wait_metric 'emoe_http_responses_total{code="5xx"}' 1 5
$DRIVE "$BASE" par 8 >"$TMPD/f2"
check "after the stream's error, 8 parallel requests == reference" cmp -s "$TMPD/ref" "$TMPD/f2"
stop_server || bad "stream fault server exit status"

# 3c. A read error inside a batched step: the step is retried request by
# request, the expert is read again, and every request completes (a solo step
# hitting it would fail only its request).
start_server --set scheduler.max_running=8 "${CACHE[@]}" --set predictor.enabled=false --inject-read-error 60
$DRIVE "$BASE" par 8 >"$TMPD/f3"
N_ERR=$(grep -c '^err ' "$TMPD/f3")
check "batched fault: at most one request failed" [ "$N_ERR" -le 1 ]
check "batched fault: every completed request has the reference ids" \
    python3 -c "
import sys
ref = open('$TMPD/ref').read().split('\n'); got = open('$TMPD/f3').read().split('\n')
sys.exit(0 if all(got[i] == ref[i] or got[i].startswith('err 500 generation failed') for i in range(8)) else 1)"
check "batched fault: the injected read failed" [ "$(metric 'emoe_expert_cache_misses_total{tier="store"}')" = 1 ]
$DRIVE "$BASE" seq 8 >"$TMPD/f3b"
check "batched fault: later requests == reference" cmp -s "$TMPD/ref" "$TMPD/f3b"
stop_server || bad "batched fault server exit status"

# The flag is refused without a cache budget.
OUT=$(timeout -s KILL 20 "$EMOE_BIN" serve -m "$MODEL" --host 127.0.0.1 --port 0 --inject-read-error 1 2>&1 </dev/null)
check "--inject-read-error without a budget is refused" grep -q 'inject-read-error needs a \[cache\] device_budget' <<<"$OUT"
finish

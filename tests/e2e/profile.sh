#!/usr/bin/env bash
# profile.sh — `emoe profile` and serving with a task profile, on the trained
# tiny-moe-7task model (skips without ../shared/models/tiny-moe-7task):
#  * `emoe profile` (a quick setting: 2 documents of 65 tokens per task) writes
#    a profile the loader accepts; its two least sensitive tasks are the two
#    least sensitive of reference_perplexity.json (ppl with each layer limited
#    to the task's top 25% of experts / ppl with all experts), the tasks the
#    default threshold lets substitute;
#  * `emoe serve` at a 25% budget with the profile: the exact (sensitive)
#    tasks give the ids of an all-resident server, the insensitive ones
#    substitute (counted per task), the exact ones never;
#  * a profile that is missing, malformed or ranks an unknown task stops
#    the server at start with a message naming the file; on SIGHUP a bad
#    profile is refused and the running one kept (the server keeps serving).
cd "$(dirname "$0")/../.."
export EMOE_TEST_MODEL=${EMOE_SHARED:-$PWD/../shared}/models/tiny-moe-7task
. tests/e2e/lib/server.bash
[ -f "$MODEL/config.json" ] && [ -f "$MODEL/eval_docs.jsonl" ] || { echo "SKIP: needs ../shared/models/tiny-moe-7task"; exit 77; }
need_model
PROMPTS=$EMOE_SHARED/traces/tiny-moe-7task.prompts.jsonl
[ -f "$PROMPTS" ] || { echo "SKIP: needs ../shared/traces/tiny-moe-7task.prompts.jsonl"; exit 77; }
PROF=$TMPD/profile.json
"$EMOE_BIN" profile -m "$MODEL" --docs "$MODEL/eval_docs.jsonl" --max-docs 2 --max-len 65 --gen 8 --threads 1 \
    -o "$PROF" 2>"$TMPD/profile.log"
check "emoe profile exits 0" [ $? = 0 ]
cat "$TMPD/profile.log"
check "profile: 7 tasks, ranked" python3 -c "
import json; p = json.load(open('$PROF'))
assert p['format'] == 'emoe-task-profile' and len(p['tasks']) == 7 and sorted(p['ranking']) == sorted(p['tasks'])"
check "profile: the two least sensitive tasks are the reference's" python3 -c "
import json
p = json.load(open('$PROF')); r = json.load(open('$MODEL/reference_perplexity.json'))['tasks']
ref = sorted(r, key=lambda t: r[t]['ppl_task_top25pct'] / r[t]['ppl_all_experts'])
print('profile', p['ranking']); print('reference', ref)
assert set(p['ranking'][:2]) == set(ref[:2])
subst = sorted(t for t in p['tasks'] if p['tasks'][t]['miss_policy'] == 'substitute')
print('substitute', subst); assert subst == sorted(ref[:2])"
EXACT=$(python3 -c "import json; p=json.load(open('$PROF')); print(' '.join(t for t in p['tasks'] if p['tasks'][t]['miss_policy']=='exact'))")
SUBST=$(python3 -c "import json; p=json.load(open('$PROF')); print(' '.join(t for t in p['tasks'] if p['tasks'][t]['miss_policy']=='substitute'))")

drive() { # out file: one prompt per task, 4 at a time; "task ids" lines
    python3 - "$BASE" "$PROMPTS" "$1" <<'PY'
import json, sys, threading, urllib.request
base, path, out = sys.argv[1:4]
ps, seen = [], set()
for l in open(path):
    p = json.loads(l)
    if p["task"] not in seen: seen.add(p["task"]); ps.append(p)
res = {}
def go(p):
    body = {"prompt": p["prompt"], "max_tokens": 12, "temperature": 0, "ignore_eos": True, "return_token_ids": True, "task": p["task"]}
    req = urllib.request.Request(base + "/v1/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as f: res[p["task"]] = json.loads(f.read())["choices"][0]["token_ids"]
for i in range(0, len(ps), 4):
    th = [threading.Thread(target=go, args=(p,)) for p in ps[i:i + 4]]
    for t in th: t.start()
    for t in th: t.join()
with open(out, "w") as f:
    for t in sorted(res): f.write("%s %s\n" % (t, res[t]))
PY
}
start_server --set scheduler.max_running=4
drive "$TMPD/ref"
stop_server || bad "reference server exit status"
STORE=(--set cache.store_path="$TMPD/experts.emoe" --set cache.device_budget=25%)
start_server --set scheduler.max_running=4 "${STORE[@]}" --set predictor.task_profile="$PROF"
check "serve logs the per-task policy" grep -q 'miss policy per task (task profile)' "$TMPD/server.log"
drive "$TMPD/prof"
for t in $EXACT; do
    check "exact task $t: ids == all-resident ids" [ "$(grep "^$t " "$TMPD/ref")" = "$(grep "^$t " "$TMPD/prof")" ]
    check "exact task $t: nothing substituted" [ "$(metric "emoe_expert_cache_task_substituted_experts_total{task=\"$t\"}")" = 0 ]
done
NS=0
for t in $SUBST; do NS=$((NS + $(metric "emoe_expert_cache_task_substituted_experts_total{task=\"$t\"}"))); done
echo "substituted experts in the insensitive tasks: $NS"
check "insensitive tasks substituted" [ "$NS" -gt 0 ]
check "the global counter counts the same substitutions" [ "$(metric emoe_expert_cache_substituted_experts_total)" = "$NS" ]
# SIGHUP with a malformed profile: refused, old one kept, still serving
cp "$PROF" "$TMPD/good.json"
echo '{"format": "emoe-task-profile",' >"$PROF"
kill -HUP "$SRV_PID"
for i in $(seq 1 50); do grep -q 'reload failed' "$TMPD/server.log" && break; sleep 0.1; done
check "SIGHUP with a malformed profile: reload refused, naming the file" grep -q "reload failed.*profile.json" "$TMPD/server.log"
drive "$TMPD/prof2"
for t in $EXACT; do
    check "after the refused reload, $t still exact" [ "$(grep "^$t " "$TMPD/ref")" = "$(grep "^$t " "$TMPD/prof2")" ]
done
stop_server || bad "profile server exit status"
# bad profiles at start
echo '{"format": "emoe-task-profile",' >"$TMPD/bad.json"
python3 -c "
import json; p = json.load(open('$TMPD/good.json')); p['ranking'][0] = 'no_such_task'
json.dump(p, open('$TMPD/unknown.json', 'w'))"
for f in missing.json bad.json unknown.json; do
    OUT=$(timeout -s KILL 60 "$EMOE_BIN" serve -m "$MODEL" --host 127.0.0.1 --port 0 "${STORE[@]}" \
        --set predictor.task_profile="$TMPD/$f" 2>&1 </dev/null)
    RC=$?
    check "$f: serve refuses to start" [ $RC != 0 ] && [ $RC != 137 ]
    check "$f: the message names the file" grep -q "task profile $TMPD/$f" <<<"$OUT"
done
grep -q "unknown task \"no_such_task\"" <<<"$OUT" && ok "unknown task named" || bad "unknown task named"
[ $FAILS = 0 ]

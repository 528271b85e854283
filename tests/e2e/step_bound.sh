#!/usr/bin/env bash
# tests/e2e/step_bound.sh — tools/step_bound.py on hand-checked acquire logs:
# a cycle of 3 experts through 2 slots (LRU misses all 6; Belady OPT 4: after
# the compulsory 3 it evicts the expert used furthest ahead), and a bad log.
set -u
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
printf '0:1 0:2 0:3\n0:1 0:2 0:3\n' >"$T/acq.log"
out=$(python3 tools/step_bound.py "$T/acq.log" 2 4096 1000) || { echo "FAIL: step_bound.py exited $?"; exit 1; }
echo "$out"
grep -q 'Belady OPT 4 (2.0 per step)  LRU 6 (3.0 per step)  compulsory 3' <<<"$out" || { echo "FAIL: OPT/LRU counts"; fail=1; }
grep -q 'steps 2  acquires 6  distinct experts per step: mean 3.0, max 3, steps needing more than 2: 2' <<<"$out" ||
    { echo "FAIL: step figures"; fail=1; }
grep -q 'disk time at 1000 MB/s, 4096-byte extents: OPT 0.00 s' <<<"$out" || { echo "FAIL: disk time line"; fail=1; }
# a resident set large enough: only the compulsory loads
python3 tools/step_bound.py "$T/acq.log" 3 | grep -q 'Belady OPT 3 .* LRU 3 ' || { echo "FAIL: 3 slots"; fail=1; }
# the visit order on two layers, 2 slots (checked by hand): layer 1 keeps 5 (used every
# step, one layer away) and layer 0 alternates 1 and 2 through the other slot: 5 loads
printf '0:1 1:5\n0:2 1:5\n0:1 1:5\n0:2 1:5\n' >"$T/acq2.log"
python3 tools/step_bound.py "$T/acq2.log" 2 | grep -q 'visit order (demand paging) 5 (1.2 per step)  told each layer.s next visit 5 ' ||
    { echo "FAIL: visit order"; fail=1; }
python3 tools/step_bound.py 2>/dev/null && { echo "FAIL: no arguments accepted"; fail=1; }
[ $fail = 0 ] && echo "step_bound: ok"
exit $fail

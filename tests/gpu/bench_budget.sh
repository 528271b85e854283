#!/usr/bin/env bash
# emoe bench on the cuda backend through the expert cache (make test-gpu-emu,
# and make test-gpu on a device): --budget sizes the cache's device tier
# (its GPU slots are the expert memory, the backend keeps no slots of its
# own); at 100% every expert is loaded first and decode is device-routed with
# CUDA graph replays; at 25% it routes on the host and evicts; graphs off
# replays none. The greedy tokens are the same in every configuration. Then
# q8/q4 expert stores (packed GPU slots) at 100% and 25%, and the lowbit
# miss policy (its low-bit copy in GPU memory).
set -u
cd "$(dirname "$0")/../.." || exit 2
BIN=${EMOE_BIN:-build/emoe}
SHARED=${EMOE_SHARED:-$PWD/../shared}
M=$SHARED/fixtures/models/tiny-mixtral
if [ ! -d "$M" ]; then echo "SKIP bench --budget on cuda: $M absent"; exit 0; fi
command -v jq >/dev/null || { echo "SKIP bench --budget on cuda: no jq"; exit 0; }
TMPD=$(mktemp -d)
trap 'rm -rf "$TMPD"' EXIT
fails=0
bench() { "$BIN" bench -m "$M" --backend cuda --batch 3 --prompt-len 4 --gen 5 --json "$@" 2>>"$TMPD/err.log"; }
OWN=$(bench)
T100=$(bench --budget 100% --store "$TMPD/x.store")
T25=$(bench --budget 25% --store "$TMPD/x.store")
NOG=$(bench --cuda-graphs off)
check() { # name, jq filter over the JSON, JSON
    if jq -e "$2" >/dev/null 2>&1 <<<"$3"; then echo "PASS $1"; else echo "FAIL $1: $(jq -c "$2" <<<"$3" 2>&1 | head -c 300)"; fails=$((fails + 1)); fi
}
check "own slots: device-routed, graph replays" '.steps_device_routed > 0 and .graph_launches > 0 and .expert_cache.slots > 0' "$OWN"
check "budget 100%: the cache's GPU slots, preloaded, device-routed + graphs on every step" \
    '.expert_cache.slots == 0 and .cache.device_slots > 0 and .cache.loads > 0 and .cache.evictions == 0 and .steps_device_routed == .decode_steps + 3 and .graph_launches == .decode_steps + 1' "$T100"
check "budget 25%: host routing, evictions" '.expert_cache.slots == 0 and .steps_device_routed == 0 and .cache.evictions > 0' "$T25"
check "graphs off: no replay" '.graph_launches == 0 and .steps_device_routed > 0' "$NOG"
g() { jq -c .generated <<<"$1" 2>/dev/null; }
if [ -n "$(g "$OWN")" ] && [ "$(g "$OWN")" = "$(g "$T100")" ] && [ "$(g "$OWN")" = "$(g "$T25")" ] && [ "$(g "$OWN")" = "$(g "$NOG")" ]; then
    echo "PASS bench --budget: greedy tokens equal (own slots, 100%, 25%, graphs off)"
else
    echo "FAIL bench --budget: greedy tokens differ: $(g "$OWN") / $(g "$T100") / $(g "$T25") / $(g "$NOG")"; fails=$((fails + 1))
    tail -5 "$TMPD/err.log"
fi
# q8/q4 experts (docs/quant.md): the cache's GPU slots hold the packed
# extents; 100% device-routed with graphs, 25% host-routed and evicting, the
# same greedy tokens at both budgets.
for f in q8 q4; do
    Q100=$(bench --expert-format $f --budget 100% --store "$TMPD/x.$f.store")
    Q25=$(bench --expert-format $f --budget 25% --store "$TMPD/x.$f.store")
    check "$f budget 100%: packed GPU slots, device-routed + graphs" \
        '.expert_cache.slots == 0 and .cache.device_slots > 0 and .cache.evictions == 0 and .steps_device_routed == .decode_steps + 3 and .graph_launches == .decode_steps + 1' "$Q100"
    check "$f budget 25%: host routing, evictions" '.expert_cache.slots == 0 and .steps_device_routed == 0 and .cache.evictions > 0' "$Q25"
    if [ -n "$(g "$Q100")" ] && [ "$(g "$Q100")" = "$(g "$Q25")" ]; then echo "PASS $f: greedy tokens equal at 100% and 25%"
    else echo "FAIL $f: greedy tokens differ: $(g "$Q100") / $(g "$Q25")"; fails=$((fails + 1)); fi
done
# lowbit: the low-bit copy (DIR/experts.q4.emoe, built on first use: a copy
# of the model folder) in GPU memory serves the misses.
mkdir -p "$TMPD/m" && ln -s "$M"/* "$TMPD/m/"
if LB=$("$BIN" run -m "$TMPD/m" --backend cuda --prompt-ids 1,2,3,4,5 -n 4 --budget 25% --miss-policy lowbit \
        --store "$TMPD/x.store" --json 2>>"$TMPD/err.log"); then
    check "lowbit at 25%: low-bit uses, GPU slots" '([.. | .lowbit_uses? // empty] | max) > 0' "$LB"
else
    echo "FAIL lowbit on cuda: $(tail -2 "$TMPD/err.log")"; fails=$((fails + 1))
fi
exit $((fails > 0))

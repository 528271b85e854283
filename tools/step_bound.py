#!/usr/bin/env python3
"""step_bound.py ACQUIRE_LOG SLOTS [EXTENT_BYTES] [DISK_MBPS]

The fewest expert loads any eviction order could do for the acquire sequence
`emoe serve` recorded with `[predictor] acquire_log = PATH` (one line per
engine step, `layer:expert` in acquire order), with SLOTS device slots:
Belady's OPT (evict the resident expert whose next acquire is farthest; a
demand-paging optimum: prefetching can hide loads, never remove them), beside
LRU on the same sequence, per-step distinct experts, and, given the extent size
and a measured disk throughput (tests/bench/bench_loader.c), the disk time those
loads take at least. Also the visit order of `emoe serve` ([predictor]
evict_order = visit, scheduler/reuse.c) as demand paging on the same sequence
(the expert whose next use is expected last: layers to its layer's next visit
+ L (1 - P) / P, P an EWMA, rate 0.25, over its layer's visits of "used"),
and the same order told which experts each layer's next visit really uses
(P = 1 or 0): how much better prediction of the next visit could give.
Pure Python, no dependencies."""
import sys
from collections import OrderedDict

def visit_order(steps, S, oracle, alpha=0.25):
    # per step, per layer: the distinct experts in acquire order
    per = []
    for st in steps:
        d = {}
        for a in st:
            l, e = a.split(":")
            d.setdefault(int(l), [])
            if int(e) not in d[int(l)]:
                d[int(l)].append(int(e))
        per.append(d)
    L = 1 + max((l for d in per for l in d), default=0)
    p = {}
    res = set()
    loads = 0
    for s, d in enumerate(per):
        for l in range(L):
            A = d.get(l, [])
            if not A:
                continue
            for e in A:
                if (l, e) in res:
                    continue
                loads += 1
                if len(res) >= S:
                    best, bk = None, None
                    # the visit's own experts only when nothing else is left (a layer wider than the cache)
                    mine = all(m == l and x in A for (m, x) in res)
                    for (m, x) in sorted(res):
                        if m == l and x in A and not mine:
                            continue
                        dist = (m - l) % L or L
                        if oracle:  # the next visit of layer m: this step if m > l, else the next
                            ns = s if m > l else s + 1
                            P = 1.0 if ns < len(per) and x in per[ns].get(m, []) else 0.0
                        else:
                            P = p.get((m, x), 0.0)
                        P = max(P, 1e-3)
                        k = dist + L * (1 - P) / P
                        if bk is None or k > bk:
                            bk, best = k, (m, x)
                    res.discard(best)
                res.add((l, e))
            used = set(A)
            for x in set(x for (m, x) in p if m == l) | used:
                p[(l, x)] = p.get((l, x), 0.0) * (1 - alpha) + (alpha if x in used else 0.0)
    return loads

def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    steps = [l.split() for l in open(sys.argv[1]) if l.strip()]
    S = int(sys.argv[2])
    ext = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    mbps = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    seq = [a for st in steps for a in st]
    n = len(seq)
    # next use of each position
    nxt = [n] * n
    last = {}
    for i in range(n - 1, -1, -1):
        nxt[i] = last.get(seq[i], n)
        last[seq[i]] = i
    # OPT: resident -> next use; evict max next use (lazy heap)
    import heapq
    res = {}
    heap = []
    opt = 0
    for i, a in enumerate(seq):
        if a in res:
            res[a] = nxt[i]
            heapq.heappush(heap, (-nxt[i], a))
            continue
        opt += 1
        if len(res) >= S:
            while True:
                nu, v = heapq.heappop(heap)
                if v in res and res[v] == -nu:
                    del res[v]
                    break
        res[a] = nxt[i]
        heapq.heappush(heap, (-nxt[i], a))
    lru = OrderedDict()
    nl = 0
    for a in seq:
        if a in lru:
            lru.move_to_end(a)
            continue
        nl += 1
        if len(lru) >= S:
            lru.popitem(last=False)
        lru[a] = 1
    vis = visit_order(steps, S, False)
    orc = visit_order(steps, S, True)
    distinct = [len(set(st)) for st in steps]
    big = [d for d in distinct if d > S]
    print("steps %d  acquires %d  distinct experts per step: mean %.1f, max %d, steps needing more than %d: %d"
          % (len(steps), n, sum(distinct) / max(1, len(steps)), max(distinct or [0]), S, len(big)))
    print("loads at %d slots: Belady OPT %d (%.1f per step)  LRU %d (%.1f per step)  compulsory %d"
          % (S, opt, opt / max(1, len(steps)), nl, nl / max(1, len(steps)), len(last)))
    print("visit order (demand paging) %d (%.1f per step)  told each layer's next visit %d (%.1f per step)"
          % (vis, vis / max(1, len(steps)), orc, orc / max(1, len(steps))))
    if ext and mbps:
        print("disk time at %.0f MB/s, %d-byte extents: OPT %.2f s  LRU %.2f s"
              % (mbps, ext, opt * ext / mbps / 1e6, nl * ext / mbps / 1e6))

main()

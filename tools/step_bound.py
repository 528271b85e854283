#!/usr/bin/env python3
"""step_bound.py ACQUIRE_LOG SLOTS [EXTENT_BYTES] [DISK_MBPS]

The fewest expert loads any eviction order could do for the acquire sequence
`emoe serve` recorded with `[predictor] acquire_log = PATH` (one line per
engine step, `layer:expert` in acquire order), with SLOTS device slots:
Belady's OPT (evict the resident expert whose next acquire is farthest; a
demand-paging optimum: prefetching can hide loads, never remove them), beside
LRU on the same sequence, per-step distinct experts, and, given the extent size
and a measured disk throughput (tests/bench/bench_loader.c), the disk time those
loads take at least. Pure Python, no dependencies."""
import sys
from collections import OrderedDict

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
    distinct = [len(set(st)) for st in steps]
    big = [d for d in distinct if d > S]
    print("steps %d  acquires %d  distinct experts per step: mean %.1f, max %d, steps needing more than %d: %d"
          % (len(steps), n, sum(distinct) / max(1, len(steps)), max(distinct or [0]), S, len(big)))
    print("loads at %d slots: Belady OPT %d (%.1f per step)  LRU %d (%.1f per step)  compulsory %d"
          % (S, opt, opt / max(1, len(steps)), nl, nl / max(1, len(steps)), len(last)))
    if ext and mbps:
        print("disk time at %.0f MB/s, %d-byte extents: OPT %.2f s  LRU %.2f s"
              % (mbps, ext, opt * ext / mbps / 1e6, nl * ext / mbps / 1e6))

main()

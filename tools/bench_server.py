# bench_server.py — N concurrent non-streamed completions against a running
# emoe server; prints aggregate and per-request decode throughput.
# Usage: python3 tools/bench_server.py http://127.0.0.1:PORT N MAX_TOKENS
import json, sys, time, threading, urllib.request
base, n, ntok = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def one(i, out):
    body = {"prompt": [1 + i, 2, 3, 4, 5, 6, 7, 8], "max_tokens": ntok, "ignore_eos": True}
    req = urllib.request.Request(base + "/v1/completions", data=json.dumps(body).encode())
    t0 = time.time()
    with urllib.request.urlopen(req, timeout=300) as r:
        d = json.loads(r.read())
    out[i] = (d["usage"]["completion_tokens"], time.time() - t0)
out = [None] * n
t0 = time.time()
th = [threading.Thread(target=one, args=(i, out)) for i in range(n)]
[t.start() for t in th]; [t.join() for t in th]
wall = time.time() - t0
tot = sum(o[0] for o in out)
print(f"n={n} tokens={tot} wall={wall:.2f}s aggregate={tot/wall:.1f} tok/s per-request={ntok/ (sum(o[1] for o in out)/n):.1f} tok/s")

#!/usr/bin/env python3
"""drive_ids.py BASE MODE N [TASKS] — sends N greedy completion requests with
token-id prompts (fixed, different lengths) to an emoe server and prints one
line per request, in request order:
    ok <json list of generated ids>
    err <http status> <error message>
MODE: seq (one after another) or par (all at once, one thread each).
TASKS: optional comma-separated task names cycled over the requests; a name
starting with 'h:' is sent as the X-Emoe-Task header instead of the body's
'task' field. Timeouts are bounded (60 s a request)."""
import json
import sys
import threading
import urllib.error
import urllib.request

base, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
tasks = sys.argv[4].split(",") if len(sys.argv) > 4 and sys.argv[4] else []


def prompt(i):
    return [(i * 37 + j * 11) % 500 + 3 for j in range(3 + (i * 5) % 17)]


def one(i, out):
    body = {"prompt": prompt(i % 8), "max_tokens": 12, "temperature": 0, "ignore_eos": True, "return_token_ids": True}
    headers = {"Content-Type": "application/json"}
    if tasks:
        t = tasks[i % len(tasks)]
        if t.startswith("h:"):
            headers["X-Emoe-Task"] = t[2:]
        else:
            body["task"] = t
    req = urllib.request.Request(base + "/v1/completions", data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            d = json.loads(r.read().decode())
            out[i] = "ok " + json.dumps(d["choices"][0]["token_ids"], separators=(",", ":"))
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read().decode())["error"]["message"]
        except Exception:  # noqa: BLE001 - any unparsable body is reported as such
            msg = "(no OpenAI error object)"
        out[i] = "err %d %s" % (e.code, msg)
    except Exception as e:  # noqa: BLE001
        out[i] = "err 0 %s" % e


out = [None] * n
if mode == "seq":
    for i in range(n):
        one(i, out)
else:
    th = [threading.Thread(target=one, args=(i, out)) for i in range(n)]
    for t in th:
        t.start()
    for t in th:
        t.join(90)
for line in out:
    print(line if line is not None else "err 0 no answer")

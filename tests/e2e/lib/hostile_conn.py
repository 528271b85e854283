#!/usr/bin/env python3
"""hostile_conn.py PORT — connection-exhaustion and framing checks against a
running emoe server (issue 14). The server must be started with
max_connections=64, max_connections_per_ip=16, request_read_timeout=2s,
keepalive_timeout=1s, connection_timeout=30s (so that libmicrohttpd's own
idle timeout, reset by every byte, cannot be what closes the sockets).

Prints one "ok"/"FAIL" line per check; exit status 1 if any failed. Every
wait is bounded; the bounds are several times the configured timeouts."""
import socket
import sys
import time

PORT = int(sys.argv[1])
fails = 0


def check(name, cond, detail=""):
    global fails
    print(("ok   " if cond else "FAIL ") + name + ((" — " + detail) if detail and not cond else ""))
    if not cond:
        fails += 1


def connect(src):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", PORT))
    return s


def health(src, timeout=3.0):
    """GET /health from source address src; the status line or an error."""
    try:
        s = connect(src)
        s.settimeout(timeout)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while b"\r\n" not in data:
            b = s.recv(4096)
            if not b:
                break
            data += b
        s.close()
        return data.split(b"\r\n")[0].decode("latin-1") or "closed without answer"
    except OSError as e:
        return "error: %s" % e


def served_within(src, seconds):
    t0 = time.time()
    last = ""
    while time.time() - t0 < seconds:
        last = health(src)
        if " 200 " in last:
            return True, last
        time.sleep(0.2)
    return False, last


def is_closed(s):
    """True when the peer closed s (EOF or reset), without blocking."""
    s.setblocking(False)
    try:
        b = s.recv(4096)
        while b:
            b = s.recv(4096)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def dribble(socks, seconds, stop_when_all_closed=True):
    """Sends one header byte per socket every 0.3 s; returns when all are closed or after seconds."""
    t0 = time.time()
    while time.time() - t0 < seconds:
        alive = 0
        for s in socks:
            try:
                s.send(b"a")
                alive += 1
            except OSError:
                pass
        if stop_when_all_closed and alive == 0:
            break
        time.sleep(0.3)


def open_dribblers(sources, per_source):
    socks = []
    for src in sources:
        for _ in range(per_source):
            try:
                s = connect(src)
                s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: ")
                socks.append(s)
            except OSError:
                pass
    return socks


def raw_status(req):
    s = connect("127.0.0.1")
    s.sendall(req)
    data = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
            if b"\r\n\r\n" in data and b"Connection: close" not in req:
                break
    except OSError:
        pass
    s.close()
    return data.split(b"\r\n")[0].decode("latin-1")


# 1. One address opens 200 slow connections: the per-address limit keeps
#    slots free for everyone else.
socks = open_dribblers(["127.0.0.1"], 200)
ok, last = served_within("127.0.0.2", 5)
check("a client from another address is served while 127.0.0.1 holds 200 slow connections", ok, last)
for s in socks:
    s.close()
time.sleep(0.5)

# 2. 40 addresses x 3 slow connections (120 > max_connections 64) dribble a
#    header byte every 0.3 s: the read deadline (not reset by bytes) frees the
#    slots and a new client is served while the attack goes on.
srcs = ["127.0.1.%d" % i for i in range(1, 41)]
socks = open_dribblers(srcs, 3)
check("the attack holds more connections than max_connections (%d opened)" % len(socks), len(socks) >= 64)
first = health("127.0.0.3", timeout=1.0)
t0 = time.time()
dribble(socks, 2.0, stop_when_all_closed=False)
ok, last = served_within("127.0.0.3", 10)
check("a new client is served while 120 sockets dribble header bytes (read deadline 2 s)", ok,
      "%s (first try at the start of the attack: %s)" % (last, first))
dribble(socks, 12.0)
closed = sum(1 for s in socks if is_closed(s))
check("the server closed the dribbling connections (%d of %d)" % (closed, len(socks)), closed == len(socks))
for s in socks:
    s.close()

# 3. 60 keep-alive connections from 60 addresses each make one request and
#    then sit idle: keepalive_timeout (1 s) closes them, long before
#    connection_timeout (30 s).
idle = []
for i in range(1, 61):
    try:
        s = connect("127.0.2.%d" % i)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            b = s.recv(4096)
            if not b:
                break
            data += b
        if b" 200 " in data.split(b"\r\n")[0]:
            idle.append(s)
    except OSError:
        pass
check("60 keep-alive requests answered (%d)" % len(idle), len(idle) == 60)
deadline = time.time() + 10
closed = 0
while time.time() < deadline:
    closed = sum(1 for s in idle if is_closed(s))
    if closed == len(idle):
        break
    time.sleep(0.2)
check("idle keep-alive connections closed by keepalive_timeout (%d of %d)" % (closed, len(idle)),
      closed == len(idle) and len(idle) > 0)
for s in idle:
    s.close()
ok, last = served_within("127.0.0.4", 5)
check("the server still answers after the attacks", ok, last)

# 4. Framing (RFC 9112): 400, not a guess.
body = b'{"prompt":"hi","max_tokens":1}'
post = b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nConnection: close\r\n"
cases = [
    ("two different Content-Length headers",
     post + b"Content-Length: %d\r\nContent-Length: 5\r\n\r\n" % len(body) + body, " 400 "),
    ("Content-Length with Transfer-Encoding",
     post + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(body)
     + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n", " 400 "),
    ("%00 in the path", b"GET /health%00x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", " 400 "),
    ("%00 at the end of a path", b"GET /v1/models%00 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", " 400 "),
    ("HTTP/1.1 without Host", b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n", " 400 "),
    ("HTTP/1.1 with two Host headers", b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
     " 400 "),
    ("HTTP/1.0 without Host is fine", b"GET /health HTTP/1.0\r\n\r\n", " 200 "),
    ("two equal Content-Length headers are fine",
     post + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(body), len(body)) + body, " 200 "),
    ("chunked alone is fine",
     post + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n", " 200 "),
]
for name, req, want in cases:
    got = raw_status(req)
    check("framing: %s -> %s" % (name, want.strip()), want in got + " ", got)

sys.exit(1 if fails else 0)

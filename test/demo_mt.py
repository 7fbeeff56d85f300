#!/usr/bin/env python3
"""demo_mt.py - clients of demo/mt_server over loopback: several
connections at once each pipeline lines and check that every reply comes
back whole and in order; clients that send and vanish without reading
(the pool then posts to closed channels); a long line.  Bounded: every
socket has a timeout.

    usage: demo_mt.py PORT CONNECTIONS LINES
Prints "python: N passed, M failed" last; the count of connections made
is printed as "python: connections K".
"""
import random
import socket
import sys
import threading

port, nconn, nlines = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
passed = failed = 0
made = 0
lock = threading.Lock()


def result(ok, what):
    global passed, failed
    with lock:
        if ok:
            passed += 1
            print("ok - " + what)
        else:
            failed += 1
            print("FAIL - " + what)


def connect():
    global made
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    with lock:
        made += 1
    return s


def read_lines(s, n):
    buf = b""
    while buf.count(b"\n") < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def pipelined(i, out):
    rng = random.Random(i)
    lines = [("%d:%d:" % (i, k)).encode() +
             bytes(rng.choice(b"abcdefghij") for _ in range(rng.randrange(60)))
             for k in range(nlines)]
    want = b"".join(l + b"\n" for l in lines)
    try:
        s = connect()
        s.sendall(want)
        got = read_lines(s, nlines)
        s.close()
        out[i] = got == want
    except OSError as e:
        print("connection %d: %s" % (i, e))
        out[i] = False


out = [None] * nconn
threads = [threading.Thread(target=pipelined, args=(i, out))
           for i in range(nconn)]
for t in threads:
    t.start()
for t in threads:
    t.join(60)
result(all(out), "%d connections at once, %d pipelined lines each, every "
       "reply whole and in order" % (nconn, nlines))

# Send and vanish: replies are posted to channels that have closed.
ok = True
for i in range(20):
    try:
        s = connect()
        s.sendall(b"gone\n" * 50)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    except OSError as e:
        print("vanishing client %d: %s" % (i, e))
        ok = False
result(ok, "20 clients sent 50 lines each and reset without reading")

# The server still answers afterwards; a 100 KB line comes back whole.
try:
    s = connect()
    big = b"x" * 100000
    s.sendall(b"after\n" + big + b"\n")
    got = read_lines(s, 2)
    s.close()
    result(got == b"after\n" + big + b"\n",
           "served after the vanished clients; a 100000-byte line whole")
except OSError as e:
    result(False, "client after the vanished ones: %s" % e)

print("python: connections %d" % made)
print("python: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)

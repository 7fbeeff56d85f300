#!/usr/bin/env python3
"""demo_resp_fake.py - a fake Redis for demo_resp.sh: prints its port,
accepts one connection, reads one command, then sends REPLY (Python
escapes allowed, e.g. '$3\\r\\nfoo\\r\\n') one byte per TCP segment and
closes.  That splits every terminator and every bulk payload across reads.

usage: demo_resp_fake.py REPLY
"""
import socket
import sys
import time

reply = sys.argv[1].encode("latin-1").decode("unicode_escape").encode("latin-1")
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
listener.settimeout(20)
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
conn.settimeout(20)
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
conn.recv(65536)
try:
    for b in reply:
        conn.sendall(bytes([b]))
        time.sleep(0.002)
    time.sleep(0.2)
except OSError:
    pass  # the client may hang up first on a protocol error
conn.close()

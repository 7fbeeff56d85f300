#!/usr/bin/env python3
"""demo_tls.py - talks to demo/tls_echo with Python's ssl module.

usage: demo_tls.py PORT CERT

Prints one "ok NAME" or "FAIL NAME" line per check (demo_tls.sh counts
them) and exits 1 if any failed.  Every socket operation has a timeout.
"""
import os
import socket
import ssl
import sys
import time

TIMEOUT = 20

port = int(sys.argv[1])
ctx = ssl.create_default_context(cafile=sys.argv[2])
failed = 0


def report(ok, name, detail=""):
    global failed
    print(("ok   " if ok else "FAIL ") + name, flush=True)
    if not ok:
        failed += 1
        if detail:
            print("     " + detail, flush=True)


def connect():
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    # A server that ends without close_notify must show up as an error.
    return ctx.wrap_socket(raw, server_hostname="localhost",
                           suppress_ragged_eofs=False)


def read_exactly(s, n):
    data = bytearray()
    while len(data) < n:
        piece = s.recv(min(n - len(data), 1 << 16))
        if not piece:
            break
        data += piece
    return bytes(data)


def echo(s, chunks, delay=0.0):
    """Sends the chunks (as separate TLS records) and reads back as many
    bytes as were sent."""
    total = 0
    for c in chunks:
        s.sendall(c)
        total += len(c)
        if delay:
            time.sleep(delay)
    return read_exactly(s, total)


def same(name, got, want):
    if got == want:
        report(True, name)
    else:
        report(False, name, "got %d bytes %r..., want %d bytes %r..."
               % (len(got), got[:60], len(want), want[:60]))


def check(name, fn):
    try:
        fn()
    except Exception as e:  # any failure is this check's failure
        report(False, name, "%s: %s" % (type(e).__name__, e))


def several_lines():
    with connect() as s:
        data = b"hello\nsecond line\r\n\r\n\nlast one\n"
        same("several lines in one write", echo(s, [data]), data)
        data = b"".join(b"line %d\n" % i for i in range(1000))
        same("1000 pipelined lines", echo(s, [data]), data)
        data = b"NUL \0 and CR \r inside\r\n"
        same("a line with NUL and a lone CR", echo(s, [data]), data)


def split_line():
    with connect() as s:
        chunks = [b"spl", b"it li", b"ne\r", b"\n", b"next", b"\n"]
        same("a line split across writes (CR and LF apart)",
             echo(s, chunks, delay=0.05), b"".join(chunks))


def big_line():
    data = os.urandom(1 << 20).replace(b"\n", b"n") + b"\n"
    with connect() as s:
        same("a 1 MiB line", echo(s, [data]), data)
        same("a short line after it", echo(s, [b"after\n"]), b"after\n")


def two_clients():
    with connect() as a, connect() as b:
        a.sendall(b"from a, part 1 ")
        same("client b while client a is mid-line",
             echo(b, [b"from b\n"]), b"from b\n")
        a.sendall(b"part 2\n")
        want = b"from a, part 1 part 2\n"
        same("client a finishes its line", read_exactly(a, len(want)), want)


def quit_closes_cleanly():
    with connect() as s:
        s.sendall(b"one\nquit\n")
        got = read_exactly(s, len(b"one\nbye\r\n"))
        same("quit is answered", got, b"one\nbye\r\n")
        # With suppress_ragged_eofs=False a missing close_notify raises.
        report(s.recv(100) == b"", "the server ends with close_notify")


def eof_without_lf():
    with connect() as s:
        s.sendall(b"a line\nno LF at the end")
        # A TCP half-close, without close_notify: the server takes it as
        # the end of the stream and can still answer.
        socket.socket(fileno=os.dup(s.fileno())).shutdown(socket.SHUT_WR)
        want = b"a line\nno LF at the end"
        same("a last line without LF is echoed at EOF",
             read_exactly(s, len(want)), want)
        report(s.recv(100) == b"", "then the server ends with close_notify")


def plain_client():
    # Not TLS at all: the server must drop it and go on serving.
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        try:
            while s.recv(4096):
                pass
            gone = True
        except ConnectionResetError:
            gone = True
        report(gone, "a plain-text client is disconnected")
    with connect() as s:
        same("and TLS clients are still served", echo(s, [b"still\n"]),
             b"still\n")


check("several lines", several_lines)
check("split line", split_line)
check("1 MiB line", big_line)
check("two clients", two_clients)
check("quit", quit_closes_cleanly)
check("EOF without LF", eof_without_lf)
check("plain client", plain_client)
sys.exit(1 if failed else 0)

#!/usr/bin/env python3
"""slowloris.py - a bounded slowloris attack on demo/http_server.

Called by test/demo_slowloris.sh with the port, process id and document
root of a server started with a short request-head deadline (-t), body
deadline (-b), idle timeout (-k) and write timeout (-w), all given in
seconds.

Hundreds of connections (300, fewer if the open-file limit is lower) each
send a request head one byte a second, while a normal client makes one
request after another on fresh connections.  The head deadline, counted
from each head's first byte, cuts every attacker however steadily it
trickles; the normal client is served throughout.  Then a body sent too
slowly (408 at the body deadline), an idle keep-alive connection (closed
at the idle timeout) and a client that reads none of a large response
(closed at the write timeout).

Cut times, latencies and the server's RSS and CPU time (from /proc) are
measured and printed; the checks assert counts and order only, never a
duration.  Every loop is bounded in count and time.  Prints one line per
check ("ok - ..." or "FAIL - ...") and ends with
"python: N passed, M failed"; the exit status is 1 on any failure.

    usage: slowloris.py PORT PID DOCROOT HEAD BODY IDLE WRITE
"""
import http.client
import os
import resource
import selectors
import socket
import sys
import threading
import time

HOST = "127.0.0.1"
WANT_ATTACKERS = 300
SPARE_FDS = 64  # kept free of attackers, in this process and the server
SEND_INTERVAL = 1.0  # seconds between an attacker's bytes
TIMEOUT = 10  # seconds for any single blocking socket operation
NORMAL_PAUSE = 0.02  # seconds between the normal client's requests
NORMAL_MAX = 5000  # requests at most
HEAD = (b"GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"User-Agent: slowloris\r\nX-Slow: " + b"a" * 200)

passed = 0
failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print("ok - " + name)
    else:
        failed += 1
        print("FAIL - " + name + (": " + detail if detail else ""))
    sys.stdout.flush()
    return cond


def proc_status(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith(field + ":"):
                return int(ln.split()[1])
    raise ValueError(field + " not found")


def cpu_seconds(pid):
    """User and system CPU time of the process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def server_figures(pid, when):
    user, system = cpu_seconds(pid)
    print("server %s: RSS %d kB (peak %d kB), CPU %.2f s user + %.2f s "
          "system, %d descriptors" % (
              when, proc_status(pid, "VmRSS"), proc_status(pid, "VmHWM"),
              user, system, fd_count(pid)))


def summary(values, unit="s"):
    if not values:
        return "none"
    v = sorted(values)

    def at(q):
        return v[min(len(v) - 1, int(q * len(v)))]
    return "min %.3f, median %.3f, p99 %.3f, max %.3f %s" % (
        v[0], at(0.5), at(0.99), v[-1], unit)


class Normal(threading.Thread):
    """One request after another, each on a fresh connection."""

    def __init__(self, port, want):
        super().__init__(daemon=True)
        self.port = port
        self.want = want
        self.results = []  # (start, end, ok, detail)
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set() and len(self.results) < NORMAL_MAX:
            start = time.monotonic()
            ok, detail = False, ""
            conn = http.client.HTTPConnection(HOST, self.port,
                                              timeout=TIMEOUT)
            try:
                conn.request("GET", "/hello.txt",
                             headers={"Connection": "close"})
                r = conn.getresponse()
                body = r.read()
                ok = r.status == 200 and body == self.want
                detail = "status %d" % r.status
            except (OSError, http.client.HTTPException) as e:
                detail = repr(e)
            finally:
                conn.close()
            self.results.append((start, time.monotonic(), ok, detail))
            self.stop.wait(NORMAL_PAUSE)


class Attacker:
    def __init__(self, sock):
        self.sock = sock
        self.sent = 0
        self.first = None  # when its first byte was sent
        self.cut = None  # when the server first answered or closed
        self.got = b""
        self.eof = False
        self.reset = False


def attack(port, pid, count, deadline):
    """Run the attack; returns the attackers and the attack's bound."""
    bound = deadline + 4 * SEND_INTERVAL + 4.0  # the test's own limit
    attackers = []
    for _ in range(count):
        s = socket.create_connection((HOST, port), timeout=TIMEOUT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        attackers.append(Attacker(s))
    sel = selectors.DefaultSelector()
    for a in attackers:
        sel.register(a.sock, selectors.EVENT_READ, a)
    open_left = count
    started = time.monotonic()
    end = started + bound
    next_send = started
    most_fds = 0
    while open_left > 0 and time.monotonic() < end:
        now = time.monotonic()
        if now >= next_send:
            for a in attackers:
                if a.cut is not None or a.sent >= len(HEAD):
                    continue
                try:
                    a.sent += a.sock.send(HEAD[a.sent:a.sent + 1])
                    if a.first is None:
                        a.first = time.monotonic()
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    a.cut = time.monotonic()  # refused while sending
            next_send += SEND_INTERVAL
            most_fds = max(most_fds, fd_count(pid))
        wait = max(0.0, min(next_send, end) - time.monotonic())
        for key, _ in sel.select(wait):
            a = key.data
            try:
                data = a.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionResetError:
                data, a.reset = b"", True
            if a.cut is None:
                a.cut = time.monotonic()
            if data:
                a.got += data
                continue
            a.eof = True
            sel.unregister(a.sock)
            a.sock.close()
            open_left -= 1
    sel.close()
    for a in attackers:
        if not a.eof:
            a.sock.close()
    return attackers, bound, started, most_fds


def slow_body(port, body_deadline):
    """A complete head, then two body bytes of ten, then nothing."""
    s = socket.create_connection((HOST, port), timeout=body_deadline + 10)
    started = time.monotonic()
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n"
              b"\r\nab")
    got = b""
    try:
        while len(got) < 65536:  # a 408 is short
            data = s.recv(65536)
            if not data:
                break
            got += data
    except OSError:
        pass
    s.close()
    took = time.monotonic() - started
    print("slow body: answered %r after %.3f s (body deadline %g s)" % (
        got.split(b"\r\n", 1)[0].decode("latin-1"), took, body_deadline))
    check("a body sent too slowly: 408 Request Timeout, then close",
          got.startswith(b"HTTP/1.1 408 ") and
          b"\r\nConnection: close\r\n" in got, repr(got[:60]))


def idle_keepalive(port, docroot, idle):
    """One request on a keep-alive connection, then silence."""
    conn = http.client.HTTPConnection(HOST, port, timeout=idle + 10)
    conn.request("GET", "/hello.txt")
    r = conn.getresponse()
    ok = r.status == 200 and not r.will_close
    r.read()
    started = time.monotonic()
    try:
        rest = conn.sock.recv(65536)
    except ConnectionResetError:
        rest = b""
    took = time.monotonic() - started
    conn.close()
    print("idle keep-alive connection closed after %.3f s (idle timeout "
          "%g s)" % (took, idle))
    check("an idle keep-alive connection is closed, with nothing sent",
          ok and rest == b"", repr(rest[:60]))


def unread_response(port, pid, docroot, write_timeout):
    """A request for a file larger than the kernel's socket buffers,
    and not a byte of the response read."""
    size = os.path.getsize(os.path.join(docroot, "big.bin"))
    before = fd_count(pid)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(TIMEOUT)
    s.connect((HOST, port))
    s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    started = time.monotonic()
    # The server's side of the connection closes at the write timeout:
    # its descriptor count, up by one once it has accepted, comes back to
    # what it was.
    seen = gone = False
    for _ in range(int((write_timeout + 10) / 0.05)):
        fds = fd_count(pid)
        seen = seen or fds > before
        if seen and fds <= before:
            gone = True
            break
        time.sleep(0.05)
    took = time.monotonic() - started
    got = 0
    try:
        while got <= size:  # the whole response would be a little more
            data = s.recv(65536)
            if not data:
                break
            got += len(data)
    except OSError:
        pass
    s.close()
    print("unread response: the server closed the connection after %.3f s "
          "(write timeout %g s); %d kB of %d kB had left" % (
              took, write_timeout, got >> 10, size >> 10))
    check("a client that reads none of its response is closed, the "
          "response cut short", gone and got < size, "%s %d" % (gone, got))


def main():
    port, pid, docroot = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    deadline, body_deadline, idle, write_timeout = (
        float(x) for x in sys.argv[4:8])
    with open(os.path.join(docroot, "hello.txt"), "rb") as f:
        want = f.read()

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = max(0, min(WANT_ATTACKERS, soft - SPARE_FDS))
    print("attackers: %d connections (%d wanted; open-file limit %d, %d "
          "kept spare), one byte every %g s, head deadline %g s" % (
              count, WANT_ATTACKERS, soft, SPARE_FDS, SEND_INTERVAL,
              deadline))
    if not check("room for at least 10 attackers under the open-file "
                 "limit", count >= 10, "ulimit -n is %d" % soft):
        return
    server_figures(pid, "before")
    fds_before = fd_count(pid)
    cpu_before = sum(cpu_seconds(pid))

    normal = Normal(port, want)
    normal.start()
    time.sleep(0.5)  # a few requests before the attack
    attackers, bound, started, most_fds = attack(port, pid, count,
                                                  deadline)
    attack_end = time.monotonic()
    time.sleep(1.0)  # and a few after it
    normal.stop.set()
    normal.join(TIMEOUT + 5)

    cut = [a for a in attackers if a.cut is not None]
    answered = [a for a in attackers if a.got.startswith(b"HTTP/1.1 408 ")
                and b"\r\nConnection: close\r\n" in a.got]
    closed = [a for a in attackers if a.eof]
    times = [a.cut - a.first for a in cut if a.first is not None]
    sent = [a.sent for a in attackers]
    last_cut = max((a.cut for a in cut), default=started)
    first_byte = min((a.first for a in attackers if a.first is not None),
                     default=started)
    print("attack: %d connections at most open in the server (%d "
          "descriptors before); each sent %d to %d bytes of its head" % (
              most_fds - fds_before, fds_before, min(sent), max(sent)))
    print("cut after the first byte: %s" % summary(times))
    print("every attacker gone %.3f s after the attack began (the test's "
          "bound: %g s)" % (attack_end - started, bound))
    check("all %d attackers connected" % count, len(attackers) == count)
    check("every attacker was cut before the test's bound",
          len(cut) == count, "%d of %d" % (len(cut), count))
    check("every attacker was answered 408 Request Timeout",
          len(answered) == count, "%d of %d" % (len(answered), count))
    check("... and then its connection closed",
          len(closed) == count, "%d of %d" % (len(closed), count))

    res = normal.results
    good = [r for r in res if r[2]]
    bad = [r for r in res if not r[2]]
    during = [r for r in good if first_byte <= r[1] <= last_cut]
    after = [r for r in good if r[0] > last_cut]
    print("normal client: %d requests, %d served (%d completed while "
          "attackers were connected, %d after the last cut)" % (
              len(res), len(good), len(during), len(after)))
    print("normal client latency: %s" % summary([r[1] - r[0]
                                                 for r in good]))
    print("normal client latency during the attack: %s" % summary(
        [r[1] - r[0] for r in during]))
    check("the normal client was served every time",
          len(res) > 0 and not bad,
          "%d failed, first: %s" % (len(bad), bad[0][3] if bad else ""))
    check("... while the attackers were connected", len(during) > 0)
    check("... and after the last cut", len(after) > 0)

    # Attackers close on the server's EOF, so the server's descriptors
    # come back to what they were.
    fds = fd_count(pid)
    for _ in range(100):
        if fds <= fds_before:
            break
        time.sleep(0.05)
        fds = fd_count(pid)
    check("the server's descriptors are back to %d (now %d)" % (
        fds_before, fds), fds <= fds_before)
    print("server CPU time during the attack: %.2f s" % (
        sum(cpu_seconds(pid)) - cpu_before))
    server_figures(pid, "after")

    slow_body(port, body_deadline)
    idle_keepalive(port, docroot, idle)
    unread_response(port, pid, docroot, write_timeout)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a crash is a failure, never a skip
        check("slowloris checks finished", False, repr(e))
    print("python: %d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)

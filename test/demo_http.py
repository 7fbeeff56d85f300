#!/usr/bin/env python3
"""demo_http.py - the raw-socket and http.client checks of demo/http_server.

Called by test/demo_http.sh with the server's port, document root and
process id (read in /proc: its descriptors and memory), and at the end with
--shutdown to check the graceful shutdown on SIGTERM, which it sends.
Prints one line per check ("ok - ..." or "FAIL - ...") and ends with
"python: N passed, M failed"; the exit status is 1 on any failure.

    usage: demo_http.py PORT DOCROOT PID
           demo_http.py --shutdown PORT DOCROOT PID
"""
import http.client
import os
import signal
import socket
import sys
import threading
import time

HOST = "127.0.0.1"
TIMEOUT = 10  # seconds for any single socket operation

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


def connect(port):
    s = socket.create_connection((HOST, port), timeout=TIMEOUT)
    s.settimeout(TIMEOUT)
    return s


def send_all(sock, data):
    """Send what the server takes; it may close early on a refused request."""
    try:
        sock.sendall(data)
    except OSError:
        pass


class Reader:
    """Reads HTTP/1.1 responses one by one from a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False
        self.total = 0  # bytes received

    def fill(self):
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        self.total += len(data)
        return True

    def response(self, head_request=False):
        """(status, headers dict, body), or None at EOF."""
        while b"\r\n\r\n" not in self.buf:
            if not self.fill():
                return None
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        length = 0 if head_request or status == 100 else int(
            headers.get("content-length", "0"))
        while len(self.buf) < length:
            if not self.fill():
                return None
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def at_eof(self):
        """True if the server closes with nothing more to read."""
        while self.fill():
            pass
        return self.eof and self.buf == b""


def read_file(docroot, name):
    with open(os.path.join(docroot, name), "rb") as f:
        return f.read()


def get(path, extra=""):
    return ("GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n" % (path, extra)).encode()


def post(path, body, extra=""):
    return ("POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n"
            % (path, len(body), extra)).encode() + body


def still_serving(port, docroot):
    conn = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/index.html")
        r = conn.getresponse()
        return r.status == 200 and r.read() == read_file(docroot,
                                                         "index.html")
    except OSError:
        return False
    finally:
        conn.close()


def test_keepalive(port, docroot):
    conn = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
    conn.request("GET", "/index.html")
    r = conn.getresponse()
    ok = r.status == 200 and r.read() == read_file(docroot, "index.html")
    sock, local = conn.sock, conn.sock.getsockname()
    body = bytes(range(256)) * 64
    for _ in range(3):
        conn.request("POST", "/echo", body=body)
        r = conn.getresponse()
        ok = ok and r.status == 200 and r.read() == body
        conn.request("HEAD", "/bin.dat")
        r = conn.getresponse()
        ok = ok and r.status == 200 and r.read() == b"" and int(
            r.getheader("Content-Length")) == len(read_file(docroot,
                                                            "bin.dat"))
        conn.request("GET", "/missing")
        r = conn.getresponse()
        ok = ok and r.status == 404 and not r.will_close
        r.read()
    check("http.client: 10 requests reuse one connection",
          ok and conn.sock is sock and conn.sock.getsockname() == local)
    conn.close()


def test_http10_keepalive(port, docroot):
    s = connect(port)
    rd = Reader(s)
    req = b"GET /index.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    s.sendall(req)
    r1 = rd.response()
    s.sendall(req)
    r2 = rd.response()
    s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
    r3 = rd.response()
    want = read_file(docroot, "index.html")
    check("HTTP/1.0 keep-alive: two requests on one connection",
          r1 is not None and r2 is not None and r1[0] == r2[0] == 200 and
          r1[1].get("connection", "").lower() == "keep-alive" and
          r1[2] == r2[2] == want)
    check("HTTP/1.0 without keep-alive: answered, then closed",
          r3 is not None and r3[0] == 200 and r3[2] == want and
          r3[1].get("connection", "").lower() == "close" and rd.at_eof())
    s.close()


def test_pipelining(port, docroot):
    body = b"\x00pipelined\r\n\r\nbody\x00" * 100
    reqs = [get("/index.html"),
            b"HEAD /bin.dat HTTP/1.1\r\nHost: t\r\n\r\n",
            post("/echo", body),
            get("/missing"),
            get("/bin.dat"),
            get("/hello.txt", "Connection: close\r\n"),
            get("/index.html")]  # after the close: never answered
    s = connect(port)
    s.sendall(b"".join(reqs))
    rd = Reader(s)
    got = [rd.response(), rd.response(head_request=True), rd.response(),
           rd.response(), rd.response(), rd.response()]
    want = [(200, read_file(docroot, "index.html")),
            (200, b""),
            (200, body),
            (404, None),
            (200, read_file(docroot, "bin.dat")),
            (200, read_file(docroot, "hello.txt"))]
    ok = all(g is not None for g in got)
    for g, (status, content) in zip(got, want):
        ok = ok and g[0] == status and (content is None or g[2] == content)
    check("pipelining: 6 requests in one send answered in order", ok,
          repr([g[0] if g else None for g in got]))
    check("pipelining: bytes after Connection: close ignored, then EOF",
          rd.at_eof())
    s.close()


def test_deep_pipeline(port, docroot):
    # More requests than the server queues before pausing its reading.
    n = 300
    want = read_file(docroot, "hello.txt")
    s = connect(port)
    s.sendall(get("/hello.txt") * n)
    rd = Reader(s)
    got = [rd.response() for _ in range(n)]
    check("pipelining: %d requests in one send, all answered" % n,
          all(g is not None and g[0] == 200 and g[2] == want for g in got))
    s.close()


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    raise ValueError("VmRSS not found")


def small_rcvbuf_socket(port, size=4096):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    s.settimeout(TIMEOUT)
    s.connect((HOST, port))
    return s


def test_queued_files(port, docroot, pid):
    # Each queued file holds a descriptor until it is sent: a client that
    # pipelines file requests and reads nothing gets only a few queued.
    n = 200
    want = read_file(docroot, "mid.bin")
    before = fd_count(pid)
    s = small_rcvbuf_socket(port)
    s.sendall(get("/mid.bin") * n)
    most = 0
    for _ in range(40):  # about a second, reading nothing
        time.sleep(0.025)
        most = max(most, fd_count(pid) - before)
    rd = Reader(s)
    got = [rd.response() for _ in range(n)]
    s.close()
    print("queued files: %d pipelined requests for a %d-byte file, not "
          "read: the server held at most %d more descriptors" %
          (n, len(want), most))
    check("pipelining %d file requests without reading: all answered, "
          "byte-exact" % n,
          all(g is not None and g[0] == 200 and g[2] == want for g in got))
    check("... while at most 17 more descriptors were open (the "
          "connection and 16 queued files), not one per request",
          0 < most <= 17, "%d" % most)


def test_high_water(port, pid):
    # Echoes pipelined by a client that reads nothing: past the high-water
    # mark (256 KiB of output) the server stops reading, so the requests
    # wait in the kernel rather than their echoes in the server.
    n = 96
    body = os.urandom(256 * 1024)
    data = memoryview(post("/echo", body) * n)
    s = small_rcvbuf_socket(port)
    base = peak = rss_kb(pid)
    sent = 0
    stalled = False
    s.settimeout(0.5)
    end = time.monotonic() + 30
    while sent < len(data) and time.monotonic() < end:
        try:
            sent += s.send(data[sent:sent + 65536])
        except socket.timeout:
            stalled = True  # the server has stopped reading
            break
        peak = max(peak, rss_kb(pid))
    peak = max(peak, rss_kb(pid))
    s.settimeout(TIMEOUT)
    got = []

    def read_all():
        rd = Reader(s)
        for _ in range(n):
            r = rd.response()
            if r is None:
                break
            got.append(r)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    try:
        s.sendall(data[sent:])
    except OSError:
        pass
    reader.join(60)
    s.close()
    print("high water: %d pipelined 256 KiB echoes (%d MB), not read: "
          "%s after %d kB sent; server RSS %d kB before, peak %d kB" %
          (n, len(data) >> 20,
           "the server stopped reading" if stalled else "no stall",
           sent >> 10, base, peak))
    check("pipelining %d MB of echoes without reading: all answered, "
          "byte-exact" % (len(data) >> 20),
          len(got) == n and all(g[0] == 200 and g[2] == body for g in got),
          "%d answered" % len(got))
    check("... while the server's RSS grew %d kB, under 12 MB" %
          (peak - base), peak - base < 12 * 1024)


def test_split(port, docroot):
    # One byte per send: the terminator arrives split across reads.
    s = connect(port)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for b in post("/echo", b"a\r\n\r\nb") + get("/hello.txt"):
        s.send(bytes([b]))
        time.sleep(0.001)
    rd = Reader(s)
    r1, r2 = rd.response(), rd.response()
    check("requests sent a byte at a time",
          r1 is not None and r1[2] == b"a\r\n\r\nb" and r2 is not None and
          r2[2] == read_file(docroot, "hello.txt"))
    s.close()


def test_half_close(port, docroot):
    s = connect(port)
    s.sendall(get("/hello.txt") + get("/index.html"))
    s.shutdown(socket.SHUT_WR)
    rd = Reader(s)
    r1, r2 = rd.response(), rd.response()
    check("client half-close: both requests answered, then EOF",
          r1 is not None and r2 is not None and r1[0] == r2[0] == 200 and
          rd.at_eof())
    s.close()


def refused(port, name, data, status):
    """Send data; expect one response with status and the close."""
    s = connect(port)
    send_all(s, data)
    rd = Reader(s)
    r = rd.response()
    check("%s -> %d and close" % (name, status),
          r is not None and r[0] == status and
          r[1].get("connection", "").lower() == "close" and rd.at_eof(),
          repr(r[:2] if r else None))
    s.close()


def test_limits(port, docroot):
    big = "X-Big: " + "x" * 9000 + "\r\n"
    refused(port, "header block over 8 KiB", get("/", big), 431)
    refused(port, "header block over 8 KiB, no terminator",
            b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"y" * 20000, 431)
    many = "".join("X-H%d: v\r\n" % i for i in range(101))
    refused(port, "101 header lines", get("/", many), 431)
    ok100 = "".join("X-H%d: v\r\n" % i for i in range(99))  # + Host
    s = connect(port)
    s.sendall(get("/hello.txt", ok100))
    r = Reader(s).response()
    check("100 header lines accepted", r is not None and r[0] == 200)
    s.close()
    body = b"z" * (1024 * 1024 + 1)
    refused(port, "body over 1 MiB", post("/echo", body), 413)
    s = connect(port)
    body = os.urandom(1024 * 1024)
    s.sendall(post("/echo", body))
    r = Reader(s).response()
    check("body of exactly 1 MiB echoed",
          r is not None and r[0] == 200 and r[2] == body)
    s.close()


def test_malformed(port):
    cases = [
        ("garbage request line", b"GARBAGE\r\n\r\n", 400),
        ("request line without version", b"GET /\r\n\r\n", 400),
        ("request line with 4 parts", b"GET / HTTP/1.1 x\r\nHost: t\r\n\r\n",
         400),
        ("double space in request line", b"GET  / HTTP/1.1\r\n\r\n", 400),
        ("lower-case version", b"GET / http/1.1\r\nHost: t\r\n\r\n", 400),
        ("relative target", b"GET index.html HTTP/1.1\r\nHost: t\r\n\r\n",
         400),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        ("unknown method", b"BREW /pot HTTP/1.1\r\nHost: t\r\n\r\n", 501),
        ("HTTP/1.1 without Host", b"GET /hello.txt HTTP/1.1\r\n\r\n", 400),
        ("two Host fields",
         b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("Content-Length: abc", post("/echo", b"", "")
         .replace(b"Content-Length: 0", b"Content-Length: abc"), 400),
        ("Content-Length: -1", b"POST /echo HTTP/1.1\r\nHost: t\r\n"
         b"Content-Length: -1\r\n\r\n", 400),
        ("conflicting Content-Length", b"POST /echo HTTP/1.1\r\nHost: t\r\n"
         b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        ("Transfer-Encoding: chunked", b"POST /echo HTTP/1.1\r\nHost: t\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
        ("header without colon", get("/", "NoColon\r\n"), 400),
        ("space before colon", get("/", "Host : t\r\n"), 400),
        ("obsolete line folding", get("/", "X-A: 1\r\n  folded\r\n"), 400),
        ("NUL in a header", get("/", "X-A: a\x00b\r\n"), 400),
        ("bare CR in a header", get("/", "X-A: a\rb\r\n"), 400),
        ("NUL in the target", get("/index.html%00.txt"), 400),
        ("bad percent escape", get("/index%zz.html"), 400),
        ("unknown Expect", get("/", "Expect: tea\r\n"), 417),
    ]
    for name, data, status in cases:
        refused(port, name, data, status)


def test_expect_continue(port):
    s = connect(port)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
              b"Expect: 100-continue\r\n\r\n")
    rd = Reader(s)
    r1 = rd.response()
    s.sendall(b"hello")
    r2 = rd.response()
    check("Expect: 100-continue -> 100, then the echo",
          r1 is not None and r1[0] == 100 and r2 is not None and
          r2[0] == 200 and r2[2] == b"hello")
    s.close()


def test_routes(port):
    s = connect(port)
    rd = Reader(s)
    s.sendall(get("/echo") + post("/index.html", b"abc") +
              post("/echo", b"") + get("/echo?x=1"))
    got = [rd.response() for _ in range(4)]
    check("GET /echo 405, POST elsewhere 405, empty POST echo, query",
          [g[0] if g else None for g in got] == [405, 405, 200, 405] and
          got[0][1].get("allow") == "POST" and got[2][2] == b"",
          repr([g[0] if g else None for g in got]))
    s.close()


def process_gone(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def shutdown_main(port, docroot, pid):
    """SIGTERM: the server stops accepting, closes an idle connection,
    finishes a response in progress, and cuts one that is not read once
    its grace deadline passes (the shell checks that it exits)."""
    want = read_file(docroot, "large.bin")
    idle = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
    idle.request("GET", "/hello.txt")
    idle.getresponse().read()
    busy = small_rcvbuf_socket(port, 256 * 1024)  # reads at full speed
    busy.sendall(get("/large.bin"))
    stuck = small_rcvbuf_socket(port)
    stuck.sendall(get("/large.bin"))
    # Both responses have begun (a request still unread when the signal
    # comes is not answered: its connection closes at once).
    head = Reader(busy)
    while len(head.buf) < 65536 and head.fill():
        pass
    rd = Reader(stuck)
    rd.fill()
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)

    try:
        eof = idle.sock.recv(1) == b""
    except OSError:
        eof = True
    idle_s = time.monotonic() - started
    idle.close()
    check("SIGTERM: an idle keep-alive connection is closed", eof)

    refused = False
    for _ in range(50):
        try:
            socket.create_connection((HOST, port), timeout=1).close()
        except ConnectionRefusedError:
            refused = True
            break
        time.sleep(0.1)
    check("SIGTERM: new connections are refused", refused)

    before = head.total
    r = head.response()
    done = r is not None and r[0] == 200 and r[2] == want and head.at_eof()
    busy_s = time.monotonic() - started
    busy.close()
    check("SIGTERM: a response in progress is sent whole (%d kB of it "
          "after the signal), then the connection closes" %
          ((head.total - before) >> 10), done)

    # The unread one is read only once the server has gone (a zombie
    # until the shell reaps it): what arrives is what the kernel held.
    for _ in range(200):
        if process_gone(pid):
            break
        time.sleep(0.05)
    stuck_s = time.monotonic() - started
    r = rd.response()
    stuck.close()
    check("SIGTERM: a response that is not read is cut at the grace "
          "deadline (%d kB of %d kB arrived)" % (rd.total >> 10,
                                                 len(want) >> 10),
          r is None and rd.eof)
    print("shutdown: idle closed after %.3f s, response in progress done "
          "after %.3f s, server gone after %.3f s" %
          (idle_s, busy_s, stuck_s))
    print("python: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


def main():
    if sys.argv[1] == "--shutdown":
        return shutdown_main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    port, docroot, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    # Opened first and used last: refused requests on other connections
    # must not disturb it.
    early = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
    early.request("GET", "/hello.txt")
    early.getresponse().read()
    early_sock = early.sock

    test_keepalive(port, docroot)
    test_http10_keepalive(port, docroot)
    test_pipelining(port, docroot)
    test_deep_pipeline(port, docroot)
    test_queued_files(port, docroot, pid)
    test_high_water(port, pid)
    test_split(port, docroot)
    test_half_close(port, docroot)
    test_expect_continue(port)
    test_routes(port)
    test_limits(port, docroot)
    test_malformed(port)

    check("server still answers new connections after refusals",
          still_serving(port, docroot))
    early.request("GET", "/hello.txt")
    r = early.getresponse()
    check("connection opened first still served on the same socket",
          r.status == 200 and r.read() == read_file(docroot, "hello.txt")
          and early.sock is early_sock)
    early.close()
    print("python: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # a crash is a failure, never a skip
        print("FAIL - python checks aborted: %r" % (e,))
        print("python: %d passed, %d failed" % (passed, failed + 1))
        sys.exit(1)

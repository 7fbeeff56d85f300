#!/usr/bin/env python3
"""demo_chat.py - the socket clients of test/demo_chat.sh.

Called with the port and process id of a running demo/chat_server.  Checks
the protocol with several clients, then floods the chat while one client
has stopped reading and watches the server's memory, and ends by sending
SIGTERM with clients still connected, who are told the server is shutting
down before their connections end (the shell script checks the exit
status).  Prints one line per check ("ok - ..." or "FAIL - ...") and ends
with "python: N passed, M failed"; the exit status is 1 on any failure.

    usage: demo_chat.py PORT PID [FLOOD_MB [RSS_LIMIT_MB]]

FLOOD_MB (default 30) is the broadcast traffic of the flood, shared by
three senders; RSS_LIMIT_MB (default 16) bounds the server's memory growth
during it.  An unbounded server would queue nearly all of the flood for the
stopped reader, so the limit is set well below the flood.
"""
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback

HOST = "127.0.0.1"
TIMEOUT = 10  # seconds for any single wait
MAX_LINE = 4096
DROPPED = "* slow was dropped: too slow"
SHUTTING_DOWN = "* server shutting down"

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


class Client:
    """One chat connection, read line by line (bytes as latin-1 text)."""

    def __init__(self, port, nick=None, rcvbuf=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(TIMEOUT)
        s.connect((HOST, port))
        self.sock = s
        self.buf = b""
        self.eof = False
        self.greeting = self.line()
        self.welcome = None
        self.nick = nick
        if nick is not None:
            self.send(nick)
            self.welcome = self.line()

    def send(self, text):
        if isinstance(text, str):
            text = text.encode("latin-1") + b"\n"
        self.sock.sendall(text)

    def fill(self):
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
        self.buf += data
        return bool(data)

    def line(self):
        """The next line without its "\\r\\n", or None at EOF."""
        while b"\n" not in self.buf:
            if self.eof or not self.fill():
                return None
        raw, self.buf = self.buf.split(b"\n", 1)
        return raw.decode("latin-1").rstrip("\r")

    def sync(self):
        """Everything received before the answer to a /who, and the users
        it lists.  The server handles a client's lines in order, so every
        line pushed to this client before it read the /who comes first."""
        self.send("/who")
        lines = []
        while True:
            ln = self.line()
            if ln is None:
                raise EOFError("EOF before the /who answer")
            if ln.startswith("* users:"):
                return lines, ln.split()[2:]
            lines.append(ln)

    def lines_before_sync(self):
        return self.sync()[0]

    def wait_eof(self):
        """The lines left before EOF (a reset counts as EOF)."""
        lines = []
        while True:
            ln = self.line()
            if ln is None:
                return lines
            lines.append(ln)

    def close(self):
        self.sock.close()


def lines_soon(client):
    """What client receives until it has received something (an event
    caused by another connection, which no /who of its own can order)."""
    end = time.monotonic() + TIMEOUT
    got = []
    while not got and time.monotonic() < end:
        got = client.lines_before_sync()
        if not got:
            time.sleep(0.02)
    got += client.lines_before_sync()
    return got


def section(fn, *args):
    """Run one group of checks; an exception (a timeout...) is a failure."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - report whatever went wrong
        check(fn.__name__ + " finished", False,
              "%s: %s" % (type(e).__name__, e))
        traceback.print_exc(file=sys.stdout)
        return None


def handshake(port):
    a = Client(port, "alice")
    check("greeting asks for a nickname", a.greeting.startswith("* ")
          and a.greeting.endswith("nickname?"), repr(a.greeting))
    check("nickname accepted", a.welcome is not None and
          a.welcome.startswith("* welcome, alice (1 online"), repr(a.welcome))

    b = Client(port)
    refused = []
    for bad in ("alice", "ALICE", "", "two words", "x" * 33, "/slash",
                "tab\there", "nul\0"):
        b.send(bad)
        refused.append((bad, b.line(), b.line()))
    for bad, err, again in refused:
        want = "taken" if bad.lower() == "alice" else "invalid nickname"
        check("nickname %r refused, asked again" % bad,
              err is not None and err.startswith("! ") and want in err and
              again == "* nickname?", "%r %r" % (err, again))
    b.send("bob")
    b.nick = "bob"
    b.welcome = b.line()
    check("second nickname accepted after refusals",
          b.welcome is not None and b.welcome.startswith("* welcome, bob (2"),
          repr(b.welcome))

    long_nick = "N" * 32
    d = Client(port, long_nick)
    check("32-character nickname accepted", d.welcome is not None and
          d.welcome.startswith("* welcome, " + long_nick), repr(d.welcome))
    d.send("/quit")
    d.wait_eof()
    d.close()

    c = Client(port, "carol")
    check("third client joins", c.welcome is not None and
          c.welcome.startswith("* welcome, carol (3"), repr(c.welcome))
    got = a.lines_before_sync()
    check("join and leave announcements, in order", got == [
        "* bob has joined", "* %s has joined" % long_nick,
        "* %s has left" % long_nick, "* carol has joined"], repr(got))
    got = b.lines_before_sync()
    check("a later joiner sees only later joins", got == [
        "* %s has joined" % long_nick, "* %s has left" % long_nick,
        "* carol has joined"], repr(got))
    got = c.lines_before_sync()
    check("a joiner gets no announcement of itself", got == [], repr(got))
    return a, b, c


def broadcast(a, b, c):
    msgs = ["message %d from alice" % i for i in range(5)]
    # Several lines in one write, and one line in pieces.
    a.send("".join(m + "\n" for m in msgs[:3]).encode())
    a.send(msgs[3])
    a.sock.sendall(b"mess")
    time.sleep(0.05)
    a.sock.sendall(b"age 4 from alice\r")
    time.sleep(0.05)
    a.sock.sendall(b"\n")
    a.send("")  # an empty line says nothing
    got = a.lines_before_sync()
    check("the sender does not get its own broadcast", got == [], repr(got))
    want = ["<alice> " + m for m in msgs]
    for who in (b, c):
        got = who.lines_before_sync()
        check("broadcast reaches %s once, in order" % who.nick,
              got == want, repr(got))

    b.send("hello from bob")
    b.send("//not a command")
    got = b.lines_before_sync()
    check("bob gets nothing back", got == [], repr(got))
    for who in (a, c):
        got = who.lines_before_sync()
        check("bob's lines reach %s ('//' escapes '/')" % who.nick,
              got == ["<bob> hello from bob", "<bob> /not a command"],
              repr(got))


def private(a, b, c):
    a.send("/msg bob psst, bob")
    a.send("/msg BOB case does not matter")
    got = a.lines_before_sync()
    check("/msg: no echo to the sender", got == [], repr(got))
    got = b.lines_before_sync()
    check("/msg reaches the target only", got == [
        "*alice* psst, bob", "*alice* case does not matter"], repr(got))
    got = c.lines_before_sync()
    check("/msg: a third user sees nothing", got == [], repr(got))

    a.send("/msg nobody hello")
    a.send("/msg bob")
    a.send("/msg")
    got = a.lines_before_sync()
    check("/msg errors: unknown user, usage",
          len(got) == 3 and got[0] == "! no such user: nobody" and
          got[1].startswith("! usage: /msg") and
          got[2].startswith("! usage: /msg"), repr(got))
    a.send("/frobnicate now")
    a.send("/who extra")
    got = a.lines_before_sync()
    check("unknown command and bad /who are refused",
          len(got) == 2 and got[0].startswith("! unknown command /frobnicate")
          and got[1].startswith("! usage: /who"), repr(got))
    for who in (b, c):
        got = who.lines_before_sync()
        check("refused commands reach nobody else (%s)" % who.nick,
              got == [], repr(got))


def who_and_nick(a, b, c):
    _, users = a.sync()
    check("/who lists the users in joining order",
          users == ["alice", "bob", "carol"], repr(users))
    b.send("/nick bobby")
    got = b.lines_before_sync()
    check("/nick: confirmed", got == ["* you are now bobby"], repr(got))
    b.nick = "bobby"
    for who in (a, c):
        got = who.lines_before_sync()
        check("/nick: announced to %s" % who.nick,
              got == ["* bob is now known as bobby"],
              repr(got))
    b.send("/nick Alice")
    b.send("/nick two words")
    b.send("/nick")
    got = b.lines_before_sync()
    check("/nick refuses a taken or invalid name",
          len(got) == 3 and "taken" in got[0] and
          all("invalid nickname" in g for g in got[1:]), repr(got))
    a.send("/msg bob old name")
    a.send("/msg bobby new name")
    got = a.lines_before_sync()
    check("/msg follows the new nickname",
          got == ["! no such user: bob"], repr(got))
    got = b.lines_before_sync()
    check("/msg to the new nickname arrives", got == ["*alice* new name"],
          repr(got))
    b.send("under the new name")
    b.lines_before_sync()
    got = a.lines_before_sync()
    check("broadcast shows the new nickname (alice)",
          got == ["<bobby> under the new name"], repr(got))
    got = c.lines_before_sync()
    check("broadcast shows the new nickname (carol)",
          got == ["<bobby> under the new name"], repr(got))
    _, users = c.sync()
    check("/who shows the new nickname",
          users == ["alice", "bobby", "carol"], repr(users))


def leaving(port, a, b, c):
    c.send("/quit")
    rest = c.wait_eof()
    check("/quit: bye, then the server closes", rest == ["* bye"], repr(rest))
    c.close()
    for who in (a, b):
        got = who.lines_before_sync()
        check("/quit announced to %s" % who.nick,
              got == ["* carol has left"], repr(got))

    d = Client(port, "carol")
    check("a nickname is free again after its owner left",
          d.welcome is not None and d.welcome.startswith("* welcome, carol"),
          repr(d.welcome))
    a.lines_before_sync()
    b.lines_before_sync()
    d.close()  # EOF without /quit
    for who in (a, b):
        got = lines_soon(who)
        check("a closed connection is announced as a leave (%s)" % who.nick,
              got == ["* carol has left"], repr(got))

    e = Client(port)
    e.send("/quit")
    rest = e.wait_eof()
    check("/quit before choosing a nickname", rest == ["* bye"], repr(rest))
    e.close()
    got = a.lines_before_sync()
    check("nobody hears of a client that never joined", got == [], repr(got))


def long_lines(port, a, b):
    e = Client(port, "eve")
    a.lines_before_sync()
    b.lines_before_sync()
    e.send("y" * MAX_LINE)
    e.send(("z" * MAX_LINE).encode() + b"\r\n")
    got = e.lines_before_sync()
    check("the sender of long lines gets nothing back", got == [],
          repr(got)[:200])
    got = a.lines_before_sync()
    check("a line of exactly %d bytes passes, with \\n and \\r\\n" % MAX_LINE,
          got == ["<eve> " + "y" * MAX_LINE, "<eve> " + "z" * MAX_LINE],
          "%d lines, lengths %r" % (len(got), [len(g) for g in got]))
    b.lines_before_sync()
    e.send("w" * (MAX_LINE + 1))
    rest = e.wait_eof()
    check("an overlong line: error, then the server closes",
          len(rest) == 1 and rest[0].startswith("! line too long"),
          repr(rest)[:200])
    e.close()
    for who in (a, b):
        got = who.lines_before_sync()
        check("the overlong line is not broadcast; the leave is announced "
              "(%s)" % who.nick,
              got == ["* eve has left"], repr(got)[:200])

    f = Client(port)
    f.send("n" * 10000)
    rest = f.wait_eof()
    check("an overlong nickname line: error, then close",
          len(rest) == 1 and rest[0].startswith("! line too long"),
          repr(rest)[:200])
    f.close()
    got = a.lines_before_sync()
    check("nothing announced for it", got == [], repr(got)[:200])


def own_replies(port, a, b):
    """A client that asks and never reads its answers is dropped too."""
    x = Client(port, "greedy", rcvbuf=4096)
    a.lines_before_sync()
    b.lines_before_sync()
    try:
        # Some 12 MB of answers: more than the kernel buffers on loopback
        # (tcp_wmem up to 4 MiB) and the 256 KiB mark together.
        x.sock.sendall(b"/who\n" * 400000)
    except OSError:
        pass  # the server may drop it before it has sent everything
    for who in (a, b):
        got = lines_soon(who)
        check("a client that never reads its answers is dropped (%s)" %
              who.nick, got == ["* greedy was dropped: too slow"], repr(got))
    x.sock.settimeout(TIMEOUT)
    try:
        x.wait_eof()
    except OSError:
        pass
    check("its connection is closed", x.eof)
    x.close()


def rss_kb(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith(field + ":"):
                return int(ln.split()[1])
    raise ValueError(field + " not found")


def body(sender, seq):
    return "m%07d %s" % (seq, chr(97 + (seq + sender) % 26) * 1000)


class Receiver(threading.Thread):
    """Reads one fast client and checks that each sender's lines arrive
    gapless, in order, byte-exact."""

    def __init__(self, client, senders):
        super().__init__(daemon=True)
        self.c = client
        self.senders = senders
        self.count = {s: 0 for s in senders}
        self.notices = []
        self.errors = []
        self.cond = threading.Condition()
        self.done = False

    def run(self):
        pat = re.compile(r"^<([^>]+)> ")
        try:
            while True:
                ln = self.c.line()
                if ln is None:
                    break
                m = pat.match(ln)
                with self.cond:
                    if m and m.group(1) in self.count:
                        s = m.group(1)
                        want = body(self.senders.index(s), self.count[s])
                        if ln[m.end():] != want and len(self.errors) < 5:
                            self.errors.append("%s #%d: %r" % (
                                s, self.count[s], ln[:40]))
                        self.count[s] += 1
                    else:
                        self.notices.append(ln)
                    self.cond.notify_all()
        except Exception as e:  # noqa: BLE001 - reported by the checks
            self.errors.append("reader: %r" % e)
        with self.cond:
            self.done = True
            self.cond.notify_all()

    def wait_for(self, want, timeout):
        end = time.monotonic() + timeout
        with self.cond:
            while any(self.count[s] < n for s, n in want.items()):
                left = end - time.monotonic()
                if left <= 0 or self.done:
                    return False
                self.cond.wait(left)
        return True

    def wait_notice(self, text, timeout):
        end = time.monotonic() + timeout
        with self.cond:
            while text not in self.notices:
                left = end - time.monotonic()
                if left <= 0 or self.done:
                    return False
                self.cond.wait(left)
        return True


class Sampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, rss_kb(self.pid))
            except (OSError, ValueError):
                return
            self.stop.wait(0.01)


def flood(port, pid, flood_mb, limit_mb, others):
    names = ["f1", "f2", "f3"]
    slow = Client(port, "slow", rcvbuf=4096)  # from here on never reads
    fast = [Client(port, n) for n in names]
    for c in others + fast:
        c.lines_before_sync()
    base_rss = rss_kb(pid)
    base_hwm = rss_kb(pid, "VmHWM")
    # Every reader but the stopped one runs in a thread: the senders and
    # the users who only listen.
    recv = [Receiver(c, names) for c in fast + others]
    for r in recv:
        r.c.sock.settimeout(60)
        r.start()
    sampler = Sampler(pid)
    sampler.start()

    line_bytes = len("<f1> " + body(0, 0) + "\r\n")
    # Lines per sender between waits: about 32 KiB, so that a reader of
    # all three senders has under 100 KiB in flight, which the kernel's
    # socket buffers take even if the reader pauses.
    per_round = 32
    total_lines = flood_mb * 1024 * 1024 // line_bytes // len(names)
    sent = 0
    started = time.monotonic()
    ok = True
    while sent < total_lines and ok:
        n = min(per_round, total_lines - sent)
        for i, c in enumerate(fast):
            c.sock.sendall(b"".join((body(i, sent + k) + "\n").encode()
                                    for k in range(n)))
        sent += n
        # Pace the senders like a conversation: every reader keeps up
        # but the stopped one, which alone falls behind.
        for r in recv:
            want = {s: sent for s in names if s != r.c.nick}
            if not r.wait_for(want, TIMEOUT):
                ok = False
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + TIMEOUT
    for r in recv:
        r.wait_notice(DROPPED, max(0.0, deadline - time.monotonic()))
    sampler.stop.set()
    sampler.join()
    hwm = rss_kb(pid, "VmHWM")
    # VmHWM is the peak of the process's life: the flood's own peak only
    # if the flood raised it; the sampler sees the rest.
    peak = max(sampler.peak, hwm if hwm > base_hwm else 0)
    total_mb = total_lines * len(names) * line_bytes / 1048576.0
    print("flood: %d lines x %d senders, %.1f MB broadcast to %d readers "
          "in %.1f s" % (total_lines, len(names), total_mb, len(recv),
                         elapsed))
    print("server RSS: %d kB before the flood, peak %d kB (sampled %d kB, "
          "VmHWM %d kB), growth %d kB; limit %d MB" % (
              base_rss, peak, sampler.peak, hwm, peak - base_rss, limit_mb))
    check("flood sent: %.1f MB of broadcast by 3 senders" % total_mb, ok,
          "a reader fell behind or the server stopped")
    check("server RSS growth %d kB stays under %d MB" % (
        peak - base_rss, limit_mb), peak - base_rss < limit_mb * 1024)
    for r in recv:
        me = r.c.nick
        want = {s: total_lines for s in names if s != me}
        with r.cond:
            got = {s: r.count[s] for s in names}
            notices = list(r.notices)
        if me in names:
            want[me] = 0
        check("%s received all %d lines of each other sender, in order, "
              "byte-exact, once" % (me, total_lines),
              got == want and not r.errors, "%r %r" % (got, r.errors))
        check("%s: the stopped reader's drop announced once" % me,
              notices == [DROPPED], repr(notices[:5]))

    # The stopped reader reads at last: a gapless prefix of the flood,
    # then EOF (what was queued for it past the cap never left).
    rest = slow.wait_eof()
    seen = {s: 0 for s in names}
    bad = 0
    for ln in rest:
        m = re.match(r"^<(f\d)> ", ln)
        if m:
            s = m.group(1)
            bad += ln[m.end():] != body(names.index(s), seen[s])
            seen[s] += 1
    # The last line may have been cut short when the server dropped it.
    check("the stopped reader got a gapless prefix (%d kB), then EOF" % (
        sum(len(x) + 2 for x in rest) // 1024),
        slow.eof and bad <= 1 and sum(seen.values()) < 3 * total_lines,
        "bad lines %d, seen %r" % (bad, seen))
    slow.close()
    late = Client(port, "late")
    _, users = late.sync()
    check("/who no longer lists the dropped client",
          sorted(users) == sorted([c.nick
                                   for c in others + fast] + ["late"]),
          repr(users))
    return recv, late


def shutdown(pid, recv, clients):
    """SIGTERM with clients connected: each is told, then sees its
    connection end."""
    os.kill(pid, signal.SIGTERM)
    results = []
    told = []
    for c in clients:
        c.sock.settimeout(5)
        try:
            told.append(c.wait_eof()[-1:] == [SHUTTING_DOWN])
            results.append(c.eof)
        except OSError:
            results.append(False)
    for r in recv:
        r.join(5)
        results.append(r.done)
        with r.cond:
            told.append(r.notices[-1:] == [SHUTTING_DOWN])
    check("SIGTERM closes the %d connected clients" % len(results),
          all(results), repr(results))
    check("each was told %r last" % SHUTTING_DOWN, all(told), repr(told))


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        sys.exit(2)
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    flood_mb = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    limit_mb = int(sys.argv[4]) if len(sys.argv) > 4 else 16
    clients = section(handshake, port)
    if clients:
        a, b, c = clients
        section(broadcast, a, b, c)
        section(private, a, b, c)
        section(who_and_nick, a, b, c)
        section(leaving, port, a, b, c)
        section(long_lines, port, a, b)
        section(own_replies, port, a, b)
        recv, late = section(flood, port, pid, flood_mb, limit_mb,
                             [a, b]) or ([], None)
        if late is not None:
            section(shutdown, pid, recv, [late])
        else:
            section(shutdown, pid, [], [a, b])
    print("python: %d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

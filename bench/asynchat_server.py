#!/usr/bin/env python3
"""asynchat_server.py - the benchmark's line echo server on Python 3.11's
own asynchat (the module libasynchat brings to C), for the lines mode only.

    usage: asynchat_server.py [-p port] [-x conns]

Terminator b"\\r\\n"; each line is collected into a list and pushed back
with b"\\r\\n", the way asynchat's documentation does it.  127.0.0.1 only.
Prints "listening on 127.0.0.1:PORT" when ready and "frames N" on stderr at
exit; -x N exits after N connections have closed.  SIGINT and SIGTERM end
it cleanly.
"""
import argparse
import signal
import socket
import sys
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import asynchat
    import asyncore


class Stop(asyncore.ExitNow):
    """Ends asyncore.loop(); asyncore re-raises ExitNow from handlers."""


class State:
    frames = 0
    closed = 0
    exit_after = 0


class EchoHandler(asynchat.async_chat):
    def __init__(self, sock):
        super().__init__(sock)
        self.set_terminator(b"\r\n")
        self.ibuffer = []

    def collect_incoming_data(self, data):
        self.ibuffer.append(data)

    def found_terminator(self):
        self.ibuffer.append(b"\r\n")
        self.push(b"".join(self.ibuffer))
        self.ibuffer = []
        State.frames += 1

    def handle_close(self):
        self.close()
        State.closed += 1
        if State.exit_after and State.closed >= State.exit_after:
            raise Stop()


class EchoServer(asyncore.dispatcher):
    def __init__(self, port):
        super().__init__()
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind(("127.0.0.1", port))
        self.listen(1024)

    def handle_accepted(self, sock, addr):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        EchoHandler(sock)


def on_signal(signum, frame):
    raise Stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-p", type=int, default=0)
    ap.add_argument("-x", type=int, default=0)
    args = ap.parse_args()
    State.exit_after = args.x
    server = EchoServer(args.p)
    print("listening on 127.0.0.1:%d" % server.socket.getsockname()[1], flush=True)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        asyncore.loop(timeout=1.0, use_poll=True)
    except Stop:
        pass
    asyncore.close_all()
    print("frames %d" % State.frames, file=sys.stderr)


if __name__ == "__main__":
    main()

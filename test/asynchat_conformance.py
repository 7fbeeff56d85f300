#!/usr/bin/env python3
"""Run framing cases through CPython's own asynchat, for check_asynchat.

check_asynchat compares libasynchat's frames with what this prints.

Input (stdin), one directive a line, any number of cases ("#" lines are
comments):

    case ID
    term SPEC            the terminator set before the first byte
    after K SPEC         set SPEC in found_terminator once K frames ended
    chunk HEX            what one recv() returns (never empty)
    end

SPEC is "none", "n:COUNT" or "s:HEX" (HEX may be empty: the empty string).

Output (stdout), one line a case:

    case ID F:HEX ... R:HEX H:HEX

F: one per found_terminator, the bytes collected for that frame; R: the
bytes collected since the last found_terminator; H: the bytes
async_chat.handle_read holds back as a possible terminator prefix.  Only
hex digits follow the colons, so every token is unambiguous, the empty
frame included ("F:").

With --transcript the output is the golden transcript that
check_asynchat compares with where no Python has asynchat
(test/asynchat_golden.txt, made by `make regen-golden`): a header of
"#" comment lines naming this Python, then every input directive as read,
each case's "end" followed by its result line prefixed with "cpython ",
and finally "done N".  Input lines starting with "#" are copied as they
are.

If asynchat cannot be imported (Python 3.12 removed it), the only output
is a line starting with NOASYNCHAT and the exit status is 3.
"""

import sys
import warnings


def parse_spec(token):
    if token == "none":
        return None
    kind, _, value = token.partition(":")
    if kind == "n":
        return int(value)
    if kind == "s":
        return bytes.fromhex(value)
    raise ValueError("bad terminator spec %r" % token)


class FakeSocket:
    """What async_chat.handle_read() reads from: one chunk per recv()."""

    def __init__(self, chunks):
        self.chunks = list(chunks)

    def recv(self, size):
        chunk = self.chunks.pop(0)
        if len(chunk) > size:
            self.chunks.insert(0, chunk[size:])
            chunk = chunk[:size]
        return chunk

    def close(self):
        pass


def make_chat_class(asynchat):
    class Chat(asynchat.async_chat):
        def __init__(self, initial, script):
            # No socket and no map: nothing is registered with asyncore.
            asynchat.async_chat.__init__(self)
            self.set_terminator(initial)
            self.script = script
            self.frames = []
            self.buffer = bytearray()

        def collect_incoming_data(self, data):
            self.buffer += data

        def found_terminator(self):
            self.frames.append(bytes(self.buffer))
            self.buffer = bytearray()
            after = len(self.frames)
            if after in self.script:
                self.set_terminator(self.script[after])

    return Chat


def run_case(chat_class, case_id, initial, script, chunks, prefix=""):
    chat = chat_class(initial, script)
    chat.socket = FakeSocket(chunks)
    for _ in range(len(chunks)):
        chat.handle_read()
    if chat.socket.chunks:
        raise RuntimeError("case %s: chunks left unread" % case_id)
    tokens = ["case", case_id]
    tokens += ["F:" + f.hex() for f in chat.frames]
    tokens.append("R:" + bytes(chat.buffer).hex())
    tokens.append("H:" + bytes(chat.ac_in_buffer).hex())
    print(prefix + " ".join(tokens))


def main():
    transcript = sys.argv[1:] == ["--transcript"]
    if sys.argv[1:] and not transcript:
        print("usage: asynchat_conformance.py [--transcript] <cases",
              file=sys.stderr)
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import asynchat
        except ImportError as e:
            print("NOASYNCHAT python %s cannot import asynchat: %s"
                  % (sys.version.split()[0], e))
            sys.stdout.flush()
            return 3
    chat_class = make_chat_class(asynchat)
    if transcript:
        print("# libasynchat golden transcript: the frames CPython's own")
        print("# asynchat makes of each case.  Made by `make regen-golden`")
        print("# (test/asynchat_conformance.py --transcript); do not edit.")
        print("# python %s" % sys.version.split()[0])

    case_id = None
    initial = None
    script = {}
    chunks = []
    ncases = 0
    for lineno, line in enumerate(sys.stdin, 1):
        words = line.split()
        if not words or line.startswith("#"):
            if transcript:
                print(line.rstrip("\n"))
            continue
        if transcript:
            print(line.rstrip("\n"))
        op = words[0]
        if op == "case":
            case_id, initial, script, chunks = words[1], None, {}, []
        elif op == "term":
            initial = parse_spec(words[1])
        elif op == "after":
            script[int(words[1])] = parse_spec(words[2])
        elif op == "chunk":
            chunk = bytes.fromhex(words[1]) if len(words) > 1 else b""
            if not chunk:
                # recv() returning b"" means EOF to asyncore.
                raise ValueError("line %d: empty chunk" % lineno)
            chunks.append(chunk)
        elif op == "end":
            run_case(chat_class, case_id, initial, script, chunks,
                     "cpython " if transcript else "")
            ncases += 1
        else:
            raise ValueError("line %d: unknown directive %r" % (lineno, op))
    print("done %d" % ncases)
    return 0


if __name__ == "__main__":
    sys.exit(main())

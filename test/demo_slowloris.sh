#!/bin/sh
# demo_slowloris.sh - a bounded slowloris attack on demo/http_server
# (test/slowloris.py): some 300 connections sending their request heads a
# byte a second against a 2 s head deadline, while a normal client keeps
# making requests; then a body sent too slowly, an idle keep-alive
# connection and a response nobody reads, against a 3 s body deadline,
# idle timeout and write timeout.  Only
# 127.0.0.1; the attack is bounded in connections (fewer if the open-file
# limit is low) and in time.  Without python3 (or timeout, or /proc) it
# skips, exit 77, saying why; with ASYNCHAT_STRICT_TESTS=1 that is a
# failure (test/peers.sh).
#
# Run by `make check` from the build directory ($srcdir is set by
# automake); by hand: srcdir=/path/to/source sh test/demo_slowloris.sh
# HTTP_SERVER overrides the server program (default demo/http_server).
# Ends with the line "N passed, M failed"; exits non-zero on any failure.

srcdir=${srcdir:-$(dirname "$0")/..}
server_bin=${HTTP_SERVER:-demo/http_server}
head_deadline=2
body_deadline=3
idle_timeout=3
write_timeout=3
. "$srcdir/test/peers.sh"
need_tools "python3 coreutils" python3 timeout
[ -r /proc/self/status ] ||
	skip_test "/proc is not mounted: the server's RSS, CPU time and descriptors are read there"
[ -x "$server_bin" ] || bad "$server_bin is not built"
[ -f "$srcdir/test/slowloris.py" ] || bad "$srcdir/test/slowloris.py missing"
[ "$fail" -eq 0 ] || finish

tmp=$(mktemp -d) || exit 1
server=
cleanup() {
	[ -n "$server" ] && kill -KILL "$server" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

root=$tmp/root
mkdir -p "$root"
printf 'hello\n' >"$root/hello.txt"
# Larger than the kernel's socket buffers, for the write timeout.
head -c 12000000 /dev/zero >"$root/big.bin"

# The libtool wrapper execs the real program, so $! is the server's own
# process, whose /proc/PID the attack reads.
out=$tmp/server.out
: >"$out"
"$server_bin" -p 0 -r "$root" -t $head_deadline -b $body_deadline \
	-k $idle_timeout -w $write_timeout -g 2 >"$out" 2>"$tmp/server.err" &
server=$!
port=
for _ in $(seq 50); do
	port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$out")
	[ -n "$port" ] && break
	sleep 0.1
done
if [ -z "$port" ]; then
	bad "server did not start"
	cat "$tmp/server.err"
	finish
fi
echo "server on port $port, pid $server: -t $head_deadline -b $body_deadline -k $idle_timeout -w $write_timeout"

timeout 120 python3 "$srcdir/test/slowloris.py" "$port" "$server" "$root" \
	$head_deadline $body_deadline $idle_timeout $write_timeout \
	>"$tmp/py.out" 2>&1
rc=$?
cat "$tmp/py.out"
p=$(sed -n 's/^python: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' \
	"$tmp/py.out")
f=$(sed -n 's/^python: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' \
	"$tmp/py.out")
pass=$((pass + ${p:-0}))
fail=$((fail + ${f:-0}))
if [ -z "$p" ] || { [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; }; then
	bad "slowloris.py exited $rc"
fi

# --- the server survived it: a clean shutdown on SIGTERM
kill -TERM "$server"
for _ in $(seq 100); do
	kill -0 "$server" 2>/dev/null || break
	sleep 0.1
done
if kill -0 "$server" 2>/dev/null; then
	bad "server still running 10 s after SIGTERM"
else
	wait "$server"
	rc=$?
	server=
	if [ "$rc" -eq 0 ] && tail -n 1 "$out" | grep -qx 'shut down'; then
		ok "SIGTERM: clean shutdown after the attack"
	else
		bad "SIGTERM: exit status $rc"
		cat "$tmp/server.err"
	fi
fi
finish

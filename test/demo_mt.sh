#!/bin/sh
# demo_mt.sh - end-to-end test of demo/mt_server: two worker threads, each
# with its own event_base and REUSEPORT listener on one loopback port, and
# a two-thread pool posting the replies; Python clients
# (test/demo_mt.py) pipeline lines over several connections at once,
# vanish without reading, and send a long line.  Then SIGTERM: the server
# must exit 0 after a clean shutdown and have counted every connection.
# Run twice: replies through the pool, and answered by the workers (-d).
# Without python3 or timeout it skips, exit 77 (a failure with
# ASYNCHAT_STRICT_TESTS=1: test/peers.sh).
#
# Run by `make check` from the build directory ($srcdir is set by
# automake); by hand: srcdir=/path/to/source sh test/demo_mt.sh
# MT_SERVER overrides the server program (default demo/mt_server).
# Ends with the line "N passed, M failed"; exits non-zero on any failure.

srcdir=${srcdir:-$(dirname "$0")/..}
server_bin=${MT_SERVER:-demo/mt_server}
. "$srcdir/test/peers.sh"
need_tools "python3 coreutils" python3 timeout
[ -x "$server_bin" ] || bad "$server_bin is not built"
[ -f "$srcdir/test/demo_mt.py" ] || bad "$srcdir/test/demo_mt.py missing"
[ "$fail" -eq 0 ] || finish

tmp=$(mktemp -d) || exit 1
server=
cleanup() {
	[ -n "$server" ] && kill -KILL "$server" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

run() { # label, server options...
	label=$1
	shift
	out=$tmp/server.out
	: >"$out"
	"$server_bin" -p 0 "$@" >"$out" 2>"$tmp/server.err" &
	server=$!
	port=
	for _ in $(seq 50); do
		port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$out")
		[ -n "$port" ] && break
		sleep 0.1
	done
	if [ -z "$port" ]; then
		bad "$label: server did not start"
		cat "$tmp/server.err"
		return
	fi
	echo "$label: server on port $port, pid $server"
	timeout 120 python3 "$srcdir/test/demo_mt.py" "$port" 8 300 \
		>"$tmp/py.out" 2>&1
	rc=$?
	sed "s/^/$label: /" "$tmp/py.out"
	p=$(sed -n 's/^python: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' \
		"$tmp/py.out")
	f=$(sed -n 's/^python: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' \
		"$tmp/py.out")
	made=$(sed -n 's/^python: connections \([0-9]*\)$/\1/p' "$tmp/py.out")
	pass=$((pass + ${p:-0}))
	fail=$((fail + ${f:-0}))
	if [ -z "$p" ] || { [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; }; then
		bad "$label: demo_mt.py exited $rc"
	fi
	kill -TERM "$server"
	i=0
	while [ $i -lt 100 ] && kill -0 "$server" 2>/dev/null; do
		i=$((i + 1))
		sleep 0.1
	done
	if kill -0 "$server" 2>/dev/null; then
		bad "$label: server still running 10 s after SIGTERM"
		return
	fi
	wait "$server"
	rc=$?
	server=
	cat "$out"
	if [ "$rc" -eq 0 ] && tail -n 1 "$out" | grep -qx 'shut down'; then
		ok "$label: SIGTERM: server exited 0 after a clean shutdown"
	else
		bad "$label: SIGTERM: exit status $rc"
		cat "$tmp/server.err"
	fi
	served=$(sed -n 's/^worker [0-9]*: \([0-9]*\) connections$/\1/p' "$out" |
		awk '{ s += $1 } END { print s + 0 }')
	workers=$(grep -c '^worker [0-9]*: ' "$out")
	if [ "$workers" -eq 2 ] && [ "$served" = "${made:-x}" ]; then
		ok "$label: the 2 workers accepted the $made connections between them"
	else
		bad "$label: $workers workers served $served connections, the clients made ${made:-?}"
	fi
	if grep -q . "$tmp/server.err"; then
		bad "$label: the server wrote to stderr"
		cat "$tmp/server.err"
	fi
}

run pool -w 2 -t 2 -c 20
run direct -w 2 -d
finish

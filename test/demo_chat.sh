#!/bin/sh
# demo_chat.sh - end-to-end test of demo/chat_server with Python socket
# clients (test/demo_chat.py): nicknames, broadcast, /msg, /who, /nick,
# /quit, announcements, overlong lines, then a 30 MB flood while one client
# has stopped reading (the server's RSS must stay bounded and that client
# be dropped), and SIGTERM with clients connected.  Without python3 (or
# timeout, or /proc) it skips, exit 77, saying why; with
# ASYNCHAT_STRICT_TESTS=1 that is a failure (test/peers.sh).
#
# Run by `make check` from the build directory ($srcdir is set by
# automake); by hand: srcdir=/path/to/source sh test/demo_chat.sh
# CHAT_SERVER overrides the server program (default demo/chat_server);
# CHAT_FLOOD_MB and CHAT_RSS_LIMIT_MB the flood size and the bound on the
# server's memory growth (defaults 30 and 16).
# Ends with the line "N passed, M failed"; exits non-zero on any failure.

srcdir=${srcdir:-$(dirname "$0")/..}
server_bin=${CHAT_SERVER:-demo/chat_server}
# In an AddressSanitizer build freed memory sits in a quarantine (256 MiB by
# default), which the RSS bound would count; keep it small.  Other builds
# ignore the variable.
ASAN_OPTIONS="quarantine_size_mb=4:thread_local_quarantine_size_kb=64${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export ASAN_OPTIONS
flood_mb=${CHAT_FLOOD_MB:-30}
rss_limit_mb=${CHAT_RSS_LIMIT_MB:-16}
. "$srcdir/test/peers.sh"
need_tools "python3 coreutils" python3 timeout
[ -r /proc/self/status ] ||
	skip_test "/proc is not mounted: /proc/PID/status is needed to read RSS"
[ -x "$server_bin" ] || bad "$server_bin is not built"
[ -f "$srcdir/test/demo_chat.py" ] || bad "$srcdir/test/demo_chat.py missing"
[ "$fail" -eq 0 ] || finish

tmp=$(mktemp -d) || exit 1
server=
cleanup() {
	[ -n "$server" ] && kill -KILL "$server" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# The libtool wrapper execs the real program, so $! is the server's own
# process, whose /proc/PID/status the clients read.
out=$tmp/server.out
: >"$out"
"$server_bin" -p 0 >"$out" 2>"$tmp/server.err" &
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
echo "server on port $port, pid $server"

# The clients end by sending SIGTERM themselves, with clients connected.
timeout 240 python3 "$srcdir/test/demo_chat.py" "$port" "$server" \
	"$flood_mb" "$rss_limit_mb" >"$tmp/py.out" 2>&1
rc=$?
cat "$tmp/py.out"
p=$(sed -n 's/^python: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' \
	"$tmp/py.out")
f=$(sed -n 's/^python: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' \
	"$tmp/py.out")
pass=$((pass + ${p:-0}))
fail=$((fail + ${f:-0}))
if [ -z "$p" ] || { [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; }; then
	bad "demo_chat.py exited $rc"
fi

# --- clean shutdown on SIGTERM: sent by the clients, or here if they
# stopped before they could
i=0
while [ $i -lt 100 ] && kill -0 "$server" 2>/dev/null; do
	[ $i -eq 20 ] && kill -TERM "$server"
	i=$((i + 1))
	sleep 0.1
done
if kill -0 "$server" 2>/dev/null; then
	bad "server still running 10 s after SIGTERM"
else
	wait "$server"
	rc=$?
	server=
	if [ "$rc" -eq 0 ] && tail -n 1 "$out" | grep -qx 'shut down'; then
		ok "SIGTERM: server exited 0 after a clean shutdown"
	else
		bad "SIGTERM: exit status $rc"
		cat "$tmp/server.err"
	fi
fi
finish

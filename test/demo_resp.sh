#!/bin/sh
# demo_resp.sh - runs demo/resp_client against a real redis-server on a
# free loopback port (in a temporary directory, no persistence, killed at
# exit): the client's --selftest, its command-line mode, and a fake server
# (test/demo_resp_fake.py) that sends replies one byte at a time or
# broken.  Every wait is bounded.  Needs redis-server, redis-cli and
# python3: without them it skips (exit 77) and says which is missing; with
# ASYNCHAT_STRICT_TESTS=1 that is a failure (test/peers.sh).
#
# Run from the build directory (make check does); srcdir locates the
# helper.  DEMO_VALGRIND=1 runs the client under valgrind.
set -u
srcdir=${srcdir:-$(dirname "$0")/..}
client=./demo/resp_client
. "$srcdir/test/peers.sh"
need_tools "redis-server python3 coreutils" redis-server redis-cli python3 \
	timeout
[ -x "$client" ] || { bad "$client is not built"; finish; }

run="timeout 300"
if [ -n "${DEMO_VALGRIND:-}" ]; then
	run="$run ./libtool --mode=execute valgrind --quiet --error-exitcode=99 \
--leak-check=full --errors-for-leak-kinds=definite,indirect,possible"
fi

tmp=$(mktemp -d) || exit 1
redis=
cleanup() {
	[ -n "$redis" ] && kill -KILL "$redis" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

free_port() {
	python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Start redis-server; a port taken meanwhile by someone else is retried.
port=
for _ in 1 2 3 4 5; do
	port=$(free_port)
	(cd "$tmp" && exec redis-server --port "$port" --bind 127.0.0.1 \
	    --save '' --appendonly no --daemonize no --dir "$tmp" \
	    >"$tmp/redis.log" 2>&1) &
	redis=$!
	for _ in $(seq 50); do
		kill -0 "$redis" 2>/dev/null || break
		[ "$(timeout 2 redis-cli -p "$port" ping 2>/dev/null)" = PONG ] &&
			break 2
		sleep 0.1
	done
	kill -KILL "$redis" 2>/dev/null
	wait "$redis" 2>/dev/null
	redis=
done
if [ -z "$redis" ]; then
	tail -n 5 "$tmp/redis.log"
	bad "redis-server starts and answers PING"
	finish
fi
ok "redis-server $(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/') on 127.0.0.1:$port"

# The self-test: one ok/FAIL line per check and a summary line.
$run "$client" -p "$port" --selftest >"$tmp/self.out" 2>&1
status=$?
cat "$tmp/self.out"
pass=$((pass + $(grep -c '^ok ' "$tmp/self.out")))
fail=$((fail + $(grep -c '^FAIL ' "$tmp/self.out")))
if [ "$status" -eq 0 ] && tail -n 1 "$tmp/self.out" | grep -q '^[1-9][0-9]* passed, 0 failed$'; then
	ok "resp_client --selftest exits 0"
else
	bad "resp_client --selftest exits 0 (status $status)"
fi

# expect NAME STATUS WANT_OUTPUT command...: runs the client and compares
# its exit status and standard output.
expect() {
	name=$1 want_status=$2 want=$3
	shift 3
	"$@" >"$tmp/got" 2>"$tmp/err"
	status=$?
	printf '%s' "$want" >"$tmp/want"
	if [ "$status" -eq "$want_status" ] && cmp -s "$tmp/got" "$tmp/want"; then
		ok "$name"
	else
		bad "$name (status $status, want $want_status)"
		cat "$tmp/got" "$tmp/err"
	fi
}

nl='
'
tab=$(printf '\t')
expect "command line: SET, GET, LRANGE, nested EVAL" 0 \
"OK${nl}\"a\\tb\"${nl}(empty array)${nl}\
1) (integer) 1${nl}2) 1) \"two\"${nl}   2) (nil)${nl}" \
    $run "$client" -p "$port" SET resp_client:cli "a${tab}b" \; \
    GET resp_client:cli \; LRANGE resp_client:nolist 0 -1 \; \
    EVAL "return {1, {'two', false}}" 0
expect "command line: an error reply makes the exit status 1" 1 \
"(integer) 1${nl}OK${nl}(error) ERR value is not an integer or out of range${nl}" \
    $run "$client" -p "$port" DEL resp_client:cli \; SET resp_client:cli x \; \
    INCR resp_client:cli
expect "command line: usage errors exit 2" 2 "" timeout 10 "$client" --selftest

# fake NAME STATUS WANT_OUTPUT REPLY: the reply comes from the fake server,
# one byte per segment.
fake() {
	name=$1 want_status=$2 want=$3 reply=$4
	timeout 30 python3 "$srcdir/test/demo_resp_fake.py" "$reply" \
	    >"$tmp/fake.port" &
	fake_pid=$!
	fport=
	for _ in $(seq 50); do
		fport=$(cat "$tmp/fake.port")
		[ -n "$fport" ] && break
		sleep 0.1
	done
	expect "$name" "$want_status" "$want" $run "$client" -p "${fport:-1}" GET x
	wait "$fake_pid"
}

fake "a nested reply sent one byte at a time" 0 \
"1) \"foo\"${nl}2) 1) (integer) -5${nl}   2) (nil)${nl}   3) (nil)${nl}3) \"a\\r\\nb\"${nl}" \
    '*3\r\n$3\r\nfoo\r\n*3\r\n:-5\r\n$-1\r\n*-1\r\n$4\r\na\r\nb\r\n'
fake "a bulk string not ended by CRLF is a protocol error" 1 "" \
    '$5\r\nabcdefg\r\n'
fake "an unknown type byte is a protocol error" 1 "" '%1\r\n'
fake "a reply cut short by the server is an error" 1 "" \
    '*2\r\n:1\r\n$10\r\nabc'

# Stop redis-server; its port now refuses connections.
timeout 10 redis-cli -p "$port" shutdown nosave >/dev/null 2>&1
for _ in $(seq 50); do
	kill -0 "$redis" 2>/dev/null || break
	sleep 0.1
done
kill -KILL "$redis" 2>/dev/null
wait "$redis" 2>/dev/null
redis=
expect "a refused connection makes the exit status 1" 1 "" \
    $run "$client" -p "$port" PING
finish

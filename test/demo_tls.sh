#!/bin/sh
# demo_tls.sh - runs demo/tls_echo with a throwaway self-signed
# certificate, talks to it with Python's ssl module (test/demo_tls.py) and
# with "openssl s_client", then stops it with SIGTERM.  Loopback only;
# every wait is bounded.  Needs openssl and python3, and tls_echo built
# (configure found libevent_openssl): without them it skips (exit 77) and
# says why; with ASYNCHAT_STRICT_TESTS=1 that is a failure
# (test/peers.sh).
#
# Run from the build directory (make check does); srcdir locates
# demo_tls.py.  DEMO_VALGRIND=1 runs the server under valgrind.
set -u
srcdir=${srcdir:-$(dirname "$0")/..}
server=./demo/tls_echo
. "$srcdir/test/peers.sh"
# make check says whether configure found libevent_openssl.
[ "${ASYNCHAT_HAVE_TLS:-yes}" = no ] &&
	skip_test "$server is not built: configure was given --without-tls or found no libevent_openssl (Debian: apt-get install libssl-dev libevent-dev; --with-tls makes it required)"
need_tools "openssl python3 coreutils" openssl python3 timeout
[ -x "$server" ] || { bad "$server is not built"; finish; }

tmp=$(mktemp -d) || exit 1
pid=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# A certificate for localhost and 127.0.0.1, valid for a day.
if timeout 30 openssl req -x509 -newkey ec \
    -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >"$tmp/req.log" 2>&1; then
	ok "self-signed certificate made"
else
	cat "$tmp/req.log"
	bad "self-signed certificate made"
	finish
fi

run=
if [ -n "${DEMO_VALGRIND:-}" ]; then
	run="./libtool --mode=execute valgrind --quiet --error-exitcode=99 \
--leak-check=full --errors-for-leak-kinds=definite,indirect,possible"
fi
$run "$server" -p 0 -c "$tmp/cert.pem" -k "$tmp/key.pem" \
    >"$tmp/out" 2>"$tmp/err" &
pid=$!
port=
for _ in $(seq 100); do
	port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/out")
	[ -n "$port" ] && break
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
if [ -z "$port" ]; then
	cat "$tmp/out" "$tmp/err"
	bad "tls_echo prints its port"
	finish
fi
ok "tls_echo listening on 127.0.0.1:$port"

# Python's ssl module: one ok/FAIL line per check.
timeout 120 python3 "$srcdir/test/demo_tls.py" "$port" "$tmp/cert.pem" \
    >"$tmp/py.out" 2>&1
status=$?
cat "$tmp/py.out"
pass=$((pass + $(grep -c '^ok ' "$tmp/py.out")))
fail=$((fail + $(grep -c '^FAIL ' "$tmp/py.out")))
[ "$status" -eq 0 ] || bad "demo_tls.py exits 0 (status $status)"

# openssl s_client: it verifies the certificate, sends its input, and
# exits when the server closes the connection after "quit".
printf 'hello s_client\nsecond line\r\nquit\n' >"$tmp/in"
printf 'hello s_client\nsecond line\r\nbye\r\n' >"$tmp/want"
timeout 30 openssl s_client -quiet -connect "127.0.0.1:$port" \
    -servername localhost -CAfile "$tmp/cert.pem" -verify_return_error \
    <"$tmp/in" >"$tmp/got" 2>"$tmp/s_client.err"
status=$?
if [ "$status" -eq 0 ] && cmp -s "$tmp/got" "$tmp/want"; then
	ok "openssl s_client: lines echoed byte for byte, quit closes"
else
	od -c "$tmp/got" | head -5
	cat "$tmp/s_client.err"
	bad "openssl s_client: lines echoed byte for byte (status $status)"
fi

# SIGTERM: a clean shutdown, exit status 0.
kill -TERM "$pid"
status=
for _ in $(seq 100); do
	if ! kill -0 "$pid" 2>/dev/null; then
		wait "$pid"
		status=$?
		break
	fi
	sleep 0.1
done
pid_was=$pid
pid=
if [ "$status" = 0 ] && grep -q '^shut down$' "$tmp/out"; then
	ok "SIGTERM: tls_echo shuts down and exits 0"
else
	[ -z "$status" ] && kill -KILL "$pid_was" 2>/dev/null
	cat "$tmp/out" "$tmp/err"
	bad "SIGTERM: tls_echo shuts down and exits 0 (status ${status:-none})"
fi
finish

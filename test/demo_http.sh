#!/bin/sh
# demo_http.sh - end-to-end test of demo/http_server with real clients:
# curl (byte-exact with cmp), Python (test/demo_http.py: keep-alive,
# pipelining and its flow control, limits, malformed requests), a wrk load
# run (ab -k if wrk is missing), then the graceful shutdown on SIGTERM.
# The deadlines and timeouts are test/demo_slowloris.sh's.  A missing client skips the test (exit 77) and says which;
# with ASYNCHAT_STRICT_TESTS=1 that is a failure (test/peers.sh).
#
# Run by `make check` from the build directory ($srcdir is set by
# automake); by hand: srcdir=/path/to/source sh test/demo_http.sh
# HTTP_SERVER overrides the server program (default demo/http_server).
# Ends with the line "N passed, M failed"; exits non-zero on any failure.

srcdir=${srcdir:-$(dirname "$0")/..}
server_bin=${HTTP_SERVER:-demo/http_server}
# In an AddressSanitizer build freed memory sits in a quarantine, which the
# RSS bound of the flow-control check would count; keep it small.
ASAN_OPTIONS="quarantine_size_mb=4:thread_local_quarantine_size_kb=64${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export ASAN_OPTIONS
. "$srcdir/test/peers.sh"
need_tools "curl python3 diffutils coreutils" curl python3 cmp timeout
if command -v wrk >/dev/null 2>&1; then
	load=wrk
elif command -v ab >/dev/null 2>&1; then
	load=ab
else
	skip_test "not installed: wrk, nor ab (Debian: apt-get install wrk, or apache2-utils)"
fi
[ -r /proc/self/status ] ||
	skip_test "/proc is not mounted: the server's descriptors and RSS are read there"
[ -x "$server_bin" ] || bad "$server_bin is not built"
[ -f "$srcdir/test/demo_http.py" ] || bad "$srcdir/test/demo_http.py missing"
[ "$fail" -eq 0 ] || finish

tmp=$(mktemp -d) || exit 1
server=
cleanup() {
	[ -n "$server" ] && kill -KILL "$server" 2>/dev/null
	chmod -R u+rwx "$tmp" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# The document root, and a secret next to it that must stay unreachable.
root=$tmp/root
mkdir -p "$root/sub"
echo "outside the root" >"$tmp/secret.txt"
printf '<!doctype html>\n<p>libasynchat</p>\n' >"$root/index.html"
printf 'hello\n' >"$root/hello.txt"
echo "in a subdirectory" >"$root/sub/file.txt"
: >"$root/empty.txt"
# Binary: NUL bytes and every byte value; big.bin needs many writes.
printf 'a\000b\000\377\000\r\n\r\n' >"$root/bin.dat"
i=0
while [ $i -lt 256 ]; do
	printf "\\$(printf %03o $i)"
	i=$((i + 1))
done >>"$root/bin.dat"
head -c 3000000 /dev/urandom >"$root/big.bin"
head -c 40000 /dev/urandom >"$root/mid.bin"
# Larger than the kernel's socket buffers: still being sent at SIGTERM.
head -c 12000000 /dev/urandom >"$root/large.bin"
head -c 300000 /dev/urandom >"$tmp/upload.bin"
head -c 1048576 /dev/urandom >"$tmp/upload-1mib.bin"
head -c 1048577 /dev/urandom >"$tmp/upload-too-big.bin"
ln -s "$tmp/secret.txt" "$root/escape.txt"
ln -s ../../secret.txt "$root/sub/relative-escape.txt"
ln -s hello.txt "$root/alias.txt"
mkfifo "$root/fifo"
echo "no permission" >"$root/unreadable.txt"
chmod 000 "$root/unreadable.txt"

# The libtool wrapper execs the real program, so $! is the server's own
# process, whose /proc/PID the Python checks read.  -g 8: SIGTERM gives
# connections 8 s to finish what is queued.
out=$tmp/server.out
: >"$out"
"$server_bin" -p 0 -r "$root" -g 8 >"$out" 2>"$tmp/server.err" &
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
echo "server on port $port, docroot $root"
url=http://127.0.0.1:$port
C="curl -s --max-time 10"

# expect NAME CODE [curl args...]: the status code only.
expect() {
	name=$1 want=$2
	shift 2
	got=$($C -o /dev/null -w '%{http_code}' "$@")
	if [ "$got" = "$want" ]; then ok "$name ($got)"; else
		bad "$name: got $got, want $want"; fi
}

# same NAME FILE CODE [curl args...]: status and the body byte-exact.
same() {
	name=$1 file=$2 want=$3
	shift 3
	got=$($C -o "$tmp/body" -w '%{http_code}' "$@")
	if [ "$got" = "$want" ] && cmp -s "$file" "$tmp/body"; then
		ok "$name"
	else
		bad "$name: status $got (want $want), body differs"
	fi
}

# --- GET and HEAD
same "GET /index.html" "$root/index.html" 200 "$url/index.html"
same "GET binary file with NUL bytes" "$root/bin.dat" 200 "$url/bin.dat"
same "GET 3 MB file" "$root/big.bin" 200 "$url/big.bin"
same "GET empty file" "$root/empty.txt" 200 "$url/empty.txt"
same "GET in a subdirectory" "$root/sub/file.txt" 200 "$url/sub/file.txt"
same "GET symlink inside the root" "$root/hello.txt" 200 "$url/alias.txt"
same "GET with a query string" "$root/hello.txt" 200 "$url/hello.txt?a=1"
same "GET percent-encoded name" "$root/hello.txt" 200 "$url/hell%6F.txt"
type=$($C -o /dev/null -w '%{content_type}' "$url/index.html")
[ "$type" = "text/html; charset=utf-8" ] && ok "Content-Type of .html" ||
	bad "Content-Type of .html: $type"
type=$($C -o /dev/null -w '%{content_type}' "$url/bin.dat")
[ "$type" = "application/octet-stream" ] && ok "Content-Type of .dat" ||
	bad "Content-Type of .dat: $type"

: >"$tmp/empty"
# With -I curl writes the header block to -o; a body sent after it would
# break the next response on the same connection.
size=$(wc -c <"$root/bin.dat" | tr -d ' ')
n=$($C --http1.1 -w '%{size_download} %{num_connects}\n' -I -o "$tmp/head" \
	"$url/bin.dat" --next -o "$tmp/body" -w '%{num_connects}\n' \
	"$url/hello.txt" | awk '{ s += $NF; d = d $1 " " } END { print d s }')
if head -n 1 "$tmp/head" | grep -q '^HTTP/1.1 200 ' &&
    grep -qi "^Content-Length: $size" "$tmp/head" && [ "$n" = "0 0 1" ] &&
    cmp -s "$tmp/body" "$root/hello.txt"; then
	ok "HEAD: 200, Content-Length $size, no body, connection reused"
else
	bad "HEAD: $(head -n 1 "$tmp/head") ($n)"
fi
expect "HEAD of a missing file" 404 -I "$url/nope"

# --- errors and the root's boundary
expect "404 for a missing file" 404 "$url/missing.html"
expect "404 for a path through a file" 404 "$url/hello.txt/x"
expect "403 for the root directory" 403 "$url/"
expect "403 for a directory" 403 "$url/sub"
expect "403 for a directory with /" 403 "$url/sub/"
expect "403 for a FIFO" 403 "$url/fifo"
expect "403 for a symlink out of the root" 403 "$url/escape.txt"
expect "403 for a relative symlink out of the root" 403 \
	"$url/sub/relative-escape.txt"
if [ "$(id -u)" != 0 ]; then
	expect "403 for an unreadable file" 403 "$url/unreadable.txt"
else
	echo "note: running as root, unreadable.txt is readable: not checked"
fi
for path in /../secret.txt /sub/../../secret.txt /%2e%2e/secret.txt \
    /%2E%2E/secret.txt /.%2e/secret.txt /sub/%2e%2e/%2e%2e/secret.txt \
    /sub%2f..%2f..%2fsecret.txt /..%2fsecret.txt /sub/..; do
	expect "traversal $path refused" 403 --path-as-is "$url$path"
done
expect "traversal with %00 refused" 400 --path-as-is \
	"$url/escape.txt%00.html"
expect "traversal in absolute form refused" 403 --path-as-is \
	--request-target "http://127.0.0.1/../secret.txt" "$url/"

# --- keep-alive: several URLs, one connection
n=$($C --http1.1 -w '%{num_connects}\n' \
	-o "$tmp/k1" "$url/index.html" -o "$tmp/k2" "$url/bin.dat" \
	-o "$tmp/k3" "$url/big.bin" -o "$tmp/k4" "$url/missing" \
	-o "$tmp/k5" "$url/hello.txt" | awk '{ s += $1 } END { print s }')
if [ "$n" = 1 ] && cmp -s "$tmp/k1" "$root/index.html" &&
    cmp -s "$tmp/k2" "$root/bin.dat" && cmp -s "$tmp/k3" "$root/big.bin" &&
    cmp -s "$tmp/k5" "$root/hello.txt"; then
	ok "curl --http1.1: 5 URLs on 1 connection, bodies byte-exact"
else
	bad "curl --http1.1 keep-alive: $n connections"
fi
n=$($C --http1.0 -w '%{num_connects}\n' -o "$tmp/k1" "$url/index.html" \
	-o "$tmp/k2" "$url/bin.dat" | awk '{ s += $1 } END { print s }')
if [ "$n" = 2 ] && cmp -s "$tmp/k1" "$root/index.html" &&
    cmp -s "$tmp/k2" "$root/bin.dat"; then
	ok "curl --http1.0: answered, one connection per request"
else
	bad "curl --http1.0: $n connections"
fi
expect "curl --http1.0 HEAD" 200 --http1.0 -I "$url/hello.txt"
n=$($C -H 'Connection: close' -w '%{num_connects}\n' -o "$tmp/k1" \
	"$url/hello.txt" -o "$tmp/k2" "$url/hello.txt" |
	awk '{ s += $1 } END { print s }')
[ "$n" = 2 ] && cmp -s "$tmp/k2" "$root/hello.txt" &&
	ok "Connection: close honoured" || bad "Connection: close: $n"

# --- POST /echo
same "POST 300 kB binary upload echoed" "$tmp/upload.bin" 200 \
	--data-binary @"$tmp/upload.bin" "$url/echo"
same "POST 1 MiB upload (the limit) echoed" "$tmp/upload-1mib.bin" 200 \
	--data-binary @"$tmp/upload-1mib.bin" "$url/echo"
same "POST without Expect: 100-continue" "$tmp/upload.bin" 200 \
	-H 'Expect:' --data-binary @"$tmp/upload.bin" "$url/echo"
same "POST --http1.0" "$tmp/upload.bin" 200 --http1.0 \
	--data-binary @"$tmp/upload.bin" "$url/echo"
same "POST empty body" "$tmp/empty" 200 --data-binary '' "$url/echo"
expect "POST over 1 MiB refused" 413 \
	--data-binary @"$tmp/upload-too-big.bin" "$url/echo"
expect "POST over 1 MiB without Expect refused" 413 -H 'Expect:' \
	--data-binary @"$tmp/upload-too-big.bin" "$url/echo"
n=$($C --http1.1 -w '%{num_connects}\n' \
	--data-binary @"$tmp/upload.bin" -o "$tmp/k1" "$url/echo" \
	--next -o "$tmp/k2" "$url/bin.dat" | awk '{ s += $1 } END { print s }')
[ "$n" = 1 ] && cmp -s "$tmp/k1" "$tmp/upload.bin" &&
	cmp -s "$tmp/k2" "$root/bin.dat" &&
	ok "POST then GET on one connection" || bad "POST then GET: $n"

# python_checks ARGS...: run demo_http.py and add up its counts.
python_checks() {
	timeout 180 python3 "$srcdir/test/demo_http.py" "$@" \
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
		bad "demo_http.py $1 exited $rc"
	fi
}

# --- Python: http.client and raw sockets
python_checks "$port" "$root" "$server"

# --- load: 64 connections for 3 seconds, every response a 200
conns=64
if [ "$load" = wrk ]; then
	timeout 60 wrk -t 2 -c $conns -d 3s --timeout 5s \
		"$url/index.html" >"$tmp/load" 2>&1
	rc=$?
	cat "$tmp/load"
	reqs=$(awk '/^Requests\/sec:/ { print $2 }' "$tmp/load")
	total=$(awk '/requests in/ { print $1 }' "$tmp/load")
	if [ "$rc" -eq 0 ] && [ -n "$reqs" ] && [ "${total:-0}" -gt 0 ] &&
	    ! grep -q 'Non-2xx' "$tmp/load" &&
	    ! grep -q 'Socket errors' "$tmp/load"; then
		ok "wrk: $total requests over $conns connections, all 200, $reqs requests/s"
	else
		bad "wrk: non-2xx responses or socket errors"
	fi
else
	timeout 60 ab -k -q -c $conns -t 3 -n 10000000 "$url/index.html" \
		>"$tmp/load" 2>&1
	rc=$?
	cat "$tmp/load"
	reqs=$(awk '/^Requests per second:/ { print $4 }' "$tmp/load")
	failed=$(awk '/^Failed requests:/ { print $3 }' "$tmp/load")
	non2xx=$(awk '/^Non-2xx responses:/ { print $3 }' "$tmp/load")
	if [ "$rc" -eq 0 ] && [ -n "$reqs" ] && [ "${failed:-1}" = 0 ] &&
	    [ -z "$non2xx" ]; then
		ok "ab -k: $conns connections, all 200, $reqs requests/s"
	else
		bad "ab -k: failed or non-2xx responses"
	fi
fi
same "server answers after the load" "$root/hello.txt" 200 "$url/hello.txt"

# --- graceful shutdown on SIGTERM, sent by the Python checks (or here if
# they stopped before they could): idle connections close, a response in
# progress finishes, an unread one is cut at the deadline (-g 8)
python_checks --shutdown "$port" "$root" "$server"
kill -0 "$server" 2>/dev/null && kill -TERM "$server"
rc=0
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
		ok "SIGTERM: clean shutdown"
	else
		bad "SIGTERM: exit status $rc"
		cat "$tmp/server.err"
	fi
fi
finish

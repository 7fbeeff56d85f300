# test/peers.sh - sourced by the test scripts (. "$srcdir/test/peers.sh")
# to check for the external programs they talk to.
#
# A missing peer is a skip: the script prints why and exits 77, which
# automake's test harness reports as SKIP.  With ASYNCHAT_STRICT_TESTS=1
# in the environment (CI sets it) the same reason ends the script with
# exit status 1, a failure: nothing may be skipped there.

# The scripts' own counts: ok and bad record a check, finish prints the
# closing "N passed, N failed" line and passes only if some check ran and
# none failed.
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok - $1"; }
bad() { fail=$((fail + 1)); echo "FAIL - $1"; }
finish() {
	echo "$pass passed, $fail failed"
	[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
	exit
}

# Strict unless ASYNCHAT_STRICT_TESTS is unset, empty or 0.
peers_strict() {
	[ -n "${ASYNCHAT_STRICT_TESTS:-}" ] && [ "$ASYNCHAT_STRICT_TESTS" != 0 ]
}

# skip_test REASON: exit 77 (SKIP), or 1 (FAIL) in strict mode.
skip_test() {
	if peers_strict; then
		echo "FAIL: $1 (ASYNCHAT_STRICT_TESTS=$ASYNCHAT_STRICT_TESTS: a missing peer is a failure, not a skip)"
		exit 1
	fi
	echo "SKIP: $1 (with ASYNCHAT_STRICT_TESTS=1 this is a failure)"
	exit 77
}

# need_tools "Debian packages" TOOL...: skip_test unless every TOOL is on
# the PATH, naming all the missing ones and the packages to install.
need_tools() {
	peers_pkgs=$1
	shift
	peers_missing=
	for peers_tool in "$@"; do
		command -v "$peers_tool" >/dev/null 2>&1 ||
			peers_missing="$peers_missing $peers_tool"
	done
	[ -z "$peers_missing" ] ||
		skip_test "not installed:$peers_missing (Debian: apt-get install $peers_pkgs)"
}

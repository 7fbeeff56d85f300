#!/bin/sh
# The shared library exports the public API and nothing else: every
# dynamic symbol starts with async_chat_, and every function declared in
# include/asynchat.h is exported.
set -u
lib=lib/.libs/libasynchat.so
hdr=${srcdir:-.}/include/asynchat.h
if [ ! -f "$lib" ]; then
	echo "no $lib (configured with --disable-shared?): nothing to check"
	exit 77
fi
pass=0
fail=0
exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRW]$/ {print $3}' | sort)
stray=$(echo "$exported" | grep -v '^async_chat_' || true)
if [ -n "$stray" ]; then
	echo "FAIL: exported beyond the API: $stray"
	fail=$((fail + 1))
else
	pass=$((pass + 1))
fi
declared=$(sed -n 's/^[a-z].*[ *]\(async_chat_[a-z_]*\)(.*/\1/p' "$hdr" | sort -u)
missing=$(echo "$declared" | while read -r f; do
	echo "$exported" | grep -qx "$f" || echo "$f"
done)
if [ -n "$missing" ]; then
	echo "FAIL: declared but not exported: $missing"
	fail=$((fail + 1))
else
	pass=$((pass + 1))
fi
echo "exported: $(echo "$exported" | wc -l) symbols; declared: $(echo "$declared" | wc -l) functions"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

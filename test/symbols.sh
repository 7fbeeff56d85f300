#!/bin/sh
# The libraries expose the public API and nothing else.
#
# Shared library (lib/.libs/libasynchat.so): every dynamic symbol is a
# public name, async_chat_ followed by a letter or digit (the internal
# async_chat__* names are not exported: -export-symbols-regex in
# Makefile.am), and every function declared in include/asynchat.h is
# exported.
#
# Static archive (lib/.libs/libasynchat.a): every global symbol its
# objects define starts with async_chat_ (public async_chat_[a-z0-9]...,
# internal async_chat__...), so a static link cannot collide with the
# application's or another library's names; and every declared function
# is defined.
#
# Each library that was built is checked; exit 77 (skip) only when
# neither exists.
set -u
so=lib/.libs/libasynchat.so
ar=lib/.libs/libasynchat.a
hdr=${srcdir:-.}/include/asynchat.h
if [ ! -f "$so" ] && [ ! -f "$ar" ]; then
	echo "no $so and no $ar: nothing to check"
	exit 77
fi
pass=0
fail=0
check() { # description, offending names (empty: pass)
	if [ -n "$2" ]; then
		# shellcheck disable=SC2086 # the names on one line
		echo "FAIL: $1:" $2
		fail=$((fail + 1))
	else
		echo "ok: $1"
		pass=$((pass + 1))
	fi
}
declared=$(sed -n 's/^[a-z].*[ *]\(async_chat_[a-z0-9_]*\)(.*/\1/p' "$hdr" |
	sort -u)
missing_from() { # symbol list
	echo "$declared" | while read -r f; do
		echo "$1" | grep -qx "$f" || echo "$f"
	done
}

if [ -f "$so" ]; then
	exported=$(nm -D --defined-only "$so" |
		awk '$2 ~ /^[TDBRWVGSui]$/ {print $3}' | sort -u)
	check "$so exports only async_chat_[a-z0-9]* names" \
		"$(echo "$exported" | grep -v '^async_chat_[a-z0-9]' || true)"
	check "$so exports every declared function" \
		"$(missing_from "$exported")"
	echo "$so: $(echo "$exported" | wc -l) exported symbols"
else
	echo "no $so (configured with --disable-shared?): shared checks skipped"
fi

if [ -f "$ar" ]; then
	# The compiler's own hidden helpers (32-bit x86's PIC thunks, which
	# every object may carry as a hidden COMDAT) are not ours.
	defined=$(nm -g --defined-only "$ar" | awk 'NF == 3 {print $3}' |
		grep -v '^__x86\.get_pc_thunk\.' | sort -u)
	check "$ar defines only async_chat_* global symbols" \
		"$(echo "$defined" | grep -v '^async_chat_' || true)"
	check "$ar defines every declared function" \
		"$(missing_from "$defined")"
	internal=$(echo "$defined" | grep -c '^async_chat__' || true)
	echo "$ar: $(echo "$defined" | wc -l) global symbols ($internal internal async_chat__*)"
else
	echo "no $ar (configured with --disable-static?): static checks skipped"
fi

echo "declared: $(echo "$declared" | wc -l) functions in include/asynchat.h"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

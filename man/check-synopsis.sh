#!/bin/sh
# check-synopsis.sh - the manual pages' SYNOPSIS against the header.
#   usage: man/check-synopsis.sh HEADER PAGE...
#
# Reads every prototype (function and typedef) that HEADER declares and
# every prototype in each PAGE's SYNOPSIS, with the roff markup removed
# (.B/.BI/.BR/.I/.IR/.RB/.RI/.IB, their quotes, \- \e \(dq \&) and the
# whitespace normalized, and checks that:
#   - each prototype in a SYNOPSIS is the header's, word for word,
#     parameter names included;
#   - each function named in a page's NAME has its prototype in that
#     page's SYNOPSIS, and each function in a SYNOPSIS is named in NAME;
#   - each function the header declares is in some page's SYNOPSIS.
#   - each struct or enum body shown in a SYNOPSIS (.EX/.EE) is the
#     header's, comments aside.
# #define lines are not compared.
# Prints one line per mismatch and a count of checks and mismatches;
# exits 1 on a mismatch.  Needs only sh and a POSIX awk.  KEEP=1 keeps
# the extracted prototypes in $TMPDIR/check-synopsis.PID.*.
set -u
hdr=${1:?usage: $0 HEADER PAGE...}
shift
tmp=${TMPDIR:-/tmp}/check-synopsis.$$
trap '[ -n "${KEEP:-}" ] || rm -f "$tmp".*' EXIT

# Statements: "KEY<TAB>normalized prototype", one a line.  KEY is the
# function name (the identifier before the first "(") or, for a typedef
# of a function pointer, the typedef's name.
statements='
function norm(s) {
	gsub(/[ \t\n]+/, " ", s)
	# no space next to punctuation: "( ", " )", " ,", "* x" -> "*x"
	gsub(/ ?\( ?/, "(", s); gsub(/ ?\) ?/, ")", s)
	gsub(/ ?, ?/, ", ", s); gsub(/ ?\* ?/, " *", s)
	gsub(/\( \*/, "(*", s); gsub(/\) \(/, ")(", s)
	sub(/^ /, "", s); sub(/ $/, "", s)
	return s
}
function emit(s,   key, t) {
	s = norm(s)
	if (s ~ /^typedef /) {
		if (match(s, /\(\*async_chat_[a-z0-9_]*\)/))
			print substr(s, RSTART + 2, RLENGTH - 3) "\t" s ";"
		return
	}
	if (index(s, "(") == 0) return
	t = s
	sub(/\(.*/, "", t)
	if (match(t, /async_chat_[a-z0-9_]*$/))
		print substr(t, RSTART) "\t" s ";"
}
# text: declarations without comments, preprocessor lines or bodies
{
	text = text " " $0
}
END {
	n = length(text); depth = 0; cur = ""
	for (i = 1; i <= n; i++) {
		c = substr(text, i, 1)
		if (c == "{") { depth++; continue }
		if (c == "}") { depth--; continue }
		if (depth > 0) continue
		if (c == ";") { emit(cur); cur = ""; continue }
		cur = cur c
	}
}
'

# Bodies: "struct NAME<TAB>normalized members" (or enum), one a line.
bodies='
function norm(s) {
	gsub(/[ \t\n]+/, " ", s)
	gsub(/ ?\( ?/, "(", s); gsub(/ ?\) ?/, ")", s)
	gsub(/ ?, ?/, ", ", s); gsub(/ ?\* ?/, " *", s)
	gsub(/\( \*/, "(*", s); gsub(/\) \(/, ")(", s)
	gsub(/ ?; ?/, "; ", s); gsub(/ ?= ?/, " = ", s)
	sub(/^ /, "", s); sub(/ $/, "", s)
	return s
}
{ text = text " " $0 }
END {
	n = length(text); depth = 0; cur = ""; key = ""
	for (i = 1; i <= n; i++) {
		c = substr(text, i, 1)
		if (c == "{") {
			if (depth++ == 0) {
				key = ""; body = ""
				if (match(cur, /(struct|enum)[ \t]+async_chat_[a-z0-9_]+[ \t]*$/)) {
					key = substr(cur, RSTART, RLENGTH)
					gsub(/[ \t]+/, " ", key); sub(/ $/, "", key)
				}
			}
			else body = body c
			continue
		}
		if (c == "}") {
			if (--depth == 0) {
				if (key != "") print key "\t" norm(body)
				cur = ""; key = ""
			} else body = body c
			continue
		}
		if (depth > 0) { body = body c; continue }
		if (c == ";") { cur = ""; continue }
		cur = cur c
	}
}
'

# Comments, preprocessor lines and extern "C" removed.
nocomment='
BEGIN { inc = 0 }
{
	line = $0; out = ""
	while (line != "") {
		if (inc) {
			p = index(line, "*/")
			if (p == 0) { line = ""; break }
			line = substr(line, p + 2); inc = 0
		} else {
			p = index(line, "/*")
			if (p == 0) { out = out line; line = ""; break }
			out = out substr(line, 1, p - 1); line = substr(line, p + 2)
			inc = 1
		}
	}
	if (out ~ /^[ \t]*#/) next
	if (out ~ /extern "C"/) next
	print out
}'
awk "$nocomment" "$hdr" | awk "$statements" | sort > "$tmp.hdr"
awk "$nocomment" "$hdr" | awk "$bodies" | sort > "$tmp.hbodies"

# A page: its NAME functions and its SYNOPSIS prototypes.
page_names() {
	awk '
	/^\.SH / { on = ($0 ~ /^\.SH "?NAME"?$/); next }
	on {
		s = $0; sub(/\\-.*/, "", s); gsub(/,/, " ", s)
		n = split(s, w, /[ \t]+/)
		for (i = 1; i <= n; i++)
			if (w[i] ~ /^async_chat_[a-z0-9_]+$/) print w[i]
	}' "$1" | sort -u
}
page_synopsis() {
	awk '
	# roff: the arguments of a font macro, quotes grouping
	function args(s,   out, n, i, c, q, a, k) {
		n = 0; a = ""; q = 0; k = 0
		for (i = 1; i <= length(s); i++) {
			c = substr(s, i, 1)
			if (c == "\"") { q = !q; k = 1; continue }
			if (!q && (c == " " || c == "\t")) {
				if (k || a != "") { arg[++n] = a; a = ""; k = 0 }
				continue
			}
			a = a c
		}
		if (k || a != "") arg[++n] = a
		return n
	}
	function unescape(s) {
		gsub(/\\-/, "-", s); gsub(/\\\(dq/, "\"", s)
		gsub(/\\&/, "", s); gsub(/\\e/, "\\", s)
		return s
	}
	/^\.SH / { on = ($0 ~ /^\.SH "?SYNOPSIS"?$/); next }
	!on { next }
	/^\.EX/ { ex = 1; next }
	/^\.EE/ { ex = 0; next }
	ex { next }
	/^\.(B|I|BI|IB|BR|RB|IR|RI)([ \t]|$)/ {
		m = $0; sub(/[ \t].*/, "", m); rest = substr($0, length(m) + 1)
		n = args(rest); line = ""
		for (i = 1; i <= n; i++)
			line = line (m == ".B" || m == ".I" ? (i > 1 ? " " : "") : "") arg[i]
		line = unescape(line)
		if (line ~ /^[ \t]*#/) next
		print line
		next
	}
	/^\./ { next }
	{ line = unescape($0); if (line !~ /^[ \t]*#/) print line }
	' "$1"
}

page_examples() {
	awk '
	/^\.SH / { on = ($0 ~ /^\.SH "?SYNOPSIS"?$/); next }
	on && /^\.EX/ { ex = 1; next }
	on && /^\.EE/ { ex = 0; next }
	on && ex {
		s = $0; gsub(/\\-/, "-", s); gsub(/\\e/, "\\", s); gsub(/\\&/, "", s)
		print s
	}' "$1"
}

total=0
bad=0
: > "$tmp.documented"
for page in "$@"; do
	# alias pages (symbolic links or .so lines) are checked by man.am
	[ -L "$page" ] && continue
	head -n 1 "$page" | grep -q '^\.so ' && continue
	name=$(basename "$page")
	page_names "$page" > "$tmp.names"
	page_synopsis "$page" | awk "$statements" | sort > "$tmp.syn"
	while IFS='	' read -r key proto; do
		total=$((total + 1))
		want=$(awk -F '	' -v k="$key" '$1 == k { print $2 }' "$tmp.hdr")
		if [ -z "$want" ]; then
			echo "$name: $key is not declared in the header"
			bad=$((bad + 1))
		elif [ "$want" != "$proto" ]; then
			echo "$name: $key differs from the header"
			echo "	page:   $proto"
			echo "	header: $want"
			bad=$((bad + 1))
		fi
		case $key in *_fn) continue ;; esac
		echo "$key" >> "$tmp.documented"
		grep -qx "$key" "$tmp.names" || {
			echo "$name: $key is in SYNOPSIS but not in NAME"
			bad=$((bad + 1))
		}
	done < "$tmp.syn"
	page_examples "$page" | awk "$nocomment" | awk "$bodies" > "$tmp.bodies"
	while IFS='	' read -r key body; do
		total=$((total + 1))
		want=$(awk -F '	' -v k="$key" '$1 == k { print $2 }' "$tmp.hbodies")
		if [ -z "$want" ]; then
			echo "$name: $key is not defined in the header"
			bad=$((bad + 1))
		elif [ "$want" != "$body" ]; then
			echo "$name: $key differs from the header"
			echo "	page:   $body"
			echo "	header: $want"
			bad=$((bad + 1))
		fi
	done < "$tmp.bodies"
	while read -r f; do
		cut -f 1 "$tmp.syn" | grep -qx "$f" || {
			echo "$name: $f is in NAME but has no prototype in SYNOPSIS"
			bad=$((bad + 1))
		}
	done < "$tmp.names"
done
cut -f 1 "$tmp.hdr" | grep -v '_fn$' | while read -r f; do
	grep -qx "$f" "$tmp.documented" ||
		echo "header: $f is in no page's SYNOPSIS"
done > "$tmp.undoc"
bad=$((bad + $(wc -l < "$tmp.undoc")))
cat "$tmp.undoc"
echo "check-synopsis: $total prototypes and bodies checked against" \
	"$(wc -l < "$tmp.hdr") prototypes and $(wc -l < "$tmp.hbodies") bodies" \
	"in the header, $bad mismatches"
[ "$bad" -eq 0 ]

#!/bin/sh
# check-hello.sh - examples/hello.c (the README's C example) runs and says
# what it loaded: sizes and line counts of real files, the errno message of a
# missing one, exit status 1 when one failed, 2 without arguments.
# usage: check-hello.sh HELLO
set -eu
hello=$1
tmp=$(mktemp -d "${ASYNCLOAD_TEST_DIR:-/var/tmp}/asyncload-hello-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

printf 'one\ntwo\nthree\n' > "$tmp/a"
: > "$tmp/empty"
head -c 100000 /dev/zero | tr '\0' '\n' > "$tmp/big"

"$hello" "$tmp/a" "$tmp/empty" "$tmp/big" | sort > "$tmp/got"
printf '%s\n' "$tmp/a: 14 bytes, 3 lines" "$tmp/big: 100000 bytes, 100000 lines" \
	"$tmp/empty: 0 bytes, 0 lines" | sort > "$tmp/want"
diff -u "$tmp/want" "$tmp/got"

rc=0
"$hello" "$tmp/a" "$tmp/missing" > "$tmp/got" || rc=$?
[ "$rc" = 1 ] || { echo "exit status $rc with a missing file, want 1"; exit 1; }
grep -qx "$tmp/missing: No such file or directory" "$tmp/got" ||
	{ echo "no ENOENT line:"; cat "$tmp/got"; exit 1; }

rc=0
"$hello" 2>/dev/null || rc=$?
[ "$rc" = 2 ] || { echo "exit status $rc without arguments, want 2"; exit 1; }
echo "check-hello: ok"

#!/bin/sh
# check-cat.sh - tools/asyncload-cat writes exactly what cat(1) writes, in
# order, for files given as arguments and as a list on stdin, buffered and
# with --direct, with a queue shallower than the list; reports failing files
# and exits 1 while still writing the others; -q counts. tools/readloop
# (the read(2) baseline) must agree byte for byte.
# usage: check-cat.sh PROBE ASYNCLOAD-CAT READLOOP
set -eu
probe=$1 acat=$2 rloop=$3
"$probe" || exit $?   # 77: no io_uring here, skip

tmp=$(mktemp -d "${ASYNCLOAD_TEST_DIR:-/var/tmp}/asyncload-cat-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/d"

i=0
for size in 0 1 4095 4096 4097 65536 100001 300000 7 12345; do
	head -c "$size" /dev/urandom > "$tmp/d/f$i"
	i=$((i + 1))
done
ls "$tmp"/d/f* > "$tmp/list"
# Repeat the list so that entries are reused and duplicates occur.
cat "$tmp/list" "$tmp/list" "$tmp/list" > "$tmp/list3"
# shellcheck disable=SC2046
cat $(cat "$tmp/list3") > "$tmp/want"

# shellcheck disable=SC2046
"$acat" -j 4 $(cat "$tmp/list3") > "$tmp/got1"
cmp "$tmp/want" "$tmp/got1"
"$acat" -j 3 - < "$tmp/list3" > "$tmp/got2"
cmp "$tmp/want" "$tmp/got2"
"$acat" --direct -j 5 - < "$tmp/list3" > "$tmp/got3"
cmp "$tmp/want" "$tmp/got3"
"$rloop" - < "$tmp/list3" > "$tmp/got4"
cmp "$tmp/want" "$tmp/got4"
"$rloop" --direct - < "$tmp/list3" > "$tmp/got5"
cmp "$tmp/want" "$tmp/got5"

# Counting mode: one line, the right numbers.
bytes=$(wc -c < "$tmp/want" | tr -d ' ')
line=$("$acat" -q - < "$tmp/list3")
echo "asyncload-cat -q: $line"
echo "$line" | grep -q "^files 30 bytes $bytes seconds [0-9.]* files/s [0-9.]*$"
line=$("$rloop" --count - < "$tmp/list3")
echo "readloop -q: $line"
echo "$line" | grep -q "^files 30 bytes $bytes seconds [0-9.]* files/s [0-9.]*$"

# A missing file and a directory: reported, the rest still written, exit 1.
if "$acat" "$tmp/d/f1" "$tmp/missing" "$tmp/d" "$tmp/d/f2" > "$tmp/got6" 2> "$tmp/err"; then
	echo "asyncload-cat exited 0 despite errors"
	exit 1
fi
cat "$tmp/d/f1" "$tmp/d/f2" | cmp - "$tmp/got6"
grep -q "missing" "$tmp/err"
[ "$(wc -l < "$tmp/err")" -eq 2 ] || { cat "$tmp/err"; exit 1; }
echo "check-cat: ok"

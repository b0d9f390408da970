#!/bin/sh
# check-symbols.sh - the shared library exports exactly the public API:
# every function the header declares, and nothing that does not start with
# asyncload_ (internal helpers must stay hidden so they cannot clash with
# the symbols of programs that load us).
# usage: check-symbols.sh NM LIBASYNCLOAD.so asyncload.h
set -eu
nm=$1 lib=$2 header=$3

exported=$("$nm" -D --defined-only "$lib" | awk '{print $3}' | grep -v '^_init$\|^_fini$' | sort -u)
status=0

leaked=$(printf '%s\n' "$exported" | grep -v '^asyncload_' || true)
if [ -n "$leaked" ]; then
	echo "exported but not part of the API:" $leaked
	status=1
fi

declared=$(grep -o 'asyncload_[a-z_]*[[:space:]]*(' "$header" | tr -d '( \t' | sort -u)
for f in $declared; do
	if ! printf '%s\n' "$exported" | grep -qx "$f"; then
		echo "declared in asyncload.h but not exported: $f"
		status=1
	fi
done
# The fault points are for the test copy of the library only (tests/c/meson.build).
if "$nm" "$lib" 2>/dev/null | grep -q al_fault_point || grep -q ASYNCLOAD_FAULT "$lib"; then
	echo "the fault points (ASYNCLOAD_FAULT_POINTS) are compiled into $lib"
	status=1
fi
[ $status -eq 0 ] && echo "symbols: $(printf '%s\n' "$exported" | wc -l) exported, all asyncload_*"
exit $status

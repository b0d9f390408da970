#!/bin/sh
# standalone-build.sh - proves that an installed copy is usable on its own:
# installs the build into a temporary DESTDIR, then compiles
# tools/asyncload-cat.c with nothing but
#     cc $(pkg-config --cflags --libs asyncload)
# (and once more against the static library), and runs both.
# usage: standalone-build.sh PROBE BUILDDIR asyncload-cat.c B_SANITIZE
set -eu
probe=$1 build=$2 src=$3 san=${4:-none}
"$probe" || exit $?   # 77: no io_uring here, skip
cc=${CC:-cc}

tmp=$(mktemp -d "${ASYNCLOAD_TEST_DIR:-/var/tmp}/asyncload-standalone-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

meson install -C "$build" --no-rebuild --quiet --destdir "$tmp/dest" >/dev/null
pc=$(find "$tmp/dest" -name asyncload.pc | head -n1)
[ -n "$pc" ] || { echo "asyncload.pc was not installed"; exit 1; }
[ -n "$(find "$tmp/dest" -name asyncload.h)" ] || { echo "asyncload.h was not installed"; exit 1; }

# The .pc file names the final prefix; the sysroot maps it into DESTDIR.
export PKG_CONFIG_PATH="$(dirname "$pc")"
export PKG_CONFIG_SYSROOT_DIR="$tmp/dest"
libdir=$(pkg-config --variable=libdir asyncload)
libdir="$tmp/dest${libdir#"$tmp/dest"}"

# A sanitized library needs its runtime in the program as well.
extra=
if [ "$san" != none ] && [ -n "$san" ]; then
	extra="-fsanitize=$san"
fi

echo "pkg-config --cflags --libs asyncload: $(pkg-config --cflags --libs asyncload)"
# shellcheck disable=SC2046,SC2086
"$cc" -std=gnu11 -Wall -Wextra -Werror $extra -o "$tmp/cat-shared" "$src" \
	$(pkg-config --cflags --libs asyncload)
# shellcheck disable=SC2046,SC2086
"$cc" -std=gnu11 -Wall -Wextra -Werror $extra -o "$tmp/cat-static" "$src" \
	$(pkg-config --cflags asyncload) "$libdir/libasyncload.a" \
	$(pkg-config --static --libs asyncload | sed 's/-lasyncload//')

if LD_LIBRARY_PATH= ldd "$tmp/cat-static" | grep -q libasyncload; then
	echo "cat-static is linked against the shared library"
	exit 1
fi

printf 'hello from a standalone build\n' > "$tmp/a"
head -c 100000 /dev/urandom > "$tmp/b"
cat "$tmp/a" "$tmp/b" "$tmp/a" > "$tmp/want"
LD_LIBRARY_PATH="$libdir" "$tmp/cat-shared" "$tmp/a" "$tmp/b" "$tmp/a" > "$tmp/got-shared"
"$tmp/cat-static" "$tmp/a" "$tmp/b" "$tmp/a" > "$tmp/got-static"
cmp "$tmp/want" "$tmp/got-shared"
cmp "$tmp/want" "$tmp/got-static"
echo "standalone-build: ok"

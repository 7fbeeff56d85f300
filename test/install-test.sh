#!/bin/sh
# Installs libasynchat from a build directory into a staging prefix and
# builds test/consumer/consumer.c outside the tree with nothing but
# pkg-config, linked shared and static, then runs both.
#   usage: test/install-test.sh BUILD_DIR
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
# DESTDIR staging, as a package build does; pkg-config's sysroot maps the
# configured prefix into the stage.
make -C "$build" install DESTDIR="$stage" >/dev/null 2>&1
libdir=$(pkg-config --variable=libdir "$build/asynchat.pc")
prefix=$stage$(pkg-config --variable=prefix "$build/asynchat.pc")
export PKG_CONFIG_PATH="$stage$libdir/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$stage"
echo "pkg-config --cflags --libs asynchat: $(pkg-config --cflags --libs asynchat)"
echo "pkg-config --modversion asynchat: $(pkg-config --modversion asynchat)"
test -f "$prefix/include/asynchat.h"

cd "$stage"
cp "$src/test/consumer/consumer.c" .
# shellcheck disable=SC2046
cc -Wall -Wextra -Werror -Wno-unused-parameter -o consumer-shared consumer.c \
	$(pkg-config --cflags --libs asynchat)
LD_LIBRARY_PATH="$stage$libdir" ./consumer-shared
LD_LIBRARY_PATH="$stage$libdir" ldd ./consumer-shared |
	grep -q "$stage$libdir/libasynchat.so"

# shellcheck disable=SC2046
cc -Wall -Wextra -Werror -Wno-unused-parameter -static -o consumer-static \
	consumer.c $(pkg-config --static --cflags --libs asynchat) 2>static.log ||
	{ cat static.log >&2; exit 1; }
# glibc warns that libevent's resolver calls in a static program need the
# shared NSS modules at run time; any other message is a failure.
if grep -v -e 'in statically linked applications requires at runtime' \
	-e ': in function ' static.log | grep -q .; then
	cat static.log >&2
	exit 1
fi
./consumer-static
if ldd ./consumer-static >/dev/null 2>&1; then
	echo "consumer-static is dynamically linked" >&2
	exit 1
fi
echo "install test: shared and static consumers passed"

#!/bin/sh
# Installs libasynchat from a build directory into a staging prefix and
# builds test/consumer/consumer.c outside the tree with nothing but
# pkg-config, linked shared and static, then with CMake's
# find_package(asynchat CONFIG) (test/consumer/CMakeLists.txt), against
# libasynchat.so and with ASYNCHAT_USE_STATIC_LIBS against libasynchat.a,
# and runs all four; and test/consumer/threads_consumer.c, which posts
# from another thread, with pkg-config asynchat-threads and CMake's
# asynchat::threads.  Then checks that make uninstall leaves no file.
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

# A threaded consumer: pkg-config asynchat-threads adds libevent_pthreads;
# asynchat alone does not.
pkg-config --libs asynchat | grep -v -q event_pthreads ||
	{ echo "asynchat.pc links libevent_pthreads" >&2; exit 1; }
echo "pkg-config --cflags --libs asynchat-threads: $(pkg-config --cflags --libs asynchat-threads)"
cp "$src/test/consumer/threads_consumer.c" .
# shellcheck disable=SC2046
cc -Wall -Wextra -Werror -Wno-unused-parameter -o threads-consumer \
	threads_consumer.c $(pkg-config --cflags --libs asynchat-threads)
LD_LIBRARY_PATH="$stage$libdir" ./threads-consumer

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

# Manual pages: an alias opens from the installed tree with man (man-db).
test -f "$prefix/share/man/man3/asynchat.3"
test -e "$prefix/share/man/man3/async_chat_push_buffer.3"
if man --version 2>/dev/null | grep -q '^man [0-9]'; then
	MANPAGER=cat MANWIDTH=200 man -M "$prefix/share/man" 3 \
		async_chat_push_buffer >man.out 2>man.log || true
	if grep -q . man.log ||
		! sed -n '/^NAME/,/^[A-Z]/p' man.out | grep -q async_chat_push_buffer; then
		cat man.log >&2
		echo "man async_chat_push_buffer failed from the installed tree" >&2
		exit 1
	fi
	echo "man -M $prefix/share/man 3 async_chat_push_buffer: opens"
fi

# CMake: the package from the stage, by CMAKE_PREFIX_PATH alone.
test -f "$stage$libdir/cmake/asynchat/asynchat-config.cmake"
test -f "$stage$libdir/cmake/asynchat/asynchat-config-version.cmake"
cp "$src/test/consumer/CMakeLists.txt" .
unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
for kind in shared static; do
	static=OFF
	[ "$kind" = static ] && static=ON
	cmake -S . -B "cmake-$kind" -DCMAKE_PREFIX_PATH="$prefix" \
		-DASYNCHAT_USE_STATIC_LIBS=$static >"cmake-$kind.log" 2>&1 &&
		cmake --build "cmake-$kind" >>"cmake-$kind.log" 2>&1 ||
		{ cat "cmake-$kind.log" >&2; exit 1; }
	grep -q "asynchat .* from $stage$libdir/cmake/asynchat" "cmake-$kind.log" ||
		{ cat "cmake-$kind.log" >&2; exit 1; }
	if grep -q -i -e 'CMake Warning' -e 'warning:' "cmake-$kind.log"; then
		cat "cmake-$kind.log" >&2
		exit 1
	fi
	echo "cmake $kind: $(grep -o 'asynchat [0-9.]* from .*' "cmake-$kind.log")"
	LD_LIBRARY_PATH="$stage$libdir" "./cmake-$kind/consumer"
	LD_LIBRARY_PATH="$stage$libdir" "./cmake-$kind/threads_consumer"
done
LD_LIBRARY_PATH="$stage$libdir" ldd ./cmake-shared/consumer |
	grep -q "$stage$libdir/libasynchat.so" ||
	{ echo "cmake-shared/consumer does not use the staged libasynchat.so" >&2; exit 1; }
if LD_LIBRARY_PATH="$stage$libdir" ldd ./cmake-static/consumer |
	grep -q libasynchat; then
	echo "cmake-static/consumer loads libasynchat.so" >&2
	exit 1
fi

make -C "$build" install DESTDIR="$stage/root" >/dev/null 2>&1
make -C "$build" uninstall DESTDIR="$stage/root" >/dev/null 2>&1
left=$(find "$stage/root" ! -type d)
if [ -n "$left" ]; then
	echo "make uninstall left: $left" >&2
	exit 1
fi
echo "install test: shared and static consumers passed (pkg-config and CMake)"

#!/bin/sh
# Generates configure and the Makefile.in files; none of them is committed.
set -e
cd "$(dirname "$0")"
exec autoreconf -fi

#!/usr/bin/env bash
# Build ism_state and stage what the image needs under DESTDIR: the
# extension (library, control file, SQL scripts) and the shared libraries
# it loads that the postgres image lacks (nats.c, libyaml and theirs).  The
# Dockerfile's build stage runs this, on any major from 15 to 18; so do the
# tests, on the build machine (and in the chroots of 17 and 18), where no
# container engine may run.
#
#   docker/build.sh --destdir DIR [--install-deps]
#
# --install-deps installs the build packages first (apt-get; in the image).
# The source is copied to a scratch directory, so the tree is left as it is.
set -euo pipefail

DESTDIR=
INSTALL_DEPS=no
while [ $# -gt 0 ]; do
	case "$1" in
		--destdir) DESTDIR=$2; shift 2 ;;
		--install-deps) INSTALL_DEPS=yes; shift ;;
		*) echo "usage: $0 --destdir DIR [--install-deps]" >&2; exit 2 ;;
	esac
done
[ -n "$DESTDIR" ] || { echo "$0: --destdir is required" >&2; exit 2; }

SRC=$(cd "$(dirname "$0")/.." && pwd)
# the packages whose shared objects the extension loads at run time;
# nats.c's is named after its version (libnats3.4 on bookworm, libnats3.10
# on trixie, libnats3.14 on forky): the one libnats-dev links against
nats_runtime() {
	local so
	so=$(readlink -f "$(dpkg -L libnats-dev | grep -m1 '/libnats\.so$')")
	dpkg -S "$so" | cut -d: -f1
}

if [ "$INSTALL_DEPS" = yes ]; then
	# the postgres image sets PG_MAJOR (15 to 18); PATH has its bin first
	: "${PG_MAJOR:?--install-deps: PG_MAJOR, the server major to build for, is not set}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends build-essential \
		"postgresql-server-dev-$PG_MAJOR" libnats-dev libyaml-dev
fi

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
tar -C "$SRC" -cf - Makefile ism_state.control sql src | tar -C "$build" -xf -
make -C "$build" -s
make -C "$build" -s install DESTDIR="$DESTDIR"
RUNTIME_PACKAGES=("$(nats_runtime)" libyaml-0-2 libprotobuf-c1)

# runtime libraries: what the extension links against, from their packages
libdir=$(dirname "$(dpkg -L "${RUNTIME_PACKAGES[0]}" | grep -m1 '/libnats\.so')")
mkdir -p "$DESTDIR$libdir"
for pkg in "${RUNTIME_PACKAGES[@]}"; do
	dpkg -L "$pkg" | grep -E '\.so(\.[0-9]+)*$' | while read -r lib; do
		cp -a "$lib" "$DESTDIR$libdir/"
	done
done

# every library the extension needs resolves, against the staged ones first
so=$(find "$DESTDIR" -name ism_state.so)
if LD_LIBRARY_PATH="$DESTDIR$libdir" ldd "$so" | grep -q 'not found'; then
	echo "$0: unresolved libraries:" >&2
	LD_LIBRARY_PATH="$DESTDIR$libdir" ldd "$so" | grep 'not found' >&2
	exit 1
fi
echo "staged in $DESTDIR:"
(cd "$DESTDIR" && find . -type f -o -type l | sort)

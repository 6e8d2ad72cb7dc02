#!/usr/bin/env bash
# The integration tests against an AddressSanitizer build of ism_state.
#
#   scripts/asan.sh [TAP files...]     default: the router, writer, stats
#                                      and hostile-input tests
#
# Builds ism_state with -fsanitize=address in a scratch copy, installs it,
# runs the tests with the ASan runtime preloaded into the server (PostgreSQL
# itself is not instrumented: ASan checks ism_state's own code, its stack
# and global buffers and what it mallocs; palloc'd memory is PostgreSQL's),
# then reinstalls the normal build.  Fails when a test fails or ASan
# reports anything.  Leak checking is off: a backend leaves its memory to
# exit by design.
set -euo pipefail
cd "$(dirname "$0")/.."

TESTS=${*:-test/t/006_router.pl test/t/008_writer.pl test/t/011_stats.pl test/t/014_hostile_input.pl}
scripts/install-deps.sh
work=$(mktemp -d /tmp/ism_state-asan.XXXXXX)
reports=$work/reports
tar --exclude=.git -cf - . | tar -C "$work" -xf -
mkdir -p "$reports"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
SUDO=
[ "$(id -u)" -eq 0 ] || [ -w "$(pg_config --pkglibdir)" ] || SUDO=sudo
reinstall_normal() { make -s clean >/dev/null; make -s && $SUDO make -s install; }
trap reinstall_normal EXIT

make -C "$work" -s clean
make -C "$work" -s COPT='-fsanitize=address -fno-omit-frame-pointer' \
	SHLIB_LINK='-lnats -lyaml -lcjson -fsanitize=address'
$SUDO make -C "$work" -s install
[ "$(id -u)" -ne 0 ] || chown -R postgres: "$work"

status=0
as_pg env LD_PRELOAD="$(gcc -print-file-name=libasan.so)" \
	ASAN_OPTIONS="detect_leaks=0:log_path=$reports/asan:verify_asan_link_order=0:detect_odr_violation=0" \
	make -C "$work" -s installcheck REGRESS= PROVE_TESTS="$TESTS" || status=$?

if ls "$reports"/asan.* >/dev/null 2>&1; then
	echo "== AddressSanitizer reports"
	cat "$reports"/asan.*
	status=1
else
	echo "== AddressSanitizer: no reports"
fi
[ $status -ne 0 ] || rm -rf "$work"
exit $status

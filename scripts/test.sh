#!/usr/bin/env bash
# The one test command: installs what is missing, builds (warnings are
# errors), checks the source structure (scripts/check-structure.sh),
# installs the extension, then runs pg_regress (sql_tests/) and
# the TAP integration tests (test/t/) against throwaway PostgreSQL clusters
# and nats-servers on loopback, then the libFuzzer targets for a bounded
# time (FUZZ_SECONDS each, default 40).
#
#   scripts/test.sh                  everything
#   PROVE_TESTS=test/t/001_worker.pl scripts/test.sh   one TAP file
#
# PostgreSQL refuses to run as root, so as root the tests run as the
# "postgres" user in a scratch copy of the tree.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

SUDO=
if [ "$(id -u)" -ne 0 ] && [ ! -w "$(pg_config --pkglibdir)" ]; then
	SUDO=sudo
fi

echo "== yamllint"
yamllint --strict .
echo "== build"
make -s
echo "== structure"
scripts/check-structure.sh
echo "== install"
$SUDO make -s install

run_tests() {
	local dir=$1; shift
	"$@" make -C "$dir" -s installcheck ${PROVE_TESTS:+PROVE_TESTS="$PROVE_TESTS"}
}

show_failures() {
	local dir=$1
	if [ -f "$dir/regression.diffs" ]; then
		echo "== pg_regress differences"; cat "$dir/regression.diffs"
	fi
	for f in "$dir"/tmp_check/log/regress_log_*; do
		[ -f "$f" ] || continue
		grep -q '^not ok' "$f" || continue
		echo "== $f (last 80 lines)"; tail -n 80 "$f"
	done
}

status=0
if [ "$(id -u)" -eq 0 ]; then
	work=$(mktemp -d /tmp/ism_state-test.XXXXXX)
	tar --exclude=.git -cf - . | tar -C "$work" -xf -
	chown -R postgres: "$work"
	echo "== tests (as postgres, in $work)"
	run_tests "$work" runuser -u postgres -- || status=$?
	[ $status -eq 0 ] || show_failures "$work"
	[ $status -ne 0 ] || rm -rf "$work"
else
	echo "== tests"
	run_tests . || status=$?
	[ $status -eq 0 ] || show_failures .
fi
echo "== fuzzing (${FUZZ_SECONDS:-40} s a target)"
scripts/fuzz.sh "${FUZZ_SECONDS:-40}" || status=$?
exit $status

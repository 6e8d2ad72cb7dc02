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
#   REGRESS= scripts/test.sh         no pg_regress tests (REGRESS=settings: one)
#   scripts/test.sh --pg 17          on PostgreSQL 17 (trixie) or 18 (forky),
#                                    inside the Debian chroot that ships it
#                                    (scripts/chroot.sh, made if missing);
#                                    no fuzzing there; bookworm's 15 is
#                                    staged beside it for the pg_upgrade
#                                    test (scripts/stage-old-pg.sh)
#   scripts/test.sh --nats-server PATH  the TAP tests against that
#                                    nats-server binary; trixie or forky:
#                                    that chroot's (2.10, 2.15)
#   scripts/test.sh --chroot         on 15 too inside a chroot (bookworm):
#                                    the whole suite (fuzzing too) without
#                                    touching this machine's PostgreSQL
#   scripts/test.sh --no-fuzz        leave the fuzz targets out
#
# PostgreSQL refuses to run as root, so as root the tests run as the
# "postgres" user in a scratch copy of the tree.
set -euo pipefail
cd "$(dirname "$0")/.."

pg=15
nats_server=
fuzz=1
chroot=0
while [ $# -gt 0 ]; do
	case "$1" in
	--pg) pg=${2:?--pg 15, 17 or 18}; shift 2 ;;
	--nats-server) nats_server=${2:?--nats-server PATH}; shift 2 ;;
	--no-fuzz) fuzz=0; shift ;;
	--chroot) chroot=1; shift ;;
	*) echo "test.sh: unknown argument $1 (--pg N, --nats-server PATH, --chroot, --no-fuzz)" >&2; exit 2 ;;
	esac
done
case "$nats_server" in
trixie | forky)
	scripts/chroot.sh make "$nats_server" >/dev/null
	nats_server=$(scripts/chroot.sh path "$nats_server")/usr/sbin/nats-server ;;
esac
if [ -n "$nats_server" ]; then
	nats_server=$(realpath "$nats_server")
	[ -x "$nats_server" ] || { echo "test.sh: $nats_server is not executable" >&2; exit 2; }
fi

# Another PostgreSQL major: this script again, inside the chroot of the
# Debian release that ships it.
release=
case "$pg" in
15) [ $chroot -eq 0 ] || release=bookworm ;;
17) release=trixie ;;
18) release=forky ;;
*) echo "test.sh: --pg 15, 17 or 18 (16 is not packaged by Debian: only built through the version guards)" >&2; exit 2 ;;
esac
if [ -n "$release" ]; then
	echo "== chroot $release (PostgreSQL $pg)"
	scripts/chroot.sh make "$release"
	# fuzzing once is enough: on 15 (bookworm), unless --no-fuzz
	args=()
	[ $fuzz -eq 1 ] && [ "$release" = bookworm ] || args+=(--no-fuzz)
	status=0
	if [ -n "$nats_server" ]; then
		# the binary, where the chroot sees it
		inside=/tmp/ism_state-nats-server.$$
		cp "$nats_server" "$(scripts/chroot.sh path "$release")$inside"
		args+=(--nats-server "$inside")
	fi
	if [ "$release" != bookworm ]; then
		# bookworm's 15 beside it, for the pg_upgrade test (029)
		ISM_OLD_PG=$(scripts/stage-old-pg.sh "$release")
		export ISM_OLD_PG
	fi
	scripts/chroot.sh run "$release" scripts/test.sh "${args[@]}" || status=$?
	[ -z "$nats_server" ] || rm -f "$(scripts/chroot.sh path "$release")$inside"
	[ $status -eq 0 ] || echo "test.sh: PostgreSQL $pg failed; the chroot's /tmp is $(scripts/chroot.sh path "$release")/tmp"
	exit $status
fi

scripts/install-deps.sh
if [ -n "$nats_server" ]; then
	export ISM_NATS_SERVER=$nats_server
fi
echo "== versions: $(pg_config --version), nats-server $("${ISM_NATS_SERVER:-nats-server}" --version | sed 's/^nats-server: //')"

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
	"$@" make -C "$dir" -s installcheck ${PROVE_TESTS:+PROVE_TESTS="$PROVE_TESTS"} ${REGRESS+REGRESS="$REGRESS"}
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
if [ $fuzz -eq 1 ]; then
	echo "== fuzzing (${FUZZ_SECONDS:-40} s a target)"
	scripts/fuzz.sh "${FUZZ_SECONDS:-40}" || status=$?
fi
exit $status

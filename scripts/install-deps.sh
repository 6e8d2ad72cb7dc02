#!/usr/bin/env bash
# Install everything ism_state needs to build, test and run its demo, from
# Debian packages.  Idempotent: does nothing when all are present.
#
#   scripts/install-deps.sh          build + test + demo dependencies
#   scripts/install-deps.sh --bench  and the benchmark's
#
# On Debian bookworm (the project's machines), and inside the chroots of
# scripts/chroot.sh: the release (/etc/os-release) picks the PostgreSQL
# major and the clang runtime, ISM_STATE_PG_MAJOR overrides the first.
#
#   release    PostgreSQL  nats-server  libnats  clang
#   bookworm   15          2.9          3.4      14
#   trixie     17          2.10         3.10     19
#   forky      18          2.15         3.14     21
#
# (the clang runtime follows an installed clang's major, as forky, Debian's
# testing, moves on)
set -euo pipefail

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
case "$codename" in
trixie) pg=17 clang=19 ;;
forky | sid) pg=18 clang=21 ;;
*) pg=15 clang=14 ;;
esac
pg=${ISM_STATE_PG_MAJOR:-$pg}
if command -v clang >/dev/null; then
	clang=$(clang -dumpversion | cut -d. -f1)
fi

PACKAGES=(
	build-essential         # gcc, make
	"postgresql-$pg"        # server, initdb, pg_ctl
	"postgresql-server-dev-$pg" # PGXS, server headers, pg_regress, TAP modules
	libnats-dev             # nats.c
	libyaml-dev             # routing YAML
	nats-server             # JetStream: tests and demo
	perl                    # the TAP tests: Test::More, JSON::PP, HTTP::Tiny, Time::HiRes (core)
	libipc-run-perl         # PostgreSQL::Test::Cluster needs IPC::Run
	yamllint                # every YAML file is linted
	python3-yaml            # test/check_manifests.py
	openssl                 # test/t/013: the test's own CA and certificates
	python3-cryptography    # test/lib/nats_jwt.py: NATS nkeys and JWTs for test/t/013 (no nsc in Debian)
	clang                   # scripts/fuzz.sh: libFuzzer targets
	"libclang-rt-$clang-dev" # libFuzzer and the sanitizers' runtimes for clang
)
if [ "${1:-}" = --bench ]; then
	PACKAGES+=(
		libpq-dev           # bench/external_consumer.c, upstream_router.c: the external consumers
		libcjson-dev        # and their JSON (ism_state parses with PostgreSQL's lexer)
		gnuplot-nox         # bench/run.sh: the plots
	)
fi

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi

SUDO=
if [ "$(id -u)" -ne 0 ]; then
	SUDO=sudo
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Debian's postgresql-common creates and starts a "main" cluster on 5432 by
# default; ism_state's scripts run their own clusters, so skip it.
$SUDO mkdir -p /etc/postgresql-common/createcluster.d
echo 'create_main_cluster = false' | $SUDO tee /etc/postgresql-common/createcluster.d/ism_state.conf >/dev/null
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

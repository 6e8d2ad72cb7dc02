#!/usr/bin/env bash
# Install everything ism_state needs to build, test and run its demo, from
# Debian bookworm packages.  Idempotent: does nothing when all are present.
#
#   scripts/install-deps.sh          build + test + demo dependencies
#   scripts/install-deps.sh --bench  and the benchmark's
set -euo pipefail

PACKAGES=(
	build-essential         # gcc, make
	postgresql-15           # server, initdb, pg_ctl
	postgresql-server-dev-15 # PGXS, server headers, pg_regress, TAP modules
	libnats-dev             # nats.c 3.4
	libyaml-dev             # routing YAML
	nats-server             # 2.9, JetStream: tests and demo
	libipc-run-perl         # PostgreSQL::Test::Cluster needs IPC::Run
	yamllint                # every YAML file is linted
	python3-yaml            # test/check_manifests.py
	openssl                 # test/t/013: the test's own CA and certificates
	python3-cryptography    # test/lib/nats_jwt.py: NATS nkeys and JWTs for test/t/013 (no nsc in Debian)
	clang                   # scripts/fuzz.sh: libFuzzer targets
	libclang-rt-14-dev      # libFuzzer and the sanitizers' runtimes for clang
)
if [ "${1:-}" = --bench ]; then
	PACKAGES+=(
		libpq-dev           # bench/external_consumer.c: the external consumers
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

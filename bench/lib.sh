# Shared by the benchmark scripts (sourced): a nats-server and a PostgreSQL
# cluster of their own on loopback, in a scratch directory, with ism_state
# preloaded; helpers to talk to them and to measure.
#
#   bench_start_stack [extra postgresql.conf lines]
#
# Builds and installs the extension first.  Sets work, psql_b, nats_b; stops everything on exit.
# bench_start_standby adds a streaming standby of that cluster.
# (bench_init_cluster and bench_load_catalog are its two halves, for a
# server started some other way: scripts/valgrind.sh.)  As root the cluster
# runs as the postgres user (PostgreSQL refuses root).

PGBIN=$(pg_config --bindir)
NATS_PORT=${BENCH_NATS_PORT:-24222}
PG_PORT=${BENCH_PG_PORT:-25432}
STANDBY_PORT=${BENCH_STANDBY_PORT:-$((PG_PORT + 1))}

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql_b() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$PG_PORT" -d postgres -tA "$@"; }
nats_b() { test/ism-nats -s "nats://127.0.0.1:$NATS_PORT" -t 600000 "$@"; }

bench_cleanup() {
	as_pg "$PGBIN/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
	[ ! -d "$work/standby" ] || as_pg "$PGBIN/pg_ctl" -D "$work/standby" -m immediate stop >/dev/null 2>&1 || true
	[ -z "${NATS_PID:-}" ] || kill "$NATS_PID" 2>/dev/null || true
	cp "$work/pg.log" /tmp/ism_state-bench-last.log 2>/dev/null || true
	[ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"
}

# Build and install, start nats-server, make a cluster configured for
# ism_state (not started).  BENCH_KEEP=1 keeps the scratch directory.
bench_init_cluster() {	# [extra postgresql.conf lines]
	local sudo=
	[ "$(id -u)" -eq 0 ] || [ -w "$(pg_config --pkglibdir)" ] || sudo=sudo
	make -s && make -s test/ism-nats && $sudo make -s install
	work=$(mktemp -d /tmp/ism_state-bench.XXXXXX)
	trap bench_cleanup EXIT
	nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$work/js" >/dev/null 2>&1 &
	NATS_PID=$!
	[ "$(id -u)" -ne 0 ] || chown postgres: "$work"
	as_pg "$PGBIN/initdb" -D "$work/pg" -A trust -U postgres >/dev/null
	sed "s|nats://127.0.0.1:4222|nats://127.0.0.1:$NATS_PORT|" test/data/routing.yaml > "$work/routing.yaml"
	# a script's changes to the routes, made before any worker consumes them
	! declare -F bench_edit_routing >/dev/null || bench_edit_routing "$work/routing.yaml"
	cat >> "$work/pg/postgresql.conf" <<EOF
listen_addresses = ''
port = $PG_PORT
unix_socket_directories = '$work'
shared_preload_libraries = 'ism_state'
ism_state.nats_url = 'nats://127.0.0.1:$NATS_PORT'
ism_state.routing_file = '$work/routing.yaml'
${1:-}
EOF
	[ "$(id -u)" -ne 0 ] || chown -R postgres: "$work"
}

# The extension and the example catalog in the running cluster, once its
# workers are connected.
bench_load_catalog() {
	psql_b -c 'CREATE EXTENSION ism_state'
	psql_b -f test/data/catalog.sql >/dev/null
	until [ "$(psql_b -c "SELECT bool_and(nats_state = 'connected') FROM ism_state.pg_stat_ism_worker")" = t ]; do
		sleep 0.2
	done
	sleep 1
}

bench_start_stack() {	# [extra postgresql.conf lines]
	bench_init_cluster "$@"
	as_pg "$PGBIN/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w start >/dev/null
	bench_load_catalog
}

# A streaming standby of the running cluster, on STANDBY_PORT: a base
# backup with its replication slot (a standby that falls behind misses no
# WAL) and primary_conninfo (-R).  Its ism_state workers start only on
# promotion.
bench_start_standby() {
	as_pg "$PGBIN/pg_basebackup" -h "$work" -p "$PG_PORT" -U postgres -D "$work/standby" \
		-R -C -S bench_standby -c fast
	echo "port = $STANDBY_PORT" >> "$work/standby/postgresql.conf"
	as_pg "$PGBIN/pg_ctl" -D "$work/standby" -l "$work/standby.log" -w start >/dev/null
	bench_wait_streaming
}
bench_wait_streaming() {
	until [ "$(psql_b -c "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")" = 1 ]; do
		sleep 0.2
	done
}

consumer_field() {	# STREAM DURABLE FIELD
	nats_b consumer-info "$1" "$2" | sed -n "s/^$3=//p"
}
worker_pid() { worker_pids "$1" | head -1; }
worker_pids() { psql_b -c "SELECT pid FROM ism_state.pg_stat_ism_worker WHERE role = '$1' ORDER BY worker"; }

# A process's private memory (RssAnon, kB) every 50 ms into FILE while a
# case runs.  (VmHWM would count the shared buffers it touches, up to
# shared_buffers, which is not the process's own memory.)
start_sampling() {	# PID FILE [INTERVAL]
	( while kill -0 "$1" 2>/dev/null; do
		awk -v t="$(date +%s.%N)" '/RssAnon/ {print t, $2}' "/proc/$1/status"; sleep "${3:-0.05}"
	  done ) > "$2" &
	SAMPLER=$!
}
stop_sampling() {	# FILE -> peak MB
	kill "$SAMPLER" 2>/dev/null || true
	wait "$SAMPLER" 2>/dev/null || true
	sort -k2 -n "$1" | tail -1 | awk '{printf "%.1f", $2 / 1024}'
}
cpu_seconds() {		# PID: user + system CPU so far
	awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat"
}
now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN {print n / (b - a)}'; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { sort -g | awk 'NR==1 {min=$1} {max=$1} END {printf "%.0f .. %.0f", min, max}'; }

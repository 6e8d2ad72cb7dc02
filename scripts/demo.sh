#!/usr/bin/env bash
# The local ism_state stack: nats-server (JetStream) and a PostgreSQL 15
# cluster with ism_state preloaded, all data under one folder.
#
#   scripts/demo.sh [up]     install what is missing, build, start, route the
#                            example messages, show health
#   scripts/demo.sh route    route the example messages again
#   scripts/demo.sh status   show the workers' health
#   scripts/demo.sh down     stop both servers (data is kept)
#   scripts/demo.sh clean    stop and delete the data folder
#
# Environment: ISM_STATE_DEMO_DIR (default /tmp/ism_state-demo),
# ISM_STATE_DEMO_PG_PORT (54320), ISM_STATE_DEMO_NATS_PORT (4222),
# ISM_STATE_DEMO_NATS_HTTP_PORT (8222).  Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${ISM_STATE_DEMO_DIR:-/tmp/ism_state-demo}
PG_PORT=${ISM_STATE_DEMO_PG_PORT:-54320}
NATS_PORT=${ISM_STATE_DEMO_NATS_PORT:-4222}
NATS_HTTP_PORT=${ISM_STATE_DEMO_NATS_HTTP_PORT:-8222}
PGBIN=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
PGDATA=$DIR/pg

# PostgreSQL refuses to run as root: run it as "postgres" then.
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

psql_demo() {
	as_pg "$PGBIN/psql" -X -h "$DIR" -p "$PG_PORT" -d postgres "$@"
}

nats_running() {
	[ -f "$DIR/nats/nats.pid" ] && kill -0 "$(cat "$DIR/nats/nats.pid")" 2>/dev/null
}

start_nats() {
	mkdir -p "$DIR/nats/js"
	cat > "$DIR/nats/nats.conf" <<EOF
listen: 127.0.0.1:$NATS_PORT
http: 127.0.0.1:$NATS_HTTP_PORT
server_name: ism_state_demo
pid_file: "$DIR/nats/nats.pid"
jetstream { store_dir: "$DIR/nats/js" }
EOF
	if nats_running; then
		echo "nats-server already running"
		return
	fi
	# detached, so it outlives this script and holds none of its output
	setsid nats-server -c "$DIR/nats/nats.conf" -l "$DIR/nats/nats.log" \
		</dev/null >/dev/null 2>&1 &
	for _ in $(seq 50); do
		nats_running && return
		sleep 0.1
	done
	echo "nats-server did not start; see $DIR/nats/nats.log" >&2
	exit 1
}

start_postgres() {
	if [ ! -f "$PGDATA/PG_VERSION" ]; then
		as_pg "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres >/dev/null
		cat >> "$PGDATA/postgresql.conf" <<EOF

# --- ism_state demo ---
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$DIR'
shared_preload_libraries = 'ism_state'
ism_state.database = 'postgres'
ism_state.nats_url = 'nats://127.0.0.1:$NATS_PORT'
ism_state.routing_file = '$DIR/routing.yaml'
EOF
	fi
	if as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
		echo "PostgreSQL already running"
	else
		as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$DIR/postgresql.log" -w start >/dev/null
	fi
	psql_demo -q -c 'SET client_min_messages = warning' \
		-c 'CREATE EXTENSION IF NOT EXISTS ism_state'
}

wait_for_connected() {
	for _ in $(seq 100); do
		if [ "$(psql_demo -tAc "SELECT bool_and(nats_state = 'connected') AND (SELECT count(*) > 0 FROM ism_state.route) FROM ism_state.pg_stat_ism_worker")" = t ]; then
			return 0
		fi
		sleep 0.1
	done
	echo "the workers did not connect to NATS; see $DIR/postgresql.log" >&2
	return 1
}

status() {
	psql_demo -c 'SELECT pid, role, state, nats_state, nats_server, connected_since, reconnects, last_error FROM ism_state.pg_stat_ism_worker'
	psql_demo -c 'SELECT selector, name AS stream, subject, ack_wait FROM ism_state.route ORDER BY selector'
}

# The platform's example catalog, once.
load_catalog() {
	if [ "$(psql_demo -tAc "SELECT to_regclass('public.processor') IS NOT NULL")" != t ]; then
		psql_demo -q -v ON_ERROR_STOP=1 -f - < test/data/catalog.sql
	fi
}

# Send the three example router messages; show what the router sent on and
# what the writer wrote.
route_examples() {
	local out=$DIR/routed.txt nats="test/ism-nats -s nats://127.0.0.1:$NATS_PORT -t 5000"
	local pids=()
	: > "$out"
	$nats sub 'language.models.openai.>' 3 >> "$out" 2>/dev/null & pids+=($!)
	$nats sub 'data.transformers.state-tables' 1 >> "$out" 2>/dev/null & pids+=($!)
	$nats sub 'processor.monitor' 2 >> "$out" 2>/dev/null & pids+=($!)
	sleep 0.5
	for m in query_state_entry query_processor_entry query_state_route; do
		echo "-> processor.state.router: test/data/messages/$m.json"
		$nats js-pub processor.state.router - < "test/data/messages/$m.json" >/dev/null
	done
	wait "${pids[@]}" || true
	echo "<- what the router published (subject, message):"
	sed 's/^/   /' "$out"
	# the state-tables processor's batch window is 2 s in the example catalog
	sleep 3
	echo "<- what the writer wrote (ism_state.table_name() says where):"
	psql_demo -P pager=off -c "SELECT question, model, score, cached, meta, flagged, _timestamp
	    FROM public.\"3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10_answers\" ORDER BY _timestamp, question"
}

up() {
	scripts/install-deps.sh
	make -s
	make -s test/ism-nats
	if [ -w "$(pg_config --pkglibdir)" ]; then make -s install; else sudo make -s install; fi

	mkdir -p "$DIR"
	# the platform's example routes, with the demo's NATS port
	sed "s|nats://127.0.0.1:4222|nats://127.0.0.1:$NATS_PORT|" test/data/routing.yaml > "$DIR/routing.yaml"
	[ "$(id -u)" -ne 0 ] || chown -R postgres: "$DIR"
	start_nats
	start_postgres
	wait_for_connected
	load_catalog
	status
	route_examples
	cat <<EOF
ism_state is up.  Data, logs and sockets are under $DIR.
  psql:         psql -h $DIR -p $PG_PORT -U postgres postgres
  health:       scripts/demo.sh status
  NATS:         nats://127.0.0.1:$NATS_PORT (monitoring http://127.0.0.1:$NATS_HTTP_PORT)
  routes:       $DIR/routing.yaml (edit, then SELECT pg_reload_conf())
  again:        scripts/demo.sh route
  dead letters: SELECT * FROM ism_state.dead_letter
  stop:         scripts/demo.sh down
EOF
}

down() {
	if [ -f "$PGDATA/postmaster.pid" ]; then
		as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null && echo "PostgreSQL stopped"
	fi
	if nats_running; then
		kill "$(cat "$DIR/nats/nats.pid")" && echo "nats-server stopped"
	fi
}

case "${1:-up}" in
	up) up ;;
	status) status ;;
	route) route_examples ;;
	down) down ;;
	clean) down; rm -rf "$DIR" ;;
	*) echo "usage: $0 [up|status|route|down|clean]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Runs once, when the image's entrypoint initialises an empty data
# directory (/docker-entrypoint-initdb.d): creates ism_state in POSTGRES_DB,
# points the workers at that database, and loads the routing file when one
# is mounted, so that a bad file fails the initialisation loudly.
set -euo pipefail

db=${POSTGRES_DB:-postgres}
user=${POSTGRES_USER:-postgres}
routing_file=${ISM_STATE_ROUTING_FILE:-/etc/ism_state/routing.yaml}

run_sql() {
	psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$user" --dbname "$db" "$@"
}

run_sql --set db="$db" <<'SQL'
CREATE EXTENSION IF NOT EXISTS ism_state;
-- takes effect when the entrypoint restarts the server after initialisation
ALTER SYSTEM SET ism_state.database = :'db';
SQL

if [ -r "$routing_file" ]; then
	run_sql --set file="$routing_file" <<'SQL'
SELECT ism_state.load_routes_file(:'file') AS routes_loaded;
SQL
else
	echo "ism_state: no routing file at $routing_file; add routes with ism_state.add_route() or mount one"
fi

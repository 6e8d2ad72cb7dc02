#!/usr/bin/env bash
# Ready when PostgreSQL answers and every ism_state worker is running with
# its NATS connection up.  (Liveness should use pg_isready alone: a NATS
# outage must not get PostgreSQL restarted.)
set -euo pipefail

db=${POSTGRES_DB:-postgres}
user=${POSTGRES_USER:-postgres}

ready=$(psql --no-psqlrc -tA --username "$user" --dbname "$db" -c \
	"SELECT count(*) > 0 AND bool_and(state = 'running' AND nats_state = 'connected') FROM ism_state.pg_stat_ism_worker")
[ "$ready" = t ]

#!/usr/bin/env bash
# Router benchmark: its own nats-server and PostgreSQL on loopback, the
# example catalog, then each case ROUNDS times, every round both for
# ism_state's router and for the upstream router's algorithm
# (bench/upstream_router.c: the Python state router's queries and round
# trips, in C), one after the other on the same consumer:
#   entry    N query_state_entry messages published up front and drained:
#            routed messages per second (first publish to last ack);
#   replay   query_state_route replays of a SMALL and a LARGE state
#            (maxBatchSize 1000, maxBatchLimit 100): rows per second.
# With each round: CPU seconds (ism_state: the router worker; upstream:
# the program and its backend) and ism_state's router's peak private
# memory, to show it does not grow with the state.
# Prints medians, spreads and ratios (ism_state / upstream); with OUT_DIR,
# every round goes to OUT_DIR/router.tsv.  Not a test: it asserts nothing.
#
#   bench/router_bench.sh [N=20000] [LARGE=1000000] [ROUNDS=3] [OUT_DIR]
set -euo pipefail
OUT=${4:+$(realpath -m "$4")}
cd "$(dirname "$0")/.."

N=${1:-20000}
LARGE=${2:-1000000}
ROUNDS=${3:-3}
SMALL=$((LARGE / 10))
. bench/lib.sh
make -s bench/upstream-router
bench_start_stack
tsv=$work/router.tsv
printf 'case\tlabel\tunit\trouter\tround\tper_s\tcpu_s\tpeak_rss_mb\n' > "$tsv"
consumer_field() { nats_b consumer-info processor_state_router processor_state_router_sub_1 | sed -n "s/^$1=//p"; }
stream_count() { nats_b stream-info "$1" 2>/dev/null | sed -n 's/^messages=//p'; }
# wait until the router has acknowledged everything published to it
drained() {
	local target=$1
	while [ "$(consumer_field ack_floor)" -lt "$target" ]; do sleep 0.05; done
}

# The catalog tables the upstream router reads besides ism_state's
# (quantumwake/alethic-ism-db bootstrap/bootstrap.sql), empty as the
# benchmark's states need nothing in them.
psql_b <<'SQL' >/dev/null
CREATE TABLE state_config (
    state_id varchar(255) NOT NULL REFERENCES state (id),
    attribute varchar(255) NOT NULL,
    data text,
    PRIMARY KEY (state_id, attribute));
CREATE TABLE state_column_key_definition (
    id serial PRIMARY KEY,
    state_id varchar(255) NOT NULL REFERENCES state (id),
    name varchar(255) NOT NULL,
    alias varchar(255),
    required bool DEFAULT false,
    callable bool DEFAULT false,
    definition_type varchar(255) NOT NULL);
CREATE TABLE state_column_data_mapping (
    state_id varchar(36) NOT NULL,
    state_key varchar(255) NOT NULL,
    data_index bigint NOT NULL,
    PRIMARY KEY (state_id, state_key, data_index));
SQL

# --- who consumes: one router at a time -------------------------------------
# ism_state's router stops consuming when its route is removed and starts
# again when the routing file is loaded again (README, Routes: live
# changes); the consumer stays.  Switching waits until the consumer has no
# pull request left from the one stopped (a request still waiting would
# take the next case's messages, only to have them back after ack_wait),
# then until the other has asked for messages.
until_waiting() {	# none|some
	while :; do
		case $1:$(consumer_field num_waiting) in none:0 | some:[1-9]*) return 0 ;; esac
		[ -z "$UPSTREAM" ] || kill -0 "$UPSTREAM" 2>/dev/null ||
			{ echo "upstream-router exited: $(cat "$work/upstream.log")" >&2; exit 1; }
		sleep 0.05
	done
}
# the route's batch_size: the Python router's fetch size (ismcore NATSRoute)
FETCH=$(psql_b -c "SELECT batch_size FROM ism_state.route WHERE selector = 'processor/state/router'")
UPSTREAM=
trap '[ -z "$UPSTREAM" ] || kill "$UPSTREAM" 2>/dev/null; bench_cleanup' EXIT
upstream_start() {
	UPSTREAM_FLOOR=$(consumer_field ack_floor)
	UPSTREAM_PUBLISHED=0
	bench/upstream-router -s "nats://127.0.0.1:$NATS_PORT" --stream processor_state_router \
		--durable processor_state_router_sub_1 --fetch "$FETCH" \
		-d "host=$work port=$PG_PORT dbname=postgres user=postgres application_name=upstream-router" \
		> "$work/upstream.out" 2>> "$work/upstream.log" &
	UPSTREAM=$!
}
# stopped (SIGTERM: it finishes its fetch), and checked: it handled every
# message acknowledged meanwhile and published what upstream would
upstream_stop() {
	local handled=$(($(consumer_field ack_floor) - UPSTREAM_FLOOR))
	kill "$UPSTREAM"
	wait "$UPSTREAM"
	UPSTREAM=
	grep -qx "messages=$handled published=$UPSTREAM_PUBLISHED" "$work/upstream.out" ||
		echo "warning: upstream-router: $(cat "$work/upstream.out"), expected messages=$handled published=$UPSTREAM_PUBLISHED" >&2
}
consuming=ism
use() {	# ism|upstream: make it the one consuming
	[ "$1" != "$consuming" ] || return 0
	if [ "$consuming" = ism ]; then
		psql_b -c "SELECT ism_state.remove_route('processor/state/router')" >/dev/null
	else
		upstream_stop
	fi
	until_waiting none
	if [ "$1" = ism ]; then
		psql_b -c "SELECT ism_state.load_routes_file('$work/routing.yaml')" >/dev/null
	else
		upstream_start
	fi
	until_waiting some
	consuming=$1
}
# the routers in the order of round R: each first every other round
routers() { if [ $(($1 % 2)) = 1 ]; then echo ism upstream; else echo upstream ism; fi; }
upstream_backend() {
	psql_b -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'upstream-router'"
}
cpu_of() { awk '{s += $1} END {printf "%.2f", s}' < <(for p in "$@"; do cpu_seconds "$p"; done); }

# One round of a case on ROUTER into router.tsv: the rate MEASURE prints,
# CPU seconds, and ism_state's router's peak private memory.  PUBLISHED:
# what the upstream algorithm publishes in the round (a status per message,
# the forwards).
run_round() {	# CASE LABEL UNIT ROUTER ROUND PUBLISHED MEASURE [ARGS]
	local case=$1 label=$2 unit=$3 router=$4 round=$5 published=$6 pids rss='' cpu0 cpu value
	shift 6
	use "$router"
	if [ "$router" = ism ]; then
		pids=$(worker_pid router)
		start_sampling "$pids" "$work/rss.samples"
	else
		pids="$UPSTREAM $(upstream_backend)"
		UPSTREAM_PUBLISHED=$((UPSTREAM_PUBLISHED + published))
	fi
	# shellcheck disable=SC2086
	cpu0=$(cpu_of $pids)
	value=$("$@")
	# shellcheck disable=SC2086
	cpu=$(awk -v a="$cpu0" -v b="$(cpu_of $pids)" 'BEGIN {printf "%.2f", b - a}')
	[ "$router" = upstream ] || rss=$(stop_sampling "$work/rss.samples")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "$label" "$unit" "$router" "$round" \
		"$value" "$cpu" "$rss" >> "$tsv"
}

# --- entry: routed messages per second --------------------------------------
entry='{"type":"query_state_entry","route_id":"e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10","query_state":[{"question":"q","answer":"a","score":1}]}'
# the clock runs from the first publish to the router's last ack
entry_round() {
	local base start end
	base=$(consumer_field ack_floor)
	start=$(now)
	nats_b js-pub-n processor.state.router "$N" "$entry"
	drained $((base + N))
	end=$(now)
	rate "$N" "$start" "$end"
}
for r in $(seq "$ROUNDS"); do
	for router in $(routers "$r"); do
		run_round entry "query_state_entry, $N messages" msgs/s "$router" "$r" $((2 * N)) entry_round
	done
done

# --- replay: rows per second ------------------------------------------------
make_state() {
	psql_b <<SQL >/dev/null
DELETE FROM state_column_data WHERE column_id IN (SELECT id FROM state_column WHERE state_id = 'bench');
DELETE FROM state_column WHERE state_id = 'bench';
DELETE FROM processor_state WHERE state_id = 'bench';
DELETE FROM state WHERE id = 'bench';
INSERT INTO state (id, project_id, count, state_type)
VALUES ('bench', '5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03', $1, 'StateConfig');
INSERT INTO processor_state (id, processor_id, state_id, direction)
VALUES ('bench:p', '7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52', 'bench', 'INPUT');
INSERT INTO state_column (state_id, name, data_type) VALUES
    ('bench', 'question', 'str'), ('bench', 'answer', 'str'), ('bench', 'meta', 'json');
INSERT INTO state_column_data (column_id, data_index, data_value, data_json_value)
SELECT c.id, g,
       CASE c.name WHEN 'question' THEN 'question ' || g WHEN 'answer' THEN md5(g::text) END,
       CASE WHEN c.name = 'meta' THEN jsonb_build_object('n', g, 'tag', 'bench') END
  FROM state_column c, generate_series(0, $1 - 1) g WHERE c.state_id = 'bench';
UPDATE processor SET properties = '{"maxBatchSize": 1000, "maxBatchLimit": 100}'
 WHERE id = '7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52';
SQL
	psql_b -c 'VACUUM ANALYZE state_column_data' >/dev/null
}

replay_round() {	# ROWS
	local rows=$1 messages=$(( ($1 + 99) / 100 )) before base start end
	before=$(stream_count language_models_openai || echo 0)
	base=$(consumer_field ack_floor)
	start=$(now)
	nats_b js-pub processor.state.router '{"type":"query_state_route","route_id":"bench:p"}' >/dev/null
	drained $((base + 1))
	end=$(now)
	[ "$(stream_count language_models_openai)" -ge $((before + messages)) ] ||
		echo "warning: replay messages missing from the stream" >&2
	rate "$rows" "$start" "$end"
}

for size in "$SMALL" "$LARGE"; do
	make_state "$size"
	for r in $(seq "$ROUNDS"); do
		for router in $(routers "$r"); do
			run_round "replay-$size" "query_state_route, $size rows" rows/s "$router" "$r" \
				$((1 + (size + 99) / 100)) replay_round "$size"
		done
	done
done
use ism

# --- summary -------------------------------------------------------------------
[ -z "$OUT" ] || { mkdir -p "$OUT" && cp "$tsv" "$OUT/router.tsv"; }
values() { awk -F'\t' -v c="$1" -v r="$2" -v f="$3" 'NR > 1 && $1 == c && $4 == r {print $f}' "$tsv"; }
printf '\nrouter benchmark (%s, %d cores), %d rounds: ism_state'\''s router and the upstream router'\''s algorithm\n' \
	"$(uname -m)" "$(nproc)" "$ROUNDS"
printf '(bench/upstream_router.c) side by side: medians and spreads of messages (entry) or rows\n'
printf '(replay) per second, their ratio, CPU seconds, and ism_state'\''s router'\''s peak private RSS\n'
printf '%-34s %9s  %-19s %8s  %-17s %7s %7s %7s %6s\n' case ism_state spread upstream spread \
	ism/up 'CPU ism' 'CPU up' 'RSS MB'
for case in entry "replay-$SMALL" "replay-$LARGE"; do
	ism=$(values "$case" ism 6 | median)
	up=$(values "$case" upstream 6 | median)
	printf '%-34s %9.0f  %-19s %8.0f  %-17s %6.1fx %7s %7s %6s\n' \
		"$(values "$case" ism 2 | head -1)" "$ism" "$(values "$case" ism 6 | spread)" \
		"$up" "$(values "$case" upstream 6 | spread)" "$(awk -v a="$ism" -v b="$up" 'BEGIN {print a / b}')" \
		"$(values "$case" ism 7 | median)" "$(values "$case" upstream 7 | median)" \
		"$(values "$case" ism 8 | median)"
done

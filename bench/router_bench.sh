#!/usr/bin/env bash
# Router benchmark: its own nats-server and PostgreSQL on loopback, the
# example catalog, then, each case ROUNDS times:
#   entry    N query_state_entry messages published up front, drained by the
#            router: routed messages per second (first fetch to last ack);
#   replay   query_state_route replays of a SMALL and a LARGE state
#            (maxBatchSize 1000, maxBatchLimit 100): rows per second, and
#            the router's peak RSS after each, to show it does not grow
#            with the state.
# Prints medians and spreads.  Not a test: it asserts nothing.
#
#   bench/router_bench.sh [N=20000] [LARGE=1000000] [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-20000}
LARGE=${2:-1000000}
ROUNDS=${3:-3}
SMALL=$((LARGE / 10))
. bench/lib.sh
bench_start_stack
consumer_field() { nats_b consumer-info processor_state_router processor_state_router_sub_1 | sed -n "s/^$1=//p"; }
stream_count() { nats_b stream-info "$1" 2>/dev/null | sed -n 's/^messages=//p'; }
# wait until the router has acknowledged everything published to it
drained() {
	local target=$1
	while [ "$(consumer_field ack_floor)" -lt "$target" ]; do sleep 0.05; done
}


# --- entry: routed messages per second --------------------------------------
entry='{"type":"query_state_entry","route_id":"e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10","query_state":[{"question":"q","answer":"a","score":1}]}'
: > "$work/entry.txt"
for r in $(seq "$ROUNDS"); do
	# the clock runs from the first publish to the router's last ack
	base=$(consumer_field ack_floor)
	start=$(now)
	nats_b js-pub-n processor.state.router "$N" "$entry"
	drained $((base + N))
	end=$(now)
	rate "$N" "$start" "$end" >> "$work/entry.txt"
done

# --- replay: rows per second and peak RSS -----------------------------------
make_state() {
	psql_b <<SQL >/dev/null
DELETE FROM state_column_data WHERE column_id IN (SELECT id FROM state_column WHERE state_id = 'bench');
DELETE FROM state_column WHERE state_id = 'bench';
DELETE FROM processor_state WHERE state_id = 'bench';
DELETE FROM state WHERE id = 'bench';
INSERT INTO state (id, project_id, count) VALUES ('bench', '5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03', $1);
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

replay() {
	local rows=$1 out=$2 messages=$(( ($1 + 99) / 100 ))
	start_sampling "$(worker_pid router)" "$out.samples"
	for r in $(seq "$ROUNDS"); do
		before=$(stream_count language_models_openai || echo 0)
		base=$(consumer_field ack_floor)
		start=$(now)
		nats_b js-pub processor.state.router '{"type":"query_state_route","route_id":"bench:p"}' >/dev/null
		drained $((base + 1))
		end=$(now)
		rate "$rows" "$start" "$end" >> "$out"
		[ "$(stream_count language_models_openai)" -ge $((before + messages)) ] ||
			echo "warning: replay messages missing from the stream" >&2
	done
	stop_sampling "$out.samples" > "$out.rss"
}

make_state "$SMALL"
: > "$work/small.txt"; replay "$SMALL" "$work/small.txt"
make_state "$LARGE"
: > "$work/large.txt"; replay "$LARGE" "$work/large.txt"

printf '\nism_state router benchmark (%s, %d cores), %d rounds\n' "$(uname -m)" "$(nproc)" "$ROUNDS"
printf '%-44s %14s   %s\n' case median spread
printf '%-44s %14.0f   %s msgs/s\n' "query_state_entry, $N messages" \
	"$(median < "$work/entry.txt")" "$(spread < "$work/entry.txt")"
printf '%-44s %14.0f   %s rows/s, router peak private RSS %s MB\n' "query_state_route, $SMALL rows" \
	"$(median < "$work/small.txt")" "$(spread < "$work/small.txt")" \
	"$(cat "$work/small.txt.rss")"
printf '%-44s %14.0f   %s rows/s, router peak private RSS %s MB\n' "query_state_route, $LARGE rows" \
	"$(median < "$work/large.txt")" "$(spread < "$work/large.txt")" \
	"$(cat "$work/large.txt.rss")"

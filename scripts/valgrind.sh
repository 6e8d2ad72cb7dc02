#!/usr/bin/env bash
# ism_state under valgrind (memcheck): a PostgreSQL cluster run whole under
# valgrind (--trace-children: the postmaster, the workers, the backends),
# a nats-server, the example catalog, and traffic through both workers —
# router messages routed and written, records written straight, bad
# messages dead-lettered, a state replayed; the writer claiming each
# message in a key-value bucket.  Fails when memcheck reports an
# error or a leak with ism_state or nats.c in its stack.
#
#   scripts/valgrind.sh
#
# Debian's PostgreSQL is not built with USE_VALGRIND, so memcheck sees
# malloc'd memory (nats.c's, ism_state's own) but not palloc chunks inside
# PostgreSQL's memory contexts; PostgreSQL's own reports (uninitialised
# padding written to WAL and stats files) are not ism_state's and are left
# out.  Slow: a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
command -v valgrind >/dev/null || { apt-get install -y -qq valgrind >/dev/null; }
export BENCH_NATS_PORT=${BENCH_NATS_PORT:-26222} BENCH_PG_PORT=${BENCH_PG_PORT:-26432}
. bench/lib.sh
BENCH_KEEP=1	# kept for its reports, unless all is well
# the writer claims each message, as when several instances share it;
# asynchronous commits, so that acks wait for the WAL flush and go through
# the ack gate's holding (src/ack_gate.c) without a standby
bench_init_cluster "ism_state.nats_connect_timeout = '10s'
ism_state.claims_bucket = 'valgrind_claims'
synchronous_commit = off"

echo "== PostgreSQL under valgrind"
as_pg valgrind --trace-children=yes --quiet --num-callers=30 --leak-check=full \
	--show-leak-kinds=definite --log-file="$work/vg.%p" \
	"$PGBIN/postgres" -D "$work/pg" > "$work/pg.log" 2>&1 &
until as_pg "$PGBIN/pg_isready" -q -h "$work" -p "$PG_PORT"; do sleep 1; done
bench_load_catalog
sleep 5	# slow under valgrind: let the workers subscribe

echo "== traffic"
r1='8d2f6a1b-4c7e-4b93-a5d0-1e9f3c6b7a28:7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52'
r2='e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10'
nats_b js-pub-n processor.state.router 200 \
	"{\"type\":\"query_state_entry\",\"route_id\":\"$r2\",\"query_state\":[{\"n\":%n,\"q\":\"x\",\"f\":1.5,\"o\":{\"a\":[1,2]}}]}"
nats_b js-pub-n data.transformers.state-tables 300 \
	"{\"route_id\":\"$r2\",\"query_state\":[{\"n\":%n,\"k\":\"v\"},{\"n\":%n,\"z\":null}]}"
for bad in 'not json' '[1]' '{"type":"query_state_route","route_id":"nope"}' \
	"{\"type\":\"query_state_route\",\"route_id\":\"$r1\"}"; do
	nats_b js-pub processor.state.router "$bad" >/dev/null
done
nats_b js-pub data.transformers.state-tables '{"route_id": 1}' >/dev/null
table='"3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10_answers"'
for _ in $(seq 300); do
	[ "$(psql_b -c "SELECT count(*) FROM $table" 2>/dev/null || echo 0)" = 800 ] &&
		[ "$(psql_b -c 'SELECT count(*) FROM ism_state.dead_letter')" = 4 ] && break
	sleep 1
done
rows=$(psql_b -c "SELECT count(*) FROM $table")
dead=$(psql_b -c 'SELECT count(*) FROM ism_state.dead_letter')
echo "rows: $rows (800 expected), dead letters: $dead (4 expected)"
[ "$rows" = 800 ] && [ "$dead" = 4 ] || { echo "the traffic did not go through"; exit 1; }
# one claim per message the writer took: 200 routed, 300 sent to it, 1 bad
claims=$(nats_b stream-info KV_valgrind_claims | sed -n 's/^messages=//p')
echo "claims: $claims (501 expected)"
[ "$claims" = 501 ] || { echo "the writer did not claim each message once"; exit 1; }
as_pg "$PGBIN/pg_ctl" -D "$work/pg" -m fast -t 300 stop >/dev/null

# a report (blocks end with an empty "==pid==" line) is ours when its
# stack has ism_state or nats.c in it
ours=$(awk 'function flush() {
                if (block ~ /Invalid|Conditional|uninitialised|Syscall param|Mismatched|definitely lost/ &&
                    block ~ /ism_state\.so|libnats/)
                    print block
                block = ""
            }
            /^==[0-9]+== *$/ { flush(); next }
            { block = block $0 "\n" }
            END { flush() }' "$work"/vg.*)
errors=$(cat "$work"/vg.* | grep -cE '^==[0-9]+== (Invalid|Conditional|Use of uninitialised|Syscall param|Mismatched)' || true)
echo "== memcheck: $errors reports in all, PostgreSQL's included"
if [ -n "$ours" ]; then
	echo "== reports in ism_state or nats.c"
	echo "$ours"
	exit 1
fi
echo "== none in ism_state or nats.c"
BENCH_KEEP=

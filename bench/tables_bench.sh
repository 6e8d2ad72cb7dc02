#!/usr/bin/env bash
# Tables ingest benchmark: records published to JetStream and written into
# PostgreSQL tables, measured side by side in one run on one stack.
#
#   ism-1      ism_state's writer, every record into one table
#   ism-100    ism_state's writer, records spread over 100 tables
#   copy       COPY of the same rows from a file into the same table shape
#              (PostgreSQL's own limit for these rows)
#   ism-1-claims  ism-1 with the writer claiming each message in a
#              key-value bucket (ism_state.claims_bucket), as when several
#              PostgreSQL instances share the consumer
#   ism-1-replicated, ism-100-replicated  ism_state.ack_after = replicated:
#              acks wait until a standby has flushed the commit
#   ism-1-sync, ism-100-sync  synchronous_standby_names = '*': acks wait
#              for the synchronous standby (ack_after = commit)
#   ism-1-2w, ism-100-2w  two writers (ism_state.writer_workers = 2) on
#              the same consumer
#   up-1/100   an external consumer with the Go state-tables algorithm
#              (bench/external_consumer.c --mode upstream: one autocommit
#              INSERT per record), on UPSTREAM_N records
#   tuned-1/100  an external consumer done well (--mode tuned: one
#              transaction and multi-row INSERTs per fetched batch, acks
#              after the commit)
#
# Messages carry 10 records of 10 keys (text, numbers, a boolean, a list,
# an object, a null, the publication time).  Records per second run from
# the first publish to the last commit (track_commit_timestamp); acked_s
# from the first publish to the consumer's last ack (JetStream's ack floor
# last_active); latency is publish to commit per record; CPU and peak
# private memory (RssAnon) are the consumer's (for the external ones: the
# program plus its backend; with two writers: CPU of both, memory of the
# first).
# Every case checks that each record is in its table exactly once, and
# for ism_state's cases gives the records each writer wrote and says when
# a writer was restarted during the case (it died: see the server's log).
#
# The high-availability cases (-replicated, -sync, -2w) run only when
# CASES names them; with a -replicated or -sync case every case runs with
# a streaming standby connected (asynchronous, ack_after = commit, unless
# the case says otherwise), so ism-1 and ism-100 are their baselines.
#
#   bench/tables_bench.sh OUT_DIR [N=200000] [ROUNDS=3] [UPSTREAM_N=N/10]
#   CASES="ism-1 copy" bench/tables_bench.sh …   only those cases (default:
#              all but the high-availability ones)
#   bench/tables_bench.sh --rss OUT_DIR [N=10000000]    ism-1 alone, one
#              round, the writer's memory sampled every second (rss.tsv)
#
# Writes OUT_DIR/tables.tsv (one line per case and round).  Not a test: it
# asserts nothing beyond the exact row counts it reports.
set -euo pipefail
cd "$(dirname "$0")/.."

RSS_RUN=
if [ "${1:-}" = --rss ]; then RSS_RUN=1; shift; fi
OUT=$(realpath -m "${1:?usage: tables_bench.sh [--rss] OUT_DIR [N [ROUNDS [UPSTREAM_N]]]}")
N=${2:-$([ -n "$RSS_RUN" ] && echo 10000000 || echo 200000)}
ROUNDS=${3:-3}
UPSTREAM_N=${4:-$((N / 10))}
PER_MESSAGE=10
mkdir -p "$OUT"

. bench/lib.sh
# CASES="ism-1 copy" runs only those
CASES=${CASES:-ism-1 copy ism-100 ism-1-claims tuned-1 tuned-100 up-1 up-100}
selected() { [[ " $CASES " == *" $1 "* ]]; }
needs_standby() { [[ " $CASES " == *-replicated\ * || " $CASES " == *-sync\ * ]]; }
selected up-1 || selected up-100 || selected tuned-1 || selected tuned-100 &&
	make -s bench/external-consumer
# The writer's consumer: pull, as the figures in bench/README.md were
# measured; BENCH_WRITER_MODE=push consumes as the example routing file does
# (the platform's default).  Set in the routing file, before the writer
# makes its consumer: an existing consumer is bound to as it is, whatever
# the route's mode says later.  1000 in flight, as the platform's default.
case "${BENCH_WRITER_MODE:=pull}" in push|pull) ;; *) echo "BENCH_WRITER_MODE: push or pull" >&2; exit 2 ;; esac
bench_edit_routing() {	# FILE: the writer's route is the one with max_ack_pending
	sed -i "s/^\( *\)max_ack_pending: 100 .*/\1max_ack_pending: 1000\n\1mode: $BENCH_WRITER_MODE/" "$1"
	grep -q "mode: $BENCH_WRITER_MODE" "$1" || { echo "could not set the writer's mode in $1" >&2; exit 1; }
}
bench_start_stack "track_commit_timestamp = on
shared_buffers = 512MB
max_wal_size = 8GB
ism_state.writer_batch_max_records = 20000"

# The catalog: processors <case>-p-<i> (i < 100), each with its route
# <case>-r-<i> and table "<case>-p-<i>_t"; the same properties for all.
psql_b <<'SQL' >/dev/null
INSERT INTO processor (id, provider_id, project_id, status, properties)
SELECT c || '-p-' || i, 'data/transformers/mixer/state-tables-1.0',
       '5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03', 'CREATED',
       '{"tableName": "t", "batchSize": 10, "batchWindowTTL": 5, "includeTimestamp": false}'
  FROM unnest(ARRAY['ism', 'up', 'tuned']) c, generate_series(0, 99) i;
INSERT INTO processor_state (id, processor_id, state_id, direction, status)
SELECT c || '-r-' || i, c || '-p-' || i, 'e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16', 'INPUT', 'CREATED'
  FROM unnest(ARRAY['ism', 'up', 'tuned']) c, generate_series(0, 99) i;

-- the tables of a case, by the prefix of their processors
CREATE FUNCTION bench_tables(prefix text) RETURNS SETOF regclass LANGUAGE sql AS $$
  SELECT c.oid::regclass FROM pg_class c
   WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace
     AND c.relname LIKE prefix || '-p-%' $$;
CREATE FUNCTION bench_drop(prefix text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE t regclass;
BEGIN
  FOR t IN SELECT * FROM bench_tables(prefix) LOOP EXECUTE format('DROP TABLE %s', t); END LOOP;
END $$;
-- rows, distinct records, last commit (Unix s), latency p50 / p99 (ms)
CREATE FUNCTION bench_result(prefix text, OUT n bigint, OUT uniq bigint, OUT last_commit float8,
                             OUT p50 float8, OUT p99 float8) LANGUAGE plpgsql AS $$
DECLARE q text;
BEGIN
  SELECT string_agg(format('SELECT id, j, t, xmin FROM %s', t), ' UNION ALL ')
    INTO q FROM bench_tables(prefix) t;
  EXECUTE format('WITH r AS (SELECT id::bigint, j::int, t::bigint,
                    extract(epoch FROM pg_xact_commit_timestamp(xmin)) AS c FROM (%s) x)
                  SELECT count(*), count(DISTINCT (id, j)), max(c),
                         percentile_cont(0.5) WITHIN GROUP (ORDER BY c * 1000 - t / 1000.0),
                         percentile_cont(0.99) WITHIN GROUP (ORDER BY c * 1000 - t / 1000.0)
                    FROM r', q)
    INTO n, uniq, last_commit, p50, p99;
END $$;
CREATE FUNCTION bench_count(prefix text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE t regclass; total bigint := 0; c bigint;
BEGIN
  FOR t IN SELECT * FROM bench_tables(prefix) LOOP
    EXECUTE format('SELECT count(*) FROM %s', t) INTO c; total := total + c;
  END LOOP;
  RETURN total;
END $$;
SQL
# what the writer consumes is what was asked for
made=$([ -n "$(consumer_field data_transformers_state_tables state_tables_workers deliver_subject)" ] &&
	echo push || echo pull)
[ "$made" = "$BENCH_WRITER_MODE" ] || { echo "the writer's consumer is $made, not $BENCH_WRITER_MODE" >&2; exit 1; }
! needs_standby || bench_start_standby
nats_b stream-add BENCH_UP bench.up >/dev/null
nats_b stream-add BENCH_TUNED bench.tuned >/dev/null

message() {	# ROUTE_PREFIX: 10 records of 10 keys; %n, %r, %t filled in by js-pub-n
	local records=()
	for j in $(seq 0 $((PER_MESSAGE - 1))); do
		records+=("{\"id\":%n,\"j\":$j,\"name\":\"record %n of a benchmark\",\"score\":0.75,\"count\":42,\"ok\":true,\"tags\":[\"a\",\"b\"],\"meta\":{\"k\":\"v\",\"n\":$j},\"note\":null,\"t\":%t}")
	done
	local IFS=,
	echo "{\"type\":\"query_state\",\"route_id\":\"$1-r-%r\",\"query_state\":[${records[*]}]}"
}

# what each writer wrote since the case began (pg_stat_ism_tables), "a/b"
records_per_writer() {
	psql_b -c "SELECT string_agg(coalesce(t.records, 0)::text, '/' ORDER BY w.worker)
	             FROM ism_state.pg_stat_ism_worker w
	             LEFT JOIN (SELECT worker, sum(records) AS records FROM ism_state.pg_stat_ism_tables
	                         GROUP BY worker) t USING (worker)
	            WHERE w.role = 'writer'"
}

# when the consumer acked its last message (Unix s), once all are acked
last_ack() {	# STREAM DURABLE
	local info
	until info=$(nats_b consumer-info "$1" "$2") &&
		grep -qx 'num_ack_pending=0' <<< "$info" && grep -qx 'num_pending=0' <<< "$info"; do
		sleep 0.2
	done
	sed -n 's/^ack_floor_last_active=//p' <<< "$info"
}

backend_of() {	# the client backend that is not psql (an external consumer's)
	psql_b -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'
	           AND application_name <> 'psql' AND pid <> pg_backend_pid() LIMIT 1"
}

# one round of a consumer case: publish, wait for every row, record the figures
run_case() {	# NAME PREFIX TABLES SUBJECT RECORDS
	local name=$1 prefix=$2 tables=$3 subject=$4 records=$5
	selected "$name" || return 0
	local pids start got result acked ext=
	psql_b -c "SELECT bench_drop('$prefix')" >/dev/null
	psql_b -c 'TRUNCATE ism_state.applied; CHECKPOINT' >/dev/null
	if [ "$prefix" = ism ]; then
		psql_b -c 'SELECT ism_state.pg_stat_ism_reset()' >/dev/null
		pids=$(echo $(worker_pids writer))
	else
		bench/external-consumer --mode "$([ "$prefix" = up ] && echo upstream || echo tuned)" \
			-s "nats://127.0.0.1:$NATS_PORT" --stream "$(echo "$subject" | tr a-z. A-Z_)" \
			--durable "${prefix}_consumer" --subject "$subject" \
			-d "host=$work port=$PG_PORT dbname=postgres user=postgres application_name=external" \
			--idle-exit 6 > "$work/ext.out" &
		ext=$!
		until [ -n "$(backend_of)" ]; do sleep 0.1; done
		pids="$ext $(backend_of)"
	fi
	local cpu0=0 cpu1=0 p
	for p in $pids; do cpu0=$(awk -v a="$cpu0" -v b="$(cpu_seconds "$p")" 'BEGIN {print a + b}'); done
	start_sampling "${pids%% *}" "$work/rss.samples" "${SAMPLE_INTERVAL:-0.05}"
	start=$(now)
	nats_b --mod "$tables" js-pub-n "$subject" $((records / PER_MESSAGE)) "$(message "$prefix")"
	until [ "$(psql_b -c "SELECT bench_count('$prefix')")" -ge "$records" ]; do sleep 0.5; done
	for p in $pids; do cpu1=$(awk -v a="$cpu1" -v b="$(cpu_seconds "$p" 2>/dev/null || echo 0)" 'BEGIN {print a + b}'); done
	# a writer that died meanwhile (PostgreSQL restarted it): its CPU is lost
	local restarted=
	[ "$prefix" != ism ] || [ "$(echo $(worker_pids writer))" = "$pids" ] || restarted=1
	local rss; rss=$(stop_sampling "$work/rss.samples")
	if [ "$prefix" = ism ]; then
		acked=$(last_ack data_transformers_state_tables state_tables_workers)
	else
		acked=$(last_ack "$(echo "$subject" | tr a-z. A-Z_)" "${prefix}_consumer")
	fi
	[ -z "$ext" ] || { kill "$ext" 2>/dev/null || true; wait "$ext" 2>/dev/null || true; }
	[ -z "${RSS_OUT:-}" ] || cp "$work/rss.samples" "$RSS_OUT"
	result=$(psql_b -F ' ' -c "SELECT * FROM bench_result('$prefix')")
	read -r got uniq last p50 p99 <<< "$result"
	printf '%s\t%s\t%s\t%.3f\t%.3f\t%.0f\t%.1f\t%.1f\t%s\t%s\t%s\t%s\n' "$name" "$round" "$records" \
		"$(awk -v a="$start" -v b="$last" 'BEGIN {print b - a}')" \
		"$(awk -v a="$start" -v b="$acked" 'BEGIN {print b - a}')" "$(rate "$records" "$start" "$last")" \
		"$p50" "$p99" "$([ -n "$restarted" ] || awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {printf "%.1f", b - a}')" "$rss" \
		"$([ "$got" = "$records" ] && [ "$uniq" = "$records" ] && echo exact || echo "WRONG:$got/$uniq")${restarted:+ (writer restarted)}" \
		"$([ "$prefix" != ism ] || records_per_writer)" | tee -a "$OUT/tables.tsv"
}

# COPY of the rows ism-1 wrote, from a file, into a table of the same shape
run_copy() {
	local start end
	selected copy || return 0
	psql_b -c "DROP TABLE IF EXISTS copy_target; CREATE TABLE copy_target (LIKE \"ism-p-0_t\"); CHECKPOINT" >/dev/null
	start=$(now)
	psql_b -c "COPY copy_target FROM '$work/rows.csv'" >/dev/null
	end=$(now)
	got=$(psql_b -c 'SELECT count(*) FROM copy_target')
	printf '%s\t%s\t%s\t%.3f\t\t%.0f\t\t\t\t\t%s\t\n' copy "$round" "$N" \
		"$(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}')" "$(rate "$N" "$start" "$end")" \
		"$([ "$got" = "$N" ] && echo exact || echo "WRONG:$got")" | tee -a "$OUT/tables.tsv"
}

# a setting that needs a restart (claims_bucket, writer_workers)
restart_with() {	# "SET name = value" or "RESET name"
	psql_b -c "ALTER SYSTEM $1"
	as_pg "$PGBIN/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w restart >/dev/null
	until [ "$(psql_b -c "SELECT bool_and(state = 'running' AND nats_state = 'connected')
	                        FROM ism_state.pg_stat_ism_worker")" = t ]; do
		sleep 0.2
	done
	[ ! -d "$work/standby" ] || bench_wait_streaming
	sleep 2	# subscribed (and the bucket opened) by then
}

# the writer with or without claims
claims() {	# on|off
	restart_with "$([ "$1" = on ] && echo "SET ism_state.claims_bucket = 'bench_claims'" ||
		echo 'RESET ism_state.claims_bucket')"
}

# what the writer's acks wait for: a reload, checked on the standby's
# walsender (sync or async)
durability() {	# commit | replicated | sync
	local settings sync_state=async
	case $1 in
	commit) settings=("RESET ism_state.ack_after" "RESET synchronous_standby_names") ;;
	replicated) settings=("SET ism_state.ack_after = replicated") ;;
	sync) settings=("SET synchronous_standby_names = '*'") sync_state=sync ;;
	esac
	for s in "${settings[@]}"; do psql_b -c "ALTER SYSTEM $s"; done
	psql_b -c 'SELECT pg_reload_conf()' >/dev/null
	until [ "$(psql_b -c 'SELECT sync_state FROM pg_stat_replication')" = "$sync_state" ]; do
		sleep 0.2
	done
	sleep 1	# the workers have read it by then
}

# one case of ism-1 and ism-100 each with a durability setting
ha_cases() {	# SUFFIX (replicated, sync)
	selected "ism-1-$1" || selected "ism-100-$1" || return 0
	durability "$1"
	run_case "ism-1-$1" ism 1 data.transformers.state-tables "$N"
	run_case "ism-100-$1" ism 100 data.transformers.state-tables "$N"
	durability commit
}

printf 'case\tround\trecords\tseconds\tacked_s\trecords_per_s\tp50_ms\tp99_ms\tcpu_s\tpeak_rss_mb\tcheck\tper_writer\n' > "$OUT/tables.tsv"
if [ -n "$RSS_RUN" ]; then
	round=1 SAMPLE_INTERVAL=1 RSS_OUT="$OUT/rss.samples" run_case ism-1 ism 1 data.transformers.state-tables "$N"
	exit 0
fi
for round in $(seq "$ROUNDS"); do
	run_case ism-1 ism 1 data.transformers.state-tables "$N"
	! selected copy || [ -f "$work/rows.csv" ] || psql_b -c "COPY \"ism-p-0_t\" TO '$work/rows.csv'" >/dev/null
	run_copy
	run_case ism-100 ism 100 data.transformers.state-tables "$N"
	ha_cases replicated
	ha_cases sync
	if selected ism-1-2w || selected ism-100-2w; then
		restart_with 'SET ism_state.writer_workers = 2'
		run_case ism-1-2w ism 1 data.transformers.state-tables "$N"
		run_case ism-100-2w ism 100 data.transformers.state-tables "$N"
		restart_with 'RESET ism_state.writer_workers'
	fi
	if selected ism-1-claims; then
		claims on
		run_case ism-1-claims ism 1 data.transformers.state-tables "$N"
		claims off
	fi
	run_case tuned-1 tuned 1 bench.tuned "$N"
	run_case tuned-100 tuned 100 bench.tuned "$N"
	run_case up-1 up 1 bench.up "$UPSTREAM_N"
	run_case up-100 up 100 bench.up "$UPSTREAM_N"
done

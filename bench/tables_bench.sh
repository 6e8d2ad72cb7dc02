#!/usr/bin/env bash
# Tables ingest benchmark: records published to JetStream and written into
# PostgreSQL tables, measured side by side in one run on one stack.
#
#   ism-1      ism_state's writer, every record into one table
#   ism-100    ism_state's writer, records spread over 100 tables
#   copy       COPY of the same rows from a file into the same table shape
#              (PostgreSQL's own limit for these rows)
#   ism-1-drain, ism-100-drain  ism-1 and ism-100 with every record
#              already waiting in JetStream when the writer starts
#              consuming (its route removed while they are published, then
#              loaded again): records/s from letting it go to the last commit
#   ism-1-steady  ism-1 at a steady offered load, a share (LATENCY_LOADS,
#              default "25 50 75" %) of ism-1's median rate measured in
#              the same run (or LATENCY_MAX_RATE records/s), for each
#              batchWindowTTL in LATENCY_TTLS (default "0 1"), batchSize
#              LATENCY_BATCH_SIZE (default null: the window alone decides);
#              each for LATENCY_SECONDS (10) or LATENCY_N records (N),
#              whichever is fewer records; after all rounds of the others
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
# first; for COPY its backend's).
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
# Writes OUT_DIR/tables.tsv (one line per case and round) and, with
# ism-1-steady, OUT_DIR/latency.tsv (one line per load, window and round;
# latency p50 / p99 / p99.9, publish to commit).  Not a test: it
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
CASES=${CASES:-ism-1 copy ism-100 ism-1-drain ism-100-drain ism-1-claims tuned-1 tuned-100 up-1 up-100 ism-1-steady}
LATENCY_LOADS=${LATENCY_LOADS:-25 50 75}
LATENCY_TTLS=${LATENCY_TTLS:-0 1}
LATENCY_BATCH_SIZE=${LATENCY_BATCH_SIZE:-null}
LATENCY_SECONDS=${LATENCY_SECONDS:-10}
LATENCY_N=${LATENCY_N:-$N}
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
-- rows, distinct records, last commit (Unix s), latency p50 / p99 / p99.9
-- (ms), first and last publication (Unix s)
CREATE FUNCTION bench_result(prefix text, OUT n bigint, OUT uniq bigint, OUT last_commit float8,
                             OUT p50 float8, OUT p99 float8, OUT p999 float8,
                             OUT first_pub float8, OUT last_pub float8) LANGUAGE plpgsql AS $$
DECLARE q text;
BEGIN
  SELECT string_agg(format('SELECT id, j, t, xmin FROM %s', t), ' UNION ALL ')
    INTO q FROM bench_tables(prefix) t;
  EXECUTE format('WITH r AS (SELECT id::bigint, j::int, t::bigint,
                    extract(epoch FROM pg_xact_commit_timestamp(xmin)) AS c FROM (%s) x),
                  s AS (SELECT count(*) AS n, count(DISTINCT (id, j)) AS uniq, max(c) AS c,
                               percentile_cont(ARRAY[0.5, 0.99, 0.999])
                                 WITHIN GROUP (ORDER BY c * 1000 - t / 1000.0) AS p,
                               min(t) / 1e6 AS first_pub, max(t) / 1e6 AS last_pub FROM r)
                  SELECT n, uniq, c, p[1], p[2], p[3], first_pub, last_pub FROM s', q)
    INTO n, uniq, last_commit, p50, p99, p999, first_pub, last_pub;
END $$;
-- this backend's CPU so far (s), as cpu_seconds in bench/lib.sh: fields 14
-- and 15 of /proc/self/stat (counted after the command's name), 100 a second
CREATE FUNCTION bench_cpu() RETURNS float8 LANGUAGE sql AS $$
  SELECT (f[12]::bigint + f[13]::bigint) / 100.0
    FROM (SELECT string_to_array(regexp_replace(pg_read_file('/proc/self/stat'), '^.*\) ', ''), ' ')) s(f) $$;
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

# The writer's route, removed and loaded again: without it the writer
# unsubscribes (its durable consumer stays on the server and keeps what
# arrives meanwhile); loaded again, it binds to that consumer as it is.
WRITER_SELECTOR=data/transformers/mixer/state-tables-1.0
stopped_lines() {
	grep -c "stopped consuming route \"$WRITER_SELECTOR\" (route removed)" "$work/pg.log" || true
}
writer_stops() {
	local before; before=$(stopped_lines)
	psql_b -c "SELECT ism_state.remove_route('$WRITER_SELECTOR')" >/dev/null
	until [ "$(stopped_lines)" -gt "$before" ]; do sleep 0.1; done
}
writer_goes() { psql_b -c "SELECT ism_state.load_routes_file('$work/routing.yaml')" >/dev/null; }

# Every record of a drain case into JetStream while the writer does not
# consume, checked on its consumer: all waiting, none delivered.
queue_for_writer() {	# TABLES SUBJECT RECORDS
	local messages=$(($3 / PER_MESSAGE)) info
	writer_stops
	nats_b --mod "$1" js-pub-n "$2" "$messages" "$(message ism)"
	info=$(nats_b consumer-info data_transformers_state_tables state_tables_workers)
	if ! grep -qx "num_pending=$messages" <<< "$info" || ! grep -qx 'num_ack_pending=0' <<< "$info"; then
		echo "drain: not all $messages messages were waiting for the writer: $(tr '\n' ' ' <<< "$info")" >&2
		exit 1
	fi
}

# One round of a consumer case: publish, wait for every row; sets start,
# last (commit), acked, p50, p99, p999 (ms), first_pub, last_pub, cpu,
# rss, check and restarted.  DRAIN=1: every record waits in JetStream
# first and the clock starts when the writer is let go; RATE=R: published
# at R messages a second.
consume() {	# PREFIX TABLES SUBJECT RECORDS
	local prefix=$1 tables=$2 subject=$3 records=$4
	local pids got uniq result ext=
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
	[ -z "${DRAIN:-}" ] || queue_for_writer "$tables" "$subject" "$records"
	local cpu0=0 cpu1=0 p
	for p in $pids; do cpu0=$(awk -v a="$cpu0" -v b="$(cpu_seconds "$p")" 'BEGIN {print a + b}'); done
	start_sampling "${pids%% *}" "$work/rss.samples" "${SAMPLE_INTERVAL:-0.05}"
	start=$(now)
	if [ -n "${DRAIN:-}" ]; then
		writer_goes
	else
		nats_b --mod "$tables" ${RATE:+--rate "$RATE"} js-pub-n "$subject" $((records / PER_MESSAGE)) "$(message "$prefix")"
	fi
	until [ "$(psql_b -c "SELECT bench_count('$prefix')")" -ge "$records" ]; do sleep 0.5; done
	for p in $pids; do cpu1=$(awk -v a="$cpu1" -v b="$(cpu_seconds "$p" 2>/dev/null || echo 0)" 'BEGIN {print a + b}'); done
	# a writer that died meanwhile (PostgreSQL restarted it): its CPU is lost
	restarted=
	[ "$prefix" != ism ] || [ "$(echo $(worker_pids writer))" = "$pids" ] || restarted=1
	cpu=$([ -n "$restarted" ] || awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {printf "%.2f", b - a}')
	rss=$(stop_sampling "$work/rss.samples")
	if [ "$prefix" = ism ]; then
		acked=$(last_ack data_transformers_state_tables state_tables_workers)
	else
		acked=$(last_ack "$(echo "$subject" | tr a-z. A-Z_)" "${prefix}_consumer")
	fi
	[ -z "$ext" ] || { kill "$ext" 2>/dev/null || true; wait "$ext" 2>/dev/null || true; }
	[ -z "${RSS_OUT:-}" ] || cp "$work/rss.samples" "$RSS_OUT"
	result=$(psql_b -F ' ' -c "SELECT * FROM bench_result('$prefix')")
	read -r got uniq last p50 p99 p999 first_pub last_pub <<< "$result"
	check="$([ "$got" = "$records" ] && [ "$uniq" = "$records" ] && echo exact || echo "WRONG:$got/$uniq")${restarted:+ (writer restarted)}"
}

seconds() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b - a}'; }

# one round of a case into tables.tsv
run_case() {	# NAME PREFIX TABLES SUBJECT RECORDS
	local name=$1 prefix=$2 records=$5 latency
	selected "$name" || return 0
	consume "$prefix" "$3" "$4" "$records"
	# behind a drain, publish to commit is the wait, not the writer's latency
	latency=$([ -n "${DRAIN:-}" ] || printf '%.1f\t%.1f' "$p50" "$p99")
	[ -n "$latency" ] || latency=$'\t'
	printf '%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$records" \
		"$(seconds "$start" "$last")" "$(seconds "$start" "$acked")" "$(rate "$records" "$start" "$last")" \
		"$latency" "$cpu" "$rss" "$check" "$([ "$prefix" != ism ] || records_per_writer)" | tee -a "$OUT/tables.tsv"
}

# COPY of the rows ism-1 wrote, from a file, into a table of the same shape;
# CPU: its backend's
run_copy() {
	local start end cpu
	selected copy || return 0
	psql_b -c "DROP TABLE IF EXISTS copy_target; CREATE TABLE copy_target (LIKE \"ism-p-0_t\"); CHECKPOINT" >/dev/null
	start=$(now)
	cpu=$(psql_b -c 'SELECT bench_cpu()' -c "COPY copy_target FROM '$work/rows.csv'" -c 'SELECT bench_cpu()')
	end=$(now)
	got=$(psql_b -c 'SELECT count(*) FROM copy_target')
	printf '%s\t%s\t%s\t%.3f\t\t%.0f\t\t\t%s\t\t%s\t\n' copy "$round" "$N" \
		"$(seconds "$start" "$end")" "$(rate "$N" "$start" "$end")" \
		"$(awk '{a[NR] = $1} END {printf "%.2f", a[2] - a[1]}' <<< "$cpu")" \
		"$([ "$got" = "$N" ] && echo exact || echo "WRONG:$got")" | tee -a "$OUT/tables.tsv"
}

# the ism processors' batching (the writer reads a change within 2 s)
batching() {	# BATCH_WINDOW_TTL BATCH_SIZE (JSON: a number or null)
	psql_b -c "UPDATE processor SET properties = properties ||
	             '{\"batchWindowTTL\": $1, \"batchSize\": $2}' WHERE id LIKE 'ism-p-%'"
	sleep 2.5
}

# one round of ism-1 at a steady offered load into latency.tsv
run_steady() {	# BATCH_WINDOW_TTL LOAD_PERCENT MAX_RECORDS_PER_S
	local offered records
	offered=$(awk -v m="$3" -v l="$2" 'BEGIN {printf "%.0f", m * l / 100}')
	records=$(awk -v r="$offered" -v s="$LATENCY_SECONDS" -v n="$LATENCY_N" -v k="$PER_MESSAGE" \
		'BEGIN {x = r * s; if (x > n) x = n; printf "%d", int(x / k) * k}')
	RATE=$(awk -v r="$offered" -v k="$PER_MESSAGE" 'BEGIN {print r / k}') \
		consume ism 1 data.transformers.state-tables "$records"
	printf 'ism-1-steady\t%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t%.1f\t%.1f\t%.1f\t%s\t%s\n' \
		"$round" "$1" "$LATENCY_BATCH_SIZE" "$2" \
		"$offered" "$(awk -v n="$records" -v a="$first_pub" -v b="$last_pub" 'BEGIN {print (b > a ? n / (b - a) : 0)}')" \
		"$records" "$(seconds "$start" "$last")" "$p50" "$p99" "$p999" "$cpu" "$check" | tee -a "$OUT/latency.tsv"
}

# ism-1 at steady shares of its maximum, the burst case's median in this run
steady_cases() {
	selected ism-1-steady || return 0
	local max ttl load
	max=${LATENCY_MAX_RATE:-$(awk -F'\t' '$1 == "ism-1" {print $6}' "$OUT/tables.tsv" | median)}
	[ -n "$max" ] || { echo "ism-1-steady: run ism-1 too, or set LATENCY_MAX_RATE" >&2; exit 2; }
	printf 'case\tround\tbatch_window_ttl\tbatch_size\tload_pct\toffered_per_s\tpublished_per_s\trecords\tseconds\tp50_ms\tp99_ms\tp999_ms\tcpu_s\tcheck\n' > "$OUT/latency.tsv"
	for round in $(seq "$ROUNDS"); do
		for ttl in $LATENCY_TTLS; do
			batching "$ttl" "$LATENCY_BATCH_SIZE"
			for load in $LATENCY_LOADS; do run_steady "$ttl" "$load" "$max"; done
		done
	done
	batching 5 10
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
	DRAIN=1 run_case ism-1-drain ism 1 data.transformers.state-tables "$N"
	DRAIN=1 run_case ism-100-drain ism 100 data.transformers.state-tables "$N"
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
steady_cases

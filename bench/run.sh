#!/usr/bin/env bash
# The benchmark, one command: tables ingest (ism_state into 1 and 100
# tables, in a burst and draining what waits in JetStream, COPY, the
# upstream algorithm, a tuned external consumer), ism_state's latency at
# steady offered loads, the router beside the upstream router's algorithm,
# and in the long run the writer's memory over 10,000,000 records.
# Each case runs ROUNDS times in one session on one stack; the report gives
# medians, spreads and ratios, with plots.
#
#   bench/run.sh [quick|long|ha|router] [OUT_DIR]
#
#   quick  200,000 records (upstream algorithm: 20,000), router 20,000
#          messages and a 100,000-row replay; a few minutes on 2 cores
#   long   1,000,000 records (upstream: 100,000), router 20,000 messages
#          and a 1,000,000-row replay, then 10,000,000 records into one
#          table with the writer's memory sampled every second
#   ha     high availability, 200,000 records, no router: ism-1 and
#          ism-100 with a streaming standby connected, with ack_after =
#          replicated, with the standby synchronous, and with two writers
#   router the router only, as in quick
#
# Results: OUT_DIR (default bench/reports/<date>-<mode>/): results.md,
# tables.tsv, tables.png, latency.tsv and latency.png (not in router),
# router.txt and router.tsv (not in ha), and for the long run rss.tsv,
# rss.png.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-quick}
OUT=${2:-bench/reports/$(date +%Y-%m-%d)-$MODE}
ROUNDS=${ROUNDS:-3}
case $MODE in
quick) N=200000 UPSTREAM_N=20000 ROUTER=(20000 100000 "$ROUNDS") ;;
long) N=1000000 UPSTREAM_N=100000 ROUTER=(20000 1000000 "$ROUNDS") ;;
ha) N=200000 ;;
router) ROUTER=(20000 100000 "$ROUNDS") ;;
*) echo "usage: bench/run.sh [quick|long|ha|router] [OUT_DIR]" >&2; exit 2 ;;
esac

scripts/install-deps.sh --bench
mkdir -p "$OUT"

if [ "$MODE" = ha ]; then
	echo "== high availability: $N records, $ROUNDS rounds, a streaming standby"
	CASES="ism-1 ism-1-replicated ism-1-sync ism-1-2w ism-100 ism-100-replicated ism-100-sync ism-100-2w" \
		bench/tables_bench.sh "$OUT" "$N" "$ROUNDS"
elif [ "$MODE" != router ]; then
	echo "== tables ingest: $N records, $ROUNDS rounds"
	bench/tables_bench.sh "$OUT" "$N" "$ROUNDS" "$UPSTREAM_N"
fi
if [ "$MODE" != ha ]; then
	echo "== router, beside the upstream router's algorithm"
	bench/router_bench.sh "${ROUTER[@]}" "$OUT" | tee "$OUT/router.txt"
fi
if [ "$MODE" = long ]; then
	echo "== the writer's memory over 10,000,000 records"
	mkdir -p "$OUT/rss"
	bench/tables_bench.sh --rss "$OUT/rss" 10000000
	mv "$OUT/rss/rss.samples" "$OUT/rss.tsv"
	tail -n +2 "$OUT/rss/tables.tsv" > "$OUT/rss-run.tsv"
	rm -rf "$OUT/rss"
fi
python3 bench/report.py "$OUT" "$MODE"
echo "== report: $OUT/results.md"
cat "$OUT/results.md"

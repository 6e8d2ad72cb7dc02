#!/usr/bin/env bash
# The benchmark, one command: tables ingest (ism_state into 1 and 100
# tables, COPY, the upstream algorithm, a tuned external consumer), the
# router, and in the long run the writer's memory over 10,000,000 records.
# Each case runs ROUNDS times in one session on one stack; the report gives
# medians, spreads and ratios, with plots.
#
#   bench/run.sh [quick|long] [OUT_DIR]
#
#   quick  200,000 records (upstream algorithm: 20,000), router 20,000
#          messages and a 100,000-row replay; a few minutes on 2 cores
#   long   1,000,000 records (upstream: 100,000), router 20,000 messages
#          and a 1,000,000-row replay, then 10,000,000 records into one
#          table with the writer's memory sampled every second
#
# Results: OUT_DIR (default bench/reports/<date>-<mode>/): results.md,
# tables.tsv, router.txt, tables.png, and for the long run rss.tsv, rss.png.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-quick}
OUT=${2:-bench/reports/$(date +%Y-%m-%d)-$MODE}
ROUNDS=${ROUNDS:-3}
case $MODE in
quick) N=200000 UPSTREAM_N=20000 ROUTER=(20000 100000 "$ROUNDS") ;;
long) N=1000000 UPSTREAM_N=100000 ROUTER=(20000 1000000 "$ROUNDS") ;;
*) echo "usage: bench/run.sh [quick|long] [OUT_DIR]" >&2; exit 2 ;;
esac

scripts/install-deps.sh --bench
mkdir -p "$OUT"

echo "== tables ingest: $N records, $ROUNDS rounds"
bench/tables_bench.sh "$OUT" "$N" "$ROUNDS" "$UPSTREAM_N"
echo "== router"
bench/router_bench.sh "${ROUTER[@]}" | tee "$OUT/router.txt"
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

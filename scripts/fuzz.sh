#!/usr/bin/env bash
# The libFuzzer targets (fuzz/), built with clang, each run for a bounded
# time from the seed corpus in fuzz/corpus/.  Fails on any crash, sanitizer
# report or broken property; the input that did it is left in
# fuzz/findings/ (add it to the target's corpus as a regression test once
# fixed).
#
#   scripts/fuzz.sh [SECONDS=60] [TARGET...]
#
# targets: json partition route_index route_yaml record_row
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-60}
shift || true
TARGETS=${*:-json partition route_index route_yaml record_row}
PGINC=$(pg_config --includedir-server)
PGLIB=$(pg_config --pkglibdir)
CFLAGS="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
        -I$PGINC -Isrc -Wall -Wno-unused-parameter -Wno-ignored-attributes -Werror"
# StringInfo, psprintf and Ryu from PostgreSQL's frontend library; palloc
# from fuzz/backend_shim.c, which frees what each input leaves (leaks are
# findings)
PGLIBS="$PGLIB/libpgcommon.a $PGLIB/libpgport.a -lm"
build=$(mktemp -d /tmp/ism_state-fuzz.XXXXXX)
trap 'rm -rf "$build"' EXIT

sources() {
	case $1 in
	json) echo "fuzz/fuzz_json.c src/json.c src/json_number.c fuzz/backend_shim.c $PGLIBS" ;;
	partition) echo "fuzz/fuzz_partition.c src/partition.c src/json.c src/json_number.c fuzz/backend_shim.c $PGLIBS" ;;
	route_index) echo "fuzz/fuzz_route_index.c src/route_index.c" ;;
	route_yaml) echo "fuzz/fuzz_route_yaml.c src/route_yaml.c src/route_spec.c src/json.c src/json_number.c fuzz/backend_shim.c $PGLIBS -lyaml" ;;
	record_row) echo "fuzz/fuzz_record_row.c src/copy_text.c src/json.c src/json_number.c src/column_types.c fuzz/backend_shim.c $PGLIBS" ;;
	*) echo "unknown fuzz target: $1" >&2; exit 2 ;;
	esac
}

status=0
for t in $TARGETS; do
	# shellcheck disable=SC2046
	clang $CFLAGS -o "$build/fuzz_$t" $(sources "$t")
	mkdir -p "$build/corpus-$t" fuzz/findings
	cp fuzz/corpus/"$t"/* "$build/corpus-$t/"
	opts=(-max_total_time="$SECONDS_EACH" -max_len=4096 -timeout=10 -rss_limit_mb=2048
		-artifact_prefix="fuzz/findings/$t-" -print_final_stats=1)
	# the target's tokens (its keys, the syntax), for the mutations to use
	if [ -f "fuzz/$t.dict" ]; then opts+=(-dict="fuzz/$t.dict"); fi
	echo "== fuzz $t: $SECONDS_EACH s"
	if "$build/fuzz_$t" "${opts[@]}" "$build/corpus-$t" \
		> "$build/$t.log" 2>&1; then
		grep -E '^stat::number_of_executed_units' "$build/$t.log" || true
	else
		status=1
		echo "== fuzz $t FAILED"; tail -40 "$build/$t.log"
		# the input, in the log too: a run in a throwaway copy (a chroot's)
		# takes fuzz/findings/ with it
		for f in fuzz/findings/"$t"-*; do
			[ -f "$f" ] && { echo "== $f (base64)"; base64 -w 0 "$f"; echo; }
		done
	fi
done
exit $status

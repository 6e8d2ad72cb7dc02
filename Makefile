# ism_state: PGXS build, install and tests.
#
#   make                  build (warnings are errors)
#   make install          install into the server found by pg_config
#   make installcheck     pg_regress (sql_tests/ -> expected/) and the TAP
#                         integration tests (test/t/), each in a throwaway
#                         cluster; see scripts/test.sh for the whole run

EXTENSION    = ism_state
MODULE_big   = ism_state
OBJS         = src/ism_state.o src/settings.o src/stats.o src/nats_conn.o \
               src/worker.o src/route_index.o src/route_spec.o src/route_yaml.o \
               src/routes.o src/route_cache.o src/jetstream.o \
               src/router.o src/partition.o src/processor_props.o src/lookup_cache.o \
               src/ident.o src/applied.o src/dead_letter.o src/writer.o src/writer_batch.o \
               src/writer_flush.o src/writer_rows.o src/writer_schema.o \
               src/copy_text.o src/json.o src/json_number.o \
               src/column_types.o src/counters.o src/log_limit.o \
               src/claims.o src/xact.o src/view_columns.o \
               src/durability.o src/ack_gate.o
DATA         = $(wildcard sql/ism_state--*.sql)
PGFILEDESC   = "ism_state - Alethic ISM state router and state tables"

# the extension's version (ism_state.control), for PG_MODULE_MAGIC_EXT (18)
ISM_STATE_VERSION := $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" ism_state.control)
PG_CPPFLAGS  = -I$(srcdir)/src -DISM_STATE_VERSION='"$(ISM_STATE_VERSION)"'
# -Wextra, less unused-parameter: PostgreSQL's own headers (bufpage.h) and
# its fixed-signature callbacks (signal, shmem-exit) trip it.
PG_CFLAGS    = -Wall -Wextra -Werror -Wno-unused-parameter
SHLIB_LINK   = -lnats -lyaml

# pg_regress wants <dir>/sql and <dir>/expected; test/regress links them to
# the top-level sql_tests/ and expected/.
REGRESS      = $(basename $(notdir $(wildcard sql_tests/*.sql)))
REGRESS_OPTS = --inputdir=test/regress \
               --temp-instance=tmp_check_regress \
               --temp-config=test/regress/ism_state.conf

TAP_TESTS    = 1
PROVE_TESTS  = test/t/*.pl

EXTRA_CLEAN  = test/ism-nats tmp_check_regress bench/route_bench bench/json_bench bench/external-consumer \
               bench/upstream-router

PG_CONFIG   ?= pg_config
PGXS        := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# after the include: Makefile.global empties PROVE_FLAGS; --timer: each
# file's wall time in the output (.ci/run's budget)
PROVE_FLAGS  = -I test/lib --timer

# PGXS tracks no header dependencies here: every object depends on every
# header, so a changed declaration never leaves a stale object behind.
$(OBJS): $(wildcard src/*.h)

# A small NATS command-line client the integration tests drive NATS with.
test/ism-nats: test/ism_nats.c
	$(CC) $(CFLAGS) -Wextra -Werror -o $@ $< -lnats

installcheck: test/ism-nats

# Route resolution with 10,000 routes in the worker's cache (not a test).
bench/route_bench: bench/route_bench.c src/route_index.c src/route_index.h
	$(CC) -O2 -Wall -Wextra -Werror -o $@ bench/route_bench.c src/route_index.c

# The JSON parser on the tables benchmark's message (not a test); palloc
# from the fuzz targets' shim, StringInfo from PostgreSQL's frontend library.
bench/json_bench: bench/json_bench.c src/json.c src/json_number.c src/json.h fuzz/backend_shim.c
	$(CC) -O2 -Wall -Wextra -Werror -Wno-unused-parameter -I$(shell $(PG_CONFIG) --includedir-server) -Isrc \
		-o $@ bench/json_bench.c src/json.c src/json_number.c fuzz/backend_shim.c \
		$(shell $(PG_CONFIG) --pkglibdir)/libpgcommon.a $(shell $(PG_CONFIG) --pkglibdir)/libpgport.a -lm

# The external consumers the tables benchmark compares ism_state with, and
# the upstream router's algorithm the router benchmark does.
bench/external-consumer: bench/external_consumer.c bench/bench_util.c bench/bench_util.h
bench/upstream-router: bench/upstream_router.c bench/bench_util.c bench/bench_util.h
bench/external-consumer bench/upstream-router:
	$(CC) -O2 -Wall -Wextra -Werror -I$(shell pg_config --includedir) -o $@ $< bench/bench_util.c \
		-lnats -lpq -lcjson -lm

bench-routes: bench/route_bench
	bench/route_bench

bench-json: bench/json_bench
	bench/json_bench

.PHONY: bench-routes bench-json

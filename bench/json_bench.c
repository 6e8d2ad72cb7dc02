/*
 * json_bench: ism_state's JSON parser (src/json.c, the code the workers
 * run) on the tables benchmark's message (bench/tables_bench.sh: 10
 * records of 10 keys), in nanoseconds per message and per record.
 *
 *   bench/json_bench [parses-per-round [rounds]]
 *
 * Prints the median and the spread (min..max) of the rounds.  palloc and
 * friends come from fuzz/backend_shim.c, which frees everything after each
 * parse, as the workers' per-message memory context does.
 */
#include "postgres.h"

#include <time.h>

#include "json.h"

#define RECORDS 10

extern void shim_reset(void);

/* bench/tables_bench.sh's message(), its %n, %r and %t filled in */
static char *
benchmark_message(void)
{
	static char buf[8192];
	int			len;

	len = snprintf(buf, sizeof(buf),
				   "{\"type\":\"query_state\",\"route_id\":\"bench-r-1\",\"query_state\":[");
	for (int j = 0; j < RECORDS; j++)
		len += snprintf(buf + len, sizeof(buf) - len,
						"%s{\"id\":%d,\"j\":%d,\"name\":\"record %d of a benchmark\",\"score\":0.75,"
						"\"count\":42,\"ok\":true,\"tags\":[\"a\",\"b\"],\"meta\":{\"k\":\"v\",\"n\":%d},"
						"\"note\":null,\"t\":1796696895.123456}",
						j ? "," : "", 1000 + j, j, 1000 + j, j);
	snprintf(buf + len, sizeof(buf) - len, "]}");
	return buf;
}

static double
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int
by_value(const void *a, const void *b)
{
	double		x = *(const double *) a;
	double		y = *(const double *) b;

	return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
	int			parses = argc > 1 ? atoi(argv[1]) : 200000;
	int			rounds = argc > 2 ? atoi(argv[2]) : 5;
	const char *msg = benchmark_message();
	size_t		len = strlen(msg);
	double	   *ns = malloc(sizeof(double) * rounds);

	if (parses < 1 || rounds < 1 || ns == NULL)
		return 2;
	for (int r = 0; r < rounds; r++)
	{
		double		start = now_ns();

		for (int i = 0; i < parses; i++)
		{
			char	   *error;

			if (ism_json_parse(msg, len, &error) == NULL)
			{
				fprintf(stderr, "json_bench: %s\n", error);
				return 1;
			}
			shim_reset();
		}
		ns[r] = (now_ns() - start) / parses;
	}
	qsort(ns, rounds, sizeof(double), by_value);
	printf("parse, %d records of 10 keys a message: %.0f ns a message (%.0f .. %.0f), %.0f ns a record\n",
		   RECORDS, ns[rounds / 2], ns[0], ns[rounds - 1], ns[rounds / 2] / RECORDS);
	free(ns);
	return 0;
}

/*
 * route_bench: route resolutions per second with 10,000 routes in the
 * worker's cache (src/route_index.c, the code the workers run), side by
 * side with the upstream routers' algorithm (exact lookup, then a scan of
 * every wildcard route), on the same keys in the same run.
 *
 *   bench/route_bench [routes [lookups-per-round [rounds]]]
 *
 * Half the routes are exact ("provider/<i>/model-<i>"), half wildcards
 * ("family/<i>/<star>").  The keys are a third exact hits, a third
 * wildcard hits and a third misses.  Prints the median and the spread
 * (min..max) of each round's rate, and the ratio of the medians.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/route_index.h"

typedef struct Baseline
{
	char	  **selectors;		/* sorted, for the exact lookup */
	char	  **prefixes;		/* wildcard selectors without the star */
	size_t	   *prefix_len;
	int			nselectors;
	int			nprefixes;
} Baseline;

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
compare_strings(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Exact match (binary search, standing in for a dict), else scan wildcards. */
static int
baseline_lookup(const Baseline *b, const char *key)
{
	int			matches = 0;

	if (bsearch(&key, b->selectors, b->nselectors, sizeof(char *), compare_strings))
		return 1;
	for (int i = 0; i < b->nprefixes; i++)
		if (strncmp(key, b->prefixes[i], b->prefix_len[i]) == 0)
			matches++;
	return matches;
}

static int
compare_doubles(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return (x > y) - (x < y);
}

static void
report(const char *name, double *rates, int rounds, double *median)
{
	qsort(rates, rounds, sizeof(double), compare_doubles);
	*median = rates[rounds / 2];
	printf("%-26s median %12.0f lookups/s   spread %.0f .. %.0f\n",
		   name, *median, rates[0], rates[rounds - 1]);
}

int
main(int argc, char **argv)
{
	int			nroutes = argc > 1 ? atoi(argv[1]) : 10000;
	int			nlookups = argc > 2 ? atoi(argv[2]) : 1000000;
	int			rounds = argc > 3 ? atoi(argv[3]) : 7;
	RouteIndex *index = ism_route_index_create(nroutes);
	Baseline	base = {0};
	char	  **keys = malloc(sizeof(char *) * nlookups);
	double	   *index_rates = malloc(sizeof(double) * rounds);
	double	   *base_rates = malloc(sizeof(double) * rounds);
	double		index_median,
				base_median;
	long		found = 0;

	base.selectors = malloc(sizeof(char *) * nroutes);
	base.prefixes = malloc(sizeof(char *) * nroutes);
	base.prefix_len = malloc(sizeof(size_t) * nroutes);
	for (int i = 0; i < nroutes; i++)
	{
		char		sel[64];

		if (i % 2 == 0)
			snprintf(sel, sizeof(sel), "provider/%d/model-%d", i, i);
		else
		{
			snprintf(sel, sizeof(sel), "family/%d/*", i);
			base.prefixes[base.nprefixes] = strndup(sel, strlen(sel) - 2);
			base.prefix_len[base.nprefixes] = strlen(sel) - 2;
			base.nprefixes++;
		}
		ism_route_index_add(index, sel, i);
		base.selectors[base.nselectors++] = strdup(sel);
	}
	qsort(base.selectors, base.nselectors, sizeof(char *), compare_strings);

	srand(42);
	for (int i = 0; i < nlookups; i++)
	{
		char		key[96];
		int			r = rand() % nroutes;

		switch (i % 3)
		{
			case 0:				/* exact hit */
				r &= ~1;
				snprintf(key, sizeof(key), "provider/%d/model-%d", r, r);
				break;
			case 1:				/* wildcard hit */
				r |= 1;
				if (r >= nroutes)
					r -= 2;
				snprintf(key, sizeof(key), "family/%d/model-x", r);
				break;
			default:			/* miss */
				snprintf(key, sizeof(key), "vision/%d/model", r);
				break;
		}
		keys[i] = strdup(key);
	}

	for (int round = 0; round < rounds; round++)
	{
		double		t0 = now_seconds();
		int			ids[4];
		int			n;

		for (int i = 0; i < nlookups; i++)
			found += ism_route_index_lookup(index, keys[i], ids, 4, &n) == ROUTE_FOUND;
		index_rates[round] = nlookups / (now_seconds() - t0);

		/* the baseline is ~1000x slower: a tenth of the keys is plenty */
		t0 = now_seconds();
		for (int i = 0; i < nlookups / 10; i++)
			found += baseline_lookup(&base, keys[i]) == 1;
		base_rates[round] = (nlookups / 10) / (now_seconds() - t0);
	}

	printf("route resolution, %d routes (%d wildcards), %d lookups x %d rounds\n",
		   nroutes, base.nprefixes, nlookups, rounds);
	report("ism_state route cache", index_rates, rounds, &index_median);
	report("upstream algorithm", base_rates, rounds, &base_median);
	printf("ratio (cache / upstream)   %.0fx\n", index_median / base_median);
	/* keep the loops from being optimised away */
	fprintf(stderr, "(%ld found)\n", found);

	ism_route_index_destroy(index);
	return 0;
}

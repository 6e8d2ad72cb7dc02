/*-------------------------------------------------------------------------
 *
 * route_index.h
 *	  Selector lookup with the ISM routers' rules, in plain C.
 *
 * The rules (ismcore find_route_wildcard, core-go FindRouteBySelectorWildcard):
 *   1. a route whose selector equals the lookup key wins;
 *   2. otherwise the wildcard routes match, those whose selector ends in a
 *      slash and a star, and whose prefix (the selector without those two
 *      characters) is a plain string prefix of the key: "a/b/<star>" also
 *      matches "a/bc";
 *   3. exactly one such match is the answer; several are an error (no
 *      longest-prefix rule), and so is none.
 *
 * No PostgreSQL headers: the worker's cache, the SQL function
 * resolve_route() and the benchmark in bench/ all use this same code.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ROUTE_INDEX_H
#define ROUTE_INDEX_H

#include <stdbool.h>
#include <stddef.h>

typedef struct RouteIndex RouteIndex;

typedef enum RouteLookupResult
{
	ROUTE_FOUND,
	ROUTE_AMBIGUOUS,
	ROUTE_NOT_FOUND
} RouteLookupResult;

/* NULL when out of memory. */
extern RouteIndex *ism_route_index_create(size_t expected_routes);
extern void ism_route_index_destroy(RouteIndex *index);

/* Adds selector (copied) as route number id; false when out of memory. */
extern bool ism_route_index_add(RouteIndex *index, const char *selector, int id);

/*
 * Looks selector up.  ROUTE_FOUND: ids[0] is the route.  ROUTE_AMBIGUOUS:
 * *nmatches wildcard routes matched, the first min(*nmatches, maxids) of
 * them in ids.  ROUTE_NOT_FOUND: nothing matched.
 */
extern RouteLookupResult ism_route_index_lookup(const RouteIndex *index,
											const char *selector,
											int *ids, int maxids,
											int *nmatches);

#endif							/* ROUTE_INDEX_H */

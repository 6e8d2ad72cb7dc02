/*-------------------------------------------------------------------------
 *
 * route_cache.c
 *	  A worker's copy of ism_state.route, with the routers' lookup rules.
 *
 * The copy is stale when the shared route generation has moved on: every
 * committed change to the table bumps it and wakes the workers (see
 * ism_notify_change), so a worker reloads right after a change and
 * never polls the table.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "route_cache.h"
#include "route_index.h"
#include "stats.h"

static MemoryContext cache_context = NULL;
static IsmRoute *cached_routes = NULL;
static int	ncached_routes = 0;
static RouteIndex *cache_index = NULL;
static uint64 cache_generation = 0;
static bool cache_valid = false;

bool
ism_route_cache_is_stale(void)
{
	return !cache_valid || cache_generation != ism_change_generation(ISM_CHANGE_ROUTES);
}

void
ism_route_cache_invalidate(void)
{
	cache_valid = false;
}

int
ism_route_cache_count(void)
{
	return cache_valid ? ncached_routes : 0;
}

static char *
copy_text(HeapTuple tuple, TupleDesc desc, int col)
{
	char	   *value = SPI_getvalue(tuple, desc, col);

	return value ? pstrdup(value) : NULL;
}

static int32
get_int(HeapTuple tuple, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tuple, desc, col, &isnull);

	return isnull ? 0 : DatumGetInt32(d);
}

static bool
get_bool(HeapTuple tuple, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tuple, desc, col, &isnull);

	return !isnull && DatumGetBool(d);
}

/*
 * Reload from the table; runs inside the caller's transaction.  The new
 * copy is built in a context under the transaction's, so an error leaves
 * nothing behind, and adopted only once complete.
 */
void
ism_route_cache_load(void)
{
	/* read before the snapshot: a change committed after it bumps again */
	uint64		generation = ism_change_generation(ISM_CHANGE_ROUTES);
	MemoryContext fresh;
	MemoryContext old;
	IsmRoute   *routes;
	RouteIndex *index;
	uint64		n;

	fresh = AllocSetContextCreate(CurTransactionContext, "ism_state route cache",
								  ALLOCSET_DEFAULT_SIZES);
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_execute("SELECT selector, name, subject, url, queue, mode, ack_wait,"
					" batch_size, max_ack_pending, jetstream_enabled,"
					" concurrent_enabled, concurrent_max_workers,"
					" concurrent_priority_enabled, concurrent_max_workers_high,"
					" mirror FROM ism_state.route ORDER BY selector",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "ism_state: could not read ism_state.route");

	n = SPI_processed;
	old = MemoryContextSwitchTo(fresh);
	routes = palloc0(sizeof(IsmRoute) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		IsmRoute   *r = &routes[i];

		r->selector = copy_text(t, d, 1);
		r->name = copy_text(t, d, 2);
		r->subject = copy_text(t, d, 3);
		r->url = copy_text(t, d, 4);
		r->queue = copy_text(t, d, 5);
		r->mode = copy_text(t, d, 6);
		r->ack_wait = get_int(t, d, 7);
		r->batch_size = get_int(t, d, 8);
		r->max_ack_pending = get_int(t, d, 9);
		r->jetstream_enabled = get_bool(t, d, 10);
		r->concurrent_enabled = get_bool(t, d, 11);
		r->concurrent_max_workers = get_int(t, d, 12);
		r->concurrent_priority_enabled = get_bool(t, d, 13);
		r->concurrent_max_workers_high = get_int(t, d, 14);
		r->mirror = copy_text(t, d, 15);
	}
	MemoryContextSwitchTo(old);
	PopActiveSnapshot();
	SPI_finish();

	index = ism_route_index_create(n);
	for (uint64 i = 0; index && i < n; i++)
		if (!ism_route_index_add(index, routes[i].selector, (int) i))
		{
			ism_route_index_destroy(index);
			index = NULL;
		}
	if (index == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY),
						errmsg("out of memory building the route cache")));

	/* complete: adopt it */
	MemoryContextSetParent(fresh, TopMemoryContext);
	if (cache_context)
		MemoryContextDelete(cache_context);
	ism_route_index_destroy(cache_index);
	cache_context = fresh;
	cached_routes = routes;
	ncached_routes = (int) n;
	cache_index = index;
	cache_generation = generation;
	cache_valid = true;
}

/* The route for selector by the routers' rules, or NULL with *result why. */
const IsmRoute *
ism_route_cache_resolve(const char *selector, RouteLookupResult *result)
{
	int			id;
	int			nmatches;

	if (!cache_valid)
	{
		*result = ROUTE_NOT_FOUND;
		return NULL;
	}
	*result = ism_route_index_lookup(cache_index, selector, &id, 1, &nmatches);
	return *result == ROUTE_FOUND ? &cached_routes[id] : NULL;
}

/*
 * The wildcard routes an ambiguous selector matches, quoted and separated
 * by commas (at most 16 of them, then how many more), for its error.
 */
char *
ism_route_cache_candidates(const char *selector)
{
	int			ids[16];
	int			nmatches = 0;
	StringInfoData names;

	initStringInfo(&names);
	if (!cache_valid ||
		ism_route_index_lookup(cache_index, selector, ids, lengthof(ids),
							   &nmatches) != ROUTE_AMBIGUOUS)
		return names.data;
	for (int i = 0; i < Min(nmatches, (int) lengthof(ids)); i++)
		appendStringInfo(&names, "%s\"%s\"", i ? ", " : "",
						 cached_routes[ids[i]].selector);
	if (nmatches > (int) lengthof(ids))
		appendStringInfo(&names, " and %d more", nmatches - (int) lengthof(ids));
	return names.data;
}

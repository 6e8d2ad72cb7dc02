/*-------------------------------------------------------------------------
 *
 * counters.c
 *	  Per-route and per-table counters in shared memory, and the functions
 *	  behind pg_stat_ism_routes, pg_stat_ism_tables and the resets.
 *
 * Every worker owns a fixed array of route entries and one of table
 * entries, and is the only one to add entries there: no shared hash table,
 * no lock a reader could hold up a worker with.  Each entry has its own
 * spinlock, held only to add a number or copy the entry out.  A worker
 * finds its entries through a local hash table.  The views add up a
 * route's entries over the workers (the router and the writers all publish
 * statuses on the monitor route, say); tables are shown per writer.
 *
 * Entries outlive a worker's restart (they are the cluster's, as
 * pg_stat_statements' are) and go at a server restart.  A worker with all
 * its entries taken stops adding new routes or tables and says so once.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "counters.h"
#include "settings.h"
#include "view_columns.h"

#define ISM_ROUTE_KEY_LEN	256
#define ISM_COUNTER_ERROR_LEN 256
/* per worker; the route table rarely has more than a few dozen */
#define ISM_MAX_ROUTE_ENTRIES 128

typedef struct IsmRouteEntry
{
	slock_t		mutex;
	bool		in_use;
	char		selector[ISM_ROUTE_KEY_LEN];
	int64		counters[ISM_NUM_ROUTE_COUNTERS];
	TimestampTz last_message_at;
	TimestampTz last_error_at;
	TimestampTz stats_reset;
	char		last_error[ISM_COUNTER_ERROR_LEN];
} IsmRouteEntry;

typedef struct IsmTableEntry
{
	slock_t		mutex;
	bool		in_use;
	char		table[NAMEDATALEN];
	int64		counters[ISM_NUM_TABLE_COUNTERS];
	int64		flush_us_max;
	int64		pending_records;	/* gauges: now, not since a reset */
	int64		pending_bytes;
	TimestampTz oldest_pending_at;
	TimestampTz last_flush_at;
	TimestampTz last_error_at;
	TimestampTz stats_reset;
	char		last_error[ISM_COUNTER_ERROR_LEN];
} IsmTableEntry;

typedef struct IsmCounterArea
{
	int			nworkers;
	int			max_tables;		/* per worker */
	/* IsmRouteEntry[nworkers][ISM_MAX_ROUTE_ENTRIES], then the tables */
	char		entries[FLEXIBLE_ARRAY_MEMBER];
} IsmCounterArea;

/* A worker's local index of its entries: name -> position */
typedef struct LocalIndexEntry
{
	char		key[ISM_ROUTE_KEY_LEN];
	int			position;
} LocalIndexEntry;

static IsmCounterArea *area = NULL;
static int	my_worker = -1;
static HTAB *my_routes = NULL;
static HTAB *my_tables = NULL;
/* the "all taken" warning, once per kind: [0] tables, [1] routes */
static bool warned_full[2] = {false, false};

static int
worker_count(void)
{
	return 1 + ism_writer_workers;
}

static Size
routes_size(void)
{
	return mul_size(mul_size(worker_count(), ISM_MAX_ROUTE_ENTRIES), sizeof(IsmRouteEntry));
}

static Size
area_size(void)
{
	return add_size(add_size(offsetof(IsmCounterArea, entries), routes_size()),
					mul_size(mul_size(worker_count(), ism_max_tracked_tables),
							 sizeof(IsmTableEntry)));
}

static IsmRouteEntry *
route_entry(int worker, int i)
{
	return &((IsmRouteEntry *) area->entries)[worker * ISM_MAX_ROUTE_ENTRIES + i];
}

static IsmTableEntry *
table_entry(int worker, int i)
{
	return &((IsmTableEntry *) (area->entries + routes_size()))[worker * area->max_tables + i];
}

void
ism_counters_request_shmem(void)
{
	RequestAddinShmemSpace(area_size());
}

void
ism_counters_startup_shmem(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	area = ShmemInitStruct("ism_state counters", area_size(), &found);
	if (!found)
	{
		TimestampTz now = GetCurrentTimestamp();

		memset(area, 0, area_size());
		area->nworkers = worker_count();
		area->max_tables = ism_max_tracked_tables;
		for (int w = 0; w < area->nworkers; w++)
		{
			for (int i = 0; i < ISM_MAX_ROUTE_ENTRIES; i++)
			{
				SpinLockInit(&route_entry(w, i)->mutex);
				route_entry(w, i)->stats_reset = now;
			}
			for (int i = 0; i < area->max_tables; i++)
			{
				SpinLockInit(&table_entry(w, i)->mutex);
				table_entry(w, i)->stats_reset = now;
			}
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

static HTAB *
new_local_index(const char *name)
{
	HASHCTL		ctl = {0};

	ctl.keysize = ISM_ROUTE_KEY_LEN;
	ctl.entrysize = sizeof(LocalIndexEntry);
	return hash_create(name, 64, &ctl, HASH_ELEM | HASH_STRINGS);
}

/* Take over the entries this worker had before a restart. */
void
ism_counters_attach_worker(int worker)
{
	my_worker = worker;
	my_routes = new_local_index("ism_state route counters");
	my_tables = new_local_index("ism_state table counters");
	for (int i = 0; i < ISM_MAX_ROUTE_ENTRIES; i++)
		if (route_entry(worker, i)->in_use)
			((LocalIndexEntry *) hash_search(my_routes, route_entry(worker, i)->selector,
											 HASH_ENTER, NULL))->position = i;
	for (int i = 0; i < area->max_tables; i++)
		if (table_entry(worker, i)->in_use)
			((LocalIndexEntry *) hash_search(my_tables, table_entry(worker, i)->table,
											 HASH_ENTER, NULL))->position = i;
}

/* This worker's entry for key (adding it); -1 when all are taken. */
static int
my_position(HTAB *index, const char *key, int capacity, bool routes)
{
	char		k[ISM_ROUTE_KEY_LEN];
	LocalIndexEntry *e;
	bool		found;
	int			n;

	if (my_worker < 0 || key == NULL)
		return -1;
	strlcpy(k, key, sizeof(k));
	e = hash_search(index, k, HASH_FIND, NULL);
	if (e)
		return e->position;
	n = (int) hash_get_num_entries(index);
	if (n >= capacity)
	{
		if (!warned_full[routes])
			ereport(WARNING,
					(errmsg("ism_state: this worker's %s counters are all taken; \"%s\" is not counted",
							routes ? "route" : "table", key),
					 errhint("Raise ism_state.max_tracked_tables, or reset the counters.")));
		warned_full[routes] = true;
		return -1;
	}
	e = hash_search(index, k, HASH_ENTER, &found);
	e->position = n;
	if (routes)
	{
		IsmRouteEntry *r = route_entry(my_worker, n);

		SpinLockAcquire(&r->mutex);
		strlcpy(r->selector, k, sizeof(r->selector));
		r->in_use = true;
		SpinLockRelease(&r->mutex);
	}
	else
	{
		IsmTableEntry *t = table_entry(my_worker, n);

		SpinLockAcquire(&t->mutex);
		strlcpy(t->table, k, sizeof(t->table));
		t->in_use = true;
		SpinLockRelease(&t->mutex);
	}
	return n;
}

static IsmRouteEntry *
my_route(const char *selector)
{
	int			i = my_position(my_routes, selector, ISM_MAX_ROUTE_ENTRIES, true);

	return i < 0 ? NULL : route_entry(my_worker, i);
}

static IsmTableEntry *
my_table(const char *table)
{
	int			i = my_position(my_tables, table, area->max_tables, false);

	return i < 0 ? NULL : table_entry(my_worker, i);
}

void
ism_count_route(const char *selector, IsmRouteCounter counter, int64 n)
{
	IsmRouteEntry *r = my_route(selector);

	if (r == NULL || n == 0)
		return;
	SpinLockAcquire(&r->mutex);
	r->counters[counter] += n;
	if (counter == ISM_RC_RECEIVED)
		r->last_message_at = GetCurrentTimestamp();
	SpinLockRelease(&r->mutex);
}

void
ism_route_error(const char *selector, const char *error)
{
	IsmRouteEntry *r = my_route(selector);
	TimestampTz now = GetCurrentTimestamp();

	if (r == NULL)
		return;
	SpinLockAcquire(&r->mutex);
	strlcpy(r->last_error, error, sizeof(r->last_error));
	r->last_error_at = now;
	SpinLockRelease(&r->mutex);
}

void
ism_count_table(const char *table, IsmTableCounter counter, int64 n)
{
	IsmTableEntry *t = my_table(table);

	if (t == NULL || n == 0)
		return;
	SpinLockAcquire(&t->mutex);
	t->counters[counter] += n;
	SpinLockRelease(&t->mutex);
}

/* A committed flush into table: its records, DDL statements and time. */
void
ism_table_flushed(const char *table, int64 records, int64 ddl, int64 flush_us)
{
	IsmTableEntry *t = my_table(table);
	TimestampTz now = GetCurrentTimestamp();

	if (t == NULL)
		return;
	SpinLockAcquire(&t->mutex);
	t->counters[ISM_TC_RECORDS] += records;
	t->counters[ISM_TC_BATCHES]++;
	t->counters[ISM_TC_DDL] += ddl;
	t->counters[ISM_TC_FLUSH_US] += flush_us;
	t->flush_us_max = Max(t->flush_us_max, flush_us);
	t->last_flush_at = now;
	SpinLockRelease(&t->mutex);
}

void
ism_table_pending(const char *table, int64 records, int64 bytes, TimestampTz oldest)
{
	IsmTableEntry *t = my_table(table);

	if (t == NULL)
		return;
	SpinLockAcquire(&t->mutex);
	t->pending_records = records;
	t->pending_bytes = bytes;
	t->oldest_pending_at = records > 0 ? oldest : 0;
	SpinLockRelease(&t->mutex);
}

void
ism_table_error(const char *table, const char *error)
{
	IsmTableEntry *t = my_table(table);
	TimestampTz now = GetCurrentTimestamp();

	if (t == NULL)
		return;
	SpinLockAcquire(&t->mutex);
	strlcpy(t->last_error, error, sizeof(t->last_error));
	t->last_error_at = now;
	SpinLockRelease(&t->mutex);
}

/* --- the views ------------------------------------------------------------ */

static void
check_area(void)
{
	if (area == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ism_state shared memory is not initialised"),
				 errhint("Add ism_state to shared_preload_libraries and restart the server.")));
}

/* Add b into a: a route's counters over the workers. */
static void
merge_route(IsmRouteEntry *a, const IsmRouteEntry *b)
{
	for (int c = 0; c < ISM_NUM_ROUTE_COUNTERS; c++)
		a->counters[c] += b->counters[c];
	a->last_message_at = Max(a->last_message_at, b->last_message_at);
	if (b->last_error_at > a->last_error_at)
	{
		a->last_error_at = b->last_error_at;
		strlcpy(a->last_error, b->last_error, sizeof(a->last_error));
	}
	a->stats_reset = Min(a->stats_reset, b->stats_reset);
}

PG_FUNCTION_INFO_V1(ism_stat_routes);

/* ism_state.pg_stat_ism_routes(): one row per route any worker counted. */
Datum
ism_stat_routes(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	List	   *rows = NIL;
	ListCell   *lc;

	check_area();
	InitMaterializedSRF(fcinfo, 0);
	for (int w = 0; w < area->nworkers; w++)
		for (int i = 0; i < ISM_MAX_ROUTE_ENTRIES; i++)
		{
			IsmRouteEntry copy;
			bool		merged = false;

			SpinLockAcquire(&route_entry(w, i)->mutex);
			memcpy(&copy, route_entry(w, i), sizeof(copy));
			SpinLockRelease(&route_entry(w, i)->mutex);
			if (!copy.in_use)
				break;			/* entries are taken in order */
			foreach(lc, rows)
			{
				IsmRouteEntry *row = lfirst(lc);

				if (strcmp(row->selector, copy.selector) == 0)
				{
					merge_route(row, &copy);
					merged = true;
					break;
				}
			}
			if (!merged)
			{
				IsmRouteEntry *row = palloc(sizeof(IsmRouteEntry));

				memcpy(row, &copy, sizeof(copy));
				rows = lappend(rows, row);
			}
		}

	foreach(lc, rows)
	{
		IsmRouteEntry *r = lfirst(lc);
		Datum		values[ISM_NUM_ROUTE_COUNTERS + 5];
		bool		nulls[ISM_NUM_ROUTE_COUNTERS + 5] = {0};
		int			c = 0;

		values[c++] = CStringGetTextDatum(r->selector);
		for (int k = 0; k < ISM_NUM_ROUTE_COUNTERS; k++)
			values[c++] = Int64GetDatum(r->counters[k]);
		values[c] = ism_timestamp_or_null(r->last_message_at, &nulls[c]);
		c++;
		values[c] = ism_text_or_null(r->last_error, &nulls[c]);
		c++;
		values[c] = ism_timestamp_or_null(r->last_error_at, &nulls[c]);
		c++;
		values[c] = ism_timestamp_or_null(r->stats_reset, &nulls[c]);
		c++;
		Assert(c == lengthof(values));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(ism_stat_tables);

/* ism_state.pg_stat_ism_tables(): one row per writer and table. */
Datum
ism_stat_tables(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz now = GetCurrentTimestamp();

	check_area();
	InitMaterializedSRF(fcinfo, 0);
	for (int w = 0; w < area->nworkers; w++)
		for (int i = 0; i < area->max_tables; i++)
		{
			IsmTableEntry t;
			Datum		values[16];
			bool		nulls[16] = {0};
			int			c = 0;

			SpinLockAcquire(&table_entry(w, i)->mutex);
			memcpy(&t, table_entry(w, i), sizeof(t));
			SpinLockRelease(&table_entry(w, i)->mutex);
			if (!t.in_use)
				break;

			values[c++] = Int32GetDatum(w);
			values[c++] = CStringGetTextDatum(t.table);
			values[c++] = Int64GetDatum(t.counters[ISM_TC_RECORDS]);
			values[c++] = Int64GetDatum(t.counters[ISM_TC_BATCHES]);
			values[c++] = Int64GetDatum(t.counters[ISM_TC_DDL]);
			values[c++] = Float8GetDatum(t.counters[ISM_TC_FLUSH_US] / 1000.0);
			values[c++] = Float8GetDatum(t.flush_us_max / 1000.0);
			values[c++] = Int64GetDatum(t.pending_records);
			values[c++] = Int64GetDatum(t.pending_bytes);
			nulls[c] = (t.oldest_pending_at == 0);
			values[c] = nulls[c] ? (Datum) 0 :
				DirectFunctionCall2(timestamp_mi, TimestampTzGetDatum(now),
									TimestampTzGetDatum(t.oldest_pending_at));
			c++;
			values[c] = ism_timestamp_or_null(t.last_flush_at, &nulls[c]);
			c++;
			values[c++] = Int64GetDatum(t.counters[ISM_TC_DEAD_LETTERS]);
			values[c++] = Int64GetDatum(t.counters[ISM_TC_FAILED_FLUSHES]);
			values[c] = ism_text_or_null(t.last_error, &nulls[c]);
			c++;
			values[c] = ism_timestamp_or_null(t.last_error_at, &nulls[c]);
			c++;
			values[c] = ism_timestamp_or_null(t.stats_reset, &nulls[c]);
			c++;
			Assert(c == lengthof(values));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	return (Datum) 0;
}

/* Zero the counters of the entries named (all when name is NULL). */
static int64
reset_entries(const char *route, const char *table, bool all)
{
	TimestampTz now = GetCurrentTimestamp();
	int64		n = 0;

	check_area();
	for (int w = 0; w < area->nworkers; w++)
	{
		for (int i = 0; (all || route) && i < ISM_MAX_ROUTE_ENTRIES; i++)
		{
			IsmRouteEntry *r = route_entry(w, i);

			SpinLockAcquire(&r->mutex);
			if (r->in_use && (all || strcmp(r->selector, route) == 0))
			{
				memset(r->counters, 0, sizeof(r->counters));
				r->last_message_at = 0;
				r->last_error_at = 0;
				r->last_error[0] = '\0';
				r->stats_reset = now;
				n++;
			}
			SpinLockRelease(&r->mutex);
		}
		for (int i = 0; (all || table) && i < area->max_tables; i++)
		{
			IsmTableEntry *t = table_entry(w, i);

			SpinLockAcquire(&t->mutex);
			if (t->in_use && (all || strcmp(t->table, table) == 0))
			{
				memset(t->counters, 0, sizeof(t->counters));
				t->flush_us_max = 0;
				t->last_flush_at = 0;
				t->last_error_at = 0;
				t->last_error[0] = '\0';
				t->stats_reset = now;
				n++;
			}
			SpinLockRelease(&t->mutex);
		}
	}
	return n;
}

PG_FUNCTION_INFO_V1(ism_stat_reset);

/* ism_state.pg_stat_ism_reset(): every route's and table's counters. */
Datum
ism_stat_reset(PG_FUNCTION_ARGS)
{
	reset_entries(NULL, NULL, true);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(ism_stat_reset_route);

/* ism_state.pg_stat_ism_reset_route(selector): true if it was counted. */
Datum
ism_stat_reset_route(PG_FUNCTION_ARGS)
{
	char	   *selector = text_to_cstring(PG_GETARG_TEXT_PP(0));

	PG_RETURN_BOOL(reset_entries(selector, NULL, false) > 0);
}

PG_FUNCTION_INFO_V1(ism_stat_reset_table);

/* ism_state.pg_stat_ism_reset_table(table_name): true if it was counted. */
Datum
ism_stat_reset_table(PG_FUNCTION_ARGS)
{
	char	   *table = text_to_cstring(PG_GETARG_TEXT_PP(0));

	PG_RETURN_BOOL(reset_entries(NULL, table, false) > 0);
}

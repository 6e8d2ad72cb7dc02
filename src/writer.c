/*-------------------------------------------------------------------------
 *
 * writer.c
 *	  The state-tables writer (reference: state-tables §2-§5).
 *
 * Records arriving on the state-tables route are batched per processor and
 * written into the processor's table in ism_state.data_schema, which is
 * created on the first flush and given a column for every new key, in the
 * same transaction as the rows.  The batches due are flushed in one
 * transaction, each in a subtransaction of its own (a batch that fails
 * rolls back alone), which also records the stream sequences of the
 * messages applied in ism_state.applied; a message found there
 * (redelivered after a commit whose ack was lost) is acknowledged without
 * being written again.  Messages are acknowledged only after that commit.
 * Then COMPLETED goes to the monitor route, once per route written to.
 *
 * Rows go in through PostgreSQL's COPY machinery, fed from memory.  Values
 * are written as TEXT by default, as upstream: strings as they are, numbers
 * and booleans in their JSON form, objects and arrays as compact JSON
 * (upstream could not write those), null as NULL; "columnTypes": "infer"
 * types new columns (column_types.c).  A batch remembers its table's
 * columns, so a flush whose keys are known needs no catalog lookup.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <malloc.h>

#include <cjson/cJSON.h>

#include "access/table.h"
#include "access/xact.h"
#include "commands/copy.h"
#include "common/hashfn.h"
#include "common/sha2.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "utils/errcodes.h"
#include "utils/resowner.h"
#include "utils/rls.h"
#include "tcop/utility.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "writer.h"
#include "claims.h"
#include "column_types.h"
#include "copy_text.h"
#include "counters.h"
#include "dead_letter.h"
#include "ident.h"
#include "jetstream.h"
#include "json.h"
#include "log_limit.h"
#include "lookup_cache.h"
#include "route_cache.h"
#include "route_index.h"
#include "settings.h"
#include "stats.h"
#include "xact.h"

#define MONITOR_SELECTOR	"processor/monitor"
#define MAX_FETCH			256
/* a message claimed elsewhere, or not claimed, goes back for this long */
#define CLAIM_RETRY_DELAY_MS	1000

/* upstream defaults when a property is absent (§3.1) */
#define DEFAULT_TABLE_NAME	"hello_world"
#define DEFAULT_BATCH_SIZE	10
#define DEFAULT_WINDOW_S	15

typedef struct TableConfig
{
	char	   *table;			/* mapped name, in data_schema */
	int			batch_size;		/* <= 0: no size trigger */
	int			window_s;		/* < 0: no timer; 0: at once */
	bool		include_timestamp;
	bool		infer_types;	/* columnTypes "infer": typed new columns */
	List	   *index_columns;	/* of char *, keys */
} TableConfig;

typedef struct Pending
{
	IsmMessage	msg;
	char	   *route_id;
	List	   *records;		/* of cJSON * (objects) */
	TimestampTz alive_at;		/* delivered, or last told "in progress" */
} Pending;

typedef struct Batch
{
	MemoryContext self;			/* the batch and all it holds */
	char	   *processor_id;
	TableConfig config;
	MemoryContext context;		/* its messages; reset by a flush */
	List	   *pending;		/* of Pending *, in arrival order */
	int			nrecords;
	int64		nbytes;			/* of the pending messages */
	Size		memory;			/* their memory (contexts), counted as queued */
	TimestampTz last_used;		/* a message last queued */
	TimestampTz config_read_at;	/* config last compared with the catalog */
	/* the table's columns as the last committed flush left them */
	MemoryContext columns_context;
	List	   *column_names;	/* of char * */
	List	   *column_types;	/* of int (IsmColumnType) */
	List	   *column_type_sql;	/* of char * */
	TimestampTz oldest;
} Batch;

/* how often ism_state.applied is pruned */
#define PRUNE_INTERVAL_MS	60000

static MemoryContext writer_context = NULL;	/* the batches */
static TimestampTz last_prune = 0;
static MemoryContext message_context = NULL;	/* the message being queued */
static MemoryContext flush_context = NULL;	/* reset after each group flush */
static List *batches = NIL;		/* of Batch *, in the order made */

/* The batches by processor id. */
typedef struct BatchEntry
{
	const char *processor_id;	/* the batch's own copy */
	Batch	   *batch;
	char		status;			/* simplehash's */
} BatchEntry;

#define SH_PREFIX		batchmap
#define SH_ELEMENT_TYPE BatchEntry
#define SH_KEY_TYPE		const char *
#define SH_KEY			processor_id
#define SH_HASH_KEY(tb, key) hash_bytes((const unsigned char *) (key), strlen(key))
#define SH_EQUAL(tb, a, b) (strcmp(a, b) == 0)
#define SH_SCOPE		static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

static batchmap_hash *batch_map = NULL;

/* A batch with nothing pending for this long is let go (its column cache too). */
#define BATCH_IDLE_MS		300000

/* how often a waiting batch's properties are compared with the catalog */
#define CONFIG_RECHECK_MS	1000

void
ism_writer_init(void)
{
	/*
	 * A flush frees its batch's memory and the next batch needs as much
	 * again: keep it in the heap instead of giving it back to the kernel
	 * and faulting it in again (a quarter of the writer's time when
	 * measured).  What is kept is bounded by the pending-memory cap.
	 */
	mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
	mallopt(M_TRIM_THRESHOLD, 128 * 1024 * 1024);
	ism_json_init();
	writer_context = AllocSetContextCreate(TopMemoryContext, "ism_state writer",
										   ALLOCSET_DEFAULT_SIZES);
	flush_context = AllocSetContextCreate(writer_context, "ism_state writer flush",
										  ALLOCSET_DEFAULT_SIZES);
	batch_map = batchmap_create(writer_context, 64, NULL);
}

/* --- statuses ------------------------------------------------------------ */

/* {"type":"models","route_id":…,"status":…[,"exception":…],"data":null} */
static void
publish_status(const char *route_id, const char *status, const char *exception,
			   const char *msg_id)
{
	RouteLookupResult result;
	const IsmRoute *monitor = ism_route_cache_resolve(MONITOR_SELECTOR, &result);
	cJSON	   *body;
	char	   *text;
	char		err[512];

	if (monitor == NULL)
		return;
	body = cJSON_CreateObject();
	cJSON_AddStringToObject(body, "type", "models");
	cJSON_AddItemToObject(body, "route_id",
						  route_id ? cJSON_CreateString(route_id) : cJSON_CreateNull());
	cJSON_AddStringToObject(body, "status", status);
	if (exception)
		cJSON_AddStringToObject(body, "exception", exception);
	cJSON_AddNullToObject(body, "data");
	text = ism_json_print(body);
	if (monitor->jetstream_enabled &&
		!ism_nats_ensure_stream(monitor->name, monitor->subject, err, sizeof(err)))
		ereport(WARNING, (errmsg("ism_state writer: status not sent: %s", err)));
	else if (!ism_nats_publish(monitor->selector, monitor->subject, text, strlen(text), msg_id,
							   monitor->jetstream_enabled, err, sizeof(err)))
		ereport(WARNING, (errmsg("ism_state writer: status not sent: %s", err)));
}

/* --- properties ---------------------------------------------------------- */

/*
 * The table settings from processor.properties (§3.1), with upstream's
 * defaults for absent keys and its meaning for explicit nulls.  false with
 * *error on a wrong type.
 */
static bool
table_config(const char *processor_id, const char *props_text, TableConfig *c,
			 char **error)
{
	cJSON	   *props = props_text ? cJSON_Parse(props_text) : NULL;
	cJSON	   *v;
	const char *table_name = DEFAULT_TABLE_NAME;

	c->batch_size = DEFAULT_BATCH_SIZE;
	c->window_s = DEFAULT_WINDOW_S;
	c->include_timestamp = true;
	c->infer_types = false;
	c->index_columns = NIL;
	if (props_text && !cJSON_IsObject(props))
	{
		*error = psprintf("processor %s: properties are not a JSON object", processor_id);
		return false;
	}

	if ((v = cJSON_GetObjectItem(props, "tableName")) != NULL)
	{
		if (cJSON_IsNull(v))
			table_name = NULL;
		else if (!cJSON_IsString(v))
		{
			*error = psprintf("processor %s: property \"tableName\" must be a string", processor_id);
			return false;
		}
		else
			table_name = v->valuestring;
	}
	if ((v = cJSON_GetObjectItem(props, "batchSize")) != NULL)
	{
		if (cJSON_IsNull(v))
			c->batch_size = 0;
		else if (!ism_json_whole_int(v, &c->batch_size))
		{
			*error = psprintf("processor %s: property \"batchSize\" must be an integer", processor_id);
			return false;
		}
		else
			c->batch_size = Max(c->batch_size, 1);
	}
	if ((v = cJSON_GetObjectItem(props, "batchWindowTTL")) != NULL)
	{
		if (cJSON_IsNull(v))
			c->window_s = -1;
		else if (!ism_json_whole_int(v, &c->window_s) || c->window_s < 0)
		{
			*error = psprintf("processor %s: property \"batchWindowTTL\" must be a number of seconds (0 or more)",
							  processor_id);
			return false;
		}
	}
	if ((v = cJSON_GetObjectItem(props, "includeTimestamp")) != NULL)
	{
		if (cJSON_IsNull(v))
			c->include_timestamp = false;
		else if (!cJSON_IsBool(v))
		{
			*error = psprintf("processor %s: property \"includeTimestamp\" must be a boolean", processor_id);
			return false;
		}
		else
			c->include_timestamp = cJSON_IsTrue(v);
	}
	if ((v = cJSON_GetObjectItem(props, "columnTypes")) != NULL && !cJSON_IsNull(v))
	{
		if (!cJSON_IsString(v) ||
			(strcmp(v->valuestring, "text") != 0 && strcmp(v->valuestring, "infer") != 0))
		{
			*error = psprintf("processor %s: property \"columnTypes\" must be \"text\" or \"infer\"", processor_id);
			return false;
		}
		c->infer_types = strcmp(v->valuestring, "infer") == 0;
	}
	if ((v = cJSON_GetObjectItem(props, "indexColumns")) != NULL && !cJSON_IsNull(v))
	{
		cJSON	   *col;

		if (!cJSON_IsArray(v))
		{
			*error = psprintf("processor %s: property \"indexColumns\" must be a list of keys", processor_id);
			return false;
		}
		cJSON_ArrayForEach(col, v)
		{
			if (!cJSON_IsString(col))
			{
				*error = psprintf("processor %s: property \"indexColumns\" must be a list of keys", processor_id);
				return false;
			}
			c->index_columns = lappend(c->index_columns, pstrdup(col->valuestring));
		}
	}
	c->table = ism_table_name(processor_id, table_name);
	return true;
}

static bool
same_config(const TableConfig *a, const TableConfig *b)
{
	ListCell   *la,
			   *lb;

	if (strcmp(a->table, b->table) != 0 || a->batch_size != b->batch_size ||
		a->window_s != b->window_s || a->include_timestamp != b->include_timestamp ||
		a->infer_types != b->infer_types ||
		list_length(a->index_columns) != list_length(b->index_columns))
		return false;
	forboth(la, a->index_columns, lb, b->index_columns)
		if (strcmp(lfirst(la), lfirst(lb)) != 0)
		return false;
	return true;
}

/* --- the catalog --------------------------------------------------------- */

static char *
catalog_value(const char *sql, const char *id, int col, bool *found)
{
	Oid			types[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(id)};
	MemoryContext caller = CurrentMemoryContext;
	char	   *value = NULL;

	if (SPI_execute_with_args(sql, 1, types, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "catalog query failed");
	MemoryContextSwitchTo(caller);
	*found = SPI_processed > 0;
	if (*found)
		value = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col);
	return value;
}

/* processor_id -> its properties, cached a second as the router (SPI connected) */
static bool
processor_properties(const char *processor_id, char **properties)
{
	char	   *cols[3];
	Oid			types[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(processor_id)};
	MemoryContext caller = CurrentMemoryContext;

	if (ism_lookup_get('p', processor_id, cols, 3))
	{
		*properties = cols[2];
		return true;
	}
	if (SPI_execute_with_args(psprintf("SELECT provider_id, project_id, properties::text FROM %s.processor WHERE id = $1",
									   quote_identifier(ism_catalog_schema)),
							  1, types, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "catalog query failed");
	MemoryContextSwitchTo(caller);
	if (SPI_processed == 0)
		return false;
	for (int i = 0; i < 3; i++)
		cols[i] = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1);
	ism_lookup_put('p', processor_id, cols, 3);
	*properties = cols[2];
	return true;
}

typedef struct Resolve
{
	const char *route_id;
	char	   *processor_id;
	char	   *properties;
	char	   *error;
} Resolve;

/* route_id -> processor_state -> processor (cached a second, as the router) */
static void
resolve_processor(void *arg)
{
	Resolve    *r = arg;
	char	   *cols[3];
	bool		found;
	const char *schema = quote_identifier(ism_catalog_schema);

	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (ism_lookup_get('r', r->route_id, cols, 2))
		r->processor_id = cols[0];
	else
	{
		r->processor_id = catalog_value(psprintf("SELECT processor_id, state_id FROM %s.processor_state WHERE id = $1", schema),
										r->route_id, 1, &found);
		if (!found)
			r->error = psprintf("processor state (route) %s not found", r->route_id);
		else
		{
			cols[0] = r->processor_id;
			cols[1] = NULL;
			ism_lookup_put('r', r->route_id, cols, 2);
		}
	}
	if (r->error == NULL && r->processor_id == NULL)
		r->error = psprintf("processor state (route) %s has no processor", r->route_id);
	if (r->error == NULL && !processor_properties(r->processor_id, &r->properties))
		r->error = psprintf("processor %s not found", r->processor_id);
	/* copy out of SPI's memory before it goes */
	if (r->processor_id)
		r->processor_id = MemoryContextStrdup(message_context, r->processor_id);
	if (r->properties)
		r->properties = MemoryContextStrdup(message_context, r->properties);
	if (r->error)
		r->error = MemoryContextStrdup(message_context, r->error);
	PopActiveSnapshot();
	SPI_finish();
}

/* --- batches -------------------------------------------------------------- */

static Batch *
find_batch(const char *processor_id)
{
	BatchEntry *e = batchmap_lookup(batch_map, processor_id);

	return e ? e->batch : NULL;
}

static Batch *
new_batch(const char *processor_id, const TableConfig *config)
{
	MemoryContext self = AllocSetContextCreate(writer_context, "ism_state writer batch",
											   ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(self);
	Batch	   *b = palloc0(sizeof(Batch));
	ListCell   *lc;
	bool		found;

	b->self = self;
	b->processor_id = pstrdup(processor_id);
	b->context = AllocSetContextCreate(self, "ism_state writer messages",
									   ALLOCSET_DEFAULT_SIZES);
	b->columns_context = AllocSetContextCreate(self, "ism_state writer columns",
											   ALLOCSET_SMALL_SIZES);
	b->config = *config;
	b->config.table = pstrdup(config->table);
	b->config.index_columns = NIL;
	foreach(lc, config->index_columns)
		b->config.index_columns = lappend(b->config.index_columns, pstrdup(lfirst(lc)));
	b->last_used = GetCurrentTimestamp();
	b->config_read_at = b->last_used;

	MemoryContextSwitchTo(writer_context);
	batches = lappend(batches, b);
	batchmap_insert(batch_map, b->processor_id, &found)->batch = b;
	MemoryContextSwitchTo(old);
	return b;
}

/* Let a batch with nothing pending go, all its memory with it. */
static void
free_batch(Batch *b)
{
	Assert(b->pending == NIL);
	batchmap_delete(batch_map, b->processor_id);
	batches = list_delete_ptr(batches, b);
	MemoryContextDelete(b->self);
}

/*
 * Let go of the batches of processors that sent nothing for a while:
 * processors come and go, and the writer keeps no more than it uses.
 */
static void
free_idle_batches(void)
{
	TimestampTz now = GetCurrentTimestamp();
	List	   *idle = NIL;
	ListCell   *lc;

	foreach(lc, batches)
	{
		Batch	   *b = lfirst(lc);

		if (b->pending == NIL && TimestampDifferenceExceeds(b->last_used, now, BATCH_IDLE_MS))
			idle = lappend(idle, b);
	}
	foreach(lc, idle)
		free_batch(lfirst(lc));
	list_free(idle);
}

/* When the batch's window closes (batchWindowTTL may be up to INT_MAX s). */
static TimestampTz
window_end(const Batch *b)
{
	return b->oldest + (int64) b->config.window_s * USECS_PER_SEC;
}

/*
 * Whatever batchSize and batchWindowTTL say (both may be off), a batch
 * holding ism_state.writer_batch_max_records or _memory is due: memory
 * stays bounded per table, and all batches together are bounded by
 * writer_max_pending_* (see ism_writer_consume).
 */
static bool
batch_due(const Batch *b, bool all)
{
	if (b->pending == NIL)
		return false;
	if (all || (b->config.batch_size > 0 && b->nrecords >= b->config.batch_size))
		return true;
	if (b->nrecords >= ism_writer_batch_max_records ||
		b->memory >= (Size) ism_writer_batch_max_kb * 1024)
		return true;
	if (b->config.window_s >= 0 && GetCurrentTimestamp() >= window_end(b))
		return true;
	return false;
}

/* RFC 3339, UTC, whole seconds, as upstream's _timestamp */
static char *
timestamp_now(void)
{
	struct pg_tm tm;
	fsec_t		fsec;

	timestamp2tm(GetCurrentTimestamp(), NULL, &tm, &fsec, NULL, NULL);
	return psprintf("%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year, tm.tm_mon,
					tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* --- flush ----------------------------------------------------------------- */

typedef struct Flush
{
	Batch	   *batch;
	List	   *pending;		/* the messages to write, of Pending * */
	List	   *keys;			/* of char *: every key, first seen first */
	IsmColumnType *types;		/* per key: its column's type */
	char	  **type_sql;		/* per key: its column's type in SQL */
	bool	   *apply;			/* per message: not applied before */
	char	  **errors;			/* per message, when written one by one */
	int			written;
	char	   *error;			/* why the flush failed, if it did */
	int			sqlstate;
	int			ddl;			/* DDL statements run */
	int64		write_us;		/* time in write_pending */
} Flush;


/*
 * The stream sequences this flush applies; those applied before come back
 * false.  A message from no stream has no sequence to be known by: it is
 * applied as it comes (see IsmMessage.from_stream).
 */
static bool *returned_messages(Flush *f);
static void record_msg_ids(Flush *f);

static void
record_applied(Flush *f)
{
	int			n = list_length(f->pending);
	Datum	   *streams = palloc(sizeof(Datum) * n);
	Datum	   *seqs = palloc(sizeof(Datum) * n);
	int			nseqs = 0;
	Oid			types[2] = {TEXTARRAYOID, INT8ARRAYOID};
	Datum		args[2];
	ListCell   *lc;
	MemoryContext caller = CurrentMemoryContext;
	bool	   *returned;

	f->apply = palloc0(sizeof(bool) * n);
	foreach(lc, f->pending)
	{
		Pending    *p = lfirst(lc);

		if (!p->msg.from_stream)
		{
			f->apply[foreach_current_index(lc)] = true;
			continue;
		}
		streams[nseqs] = CStringGetTextDatum(p->msg.stream);
		seqs[nseqs++] = Int64GetDatum((int64) p->msg.stream_seq);
	}
	if (nseqs == 0)
		return;
	args[0] = PointerGetDatum(construct_array(streams, nseqs, TEXTOID, -1, false, TYPALIGN_INT));
	args[1] = PointerGetDatum(construct_array(seqs, nseqs, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	if (SPI_execute_with_args("INSERT INTO ism_state.applied (stream, stream_seq)"
							  " SELECT * FROM unnest($1::text[], $2::bigint[])"
							  " ON CONFLICT DO NOTHING RETURNING stream, stream_seq",
							  2, types, args, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not record applied messages");
	MemoryContextSwitchTo(caller);
	returned = returned_messages(f);
	for (int i = 0; i < n; i++)
		f->apply[i] = f->apply[i] || returned[i];
	record_msg_ids(f);
}

/* Per pending message: named by a (stream, stream_seq) row SPI returned. */
static bool *
returned_messages(Flush *f)
{
	bool	   *returned = palloc0(sizeof(bool) * list_length(f->pending));
	ListCell   *lc;

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		char	   *stream = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		int64		seq = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));

		foreach(lc, f->pending)
		{
			Pending    *p = lfirst(lc);

			if (p->msg.from_stream && (int64) p->msg.stream_seq == seq &&
				strcmp(p->msg.stream, stream) == 0)
			{
				returned[foreach_current_index(lc)] = true;
				break;
			}
		}
	}
	return returned;
}

/*
 * A Msg-Id as recorded: as it is, or its SHA-256 when it is long or not
 * text in the database's encoding (a header may be any bytes), so that it
 * always fits the primary key's index.
 */
#define MSG_ID_MAX_LEN	200

static char *
msg_id_key(const char *id)
{
	size_t		len = strlen(id);
	char		hex[2 * PG_SHA256_DIGEST_LENGTH + 1];

	if (len <= MSG_ID_MAX_LEN && pg_verify_mbstr(GetDatabaseEncoding(), id, len, true))
		return pstrdup(id);
	ism_sha256_hex(id, len, hex, sizeof(hex) - 1);
	return psprintf("sha256:%s", hex);
}

/* When the stream stored m, as a timestamptz. */
static TimestampTz
stored_at(const IsmMessage *m)
{
	return (TimestampTz) (m->timestamp_ns / 1000) -
		((TimestampTz) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
}

/*
 * Of the messages to apply, those with a Nats-Msg-Id: a copy of a message
 * already written (the same Msg-Id on the same stream, stored within the
 * stream's duplicate window) is not applied.  JetStream drops such a copy
 * itself, except after a restart that forgot the Msg-Ids of the messages a
 * work-queue stream no longer holds (see ism_state.applied_msg_id).  The
 * first copy, by stream time, wins; a Msg-Id used again after the window is
 * a new message.  The primary key settles copies written by two writers at
 * once: the second waits for the first to commit.
 */
static void
record_msg_ids(Flush *f)
{
	int			n = list_length(f->pending);
	Datum	   *cols[4];
	int			nids = 0;
	int64		window_us = 0;
	Oid			types[5] = {TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, INT8OID};
	Datum		args[5];
	ListCell   *lc;
	MemoryContext caller = CurrentMemoryContext;
	bool	   *returned;

	for (int c = 0; c < 4; c++)
		cols[c] = palloc(sizeof(Datum) * n);
	foreach(lc, f->pending)
	{
		Pending    *p = lfirst(lc);

		if (!f->apply[foreach_current_index(lc)] || p->msg.msg_id == NULL)
			continue;
		cols[0][nids] = CStringGetTextDatum(p->msg.stream);
		cols[1][nids] = CStringGetTextDatum(msg_id_key(p->msg.msg_id));
		cols[2][nids] = Int64GetDatum((int64) p->msg.stream_seq);
		cols[3][nids++] = TimestampTzGetDatum(stored_at(&p->msg));
		/* one subscription's messages: one stream, one window */
		window_us = Max(window_us, p->msg.duplicate_window_ns / 1000);
	}
	if (nids == 0)
		return;
	args[0] = PointerGetDatum(construct_array(cols[0], nids, TEXTOID, -1, false, TYPALIGN_INT));
	args[1] = PointerGetDatum(construct_array(cols[1], nids, TEXTOID, -1, false, TYPALIGN_INT));
	args[2] = PointerGetDatum(construct_array(cols[2], nids, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[3] = PointerGetDatum(construct_array(cols[3], nids, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[4] = Int64GetDatum(window_us);
	if (SPI_execute_with_args("INSERT INTO ism_state.applied_msg_id AS a (stream, msg_id, stream_seq, stored_at)"
							  " SELECT DISTINCT ON (s, m) s, m, q, t"
							  "   FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[]) AS u(s, m, q, t)"
							  "  ORDER BY s, m, t, q"
							  " ON CONFLICT (stream, msg_id) DO UPDATE"
							  "   SET stream_seq = excluded.stream_seq, stored_at = excluded.stored_at"
							  "   WHERE a.stored_at <= excluded.stored_at - $5 * interval '1 microsecond'"
							  " RETURNING stream, stream_seq",
							  5, types, args, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not record applied Msg-Ids");
	MemoryContextSwitchTo(caller);
	returned = returned_messages(f);
	foreach(lc, f->pending)
		if (((Pending *) lfirst(lc))->msg.msg_id != NULL)
			f->apply[foreach_current_index(lc)] &= returned[foreach_current_index(lc)];
	if (SPI_processed < (uint64) nids)
		ism_log_limited(LOG, "writer copy skipped",
						"ism_state writer: %d of %d messages were copies of messages already written"
						" (the same Nats-Msg-Id within the duplicate window); not written again",
						(int) (nids - SPI_processed), nids);
}

/* The records of the messages to apply, in order. */
static List *
records_to_apply(Flush *f)
{
	List	   *rows = NIL;
	ListCell   *lc;

	foreach(lc, f->pending)
		if (f->apply[foreach_current_index(lc)])
			rows = list_concat(rows, ((Pending *) lfirst(lc))->records);
	return rows;
}

/* What each key's values ask for (ISM_COL_NONE: only nulls). */
static IsmColumnType *
value_types(Flush *f, List *rows)
{
	IsmColumnType *types = palloc0(sizeof(IsmColumnType) * list_length(f->keys));
	ListCell   *lc;

	foreach(lc, rows)
	{
		cJSON	   *field;
		int			pos = 0;

		cJSON_ArrayForEach(field, (cJSON *) lfirst(lc))
		{
			int			k = ism_column_index(f->keys, pos++, field->string);

			types[k] = ism_column_type_merge(types[k],
											 ism_value_column_type(field->string, field,
																   f->batch->config.infer_types));
		}
	}
	return types;
}

/* The table's columns: their names, and per key its column's type if it has one. */
static bool
read_columns(Flush *f, const char *qualified, char **colnames, bool *have,
			 List **existing)
{
	Oid			types[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(qualified)};
	MemoryContext caller = CurrentMemoryContext;
	bool		table_exists;

	if (SPI_execute_with_args("SELECT to_regclass($1) IS NOT NULL", 1, types, args,
							  NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up %s", qualified);
	MemoryContextSwitchTo(caller);
	table_exists = strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") == 0;
	if (SPI_execute_with_args("SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute"
							  " WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
							  1, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the columns of %s", qualified);
	MemoryContextSwitchTo(caller);
	*existing = NIL;
	memset(have, 0, sizeof(bool) * list_length(f->keys));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		char	   *type = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);

		*existing = lappend(*existing, name);
		for (int k = 0; k < list_length(f->keys); k++)
			if (strcmp(colnames[k], name) == 0)
			{
				have[k] = true;
				f->types[k] = ism_column_type_from_sql(type);
				f->type_sql[k] = type;
			}
	}
	return table_exists;
}

/*
 * The DDL the flush needs: CREATE TABLE, or ADD COLUMN for the keys the
 * table lacks, and with inferred types ALTER COLUMN TYPE for the columns
 * whose new values do not fit.  Sets every key's column type.
 */
static char *
plan_ddl(Flush *f, const char *qualified, bool table_exists, char **colnames,
		 const bool *have, const IsmColumnType *wanted)
{
	bool		infer = f->batch->config.infer_types;
	StringInfoData ddl;

	initStringInfo(&ddl);
	for (int k = 0; k < list_length(f->keys); k++)
	{
		const char *col = quote_identifier(colnames[k]);
		IsmColumnType type = have[k] ? f->types[k] : ISM_COL_NONE;

		/*
		 * A column the writer did not make (integer, varchar(n), …) is
		 * written as it is, in either mode: PostgreSQL's input function
		 * takes the value or refuses it, and f->type_sql[k] keeps its type.
		 */
		if (have[k] && (!infer || type == ISM_COL_OTHER))
			continue;
		type = ism_column_type_merge(type, wanted[k]);
		if (type == ISM_COL_NONE)
			type = ISM_COL_TEXT;	/* only nulls so far */
		if (!table_exists)
			appendStringInfo(&ddl, "%s%s %s",
							 ddl.len ? ", " : psprintf("CREATE TABLE IF NOT EXISTS %s (", qualified),
							 col, ism_column_type_sql(type));
		else if (!have[k])
			appendStringInfo(&ddl, "%sADD COLUMN IF NOT EXISTS %s %s",
							 ddl.len ? ", " : psprintf("ALTER TABLE %s ", qualified),
							 col, ism_column_type_sql(type));
		else if (type != f->types[k])
			appendStringInfo(&ddl, "%sALTER COLUMN %s TYPE %s USING %s::%s",
							 ddl.len ? ", " : psprintf("ALTER TABLE %s ", qualified),
							 col, ism_column_type_sql(type), col, ism_column_type_sql(type));
		f->types[k] = type;
		f->type_sql[k] = (char *) ism_column_type_sql(type);
	}
	if (!table_exists && ddl.len > 0)
		appendStringInfoChar(&ddl, ')');
	return ddl.len > 0 ? ddl.data : NULL;
}

/*
 * The batch's cached columns, when they hold every key with a type that
 * takes its values: then the table needs no change and no catalog lookup.
 */
static bool
cached_columns_fit(Flush *f, char **colnames, const IsmColumnType *wanted)
{
	Batch	   *b = f->batch;

	for (int k = 0; k < list_length(f->keys); k++)
	{
		ListCell   *lc;
		bool		found = false;

		foreach(lc, b->column_names)
		{
			int			i = foreach_current_index(lc);
			IsmColumnType type = (IsmColumnType) list_nth_int(b->column_types, i);

			if (strcmp(lfirst(lc), colnames[k]) != 0)
				continue;
			if (b->config.infer_types && ism_column_type_merge(type, wanted[k]) != type)
				return false;
			f->types[k] = type;
			f->type_sql[k] = list_nth(b->column_type_sql, i);
			found = true;
			break;
		}
		if (!found)
			return false;
	}
	return true;
}

/* Remember the keys' columns after a change (forgotten if it rolls back). */
static void
cache_columns(Flush *f, char **colnames)
{
	Batch	   *b = f->batch;
	MemoryContext old = MemoryContextSwitchTo(b->columns_context);

	for (int k = 0; k < list_length(f->keys); k++)
	{
		ListCell   *lc;
		bool		found = false;

		foreach(lc, b->column_names)
			if (strcmp(lfirst(lc), colnames[k]) == 0)
			{
				int			i = foreach_current_index(lc);

				list_nth_cell(b->column_types, i)->int_value = f->types[k];
				list_nth_cell(b->column_type_sql, i)->ptr_value = pstrdup(f->type_sql[k]);
				found = true;
				break;
			}
		if (!found)
		{
			b->column_names = lappend(b->column_names, pstrdup(colnames[k]));
			b->column_types = lappend_int(b->column_types, f->types[k]);
			b->column_type_sql = lappend(b->column_type_sql, pstrdup(f->type_sql[k]));
		}
	}
	MemoryContextSwitchTo(old);
}

static void
forget_columns(Batch *b)
{
	MemoryContextReset(b->columns_context);
	b->column_names = b->column_types = b->column_type_sql = NIL;
}

/*
 * Make the table fit the flush's records (see plan_ddl).  Writers that
 * change the same table take turns: the second sees the first's columns.
 * Known columns skip all of it (see cached_columns_fit).
 */
static void
ensure_columns(Flush *f)
{
	Batch	   *b = f->batch;
	char	   *qualified = psprintf("%s.%s", quote_identifier(ism_data_schema),
									 quote_identifier(b->config.table));
	int			nkeys = list_length(f->keys);
	IsmColumnType *wanted = value_types(f, records_to_apply(f));
	char	  **colnames = palloc(sizeof(char *) * nkeys);
	bool	   *have = palloc(sizeof(bool) * nkeys);
	List	   *existing;
	bool		table_exists;
	char	   *ddl;
	ListCell   *lc;
	MemoryContext caller = CurrentMemoryContext;

	f->types = palloc(sizeof(IsmColumnType) * nkeys);
	f->type_sql = palloc(sizeof(char *) * nkeys);
	foreach(lc, f->keys)
		colnames[foreach_current_index(lc)] = ism_identifier(lfirst(lc), strlen(lfirst(lc)));
	if (cached_columns_fit(f, colnames, wanted))
		return;

	table_exists = read_columns(f, qualified, colnames, have, &existing);
	ddl = plan_ddl(f, qualified, table_exists, colnames, have, wanted);
	if (ddl != NULL)
	{
		Oid			types[1] = {TEXTOID};
		Datum		args[1] = {CStringGetTextDatum(qualified)};

		if (SPI_execute_with_args("SELECT pg_advisory_xact_lock(hashtext($1))", 1, types, args,
								  NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not lock %s", qualified);
		MemoryContextSwitchTo(caller);
		table_exists = read_columns(f, qualified, colnames, have, &existing);
		ddl = plan_ddl(f, qualified, table_exists, colnames, have, wanted);
	}
	if (ddl != NULL && SPI_execute(ddl, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not create or change %s", qualified);
	f->ddl += ddl != NULL;
	MemoryContextSwitchTo(caller);

	foreach(lc, b->config.index_columns)
	{
		char	   *col = ism_identifier(lfirst(lc), strlen(lfirst(lc)));
		char	   *index = psprintf("%s_%s_idx", b->config.table, col);

		if (ism_column_index(f->keys, -1, lfirst(lc)) < 0 &&
			ism_column_index(existing, -1, col) < 0)
			continue;			/* no such column (yet) */
		if (SPI_execute(psprintf("CREATE INDEX IF NOT EXISTS %s ON %s (%s)",
								 quote_identifier(ism_identifier(index, strlen(index))),
								 qualified, quote_identifier(col)),
						false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not create an index on %s", qualified);
		MemoryContextSwitchTo(caller);
	}
	cache_columns(f, colnames);
}

/*
 * The rows a flush copies into its table, in COPY's text format, and how
 * far COPY has read them (COPY's data source callback takes no argument).
 */
static StringInfo copy_source = NULL;
static int	copy_source_read = 0;

static int
read_copy_source(void *outbuf, int minread, int maxread)
{
	int			n = Min(maxread, copy_source->len - copy_source_read);

	memcpy(outbuf, copy_source->data + copy_source_read, n);
	copy_source_read += n;
	return n;
}

/*
 * The records of the messages to apply, into the table through COPY's own
 * machinery (multi-row heap inserts, index and trigger handling, its
 * statistics): several times faster than INSERT statements with
 * parameters, which must be parsed and planned at every flush.  The
 * checks DoCopy makes before come first (see insert_rows for a table
 * with row-level security, which COPY FROM does not support).
 */
static void
copy_rows(Flush *f, Relation rel, List *columns)
{
	ParseState *pstate = make_parsestate(NULL);
	List	   *options = list_make1(makeDefElem("encoding", (Node *) makeString("UTF8"), -1));
	ParseNamespaceItem *nsitem;
	CopyFromState cstate;

	PreventCommandIfReadOnly("COPY FROM");
	PreventCommandIfParallelMode("COPY FROM");
	nsitem = addRangeTableEntryForRelation(pstate, rel, RowExclusiveLock, NULL, false, false);
	nsitem->p_rte->requiredPerms = ACL_INSERT;
	ExecCheckRTPerms(pstate->p_rtable, true);

	copy_source = ism_copy_text(f->keys, records_to_apply(f));
	copy_source_read = 0;
	cstate = BeginCopyFrom(pstate, rel, NULL, NULL, false, read_copy_source, columns, options);
	f->written += (int) CopyFrom(cstate);
	EndCopyFrom(cstate);
	copy_source = NULL;
}

/*
 * The records as INSERT statements, one a row, each value cast from its
 * text to its column's type as COPY would read it (the column's typmod
 * applies on assignment, so nothing is cut).  Used for a table whose
 * row-level security applies to the worker's role: its policies then
 * judge every row, as they would a user's INSERT.
 */
static void
insert_rows(Flush *f, Relation rel, const char *qualified, List *columns)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			ncols = list_length(columns);
	Oid		   *types = palloc(sizeof(Oid) * ncols);
	Datum	   *values = palloc(sizeof(Datum) * ncols);
	char	   *nulls = palloc(ncols + 1);
	char	  **texts = palloc(sizeof(char *) * ncols);
	StringInfoData sql;
	SPIPlanPtr	plan;
	ListCell   *lc;

	initStringInfo(&sql);
	appendStringInfo(&sql, "INSERT INTO %s (", qualified);
	foreach(lc, columns)
		appendStringInfo(&sql, "%s%s", foreach_current_index(lc) ? ", " : "",
						 quote_identifier(strVal(lfirst(lc))));
	appendStringInfoString(&sql, ") VALUES (");
	foreach(lc, columns)
	{
		int			i = foreach_current_index(lc);
		Oid			type = TEXTOID;

		for (int a = 0; a < desc->natts; a++)
			if (!TupleDescAttr(desc, a)->attisdropped &&
				strcmp(NameStr(TupleDescAttr(desc, a)->attname), strVal(lfirst(lc))) == 0)
				type = TupleDescAttr(desc, a)->atttypid;
		types[i] = TEXTOID;
		appendStringInfo(&sql, "%s$%d::%s", i ? ", " : "", i + 1, format_type_be_qualified(type));
	}
	appendStringInfoChar(&sql, ')');
	plan = SPI_prepare(sql.data, ncols, types);
	if (plan == NULL)
		elog(ERROR, "could not prepare an insert into %s: %s", qualified,
			 SPI_result_code_string(SPI_result));

	foreach(lc, records_to_apply(f))
	{
		ism_record_texts(f->keys, lfirst(lc), texts);
		for (int i = 0; i < ncols; i++)
		{
			values[i] = texts[i] ? CStringGetTextDatum(texts[i]) : (Datum) 0;
			nulls[i] = texts[i] ? ' ' : 'n';
		}
		if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not insert into %s", qualified);
		f->written++;
	}
	SPI_freeplan(plan);
}

/* The records of the messages to apply, into their table. */
static void
write_rows(Flush *f)
{
	Batch	   *b = f->batch;
	RangeVar   *rv = makeRangeVar(ism_data_schema, b->config.table, -1);
	List	   *columns = NIL;
	ListCell   *lc;
	Relation	rel;
	MemoryContext caller = CurrentMemoryContext;

	foreach(lc, f->keys)
		columns = lappend(columns, makeString(ism_identifier(lfirst(lc), strlen(lfirst(lc)))));
	CommandCounterIncrement();	/* see the DDL just done */
	rel = table_openrv(rv, RowExclusiveLock);
	if (check_enable_rls(RelationGetRelid(rel), InvalidOid, false) == RLS_ENABLED)
		insert_rows(f, rel, psprintf("%s.%s", quote_identifier(ism_data_schema),
									 quote_identifier(b->config.table)), columns);
	else
		copy_rows(f, rel, columns);
	MemoryContextSwitchTo(caller);
	table_close(rel, NoLock);
}

/* Every key of the messages' records, first seen first. */
static List *
keys_of(List *pending)
{
	List	   *keys = NIL;
	ListCell   *lc;

	foreach(lc, pending)
	{
		ListCell   *rc;

		foreach(rc, ((Pending *) lfirst(lc))->records)
		{
			cJSON	   *field;
			int			pos = 0;

			cJSON_ArrayForEach(field, (cJSON *) lfirst(rc))
				if (ism_column_index(keys, pos++, field->string) < 0)
				keys = lappend(keys, field->string);
		}
	}
	return keys;
}

/* Applied records, DDL, rows: the body of a flush (SPI connected). */
static void
write_pending(Flush *f)
{
	record_applied(f);
	if (f->keys != NIL)
	{
		ensure_columns(f);
		write_rows(f);
	}
}

/*
 * A flush waits at most ism_state.writer_lock_timeout for its table: a
 * table locked by someone else makes its batch wait for a retry (a passing
 * error) while the others are written.
 */
static void
limit_lock_wait(void)
{
	if (ism_writer_lock_timeout_ms > 0)
		(void) set_config_option("lock_timeout", psprintf("%d", ism_writer_lock_timeout_ms),
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
								 true, 0, false);
}

/*
 * Run write_pending in a subtransaction; on an error roll it back, keep
 * the message and SQLSTATE (in the batch's memory) and return false.
 */
static bool
write_in_subtransaction(Flush *f, char **error, int *sqlstate)
{
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller);
	PG_TRY();
	{
		write_pending(f);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
		*error = MemoryContextStrdup(f->batch->context, edata->message);
		*sqlstate = edata->sqlerrcode;
		FreeErrorData(edata);
		forget_columns(f->batch);	/* its DDL, if any, was rolled back */
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/*
 * The due batches in one transaction (one commit for them all), each in a
 * subtransaction of its own: a batch that fails (a locked table, a bad
 * record) is rolled back alone and the others are written.
 */
static void
flush_group_in_transaction(void *arg)
{
	ListCell   *lc;

	limit_lock_wait();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	foreach(lc, (List *) arg)
	{
		Flush	   *f = lfirst(lc);
		MemoryContext old = MemoryContextSwitchTo(f->batch->context);
		TimestampTz start = GetCurrentTimestamp();

		(void) write_in_subtransaction(f, &f->error, &f->sqlstate);
		f->write_us = GetCurrentTimestamp() - start;
		MemoryContextSwitchTo(old);
	}
	PopActiveSnapshot();
	SPI_finish();
}

/* Errors worth retrying as they are: the next attempt may well succeed. */
static bool
is_transient(int sqlstate)
{
	switch (ERRCODE_TO_CATEGORY(sqlstate))
	{
		case ERRCODE_TRANSACTION_ROLLBACK:	/* serialization, deadlock */
		case ERRCODE_INSUFFICIENT_RESOURCES:	/* disk full, out of memory */
		case ERRCODE_CONNECTION_EXCEPTION:
		case ERRCODE_OPERATOR_INTERVENTION: /* canceled, shutting down */
		case ERRCODE_SYSTEM_ERROR:	/* I/O */
			return true;
	}
	/* an operator's default_transaction_read_only, a standby: for a while */
	return sqlstate == ERRCODE_LOCK_NOT_AVAILABLE ||
		sqlstate == ERRCODE_READ_ONLY_SQL_TRANSACTION;
}

/*
 * After a flush failed for a reason other than a passing one: write the
 * messages one by one, each in a subtransaction, so that the bad ones
 * (their errors in f->errors) keep nothing else from being written.
 */
static void
flush_one_by_one(void *arg)
{
	Flush	   *f = arg;
	ListCell   *lc;

	limit_lock_wait();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	foreach(lc, f->pending)
	{
		Flush		one = {.batch = f->batch, .pending = list_make1(lfirst(lc))};
		int			sqlstate;

		one.keys = keys_of(one.pending);
		if (write_in_subtransaction(&one, &f->errors[foreach_current_index(lc)], &sqlstate))
		{
			f->written += one.written;
			f->ddl += one.ddl;
		}
		else if (is_transient(sqlstate))
		{
			/* not this message's fault: the whole batch waits for a retry */
			ereport(ERROR, (errcode(sqlstate), errmsg("%s", f->errors[foreach_current_index(lc)])));
		}
	}
	PopActiveSnapshot();
	SPI_finish();
}

static void give_up(IsmMessage *m, const char *route_id, const char *error);

/*
 * A batch whose flush failed for a passing reason: its messages are nak'ed
 * for a retry, but one that cannot come back is given up (a table locked
 * for hours must not hold its records for ever: see ism_nats_can_retry).
 */
static void
retry_batch(Batch *b, const char *why)
{
	ListCell   *lc;
	char		err[512];
	int			retried = 0;

	foreach(lc, b->pending)
	{
		Pending    *p = lfirst(lc);

		if (!ism_nats_can_retry(&p->msg))
		{
			give_up(&p->msg, p->route_id, ism_nats_why_no_retry(&p->msg, why));
			ism_count_table(b->config.table, ISM_TC_DEAD_LETTERS, 1);
			continue;
		}
		if (!ism_nats_settle(&p->msg, ISM_NAK, ism_nats_redelivery_delay_ms(&p->msg), err, sizeof(err)))
			ereport(WARNING, (errmsg("ism_state writer: %s", err)));
		ism_nats_release(&p->msg, 1);
		retried++;
	}
	if (retried > 0)
		ism_log_limited(WARNING, psprintf("%s: %s", b->config.table, why),
						"ism_state writer: %d messages for table \"%s\" will be retried: %s",
						retried, b->config.table, why);
}

/*
 * After the group's commit: a batch that failed for good is written again
 * one message at a time; then its messages are acked (or nak'ed, or given
 * up) and the routes written to are added to *routes.
 */
static void
finish_flush(Flush *f, List **routes)
{
	Batch	   *b = f->batch;
	MemoryContext old = MemoryContextSwitchTo(b->context);
	ListCell   *lc;
	char		err[512];
	bool		ok = f->error == NULL;

	strlcpy(err, f->error ? f->error : "", sizeof(err));
	if (!ok)
		forget_columns(b);		/* the commit may have failed after its DDL */
	if (!ok && !is_transient(f->sqlstate))
	{
		ereport(WARNING,
				(errmsg("ism_state writer: flush into \"%s\" failed (%s); writing its %d messages one by one",
						b->config.table, err, list_length(b->pending))));
		f->errors = palloc0(sizeof(char *) * list_length(b->pending));
		f->written = 0;
		f->ddl = 0;				/* what the failed attempt did was rolled back */
		ok = ism_run_in_transaction_ex(flush_one_by_one, f, err, sizeof(err), &f->sqlstate);
	}

	if (f->error)
	{
		ism_count_table(b->config.table, ISM_TC_FAILED_FLUSHES, 1);
		ism_table_error(b->config.table, f->error);
	}
	if (!ok)
	{
		retry_batch(b, err);
		ism_stats_set_error(err);
	}
	else
	{
		if (f->written > 0)
			ism_table_flushed(b->config.table, f->written, f->ddl, f->write_us);
		foreach(lc, b->pending)
		{
			Pending    *p = lfirst(lc);
			char	   *error = f->errors ? f->errors[foreach_current_index(lc)] : NULL;

			if (error)
			{
				give_up(&p->msg, p->route_id, error);
				ism_count_table(b->config.table, ISM_TC_DEAD_LETTERS, 1);
				continue;
			}
			if (!ism_nats_settle(&p->msg, ISM_ACK, 0, err, sizeof(err)))
				ereport(WARNING, (errmsg("ism_state writer: %s", err)));
			ism_count_inbound(ISM_RC_ROUTED, 1);
			ism_nats_release(&p->msg, 1);
			if (p->route_id && !list_member(*routes, makeString(p->route_id)))
			{
				MemoryContextSwitchTo(flush_context);
				*routes = lappend(*routes, makeString(pstrdup(p->route_id)));
				MemoryContextSwitchTo(b->context);
			}
		}
	}
	MemoryContextSwitchTo(old);
	b->pending = NIL;
	b->nrecords = 0;
	b->nbytes = 0;
	b->memory = 0;
	MemoryContextReset(b->context);
	ism_table_pending(b->config.table, 0, 0, 0);
}

/*
 * Write batches: one transaction for all, the messages acked after its
 * commit, COMPLETED once per route written to.
 */
static void
flush_batches(List *due)
{
	List	   *flushes = NIL;
	List	   *routes = NIL;
	ListCell   *lc;
	char		err[512];
	int			sqlstate = 0;
	MemoryContext old = MemoryContextSwitchTo(flush_context);

	foreach(lc, due)
	{
		Batch	   *b = lfirst(lc);
		Flush	   *f = MemoryContextAllocZero(b->context, sizeof(Flush));

		f->batch = b;
		f->pending = b->pending;
		MemoryContextSwitchTo(b->context);
		f->keys = keys_of(b->pending);
		MemoryContextSwitchTo(flush_context);
		flushes = lappend(flushes, f);
	}
	ism_report_activity(true, list_length(due) == 1 ?
						   psprintf("flushing table %s", ((Batch *) linitial(due))->config.table) :
						   psprintf("flushing %d tables", list_length(due)));
	if (!ism_run_in_transaction_ex(flush_group_in_transaction, flushes, err, sizeof(err), &sqlstate))
	{
		/* the commit itself failed: so did every batch */
		foreach(lc, flushes)
		{
			Flush	   *f = lfirst(lc);

			f->error = MemoryContextStrdup(f->batch->context, err);
			f->sqlstate = sqlstate;
		}
	}
	pgstat_report_stat(false);
	foreach(lc, flushes)
		finish_flush(lfirst(lc), &routes);

	/*
	 * One round trip for all the acks: the server has counted them before
	 * the next fetch, so max_ack_pending never holds deliveries back.
	 */
	if (!ism_nats_flush(ism_publish_timeout_ms, err, sizeof(err)))
		ereport(WARNING, (errmsg("ism_state writer: %s", err)));
	foreach(lc, routes)
		publish_status(strVal(lfirst(lc)), "COMPLETED", NULL, NULL);
	if (routes != NIL && !ism_nats_publish_wait(ism_publish_timeout_ms, err, sizeof(err)))
		ereport(WARNING, (errmsg("ism_state writer: COMPLETED not sent: %s", err)));
	MemoryContextSwitchTo(old);
	MemoryContextReset(flush_context);
	ism_report_activity(false, "idle");
}

static void
flush_batch(Batch *b)
{
	List	   *one = list_make1(b);

	flush_batches(one);
	list_free(one);
}

/* What waits in each batch, for pg_stat_ism_tables. */
static void
report_pending(void)
{
	ListCell   *lc;

	foreach(lc, batches)
	{
		Batch	   *b = lfirst(lc);

		if (b->pending != NIL)
			ism_table_pending(b->config.table, b->nrecords, b->nbytes, b->oldest);
	}
}

static int
pending_records(void)
{
	ListCell   *lc;
	int			n = 0;

	foreach(lc, batches)
		n += ((Batch *) lfirst(lc))->nrecords;
	return n;
}

static Size
pending_memory(void)
{
	ListCell   *lc;
	Size		n = 0;

	foreach(lc, batches)
		n += ((Batch *) lfirst(lc))->memory;
	return n;
}

static int
pending_messages(void)
{
	ListCell   *lc;
	int			n = 0;

	foreach(lc, batches)
		n += list_length(((Batch *) lfirst(lc))->pending);
	return n;
}

static void
prune_applied(void *arg)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(ism_applied_retention_s)};

	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_execute_with_args("DELETE FROM ism_state.applied"
							  " WHERE applied_at < now() - make_interval(secs => $1)",
							  1, types, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not prune ism_state.applied");
	if (SPI_execute_with_args("DELETE FROM ism_state.applied_msg_id"
							  " WHERE stored_at < now() - make_interval(secs => $1)",
							  1, types, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not prune ism_state.applied_msg_id");
	PopActiveSnapshot();
	SPI_finish();
}

/* Flush the batches that are due (all of them when all). */
/*
 * A batch takes its processor's properties when it starts.  One waiting for
 * its window (or its size) compares them with the catalog every second: a
 * change (a shorter batchWindowTTL, a batchSize of 1, another table, the
 * processor gone) flushes what it holds under the properties it was queued
 * with, as a message under new ones would (add_message).  Waiting for such
 * a message instead could mean waiting for the whole old window: the
 * processor may send nothing more, or send it to another writer.
 */
typedef struct Recheck
{
	List	   *batches;		/* of Batch *, to compare */
	bool	   *changed;		/* per batch */
} Recheck;

static void
read_configs(void *arg)
{
	Recheck    *rc = arg;
	ListCell   *lc;

	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	foreach(lc, rc->batches)
	{
		Batch	   *b = lfirst(lc);
		char	   *properties = NULL;
		char	   *error = NULL;
		TableConfig now;

		rc->changed[foreach_current_index(lc)] =
			!processor_properties(b->processor_id, &properties) ||
			!table_config(b->processor_id, properties, &now, &error) ||
			!same_config(&b->config, &now);
	}
	PopActiveSnapshot();
	SPI_finish();
}

/* Not due, and not due within the next recheck either. */
static bool
waits_long(const Batch *b, TimestampTz now)
{
	return b->pending != NIL && !batch_due(b, false) &&
		(b->config.window_s < 0 ||
		 window_end(b) - now > (int64) CONFIG_RECHECK_MS * 1000);
}

static void
recheck_configs(void)
{
	TimestampTz now = GetCurrentTimestamp();
	Recheck		rc = {0};
	ListCell   *lc;
	char		err[512];

	foreach(lc, batches)
	{
		Batch	   *b = lfirst(lc);

		if (waits_long(b, now) &&
			TimestampDifferenceExceeds(b->config_read_at, now, CONFIG_RECHECK_MS))
			rc.batches = lappend(rc.batches, b);
	}
	if (rc.batches == NIL)
		return;
	rc.changed = palloc0(sizeof(bool) * list_length(rc.batches));
	if (!ism_run_in_transaction(read_configs, &rc, err, sizeof(err)))
		ereport(WARNING, (errmsg("ism_state writer: could not read the properties of waiting batches: %s", err)));
	else
		foreach(lc, rc.batches)
		{
			Batch	   *b = lfirst(lc);

			b->config_read_at = now;
			if (rc.changed[foreach_current_index(lc)])
			{
				flush_batch(b);
				free_batch(b);
			}
		}
	pfree(rc.changed);
	list_free(rc.batches);
}

void
ism_writer_flush(bool all)
{
	ListCell   *lc;
	char		err[512];

	List	   *due = NIL;

	recheck_configs();
	foreach(lc, batches)
		if (batch_due(lfirst(lc), all))
			due = lappend(due, lfirst(lc));
	if (due != NIL)
		flush_batches(due);
	list_free(due);

	/* what applied remembers only needs to outlive a lost ack's redelivery */
	if (TimestampDifferenceExceeds(last_prune, GetCurrentTimestamp(),
								   Min(PRUNE_INTERVAL_MS, ism_applied_retention_s * 1000L)))
	{
		last_prune = GetCurrentTimestamp();
		free_idle_batches();
		if (!ism_run_in_transaction(prune_applied, NULL, err, sizeof(err)))
			ereport(WARNING, (errmsg("ism_state writer: could not prune ism_state.applied: %s", err)));
	}
}

/* --- messages ---------------------------------------------------------------- */

static void
give_up(IsmMessage *m, const char *route_id, const char *error)
{
	char		err[512];
	bool		applied_before;

	ism_log_limited(WARNING, error,
					"ism_state writer: message %s:" UINT64_FORMAT " on \"%s\" failed: %s",
					m->stream, m->stream_seq, m->subject, error);
	if (!ism_dead_letter_once(m, "writer", route_id, error, &applied_before))
		ism_nats_settle(m, ISM_NAK, ism_nats_redelivery_delay_ms(m), err, sizeof(err));
	else if (applied_before)
	{
		/* another delivery of it was written (or dead-lettered) first */
		ism_nats_settle(m, ISM_ACK, 0, err, sizeof(err));
	}
	else
	{
		ism_count_inbound(ISM_RC_FAILED, 1);
		ism_inbound_error(error);
		publish_status(route_id, "FAILED", error, m->from_stream ?
					   psprintf("ism:%s:" UINT64_FORMAT ":failed", m->stream, m->stream_seq) : NULL);
		if (!ism_nats_publish_wait(ism_publish_timeout_ms, err, sizeof(err)))
			ereport(WARNING, (errmsg("ism_state writer: FAILED not sent: %s", err)));
		ism_nats_settle(m, ISM_TERM, 0, err, sizeof(err));
	}
	ism_nats_release(m, 1);
}

/*
 * A message delivered again while its first delivery waits in the batch
 * (its ack_wait ran out before the flush): the batch keeps one copy, with
 * the new delivery's handle, which is the one the server now expects.
 */
static bool
took_redelivery(Batch *b, IsmMessage *m)
{
	ListCell   *lc;

	foreach(lc, b->pending)
	{
		Pending    *p = lfirst(lc);

		if (p->msg.from_stream && p->msg.stream_seq == m->stream_seq &&
			strcmp(p->msg.stream, m->stream) == 0)
		{
			ism_nats_release(&p->msg, 1);
			p->msg = *m;
			p->alive_at = GetCurrentTimestamp();
			return true;
		}
	}
	return false;
}

/*
 * Messages waiting in a batch longer than half the consumer's ack_wait
 * (a long batchWindowTTL) are reported in progress, so that the server
 * does not deliver them again meanwhile.
 */
static void
keep_pending_alive(int ack_wait_ms)
{
	TimestampTz now = GetCurrentTimestamp();
	ListCell   *lc;
	char		err[512];

	foreach(lc, batches)
	{
		ListCell   *pc;

		foreach(pc, ((Batch *) lfirst(lc))->pending)
		{
			Pending    *p = lfirst(pc);

			if (!TimestampDifferenceExceeds(p->alive_at, now, ack_wait_ms / 2))
				continue;
			if (!ism_nats_settle(&p->msg, ISM_IN_PROGRESS, 0, err, sizeof(err)))
				ereport(WARNING, (errmsg("ism_state writer: %s", err)));
			p->alive_at = now;
		}
	}
}

/* Parse and queue one message; settles it itself when it cannot be queued. */
static void
add_message(IsmMessage *m)
{
	MemoryContext old;
	cJSON	   *root;
	cJSON	   *route;
	cJSON	   *records;
	cJSON	   *record;
	Resolve		r = {0};
	TableConfig config;
	char	   *error = NULL;
	char		err[512];
	Batch	   *b;
	Pending    *p;
	char	   *stamp = NULL;

	if (m->len > ism_max_message_bytes)
		return give_up(m, NULL, psprintf("message is %d bytes, more than ism_state.max_message_bytes (%d)",
										 m->len, ism_max_message_bytes));
	if (!pg_verify_mbstr(PG_UTF8, m->data, m->len, true))
		return give_up(m, NULL, "message is not valid UTF-8");
	root = cJSON_ParseWithLengthOpts(m->data, m->len, NULL, false);
	if (!cJSON_IsObject(root))
		return give_up(m, NULL, root ? "message is not a JSON object" : "message is not valid JSON");
	if (!ism_json_all_finite(root))
		return give_up(m, NULL, "message has a number beyond double precision");
	route = cJSON_GetObjectItem(root, "route_id");	/* any case, as Go */
	if (!cJSON_IsString(route))
		return give_up(m, NULL, "message without a \"route_id\" string");
	records = cJSON_GetObjectItem(root, "query_state");
	if (records && !cJSON_IsNull(records) && !cJSON_IsArray(records))
		return give_up(m, route->valuestring, "\"query_state\" must be a list of records");

	r.route_id = route->valuestring;
	if (!ism_run_in_transaction(resolve_processor, &r, err, sizeof(err)))
	{
		/* a database error: try again later */
		if (!ism_nats_can_retry(m))
			return give_up(m, r.route_id, ism_nats_why_no_retry(m, err));
		ism_nats_settle(m, ISM_NAK, ism_nats_redelivery_delay_ms(m), err, sizeof(err));
		ism_nats_release(m, 1);
		return;
	}
	if (r.error)
		return give_up(m, r.route_id, r.error);
	if (!table_config(r.processor_id, r.properties, &config, &error))
		return give_up(m, r.route_id, error);

	/* a changed configuration (a new table name, say) starts a new batch */
	b = find_batch(r.processor_id);
	if (b && !same_config(&b->config, &config))
	{
		flush_batch(b);
		free_batch(b);
		b = NULL;
	}
	if (b == NULL)
		b = new_batch(r.processor_id, &config);

	cJSON_ArrayForEach(record, records)
		if (!cJSON_IsNull(record) && !cJSON_IsObject(record))
			return give_up(m, r.route_id, "every record in \"query_state\" must be an object");

	if (m->from_stream && m->deliveries > 1 && took_redelivery(b, m))
		return;

	/* the message's memory, its parse tree with it, is the batch's now */
	MemoryContextSetParent(message_context, b->context);
	p = palloc0(sizeof(Pending));
	p->msg = *m;
	p->alive_at = GetCurrentTimestamp();
	p->route_id = route->valuestring;
	if (b->config.include_timestamp)
		stamp = timestamp_now();
	cJSON_ArrayForEach(record, records)
	{
		cJSON	   *row = record;

		if (cJSON_IsNull(record))
		{
			if (!stamp)
				continue;
			row = cJSON_CreateObject();	/* a row with just _timestamp */
		}
		if (stamp)
		{
			cJSON_DeleteItemFromObjectCaseSensitive(row, "_timestamp");
			cJSON_AddStringToObject(row, "_timestamp", stamp);
		}
		p->records = lappend(p->records, row);
	}
	if (b->pending == NIL)
		b->oldest = GetCurrentTimestamp();
	old = MemoryContextSwitchTo(b->context);
	b->pending = lappend(b->pending, p);
	MemoryContextSwitchTo(old);
	b->nrecords += list_length(p->records);
	b->nbytes += m->len;
	b->memory += MemoryContextMemAllocated(message_context, false);
	b->last_used = GetCurrentTimestamp();
}

/*
 * With ism_state.claims_bucket set, several instances share the consumer:
 * keep the messages this instance claimed (see claims.c) and hand the
 * others back, with a delay, for their owner to take.  Returns how many
 * of msgs are kept (compacted at the front).
 */
static int
keep_claimed(IsmMessage *msgs, int n)
{
	IsmMessage	stored[MAX_FETCH];
	IsmClaim	claims[MAX_FETCH];
	char		err[512];
	int			nstored = 0;
	int			kept = 0;

	/* a message from no stream is nobody else's: no claim (see from_stream) */
	for (int i = 0; i < n; i++)
		if (msgs[i].from_stream)
			stored[nstored++] = msgs[i];
		else
			msgs[kept++] = msgs[i];
	if (nstored > 0 && !ism_claims_take(stored, nstored, claims, err, sizeof(err)))
	{
		ism_stats_set_error(err);
		ism_log_limited(WARNING, "claims", "ism_state writer: %s", err);
	}
	for (int i = 0; i < nstored; i++)
	{
		IsmMessage *m = &stored[i];

		if (claims[i] == ISM_CLAIM_OURS)
		{
			msgs[kept++] = *m;
			continue;
		}
		if (claims[i] == ISM_CLAIM_THEIRS)
			ism_log_limited(LOG, "claimed elsewhere",
							"ism_state writer: message %s:" UINT64_FORMAT
							" is claimed by another instance; left to it",
							m->stream, m->stream_seq);

		/*
		 * Not the message's failure: no delay growing with its deliveries,
		 * so that it soon comes round to its owner (each delivery goes to
		 * either instance) or is claimed once the bucket answers again.
		 */
		if (!ism_nats_settle(m, ISM_NAK, CLAIM_RETRY_DELAY_MS, err, sizeof(err)))
			ereport(WARNING, (errmsg("ism_state writer: %s", err)));
		ism_nats_release(m, 1);
	}
	return kept;
}

/*
 * Fetch what the subscription has (waiting at most timeout_ms), queue it,
 * and flush what is due.  max_in_flight is the consumer's max_ack_pending:
 * with that many messages waiting for their ack the server sends no more,
 * so everything is flushed then rather than at the batch window's end.
 * ack_wait_ms is the consumer's ack_wait (see keep_pending_alive).
 * Returns the number of messages fetched, -1 when fetching failed.
 */
int
ism_writer_consume(int timeout_ms, int max_in_flight, int ack_wait_ms)
{
	IsmMessage	msgs[MAX_FETCH];
	char		err[512];
	int			n;
	MemoryContext old;
	int			room;

	/* due batches first: their acks make room for more deliveries */
	ism_writer_flush(false);
	keep_pending_alive(ack_wait_ms);

	/*
	 * Never ask for more than the server may deliver: what a pull request
	 * cannot get now it would deliver later to a fetch that has ended.
	 */
	room = max_in_flight - pending_messages();
	if (room <= 0)
	{
		ism_writer_flush(true);
		room = max_in_flight;
	}
	n = ism_nats_fetch(msgs, Min(MAX_FETCH, room), Max(timeout_ms, 1), err, sizeof(err));
	if (n < 0)
	{
		/*
		 * The server refuses more while max_ack_pending messages wait for
		 * their ack, which only a flush gives: flush what is due anyway.
		 */
		ism_stats_set_error(err);
		ism_writer_flush(false);
		return -1;
	}
	if (n > 0 && ism_claims_bucket[0])
		n = keep_claimed(msgs, n);
	for (int i = 0; i < n; i++)
	{
		/* a context per message: queued, it joins its batch's (no copy) */
		message_context = AllocSetContextCreate(writer_context, "ism_state writer message",
												ALLOCSET_SMALL_SIZES);
		old = MemoryContextSwitchTo(message_context);
		add_message(&msgs[i]);
		MemoryContextSwitchTo(old);
		if (MemoryContextGetParent(message_context) == writer_context)
			MemoryContextDelete(message_context);
		message_context = NULL;
	}
	ism_writer_flush(pending_records() >= ism_writer_max_pending_records ||
					 pending_memory() >= (Size) ism_writer_max_pending_kb * 1024 ||
					 pending_messages() >= max_in_flight);
	report_pending();
	return n;
}

/* Give up the pending messages, unacked (the server redelivers them). */
void
ism_writer_release_pending(void)
{
	ListCell   *lc;

	foreach(lc, batches)
	{
		Batch	   *b = lfirst(lc);
		ListCell   *pc;

		foreach(pc, b->pending)
			ism_nats_release(&((Pending *) lfirst(pc))->msg, 1);
		b->pending = NIL;
		b->nrecords = 0;
		b->nbytes = 0;
		b->memory = 0;
		MemoryContextReset(b->context);
		ism_table_pending(b->config.table, 0, 0, 0);
	}
}

/* How long the worker may wait before a batch is due (at most max_ms). */
long
ism_writer_next_due_ms(long max_ms)
{
	ListCell   *lc;
	long		wait = max_ms;
	TimestampTz now = GetCurrentTimestamp();

	foreach(lc, batches)
	{
		Batch	   *b = lfirst(lc);

		if (b->pending != NIL && b->config.window_s >= 0)
		{
			wait = Min(wait, Max(TimestampDifferenceMilliseconds(now, window_end(b)), 0));
		}
	}
	return wait;
}

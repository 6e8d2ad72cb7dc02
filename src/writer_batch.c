/*-------------------------------------------------------------------------
 *
 * writer_batch.c
 *	  The state-tables writer's batches: one per processor, found by its
 *	  id, with the table settings of its processor's properties, due by
 *	  size, memory or window, and let go when idle.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "writer_batch.h"
#include "counters.h"
#include "ident.h"
#include "json.h"
#include "settings.h"

/*
 * upstream defaults when a property is absent (alethic-ism-core-go
 * pkg/repository/processor/tables/config.go DefaultTableProcessorConfig)
 */
#define DEFAULT_TABLE_NAME	"hello_world"
#define DEFAULT_BATCH_SIZE	10
#define DEFAULT_WINDOW_S	15

/* A batch with nothing pending for this long is let go (its column cache too). */
#define BATCH_IDLE_MS		300000

List	   *ism_writer_batches = NIL;	/* of Batch *, in the order made */
static MemoryContext writer_context = NULL;	/* the writer's: the batches */

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

/* The batches are made in the writer's memory context. */
void
ism_writer_batches_init(MemoryContext context)
{
	writer_context = context;
	batch_map = batchmap_create(writer_context, 64, NULL);
}

/* --- properties ---------------------------------------------------------- */

/*
 * The table settings from processor.properties, with upstream's
 * defaults for absent keys and its meaning for explicit nulls.  Keys are
 * matched as Go's encoding/json matches them (any case; the last of
 * several: upstream's pkg/handler/config.go unmarshals the properties into
 * a struct).  false with *error on a wrong type.
 */
bool
ism_writer_table_config(const char *processor_id, const char *props_text,
						TableConfig *c, char **error)
{
	char	   *parse_error;
	IsmJson    *props = props_text ? ism_json_parse(props_text, strlen(props_text), &parse_error) : NULL;
	IsmJson    *v;
	const char *table_name = DEFAULT_TABLE_NAME;

	c->batch_size = DEFAULT_BATCH_SIZE;
	c->window_s = DEFAULT_WINDOW_S;
	c->include_timestamp = true;
	c->infer_types = false;
	c->index_columns = NIL;
	if (props_text && !ism_json_is(props, ISM_JSON_OBJECT))
	{
		*error = psprintf("processor %s: properties are not a JSON object", processor_id);
		return false;
	}

	if ((v = ism_json_get_fold(props, "tableName")) != NULL)
	{
		if (v->type == ISM_JSON_NULL)
			table_name = NULL;
		else if ((table_name = ism_json_cstring(v)) == NULL)
		{
			*error = psprintf("processor %s: property \"tableName\" must be a string", processor_id);
			return false;
		}
	}
	if ((v = ism_json_get_fold(props, "batchSize")) != NULL)
	{
		if (v->type == ISM_JSON_NULL)
			c->batch_size = 0;
		else if (!ism_json_whole_int(v, &c->batch_size))
		{
			*error = psprintf("processor %s: property \"batchSize\" must be an integer", processor_id);
			return false;
		}
		else
			c->batch_size = Max(c->batch_size, 1);
	}
	if ((v = ism_json_get_fold(props, "batchWindowTTL")) != NULL)
	{
		if (v->type == ISM_JSON_NULL)
			c->window_s = -1;
		else if (!ism_json_whole_int(v, &c->window_s) || c->window_s < 0)
		{
			*error = psprintf("processor %s: property \"batchWindowTTL\" must be a number of seconds (0 or more)",
							  processor_id);
			return false;
		}
	}
	if ((v = ism_json_get_fold(props, "includeTimestamp")) != NULL)
	{
		if (v->type == ISM_JSON_NULL)
			c->include_timestamp = false;
		else if (v->type != ISM_JSON_TRUE && v->type != ISM_JSON_FALSE)
		{
			*error = psprintf("processor %s: property \"includeTimestamp\" must be a boolean", processor_id);
			return false;
		}
		else
			c->include_timestamp = v->type == ISM_JSON_TRUE;
	}
	if ((v = ism_json_get_fold(props, "columnTypes")) != NULL && v->type != ISM_JSON_NULL)
	{
		const char *mode = ism_json_cstring(v);

		if (mode == NULL || (strcmp(mode, "text") != 0 && strcmp(mode, "infer") != 0))
		{
			*error = psprintf("processor %s: property \"columnTypes\" must be \"text\" or \"infer\"", processor_id);
			return false;
		}
		c->infer_types = strcmp(mode, "infer") == 0;
	}
	if ((v = ism_json_get_fold(props, "indexColumns")) != NULL && v->type != ISM_JSON_NULL)
	{
		IsmJson    *col;

		if (v->type != ISM_JSON_ARRAY)
		{
			*error = psprintf("processor %s: property \"indexColumns\" must be a list of keys", processor_id);
			return false;
		}
		ism_json_foreach(col, v)
		{
			if (ism_json_cstring(col) == NULL)
			{
				*error = psprintf("processor %s: property \"indexColumns\" must be a list of keys", processor_id);
				return false;
			}
			c->index_columns = lappend(c->index_columns, pstrdup(col->str));
		}
	}
	c->table = ism_table_name(processor_id, table_name);
	return true;
}

/* Do a and b say the same? */
bool
ism_writer_same_config(const TableConfig *a, const TableConfig *b)
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

/* --- batches -------------------------------------------------------------- */

/* The processor's batch, NULL when it has none. */
Batch *
ism_writer_find_batch(const char *processor_id)
{
	BatchEntry *e = batchmap_lookup(batch_map, processor_id);

	return e ? e->batch : NULL;
}

/* A new, empty batch for the processor, its table set by config. */
Batch *
ism_writer_new_batch(const char *processor_id, const TableConfig *config)
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
	ism_writer_batches = lappend(ism_writer_batches, b);
	batchmap_insert(batch_map, b->processor_id, &found)->batch = b;
	MemoryContextSwitchTo(old);
	return b;
}

/* Let a batch with nothing pending go, all its memory with it. */
void
ism_writer_free_batch(Batch *b)
{
	Assert(b->pending == NIL);
	batchmap_delete(batch_map, b->processor_id);
	ism_writer_batches = list_delete_ptr(ism_writer_batches, b);
	MemoryContextDelete(b->self);
}

/*
 * Let go of the batches of processors that sent nothing for a while:
 * processors come and go, and the writer keeps no more than it uses.
 */
void
ism_writer_free_idle_batches(void)
{
	TimestampTz now = GetCurrentTimestamp();
	List	   *idle = NIL;
	ListCell   *lc;

	foreach(lc, ism_writer_batches)
	{
		Batch	   *b = lfirst(lc);

		if (b->pending == NIL && TimestampDifferenceExceeds(b->last_used, now, BATCH_IDLE_MS))
			idle = lappend(idle, b);
	}
	foreach(lc, idle)
		ism_writer_free_batch(lfirst(lc));
	list_free(idle);
}

/* Forget the batch's messages (settled or let go of already) and their memory. */
void
ism_writer_empty_batch(Batch *b)
{
	b->pending = NIL;
	b->nrecords = 0;
	b->nbytes = 0;
	b->memory = 0;
	MemoryContextReset(b->context);
	ism_table_pending(b->config.table, 0, 0, 0);
}

/* When the batch's window closes (batchWindowTTL may be up to INT_MAX s). */
TimestampTz
ism_writer_window_end(const Batch *b)
{
	return b->oldest + (int64) b->config.window_s * USECS_PER_SEC;
}

/*
 * Whatever batchSize and batchWindowTTL say (both may be off), a batch
 * holding ism_state.writer_batch_max_records or _memory is due: memory
 * stays bounded per table, and all batches together are bounded by
 * writer_max_pending_* (see ism_writer_consume).
 */
bool
ism_writer_batch_due(const Batch *b, bool all)
{
	if (b->pending == NIL)
		return false;
	if (all || (b->config.batch_size > 0 && b->nrecords >= b->config.batch_size))
		return true;
	if (b->nrecords >= ism_writer_batch_max_records ||
		b->memory >= (Size) ism_writer_batch_max_kb * 1024)
		return true;
	if (b->config.window_s >= 0 && GetCurrentTimestamp() >= ism_writer_window_end(b))
		return true;
	return false;
}

/* What waits in each batch, for pg_stat_ism_tables. */
void
ism_writer_report_pending(void)
{
	ListCell   *lc;

	foreach(lc, ism_writer_batches)
	{
		Batch	   *b = lfirst(lc);

		if (b->pending != NIL)
			ism_table_pending(b->config.table, b->nrecords, b->nbytes, b->oldest);
	}
}

/* What all batches hold: records, their memory, messages. */
int
ism_writer_pending_records(void)
{
	ListCell   *lc;
	int			n = 0;

	foreach(lc, ism_writer_batches)
		n += ((Batch *) lfirst(lc))->nrecords;
	return n;
}

Size
ism_writer_pending_memory(void)
{
	ListCell   *lc;
	Size		n = 0;

	foreach(lc, ism_writer_batches)
		n += ((Batch *) lfirst(lc))->memory;
	return n;
}

int
ism_writer_pending_messages(void)
{
	ListCell   *lc;
	int			n = 0;

	foreach(lc, ism_writer_batches)
		n += list_length(((Batch *) lfirst(lc))->pending);
	return n;
}

/* The records of the messages to apply, in order. */
List *
ism_writer_records_to_apply(Flush *f)
{
	List	   *rows = NIL;
	ListCell   *lc;

	foreach(lc, f->pending)
		if (f->apply[foreach_current_index(lc)])
			rows = list_concat(rows, ((Pending *) lfirst(lc))->records);
	return rows;
}

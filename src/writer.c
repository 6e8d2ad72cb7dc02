/*-------------------------------------------------------------------------
 *
 * writer.c
 *	  The state-tables writer (upstream: quantumwake/alethic-ism-state-tables,
 *	  pkg/handler/).
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
 * as their literal as sent and booleans in their JSON form, objects and
 * arrays as compact JSON (upstream could not write those), null as NULL;
 * "columnTypes": "infer" types new columns (column_types.c).  A record
 * whose string (or key) holds a \u0000 is dead-lettered: text cannot hold
 * it, and it is not cut.  A batch remembers its table's
 * columns, so a flush whose keys are known needs no catalog lookup.
 *
 * This file has the consume loop and the messages' way into their batches;
 * writer_batch.c the batches, writer_flush.c the flushes and settling,
 * writer_schema.c the tables and columns, writer_rows.c the rows.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <malloc.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "writer.h"
#include "applied.h"
#include "claims.h"
#include "copy_text.h"
#include "jetstream.h"
#include "json.h"
#include "log_limit.h"
#include "lookup_cache.h"
#include "settings.h"
#include "stats.h"
#include "writer_batch.h"
#include "writer_flush.h"
#include "xact.h"

#define MAX_FETCH			256
/* a message claimed elsewhere, or not claimed, goes back for this long */
#define CLAIM_RETRY_DELAY_MS	1000

/* how often ism_state.applied is pruned */
#define PRUNE_INTERVAL_MS	60000

/* how often a waiting batch's properties are compared with the catalog */
#define CONFIG_RECHECK_MS	1000

static MemoryContext writer_context = NULL;	/* the batches, flushes, messages */
static TimestampTz last_prune = 0;
static MemoryContext message_context = NULL;	/* the message being queued */
static MemoryContext config_context = NULL;	/* its processor's properties, parsed */

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
	writer_context = AllocSetContextCreate(TopMemoryContext, "ism_state writer",
										   ALLOCSET_DEFAULT_SIZES);
	config_context = AllocSetContextCreate(writer_context, "ism_state writer properties",
										   ALLOCSET_SMALL_SIZES);
	ism_writer_flush_init(writer_context);
	ism_writer_batches_init(writer_context);
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

/* --- flush ----------------------------------------------------------------- */

static void
prune_applied(void *arg)
{
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	ism_applied_prune(ism_applied_retention_s);
	PopActiveSnapshot();
	SPI_finish();
}

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
			!ism_writer_table_config(b->processor_id, properties, &now, &error) ||
			!ism_writer_same_config(&b->config, &now);
	}
	PopActiveSnapshot();
	SPI_finish();
}

/* Not due, and not due within the next recheck either. */
static bool
waits_long(const Batch *b, TimestampTz now)
{
	return b->pending != NIL && !ism_writer_batch_due(b, false) &&
		(b->config.window_s < 0 ||
		 ism_writer_window_end(b) - now > (int64) CONFIG_RECHECK_MS * 1000);
}

static void
recheck_configs(void)
{
	TimestampTz now = GetCurrentTimestamp();
	Recheck		rc = {0};
	ListCell   *lc;
	char		err[512];

	foreach(lc, ism_writer_batches)
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
				ism_writer_flush_batch(b);
				ism_writer_free_batch(b);
			}
		}
	pfree(rc.changed);
	list_free(rc.batches);
}

/* Flush the batches that are due (all of them when all). */
void
ism_writer_flush(bool all)
{
	ListCell   *lc;
	char		err[512];

	List	   *due = NIL;

	recheck_configs();
	foreach(lc, ism_writer_batches)
		if (ism_writer_batch_due(lfirst(lc), all))
			due = lappend(due, lfirst(lc));
	if (due != NIL)
		ism_writer_flush_batches(due);
	list_free(due);

	/* what applied remembers only needs to outlive a lost ack's redelivery */
	if (TimestampDifferenceExceeds(last_prune, GetCurrentTimestamp(),
								   Min(PRUNE_INTERVAL_MS, ism_applied_retention_s * 1000L)))
	{
		last_prune = GetCurrentTimestamp();
		ism_writer_free_idle_batches();
		if (!ism_run_in_transaction(prune_applied, NULL, err, sizeof(err)))
			ereport(WARNING, (errmsg("ism_state writer: could not prune ism_state.applied: %s", err)));
	}
}

/* --- messages ---------------------------------------------------------------- */

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

	foreach(lc, ism_writer_batches)
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

/*
 * The processor's batch: a changed configuration (a new table name, say)
 * starts a new one.
 */
static Batch *
batch_for(const char *processor_id, const TableConfig *config)
{
	Batch	   *b = ism_writer_find_batch(processor_id);

	if (b && !ism_writer_same_config(&b->config, config))
	{
		ism_writer_flush_batch(b);
		ism_writer_free_batch(b);
		b = NULL;
	}
	if (b == NULL)
		b = ism_writer_new_batch(processor_id, config);
	return b;
}

/* Queue m, its records stamped as its batch's table asks, in its batch. */
static void
queue_message(Batch *b, IsmMessage *m, char *route_id, IsmJson *records)
{
	MemoryContext old;
	IsmJson    *record;
	Pending    *p;
	IsmJson    *stamp = NULL;

	/* the message's memory, its parse tree with it, is the batch's now */
	MemoryContextSetParent(message_context, b->context);
	p = palloc0(sizeof(Pending));
	p->msg = *m;
	p->alive_at = GetCurrentTimestamp();
	p->route_id = route_id;
	if (b->config.include_timestamp)
		stamp = ism_json_make_string(timestamp_now());
	ism_json_foreach(record, records)
	{
		IsmJson    *row = record;

		if (record->type == ISM_JSON_NULL)
		{
			if (!stamp)
				continue;
			row = ism_json_make_object();	/* a row with just _timestamp */
		}
		if (stamp)
			ism_json_set(row, "_timestamp", stamp);
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
 * Why the message's records cannot be queued: one that is not an object
 * (or null), or one holding NUL where it would have to be stored (see
 * ism_record_nul_error; not in a _timestamp the batch's table replaces).
 * NULL when they can.
 */
static char *
records_error(const IsmJson *records, const TableConfig *config)
{
	const IsmJson *record;

	ism_json_foreach(record, records)
	{
		char	   *error;

		if (record->type != ISM_JSON_NULL && record->type != ISM_JSON_OBJECT)
			return "every record in \"query_state\" must be an object";
		if ((record->flags & ISM_JSON_NUL) &&
			(error = ism_record_nul_error(record, config->include_timestamp ? "_timestamp" : NULL)) != NULL)
			return error;
	}
	return NULL;
}

/*
 * The message as a tree, in the message's memory context, over a copy of
 * its text there: the tree points into its text (json.c), and a batch
 * keeps the tree past the delivery it came with (see took_redelivery).
 */
static IsmJson *
parse_message(IsmMessage *m, char **error)
{
	char	   *text = palloc(m->len + 1);

	memcpy(text, m->data, m->len);
	text[m->len] = '\0';
	return ism_json_parse(text, m->len, error);
}

/* Parse and queue one message; settles it itself when it cannot be queued. */
static void
add_message(IsmMessage *m)
{
	IsmJson    *root;
	IsmJson    *route;
	IsmJson    *records;
	Resolve		r = {0};
	TableConfig config;
	bool		configured;
	char	   *error = NULL;
	char		err[512];
	Batch	   *b;
	MemoryContext old;

	if (m->len > ism_max_message_bytes)
		return ism_writer_give_up(m, NULL, psprintf("message is %d bytes, more than ism_state.max_message_bytes (%d)",
													m->len, ism_max_message_bytes));
	if (!pg_verify_mbstr(PG_UTF8, m->data, m->len, true))
		return ism_writer_give_up(m, NULL, "message is not valid UTF-8");
	root = parse_message(m, &error);
	if (root == NULL)
		return ism_writer_give_up(m, NULL, psprintf("message is %s", error));
	if (root->type != ISM_JSON_OBJECT)
		return ism_writer_give_up(m, NULL, "message is not a JSON object");
	/*
	 * as upstream reads it (alethic-ism-state-tables pkg/handler/handler.go:
	 * json.Unmarshal into a models.RouteMessage): a struct field matches
	 * its name in any case, and of several the last counts
	 */
	route = ism_json_get_fold(root, "route_id");
	if (ism_json_cstring(route) == NULL)
		return ism_writer_give_up(m, NULL, "message without a \"route_id\" string");
	records = ism_json_get_fold(root, "query_state");
	if (records && records->type != ISM_JSON_NULL && records->type != ISM_JSON_ARRAY)
		return ism_writer_give_up(m, route->str, "\"query_state\" must be a list of records");

	r.route_id = route->str;
	if (!ism_run_in_transaction(resolve_processor, &r, err, sizeof(err)))
	{
		/* a database error: try again later */
		if (!ism_nats_can_retry(m))
			return ism_writer_give_up(m, r.route_id, ism_nats_why_no_retry(m, err));
		ism_writer_settle(m, ISM_NAK, ism_nats_redelivery_delay_ms(m));
		ism_nats_release(m, 1);
		return;
	}
	if (r.error)
		return ism_writer_give_up(m, r.route_id, r.error);

	/*
	 * The properties are parsed aside, not in the message's memory, which
	 * waits in the batch: the batch keeps a copy of what they say.
	 */
	old = MemoryContextSwitchTo(config_context);
	configured = ism_writer_table_config(r.processor_id, r.properties, &config, &error);
	MemoryContextSwitchTo(old);
	if (!configured)
	{
		error = pstrdup(error);
		MemoryContextReset(config_context);
		return ism_writer_give_up(m, r.route_id, error);
	}
	b = batch_for(r.processor_id, &config);
	MemoryContextReset(config_context);

	if ((error = records_error(records, &b->config)) != NULL)
		return ism_writer_give_up(m, r.route_id, error);

	if (m->from_stream && m->deliveries > 1 && took_redelivery(b, m))
		return;

	queue_message(b, m, (char *) route->str, records);
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
	 * What is in flight counts the batches' messages and the acks held for
	 * their commits (ack_gate.c); only the first can be made room for.
	 */
	room = max_in_flight - ism_nats_in_flight();
	if (room <= 0 && ism_writer_pending_messages() > 0)
	{
		ism_writer_flush(true);
		room = max_in_flight - ism_nats_in_flight();
	}
	if (room <= 0)
		return 0;
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
	ism_writer_flush(ism_writer_pending_records() >= ism_writer_max_pending_records ||
					 ism_writer_pending_memory() >= (Size) ism_writer_max_pending_kb * 1024 ||
					 ism_writer_pending_messages() >= max_in_flight);
	ism_writer_report_pending();
	return n;
}

/*
 * Give up the pending messages, nak'ed: the server delivers them again at
 * once (unacked, they would wait for the consumer's ack wait).  A nak that
 * cannot be sent (the connection gone) leaves them to the ack wait.
 */
void
ism_writer_release_pending(void)
{
	ListCell   *lc;
	char		err[256];

	foreach(lc, ism_writer_batches)
	{
		Batch	   *b = lfirst(lc);
		ListCell   *pc;

		foreach(pc, b->pending)
		{
			IsmMessage *m = &((Pending *) lfirst(pc))->msg;

			(void) ism_nats_settle(m, ISM_NAK, 0, err, sizeof(err));
			ism_nats_release(m, 1);
		}
		ism_writer_empty_batch(b);
	}
}

/* How long the worker may wait before a batch is due (at most max_ms). */
long
ism_writer_next_due_ms(long max_ms)
{
	ListCell   *lc;
	long		wait = max_ms;
	TimestampTz now = GetCurrentTimestamp();

	foreach(lc, ism_writer_batches)
	{
		Batch	   *b = lfirst(lc);

		if (b->pending != NIL && b->config.window_s >= 0)
		{
			wait = Min(wait, Max(TimestampDifferenceMilliseconds(now, ism_writer_window_end(b)), 0));
		}
	}
	return wait;
}

/*-------------------------------------------------------------------------
 *
 * writer_flush.c
 *	  The state-tables writer's flushes: the due batches in one transaction,
 *	  each in a subtransaction of its own (a batch that fails rolls back
 *	  alone), a batch that failed for good written again message by
 *	  message; after the commit the messages are acked (once the commit is
 *	  durable: ack_gate.c), nak'ed or given up, and COMPLETED goes to the
 *	  monitor route once per route written to.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "writer_flush.h"
#include "ack_gate.h"
#include "copy_text.h"
#include "counters.h"
#include "dead_letter.h"
#include "jetstream.h"
#include "json.h"
#include "log_limit.h"
#include "route_cache.h"
#include "route_index.h"
#include "settings.h"
#include "stats.h"
#include "writer_batch.h"
#include "writer_rows.h"
#include "writer_schema.h"
#include "xact.h"

#define MONITOR_SELECTOR	"processor/monitor"

static MemoryContext flush_context = NULL;	/* reset after each group flush */

/* The flushes' memory, in the writer's memory context. */
void
ism_writer_flush_init(MemoryContext writer_context)
{
	flush_context = AllocSetContextCreate(writer_context, "ism_state writer flush",
										  ALLOCSET_DEFAULT_SIZES);
}

/* --- statuses ------------------------------------------------------------ */

/* {"type":"models","route_id":…,"status":…[,"exception":…],"data":null} */
static void
publish_status(const char *route_id, const char *status, const char *exception,
			   const char *msg_id)
{
	RouteLookupResult result;
	const IsmRoute *monitor = ism_route_cache_resolve(MONITOR_SELECTOR, &result);
	StringInfoData body;
	char		err[512];
	bool		jetstream;

	if (monitor == NULL)
		return;
	initStringInfo(&body);
	appendStringInfoString(&body, "{\"type\":\"models\",\"route_id\":");
	ism_json_append_cstring_or_null(&body, route_id);
	appendStringInfoString(&body, ",\"status\":");
	ism_json_append_string(&body, status, strlen(status));
	if (exception)
	{
		appendStringInfoString(&body, ",\"exception\":");
		ism_json_append_string(&body, exception, strlen(exception));
	}
	appendStringInfoString(&body, ",\"data\":null}");
	/* JetStream by core-go's rule, as the Go service (route.go JetStreamEnabled) */
	jetstream = monitor->queue != NULL;
	if (jetstream &&
		!ism_nats_ensure_stream(monitor->name, monitor->subject, err, sizeof(err)))
		ereport(WARNING, (errmsg("ism_state writer: status not sent: %s", err)));
	else if (!ism_nats_publish(monitor->selector, monitor->subject, body.data, body.len, msg_id,
							   jetstream, err, sizeof(err)))
		ereport(WARNING, (errmsg("ism_state writer: status not sent: %s", err)));
}

/* --- flush ----------------------------------------------------------------- */

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
			IsmJson    *field;
			int			pos = 0;

			ism_json_foreach(field, (IsmJson *) lfirst(rc))
				if (ism_column_index(keys, pos++, field->key) < 0)
				keys = lappend(keys, (char *) field->key);
		}
	}
	return keys;
}

/* Applied records, DDL, rows: the body of a flush (SPI connected). */
static void
write_pending(Flush *f)
{
	ism_writer_record_applied(f);
	if (f->keys != NIL)
	{
		ism_writer_ensure_columns(f);
		ism_writer_write_rows(f);
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
		ism_writer_forget_columns(f->batch);	/* its DDL, if any, was rolled back */
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
			ism_writer_give_up(&p->msg, p->route_id, ism_nats_why_no_retry(&p->msg, why));
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
 * A batch that failed for good is written again one message at a time
 * (see flush_one_by_one); false, with err saying why, when that failed
 * too.  err holds the error of the failed flush.
 */
static bool
write_one_by_one(Flush *f, char *err, size_t errlen)
{
	Batch	   *b = f->batch;

	ereport(WARNING,
			(errmsg("ism_state writer: flush into \"%s\" failed (%s); writing its %d messages one by one",
					b->config.table, err, list_length(b->pending))));
	f->errors = palloc0(sizeof(char *) * list_length(b->pending));
	f->written = 0;
	f->ddl = 0;				/* what the failed attempt did was rolled back */
	return ism_run_in_transaction_ex(flush_one_by_one, f, err, errlen, &f->sqlstate);
}

/*
 * After the commit of a batch's flush: its messages are acked, but those
 * that failed on their own (written one by one) are given up, and the
 * routes written to are added to *routes.
 */
static void
settle_written(Flush *f, List **routes)
{
	Batch	   *b = f->batch;
	ListCell   *lc;

	if (f->written > 0)
		ism_table_flushed(b->config.table, f->written, f->ddl, f->write_us);
	foreach(lc, b->pending)
	{
		Pending    *p = lfirst(lc);
		char	   *error = f->errors ? f->errors[foreach_current_index(lc)] : NULL;

		if (error)
		{
			ism_writer_give_up(&p->msg, p->route_id, error);
			ism_count_table(b->config.table, ISM_TC_DEAD_LETTERS, 1);
			continue;
		}
		ism_settle_after_commit(&p->msg, ISM_ACK);
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
	char		err[512];
	bool		ok = f->error == NULL;

	strlcpy(err, f->error ? f->error : "", sizeof(err));
	if (!ok)
		ism_writer_forget_columns(b);	/* the commit may have failed after its DDL */
	if (!ok && !is_transient(f->sqlstate))
		ok = write_one_by_one(f, err, sizeof(err));

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
		settle_written(f, routes);
	MemoryContextSwitchTo(old);
	ism_writer_empty_batch(b);
}

/* A Flush for each batch due (in the batch's memory; the list in flush_context). */
static List *
new_flushes(List *due)
{
	List	   *flushes = NIL;
	ListCell   *lc;

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
	return flushes;
}

/*
 * Write batches: one transaction for all, the messages acked after its
 * commit, COMPLETED once per route written to.
 */
void
ism_writer_flush_batches(List *due)
{
	List	   *flushes;
	List	   *routes = NIL;
	ListCell   *lc;
	char		err[512];
	int			sqlstate = 0;
	MemoryContext old = MemoryContextSwitchTo(flush_context);

	flushes = new_flushes(due);
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

/* Write one batch (see ism_writer_flush_batches). */
void
ism_writer_flush_batch(Batch *b)
{
	List	   *one = list_make1(b);

	ism_writer_flush_batches(one);
	list_free(one);
}

/* --- a message given up on -------------------------------------------------- */

/* Settle m, with a WARNING when that fails (it comes again: no harm done). */
void
ism_writer_settle(IsmMessage *m, IsmSettle how, int64 delay_ms)
{
	char		err[512];

	if (!ism_nats_settle(m, how, delay_ms, err, sizeof(err)))
		ereport(WARNING, (errmsg("ism_state writer: %s", err)));
}

/*
 * Give up on m: FAILED on the monitor route, a dead letter, then term (a
 * nak when the dead letter could not be recorded: never lost).
 */
void
ism_writer_give_up(IsmMessage *m, const char *route_id, const char *error)
{
	char		err[512];
	bool		applied_before;

	ism_log_limited(WARNING, error,
					"ism_state writer: message %s:" UINT64_FORMAT " on \"%s\" failed: %s",
					m->stream, m->stream_seq, m->subject, error);
	if (!ism_dead_letter_once(m, "writer", route_id, error, &applied_before))
		ism_writer_settle(m, ISM_NAK, ism_nats_redelivery_delay_ms(m));
	else if (applied_before)
	{
		/* another delivery of it was written (or dead-lettered) first */
		ism_settle_after_commit(m, ISM_ACK);
	}
	else
	{
		ism_count_inbound(ISM_RC_FAILED, 1);
		ism_inbound_error(error);
		publish_status(route_id, "FAILED", error, m->from_stream ?
					   psprintf("ism:%s:" UINT64_FORMAT ":failed", m->stream, m->stream_seq) : NULL);
		if (!ism_nats_publish_wait(ism_publish_timeout_ms, err, sizeof(err)))
			ereport(WARNING, (errmsg("ism_state writer: FAILED not sent: %s", err)));
		ism_settle_after_commit(m, ISM_TERM);
	}
	ism_nats_release(m, 1);
}

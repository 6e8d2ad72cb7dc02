/*-------------------------------------------------------------------------
 *
 * writer_rows.c
 *	  The state-tables writer's rows: the stream sequences a flush applies
 *	  are recorded in ism_state.applied, their Nats-Msg-Ids in
 *	  ism_state.applied_msg_id (those applied before are not written
 *	  again), and the records go into their table through COPY's own
 *	  machinery, or as INSERTs where row-level security applies.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/copy.h"
#include "common/sha2.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/rls.h"
#include "utils/timestamp.h"

#include "writer_rows.h"
#include "copy_text.h"
#include "ident.h"
#include "jetstream.h"
#include "log_limit.h"
#include "settings.h"
#include "writer_batch.h"

static bool *returned_messages(Flush *f);
static void record_msg_ids(Flush *f);

/*
 * The stream sequences this flush applies; those applied before come back
 * false.  A message from no stream has no sequence to be known by: it is
 * applied as it comes (see IsmMessage.from_stream).
 */
void
ism_writer_record_applied(Flush *f)
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

	copy_source = ism_copy_text(f->keys, ism_writer_records_to_apply(f));
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

	foreach(lc, ism_writer_records_to_apply(f))
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
void
ism_writer_write_rows(Flush *f)
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

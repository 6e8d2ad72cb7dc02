/*-------------------------------------------------------------------------
 *
 * writer_rows.c
 *	  The state-tables writer's rows: the messages a flush applies are
 *	  claimed (applied.c: those handled before are not written again), and
 *	  the records go into their table through COPY's own machinery, or as
 *	  INSERTs where row-level security applies.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/copy.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "utils/builtins.h"
#include "utils/rls.h"

#include "writer_rows.h"
#include "applied.h"
#include "copy_text.h"
#include "ident.h"
#include "jetstream.h"
#include "json.h"
#include "settings.h"
#include "writer_batch.h"

/*
 * The messages this flush applies, claimed in its transaction (see
 * applied.c): those handled before are acked without being written again.
 */
void
ism_writer_record_applied(Flush *f)
{
	int			n = list_length(f->pending);
	const IsmMessage **msgs = palloc(sizeof(IsmMessage *) * n);
	ListCell   *lc;

	foreach(lc, f->pending)
		msgs[foreach_current_index(lc)] = &((Pending *) lfirst(lc))->msg;
	f->apply = palloc0(sizeof(bool) * n);
	ism_applied_claim(msgs, n, f->apply);
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
#if PG_VERSION_NUM >= 160000
	/* 16 moved the permissions out of the range table entry */
	nsitem->p_perminfo->requiredPerms = ACL_INSERT;
	ExecCheckPermissions(pstate->p_rtable, list_make1(nsitem->p_perminfo), true);
#else
	nsitem->p_rte->requiredPerms = ACL_INSERT;
	ExecCheckRTPerms(pstate->p_rtable, true);
#endif

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

/*
 * jsonb refuses \u0000, which a text column takes as JSON text: a record
 * holding one in a value for a jsonb column (the writer's, which it does
 * not make for such values, or one made beforehand) is refused naming its
 * key, as the writer refuses NUL in a string (copy_text.c).
 */
static void
refuse_nul_for_jsonb(Flush *f, List *rows)
{
	ListCell   *kc;

	foreach(kc, f->keys)
	{
		int			k = foreach_current_index(kc);
		ListCell   *rc;

		if (strcmp(f->type_sql[k], "jsonb") != 0)
			continue;
		foreach(rc, rows)
		{
			IsmJson    *v = ism_json_get(lfirst(rc), lfirst(kc));

			if (v && (v->flags & ISM_JSON_NUL))
				ereport(ERROR,
						(errcode(ERRCODE_UNTRANSLATABLE_CHARACTER),
						 errmsg("record key %.*s: its value holds \\u0000, which its jsonb column cannot hold",
								v->key_text_len, v->key_text)));
		}
	}
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
	refuse_nul_for_jsonb(f, ism_writer_records_to_apply(f));
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

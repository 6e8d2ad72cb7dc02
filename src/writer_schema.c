/*-------------------------------------------------------------------------
 *
 * writer_schema.c
 *	  The state-tables writer's tables and columns: the table made on the
 *	  first flush, a column added for every new key, with inferred types a
 *	  column widened for values that do not fit, the indexes asked for;
 *	  and the columns a batch remembers, so that a flush whose keys are
 *	  known needs no catalog lookup.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "writer_schema.h"
#include "column_types.h"
#include "copy_text.h"
#include "ident.h"
#include "settings.h"
#include "writer_batch.h"

/* Per key, the types that hold all its values exactly (ISM_TYPES_ANY: only nulls). */
static IsmTypeSet *
value_types(Flush *f, List *rows)
{
	int			nkeys = list_length(f->keys);
	IsmTypeSet *types = palloc(sizeof(IsmTypeSet) * nkeys);
	ListCell   *lc;

	for (int k = 0; k < nkeys; k++)
		types[k] = ISM_TYPES_ANY;
	foreach(lc, rows)
	{
		IsmJson    *field;
		int			pos = 0;

		ism_json_foreach(field, (IsmJson *) lfirst(lc))
		{
			int			k = ism_column_index(f->keys, pos++, field->key);

			types[k] &= ism_value_types(field->key, field, f->batch->config.infer_types);
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
		 const bool *have, const IsmTypeSet *wanted)
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
		type = infer ? ism_column_type_widened(type, wanted[k]) : ISM_COL_TEXT;
		if (!table_exists)
			appendStringInfo(&ddl, "%s%s %s",
							 ddl.len ? ", " : psprintf("CREATE TABLE IF NOT EXISTS %s (", qualified),
							 col, ism_column_type_sql(type));
		else if (!have[k])
			appendStringInfo(&ddl, "%sADD COLUMN IF NOT EXISTS %s %s",
							 ddl.len ? ", " : psprintf("ALTER TABLE %s ", qualified),
							 col, ism_column_type_sql(type));
		else if (type != f->types[k])
		{
			/* through text: exact for every widening (see widening_exactly) */
			appendStringInfo(&ddl, "%sALTER COLUMN %s TYPE %s USING %s::text::%s",
							 ddl.len ? ", " : psprintf("ALTER TABLE %s ", qualified),
							 col, ism_column_type_sql(type), col, ism_column_type_sql(type));
			f->widened = true;
		}
		f->types[k] = type;
		f->type_sql[k] = (char *) ism_column_type_sql(type);
	}
	if (!table_exists && ddl.len > 0)
		appendStringInfoChar(&ddl, ')');
	return ddl.len > 0 ? ddl.data : NULL;
}

/*
 * A column is widened through its text (plan_ddl): a double precision
 * value's text is its shortest exact decimal only while extra_float_digits
 * is above 0 (PostgreSQL's default, 1, which a database or role may have
 * changed); the cast to numeric straight from double precision keeps 15
 * digits.  So the flush sets it for its transaction.
 */
static void
widening_exactly(void)
{
	(void) set_config_option("extra_float_digits", "1", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * The batch's cached columns, when they hold every key with a type that
 * takes its values: then the table needs no change and no catalog lookup.
 */
static bool
cached_columns_fit(Flush *f, char **colnames, const IsmTypeSet *wanted)
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
			if (b->config.infer_types && ism_column_type_widened(type, wanted[k]) != type)
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

/* Forget the columns the batch remembers (after a rollback, say). */
void
ism_writer_forget_columns(Batch *b)
{
	MemoryContextReset(b->columns_context);
	b->column_names = b->column_types = b->column_type_sql = NIL;
}

/*
 * Make the table fit the flush's records (see plan_ddl).  Writers that
 * change the same table take turns: the second sees the first's columns.
 * Known columns skip all of it (see cached_columns_fit).
 */
void
ism_writer_ensure_columns(Flush *f)
{
	Batch	   *b = f->batch;
	char	   *qualified = psprintf("%s.%s", quote_identifier(ism_data_schema),
									 quote_identifier(b->config.table));
	int			nkeys = list_length(f->keys);
	IsmTypeSet *wanted = value_types(f, ism_writer_records_to_apply(f));
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
	if (f->widened)
		widening_exactly();
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

/*-------------------------------------------------------------------------
 *
 * copy_text.c
 *	  The state-tables writer's records as rows in COPY's text format.
 *
 * The writer feeds its rows to PostgreSQL's COPY machinery from memory
 * (writer_rows.c); this is the text it feeds.  Values are written as
 * TEXT columns take them: strings decoded, numbers as their literal as
 * sent (every digit, 1.0 as 1.0, exponents as written), booleans as
 * true or false, objects and arrays as compact JSON text (each number and
 * string in them as sent), null as NULL.  A string holding NUL cannot be
 * stored (PostgreSQL's text cannot hold it): it is an error naming its
 * key, never cut.  No SPI, no relation: fuzz/fuzz_record_row.c runs it as
 * it is.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "copy_text.h"

/* A value in COPY's text format: backslash escapes for what delimits. */
static void
append_copy_value(StringInfo buf, const char *text)
{
	const char *start = text;
	const char *p;

	for (p = text; *p; p++)
	{
		char		c = *p;

		if (c != '\\' && c != '\t' && c != '\n' && c != '\r')
			continue;
		appendBinaryStringInfo(buf, start, p - start);
		appendStringInfoString(buf, c == '\\' ? "\\\\" : c == '\t' ? "\\t" :
							   c == '\n' ? "\\n" : "\\r");
		start = p + 1;
	}
	appendBinaryStringInfo(buf, start, p - start);
}

/*
 * Why the record cannot be stored as it is: a name or a string holding
 * NUL (\u0000 in the message), which no column name and no text can hold,
 * and which the writer will not cut.  NULL when it can.  Its key is named
 * as sent.  The value of key replaced (when not NULL) is not looked at:
 * the writer replaces it (_timestamp).
 */
char *
ism_record_nul_error(const IsmJson *record, const char *replaced)
{
	const IsmJson *field;

	ism_json_foreach(field, record)
	{
		if (replaced && strcmp(field->key, replaced) == 0 && !(field->flags & ISM_JSON_KEY_NUL))
			continue;
		if (field->flags & ISM_JSON_KEY_NUL)
			return psprintf("record key %.*s holds \\u0000, which no column name can hold",
							field->key_text_len, field->key_text);
		if (field->type == ISM_JSON_STRING && (field->flags & ISM_JSON_NUL))
			return psprintf("record key %.*s: its string holds \\u0000, which PostgreSQL text cannot hold",
							field->key_text_len, field->key_text);
	}
	return NULL;
}

/*
 * A record value in COPY's text format (see the header); json is scratch
 * space.
 */
static void
append_copy_field(StringInfo buf, const IsmJson *v, StringInfo json)
{
	if (v == NULL || v->type == ISM_JSON_NULL)
		appendStringInfoString(buf, "\\N");
	else if (v->type == ISM_JSON_STRING)
		append_copy_value(buf, v->str);
	else if (v->type == ISM_JSON_ARRAY || v->type == ISM_JSON_OBJECT)
	{
		resetStringInfo(json);
		ism_json_append(json, v);
		append_copy_value(buf, json->data);
	}
	else
		appendBinaryStringInfo(buf, v->text, v->len);	/* nothing to escape */
}

/* A record value as the text a column takes (see append_copy_field); NULL for null. */
static char *
field_text(const IsmJson *v)
{
	if (v == NULL || v->type == ISM_JSON_NULL)
		return NULL;
	if (v->type == ISM_JSON_STRING)
		return pstrdup(v->str);
	return ism_json_print(v);
}

/*
 * The position of key in keys, -1 when it is not there.  Records mostly
 * list their keys in the same order, so the one at pos (the field's own
 * position in its record; -1 for none) is tried first.
 */
int
ism_column_index(List *keys, int pos, const char *key)
{
	ListCell   *lc;

	if (pos >= 0 && pos < list_length(keys) && strcmp(list_nth(keys, pos), key) == 0)
		return pos;
	foreach(lc, keys)
		if (strcmp(lfirst(lc), key) == 0)
		return foreach_current_index(lc);
	return -1;
}

/* A record field's column: every key of every record must be one. */
static int
column_of(List *keys, int pos, const char *key)
{
	int			column = ism_column_index(keys, pos, key);

	if (column < 0)
		elog(ERROR, "record key \"%s\" is not one of the columns", key);
	return column;
}

/*
 * The record's fields by column of keys (NULL where it has none).  Of a key
 * given twice the parser kept the last value (json.c).
 */
static void
fields_by_column(List *keys, const IsmJson *record, const IsmJson **values)
{
	const IsmJson *field;
	int			pos = 0;
	char	   *error;

	if ((record->flags & ISM_JSON_NUL) && (error = ism_record_nul_error(record, NULL)) != NULL)
		elog(ERROR, "%s", error);
	memset(values, 0, sizeof(IsmJson *) * list_length(keys));
	ism_json_foreach(field, record)
		values[column_of(keys, pos++, field->key)] = field;
}

/*
 * A record (an object) as one text value per column of keys, NULL for a
 * null or missing value: what ism_copy_text would give COPY.
 */
void
ism_record_texts(List *keys, const IsmJson *record, char **texts)
{
	int			ncols = list_length(keys);
	const IsmJson **values = palloc(sizeof(IsmJson *) * ncols);

	fields_by_column(keys, record, values);
	for (int c = 0; c < ncols; c++)
		texts[c] = field_text(values[c]);
	pfree(values);
}

/*
 * The records (objects, IsmJson *) as COPY text, one line each, a column
 * for each of keys (char *) in that order: every key of every record must
 * be one.  A key a record does not have is NULL.
 */
StringInfo
ism_copy_text(List *keys, List *rows)
{
	int			ncols = list_length(keys);
	const IsmJson **values = palloc(sizeof(IsmJson *) * ncols);
	StringInfo	buf = makeStringInfo();
	StringInfo	json = makeStringInfo();
	ListCell   *lc;

	foreach(lc, rows)
	{
		fields_by_column(keys, lfirst(lc), values);
		for (int c = 0; c < ncols; c++)
		{
			if (c > 0)
				appendStringInfoChar(buf, '\t');
			append_copy_field(buf, values[c], json);
		}
		appendStringInfoChar(buf, '\n');
	}
	pfree(values);
	pfree(json->data);
	pfree(json);
	return buf;
}

/*-------------------------------------------------------------------------
 *
 * copy_text.c
 *	  The state-tables writer's records as rows in COPY's text format.
 *
 * The writer feeds its rows to PostgreSQL's COPY machinery from memory
 * (writer.c); this is the text it feeds.  Values are written as TEXT
 * columns take them, as upstream: strings as they are, numbers and
 * booleans in their JSON form, objects and arrays as compact JSON, null
 * as NULL.  No SPI, no relation: fuzz/fuzz_record_row.c runs it as it is.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <cjson/cJSON.h>

#include "copy_text.h"
#include "json.h"

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
 * A record value in COPY's text format: strings as they are, numbers and
 * booleans in their JSON text, objects and arrays as compact JSON, null as
 * \N.  json is scratch space.
 */
static void
append_copy_field(StringInfo buf, const cJSON *v, StringInfo json)
{
	if (v == NULL || cJSON_IsNull(v))
		appendStringInfoString(buf, "\\N");
	else if (cJSON_IsString(v))
		append_copy_value(buf, v->valuestring);
	else if (cJSON_IsNumber(v) || cJSON_IsBool(v))
		ism_json_append(buf, v);	/* nothing to escape */
	else
	{
		resetStringInfo(json);
		ism_json_append(json, v);
		append_copy_value(buf, json->data);
	}
}

/* A record value as the text a column takes (see append_copy_field); NULL for null. */
static char *
field_text(const cJSON *v)
{
	StringInfoData buf;

	if (v == NULL || cJSON_IsNull(v))
		return NULL;
	if (cJSON_IsString(v))
		return pstrdup(v->valuestring);
	initStringInfo(&buf);
	ism_json_append(&buf, v);
	return buf.data;
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

/* The record's fields by column of keys (NULL where it has none; the last of a key twice). */
static void
fields_by_column(List *keys, const cJSON *record, const cJSON **values)
{
	const cJSON *field;
	int			pos = 0;

	memset(values, 0, sizeof(cJSON *) * list_length(keys));
	cJSON_ArrayForEach(field, record)
		values[column_of(keys, pos++, field->string)] = field;
}

/*
 * A record (a cJSON object) as one text value per column of keys, NULL
 * for a null or missing value: what ism_copy_text would give COPY.
 */
void
ism_record_texts(List *keys, const cJSON *record, char **texts)
{
	int			ncols = list_length(keys);
	const cJSON **values = palloc(sizeof(cJSON *) * ncols);

	fields_by_column(keys, record, values);
	for (int c = 0; c < ncols; c++)
		texts[c] = field_text(values[c]);
	pfree(values);
}

/*
 * The records (cJSON objects) as COPY text, one line each, a column for
 * each of keys (char *) in that order: every key of every record must be
 * one.  A key a record does not have is NULL; of a key it has twice, the
 * last value counts (as in Python's json.loads).
 */
StringInfo
ism_copy_text(List *keys, List *rows)
{
	int			ncols = list_length(keys);
	const cJSON **values = palloc(sizeof(cJSON *) * ncols);
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

/*
 * fuzz_record_row.c
 *	  libFuzzer target: the writer's records as COPY text (copy_text.c).
 *	  The input is a record (a JSON object) or a list of them, as in a
 *	  message's "query_state"; the columns are their keys, first seen
 *	  first, as the writer makes them.  Each record must become one line
 *	  of exactly one field per column: no tab, newline or carriage return
 *	  inside a field, only the escapes \\, \t, \n and \r, and decoding a
 *	  field gives back the value: the string itself, the JSON text of any
 *	  other value (ism_json_print), \N for null or missing.  With
 *	  "columnTypes": "infer", the text must also be what the column's
 *	  inferred type (column_types.c) reads back as the same value, and
 *	  valid UTF-8 in must stay valid UTF-8 (COPY checks it).
 */
#include "postgres.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "mb/pg_wchar.h"

#include "column_types.h"
#include "copy_text.h"
#include "json.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern void shim_reset(void);

/* The last value of key in record (the one the row must have), or NULL. */
static const cJSON *
value_of(const cJSON *record, const char *key)
{
	const cJSON *found = NULL;
	const cJSON *field;

	cJSON_ArrayForEach(field, record)
		if (strcmp(field->string, key) == 0)
		found = field;
	return found;
}

/* A field of COPY text decoded; aborts on any escape the writer does not make. */
static char *
decode_field(const char *field, size_t len)
{
	char	   *out = palloc(len + 1);
	char	   *o = out;

	for (size_t i = 0; i < len; i++)
	{
		if (field[i] == '\t' || field[i] == '\n' || field[i] == '\r' || field[i] == '\0')
			abort();			/* a delimiter inside a field */
		if (field[i] != '\\')
		{
			*o++ = field[i];
			continue;
		}
		if (++i == len)
			abort();			/* a lone backslash at the end */
		switch (field[i])
		{
			case '\\':
				*o++ = '\\';
				break;
			case 't':
				*o++ = '\t';
				break;
			case 'n':
				*o++ = '\n';
				break;
			case 'r':
				*o++ = '\r';
				break;
			default:
				abort();		/* \N inside a field, \., octal...: not ours */
		}
	}
	*o = '\0';
	return out;
}

/* The text reads back as the value in a column of the inferred type. */
static void
check_typed(IsmColumnType type, const cJSON *v, const char *text)
{
	char	   *end;
	cJSON	   *parsed;

	errno = 0;
	switch (type)
	{
		case ISM_COL_BIGINT:
			{
				long long	n = strtoll(text, &end, 10);

				if (*text == '\0' || *end != '\0' || errno != 0 ||
					strspn(text, "-0123456789") != strlen(text) ||
					(double) n != v->valuedouble)
					abort();
				break;
			}
		case ISM_COL_DOUBLE:
			{
				double		d = strtod(text, &end);

				if (*text == '\0' || *end != '\0' || !isfinite(d) ||
					(errno == ERANGE && d == 0.0) || d != v->valuedouble)
					abort();
				break;
			}
		case ISM_COL_BOOLEAN:
			if (strcmp(text, cJSON_IsTrue(v) ? "true" : "false") != 0)
				abort();
			break;
		case ISM_COL_JSONB:
			parsed = cJSON_Parse(text);
			if (parsed == NULL || strcmp(ism_json_print(parsed), text) != 0)
				abort();
			cJSON_Delete(parsed);
			break;
		default:
			break;				/* text takes anything; _timestamp is the writer's */
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool initialised = false;
	cJSON	   *root;
	const cJSON *item;
	List	   *rows = NIL;
	List	   *keys = NIL;
	int			ncols;
	IsmColumnType *types;
	StringInfo	text;
	char	   *line;
	ListCell   *lc;

	if (!initialised)
	{
		ism_json_init();
		initialised = true;
	}
	root = cJSON_ParseWithLength((const char *) data, size);
	/* what the writer takes: objects, all numbers finite (add_message) */
	if (root == NULL || !ism_json_all_finite(root))
		goto done;
	if (cJSON_IsObject(root))
		rows = list_make1(root);
	else if (cJSON_IsArray(root))
	{
		cJSON_ArrayForEach(item, root)
			if (cJSON_IsObject(item))
			rows = lappend(rows, (void *) item);
	}

	/* the columns, as keys_of() in writer.c */
	foreach(lc, rows)
	{
		const cJSON *field;

		cJSON_ArrayForEach(field, (cJSON *) lfirst(lc))
		{
			ListCell   *kc;
			bool		known = false;

			foreach(kc, keys)
				known |= strcmp(lfirst(kc), field->string) == 0;
			if (!known)
				keys = lappend(keys, field->string);
		}
	}
	ncols = list_length(keys);

	/* the columns' types with "columnTypes": "infer", as value_types() */
	types = palloc0(sizeof(IsmColumnType) * (ncols + 1));
	foreach(lc, rows)
	{
		for (int c = 0; c < ncols; c++)
		{
			const cJSON *v = value_of(lfirst(lc), list_nth(keys, c));

			if (v)
				types[c] = ism_column_type_merge(types[c],
												 ism_value_column_type(list_nth(keys, c), v, true));
		}
	}

	text = ism_copy_text(keys, rows);
	if (strlen(text->data) != text->len)
		abort();				/* a NUL in the COPY text */
	if (pg_encoding_verifymbstr(PG_UTF8, (const char *) data, size) == (int) size &&
		pg_encoding_verifymbstr(PG_UTF8, text->data, text->len) != text->len)
		abort();				/* valid UTF-8 in, invalid out */

	line = text->data;
	foreach(lc, rows)
	{
		char	   *eol = strchr(line, '\n');
		char	   *field = line;

		if (eol == NULL)
			abort();			/* fewer lines than records */
		for (int c = 0; c < ncols; c++)
		{
			char	   *tab = c < ncols - 1 ? memchr(field, '\t', eol - field) : eol;
			const cJSON *v = value_of(lfirst(lc), list_nth(keys, c));
			size_t		len;
			char	   *decoded;

			if (tab == NULL)
				abort();		/* fewer fields than columns */
			len = tab - field;
			if (v == NULL || cJSON_IsNull(v))
			{
				if (len != 2 || strncmp(field, "\\N", 2) != 0)
					abort();	/* null or missing, but not \N */
			}
			else
			{
				decoded = decode_field(field, len);
				if (strcmp(decoded, cJSON_IsString(v) ? v->valuestring : ism_json_print(v)) != 0)
					abort();	/* the field is not the value */
				check_typed(types[c], v, decoded);
			}
			field = tab + 1;
		}
		if (ncols == 0 && eol != line)
			abort();			/* no columns, yet something on the line */
		line = eol + 1;
	}
	if (*line != '\0')
		abort();				/* more lines than records */

done:
	cJSON_Delete(root);
	shim_reset();				/* as the flush's memory context is */
	return 0;
}

/*
 * fuzz_record_row.c
 *	  libFuzzer target: the writer's records as COPY text (copy_text.c).
 *	  The input is a record (a JSON object) or a list of them, as in a
 *	  message's "query_state"; the columns are their keys, first seen
 *	  first, as the writer makes them.  Each record must become one line
 *	  of exactly one field per column: no tab, newline or carriage return
 *	  inside a field, only the escapes \\, \t, \n and \r, and decoding a
 *	  field gives back the value as sent: the string itself, a number's
 *	  literal, the compact JSON text of any other value (ism_json_print),
 *	  \N for null or missing.  A record whose key or string holds NUL
 *	  (\u0000) is an error naming the key, never a row cut short.  With
 *	  "columnTypes": "infer", the column's type (column_types.c) must
 *	  read every value back exactly: bigint an integer literal in its
 *	  range, double precision a number whose nearest double prints as the
 *	  same decimal value (checked here by a decimal normalisation of its
 *	  own), numeric a number within numeric's digits, jsonb JSON that
 *	  PostgreSQL decodes (no \u0000) with such numbers only.  Valid UTF-8
 *	  in must stay valid UTF-8 (COPY checks it).
 */
#include "postgres.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "common/jsonapi.h"
#include "common/shortest_dec.h"
#include "mb/pg_wchar.h"

#include "column_types.h"
#include "copy_text.h"
#include "json.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern void shim_reset(void);
extern const char *shim_error_message(void);

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

/*
 * A decimal number's value, normalised on its own terms (not json_number.c's):
 * "-" if negative, its significant digits, "e", the exponent of the last
 * one; "0" for zero.  *scale gets the digits after the point as written,
 * *int_digits those before it of the value; false if text is no number.
 */
static bool
canonical(const char *text, char **out, long *scale, long *int_digits)
{
	StringInfoData digits;
	const char *p = text;
	bool		negative = false;
	long		exponent = 0;
	long		frac = 0;
	bool		point = false;
	char	   *end;
	int			first;
	int			last;

	initStringInfo(&digits);
	if (*p == '-')
	{
		negative = true;
		p++;
	}
	for (; isdigit((unsigned char) *p) || (*p == '.' && !point); p++)
	{
		if (*p == '.')
			point = true;
		else
		{
			appendStringInfoChar(&digits, *p);
			frac += point;
		}
	}
	if (digits.len == 0)
		return false;
	if (*p == 'e' || *p == 'E')
	{
		exponent = strtol(p + 1, &end, 10);
		if (end == p + 1)
			return false;
		/* beyond any type's range, but short of overflowing below */
		exponent = Max(Min(exponent, 1000000000L), -1000000000L);
		p = end;
	}
	if (*p != '\0')
		return false;
	*scale = Max(frac - exponent, 0);
	for (first = 0; first < digits.len && digits.data[first] == '0'; first++)
		;
	if (first == digits.len)
	{
		*out = pstrdup("0");
		*int_digits = 0;
		return true;
	}
	for (last = digits.len - 1; digits.data[last] == '0'; last--)
		;
	/* the last significant digit's power of ten */
	exponent += (digits.len - 1 - last) - frac;
	*int_digits = (last - first + 1) + exponent;
	*out = psprintf("%s%.*se%ld", negative ? "-" : "", last - first + 1,
					digits.data + first, exponent);
	return true;
}

/*
 * Does jsonb take the JSON text: PostgreSQL's lexer decodes every string
 * (it refuses \u0000, as jsonb does), and numeric takes every number?
 */
static bool
decodes_for_jsonb(const char *json)
{
#if PG_VERSION_NUM >= 170000
	JsonLexContext *lex = makeJsonLexContextCstringLen(NULL, json, strlen(json), PG_UTF8, true);
#else
	JsonLexContext *lex = makeJsonLexContextCstringLen((char *) json, strlen(json), PG_UTF8, true);
#endif

	while (json_lex(lex) == JSON_SUCCESS && lex->token_type != JSON_TOKEN_END)
	{
		char	   *number;
		char	   *c;
		long		scale;
		long		int_digits;

		if (lex->token_type != JSON_TOKEN_NUMBER)
			continue;
		number = pnstrdup(lex->token_start, lex->token_terminator - lex->token_start);
		if (!canonical(number, &c, &scale, &int_digits) || scale > 16383 || int_digits > 131072)
			return false;
	}
	return lex->token_type == JSON_TOKEN_END;
}

/* The text reads back exactly as the value in a column of the inferred type. */
static void
check_typed(IsmColumnType type, const IsmJson *v, const char *text)
{
	char	   *end;
	char	   *sent;
	char	   *back;
	long		scale;
	long		int_digits;
	IsmJson    *parsed;
	char	   *error;

	errno = 0;
	switch (type)
	{
		case ISM_COL_BIGINT:
			(void) strtoll(text, &end, 10);
			if (v->type != ISM_JSON_NUMBER || *text == '\0' || *end != '\0' || errno != 0 ||
				strspn(text, "-0123456789") != strlen(text))
				abort();
			break;
		case ISM_COL_DOUBLE:
			{
				double		d = strtod(text, &end);
				char		shortest[DOUBLE_SHORTEST_DECIMAL_LEN];

				if (v->type != ISM_JSON_NUMBER || *end != '\0' || !isfinite(d))
					abort();
				double_to_shortest_decimal_buf(d, shortest);
				if (!canonical(text, &sent, &scale, &int_digits) ||
					!canonical(shortest, &back, &scale, &int_digits) || strcmp(sent, back) != 0)
					abort();	/* stored rounded */
				break;
			}
		case ISM_COL_NUMERIC:
			if (v->type != ISM_JSON_NUMBER || !canonical(text, &sent, &scale, &int_digits) ||
				scale > 16383 || int_digits > 131072)
				abort();
			break;
		case ISM_COL_BOOLEAN:
			if (strcmp(text, v->type == ISM_JSON_TRUE ? "true" : "false") != 0)
				abort();
			break;
		case ISM_COL_JSONB:
			parsed = ism_json_parse(text, strlen(text), &error);
			if (parsed == NULL || strcmp(ism_json_print(parsed), text) != 0 ||
				!decodes_for_jsonb(text))
				abort();		/* not JSON, or what jsonb refuses */
			break;
		default:
			break;				/* text takes anything; _timestamp is the writer's */
	}
}

/* The records' COPY text, or NULL after the error a record with NUL must give. */
static StringInfo
copy_text(List *keys, List *rows)
{
	char	   *expected = NULL;
	bool		failed = false;
	ListCell   *lc;
	StringInfo	text = NULL;

	foreach(lc, rows)
		if (expected == NULL)
			expected = ism_record_nul_error(lfirst(lc), NULL);
	PG_TRY();
	{
		text = ism_copy_text(keys, rows);
	}
	PG_CATCH();
	{
		failed = true;
	}
	PG_END_TRY();
	if (!failed && expected)
		abort();				/* a record with NUL written: cut */
	if (failed && (expected == NULL || strcmp(shim_error_message(), expected) != 0))
		abort();				/* an error, but not the one naming the key */
	return failed ? NULL : text;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	IsmJson    *root;
	IsmJson    *item;
	List	   *rows = NIL;
	List	   *keys = NIL;
	int			ncols;
	IsmColumnType *types;
	StringInfo	text;
	char	   *line;
	char	   *error;
	ListCell   *lc;

	/* what the writer takes: UTF-8 (add_message), JSON, objects */
	if (pg_encoding_verifymbstr(PG_UTF8, (const char *) data, size) != (int) size)
		goto done;
	root = ism_json_parse((const char *) data, size, &error);
	if (ism_json_is(root, ISM_JSON_OBJECT))
		rows = list_make1(root);
	else if (ism_json_is(root, ISM_JSON_ARRAY))
	{
		ism_json_foreach(item, root)
			if (item->type == ISM_JSON_OBJECT)
			rows = lappend(rows, item);
	}

	/* the columns, as keys_of() in writer_flush.c */
	foreach(lc, rows)
	{
		const IsmJson *field;

		ism_json_foreach(field, (IsmJson *) lfirst(lc))
		{
			ListCell   *kc;
			bool		known = false;

			foreach(kc, keys)
				known |= strcmp(lfirst(kc), field->key) == 0;
			if (!known)
				keys = lappend(keys, (char *) field->key);
		}
	}
	ncols = list_length(keys);

	/* the columns' types with "columnTypes": "infer", as value_types() */
	types = palloc0(sizeof(IsmColumnType) * (ncols + 1));
	for (int c = 0; c < ncols; c++)
	{
		IsmTypeSet	holds = ISM_TYPES_ANY;

		foreach(lc, rows)
			holds &= ism_value_types(list_nth(keys, c), ism_json_get(lfirst(lc), list_nth(keys, c)), true);
		types[c] = ism_column_type_for(holds);
	}

	if ((text = copy_text(keys, rows)) == NULL)
		goto done;
	if (strlen(text->data) != text->len)
		abort();				/* a NUL in the COPY text */
	if (pg_encoding_verifymbstr(PG_UTF8, text->data, text->len) != text->len)
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
			const IsmJson *v = ism_json_get(lfirst(lc), list_nth(keys, c));
			size_t		len;
			char	   *decoded;

			if (tab == NULL)
				abort();		/* fewer fields than columns */
			len = tab - field;
			if (v == NULL || v->type == ISM_JSON_NULL)
			{
				if (len != 2 || strncmp(field, "\\N", 2) != 0)
					abort();	/* null or missing, but not \N */
			}
			else
			{
				decoded = decode_field(field, len);
				if (strcmp(decoded, v->type == ISM_JSON_STRING ? v->str : ism_json_print(v)) != 0)
					abort();	/* the field is not the value */
				if (v->type == ISM_JSON_NUMBER &&
					(strlen(decoded) != (size_t) v->len || memcmp(decoded, v->text, v->len) != 0))
					abort();	/* a number not as sent */
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
	shim_reset();				/* as the flush's memory context is */
	return 0;
}

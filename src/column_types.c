/*-------------------------------------------------------------------------
 *
 * column_types.c
 *	  The writer's column types: which types hold a record value exactly,
 *	  which type a column must have to hold a batch's values.
 *
 * In the default mode ("text") every new column is text, as upstream.  With
 * "columnTypes": "infer" a new column gets the narrowest type that holds
 * all its values exactly -- bigint for integers within its range, double
 * precision for numbers a double reads back as sent (0.1, 1.5e300),
 * numeric for the others (12345678901234567890, 3.141592653589793238),
 * never a type that would round them; boolean, jsonb for objects and
 * arrays, timestamptz for _timestamp, text for strings -- and a column
 * whose later values do not fit is widened to the narrowest type that
 * holds its old values and the new ones exactly: bigint and double
 * precision to numeric, anything to text.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"

#include "column_types.h"
#include "json_number.h"

static const char *const type_names[] = {
	[ISM_COL_NONE] = NULL,
	[ISM_COL_BIGINT] = "bigint",
	[ISM_COL_DOUBLE] = "double precision",
	[ISM_COL_NUMERIC] = "numeric",
	[ISM_COL_BOOLEAN] = "boolean",
	[ISM_COL_JSONB] = "jsonb",
	[ISM_COL_TIMESTAMPTZ] = "timestamp with time zone",
	[ISM_COL_TEXT] = "text",
	[ISM_COL_OTHER] = NULL,
};

/* when several types hold the values: the narrowest first */
static const IsmColumnType preference[] = {
	ISM_COL_BIGINT, ISM_COL_DOUBLE, ISM_COL_NUMERIC, ISM_COL_BOOLEAN,
	ISM_COL_JSONB, ISM_COL_TIMESTAMPTZ, ISM_COL_TEXT,
};

/* The types a number's literal goes into as it is, its value unchanged. */
static IsmTypeSet
number_types(const IsmJson *v)
{
	IsmNumber	n;
	IsmTypeSet	types = ISM_TYPE_BIT(ISM_COL_TEXT);

	if (!ism_number_read(v->text, v->len, &n))
		return types;
	if (ism_number_fits_int64(&n))
		types |= ISM_TYPE_BIT(ISM_COL_BIGINT);
	if (ism_number_fits_double(&n))
		types |= ISM_TYPE_BIT(ISM_COL_DOUBLE);
	if (ism_number_fits_numeric(&n))
		types |= ISM_TYPE_BIT(ISM_COL_NUMERIC);
	return types;
}

/*
 * Does jsonb take the container: no string or name in it holds NUL (jsonb
 * refuses \u0000) and numeric takes every number in it (jsonb's numbers
 * are numeric)?
 */
static bool
jsonb_holds(const IsmJson *v)
{
	const IsmJson *m;
	IsmNumber	n;

	if (v->flags & ISM_JSON_NUL)
		return false;
	check_stack_depth();		/* depth is bounded by parsing */
	ism_json_foreach(m, v)
	{
		if (m->type == ISM_JSON_NUMBER &&
			!(ism_number_read(m->text, m->len, &n) && ism_number_fits_numeric(&n)))
			return false;
		if ((m->type == ISM_JSON_ARRAY || m->type == ISM_JSON_OBJECT) && !jsonb_holds(m))
			return false;
	}
	return true;
}

/*
 * The types that hold a value of key exactly (ISM_TYPES_ANY for null, which
 * fits anything); without infer, text.  Every value fits text, but a string
 * holding NUL, which the writer refuses before it gets here.
 */
IsmTypeSet
ism_value_types(const char *key, const IsmJson *v, bool infer)
{
	IsmTypeSet	text = ISM_TYPE_BIT(ISM_COL_TEXT);

	if (v == NULL || v->type == ISM_JSON_NULL)
		return ISM_TYPES_ANY;
	if (!infer)
		return text;
	switch (v->type)
	{
		case ISM_JSON_TRUE:
		case ISM_JSON_FALSE:
			return ISM_TYPE_BIT(ISM_COL_BOOLEAN) | text;
		case ISM_JSON_NUMBER:
			return number_types(v);
		case ISM_JSON_ARRAY:
		case ISM_JSON_OBJECT:
			return (jsonb_holds(v) ? ISM_TYPE_BIT(ISM_COL_JSONB) : 0) | text;
		default:
			if (strcmp(key, "_timestamp") == 0)
				return ISM_TYPE_BIT(ISM_COL_TIMESTAMPTZ) | text;
			return text;
	}
}

/* The narrowest type of types; text for a column of nulls only. */
IsmColumnType
ism_column_type_for(IsmTypeSet types)
{
	if (types == ISM_TYPES_ANY)
		return ISM_COL_TEXT;
	for (int i = 0; i < (int) lengthof(preference); i++)
		if (types & ISM_TYPE_BIT(preference[i]))
			return preference[i];
	return ISM_COL_TEXT;
}

/*
 * The types a column's values can be converted to exactly (as text, see
 * writer_schema.c): bigint and double precision to numeric, all to text.
 */
static IsmTypeSet
convertible(IsmColumnType column)
{
	IsmTypeSet	types = ISM_TYPE_BIT(column) | ISM_TYPE_BIT(ISM_COL_TEXT);

	if (column == ISM_COL_BIGINT || column == ISM_COL_DOUBLE)
		types |= ISM_TYPE_BIT(ISM_COL_NUMERIC);
	return types;
}

/*
 * The type a column must have to hold its values and values of types: its
 * own when it holds them, else the narrowest its values convert to that
 * holds them too.  A new column (ISM_COL_NONE) takes the narrowest of
 * types; one of a type the writer did not make (ISM_COL_OTHER) stays as it
 * is (its input function takes a value or refuses it).
 */
IsmColumnType
ism_column_type_widened(IsmColumnType column, IsmTypeSet types)
{
	if (column == ISM_COL_NONE)
		return ism_column_type_for(types);
	if (column == ISM_COL_OTHER || (types & ISM_TYPE_BIT(column)))
		return column;
	return ism_column_type_for(convertible(column) & types);
}

const char *
ism_column_type_sql(IsmColumnType type)
{
	return type_names[type];
}

/* A column's type from its SQL name (format_type_be), ISM_COL_OTHER if not one of ours. */
IsmColumnType
ism_column_type_from_sql(const char *name)
{
	for (int t = ISM_COL_BIGINT; t <= ISM_COL_TEXT; t++)
		if (strcmp(type_names[t], name) == 0)
			return (IsmColumnType) t;
	return ISM_COL_OTHER;
}

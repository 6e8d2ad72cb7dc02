/*-------------------------------------------------------------------------
 *
 * column_types.c
 *	  The writer's column types: which type a record value asks for, which
 *	  type a column must become to take a batch's values.
 *
 * In the default mode ("text") every new column is text, as upstream.  With
 * "columnTypes": "infer" a new column gets the type of its values — bigint
 * for whole numbers, double precision for other numbers, boolean, jsonb
 * for objects and arrays, timestamptz for _timestamp, text for strings —
 * and a column whose later values do not fit is widened: bigint to double
 * precision for fractions, anything else to text.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include <cjson/cJSON.h>

#include "column_types.h"

/* integers beyond 2^53 are not exact in a JSON number parsed as a double */
#define MAX_EXACT_INTEGER	9007199254740992.0

static const char *const type_names[] = {
	[ISM_COL_NONE] = NULL,
	[ISM_COL_BIGINT] = "bigint",
	[ISM_COL_DOUBLE] = "double precision",
	[ISM_COL_BOOLEAN] = "boolean",
	[ISM_COL_JSONB] = "jsonb",
	[ISM_COL_TIMESTAMPTZ] = "timestamp with time zone",
	[ISM_COL_TEXT] = "text",
	[ISM_COL_OTHER] = NULL,
};

static bool
is_whole_number(const cJSON *v)
{
	double		d = v->valuedouble;

	return isfinite(d) && floor(d) == d && fabs(d) <= MAX_EXACT_INTEGER;
}

/* What a value asks for; ISM_COL_NONE for null, which fits anything. */
IsmColumnType
ism_value_column_type(const char *key, const cJSON *v, bool infer)
{
	if (cJSON_IsNull(v))
		return ISM_COL_NONE;
	if (!infer)
		return ISM_COL_TEXT;
	if (cJSON_IsBool(v))
		return ISM_COL_BOOLEAN;
	if (cJSON_IsNumber(v))
		return is_whole_number(v) ? ISM_COL_BIGINT : ISM_COL_DOUBLE;
	if (cJSON_IsObject(v) || cJSON_IsArray(v))
		return ISM_COL_JSONB;
	if (strcmp(key, "_timestamp") == 0)
		return ISM_COL_TIMESTAMPTZ;
	return ISM_COL_TEXT;
}

/*
 * The type a column must have to hold values of both types: the same type,
 * double precision for bigint and double, text otherwise.  A column of a
 * type the writer did not make (ISM_COL_OTHER) stays as it is.
 */
IsmColumnType
ism_column_type_merge(IsmColumnType column, IsmColumnType value)
{
	if (column == ISM_COL_OTHER || value == ISM_COL_NONE || column == value)
		return column;
	if (column == ISM_COL_NONE)
		return value;
	if ((column == ISM_COL_BIGINT && value == ISM_COL_DOUBLE) ||
		(column == ISM_COL_DOUBLE && value == ISM_COL_BIGINT))
		return ISM_COL_DOUBLE;
	return ISM_COL_TEXT;
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

/*-------------------------------------------------------------------------
 *
 * view_columns.c
 *	  Column values of the pg_stat_ism_* views, where "never" and "none"
 *	  are shown as NULL (stats.c, counters.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "view_columns.h"

/* A view column: NULL for 0 (never) */
Datum
ism_timestamp_or_null(TimestampTz ts, bool *isnull)
{
	*isnull = (ts == 0);
	return TimestampTzGetDatum(ts);
}

/* A view column: NULL for an empty string */
Datum
ism_text_or_null(const char *s, bool *isnull)
{
	*isnull = (s[0] == '\0');
	return *isnull ? (Datum) 0 : CStringGetTextDatum(s);
}

/*-------------------------------------------------------------------------
 *
 * view_columns.h
 *	  Column values of the pg_stat_ism_* views (view_columns.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_VIEW_COLUMNS_H
#define ISM_VIEW_COLUMNS_H

#include "datatype/timestamp.h"

extern Datum ism_timestamp_or_null(TimestampTz ts, bool *isnull);
extern Datum ism_text_or_null(const char *s, bool *isnull);

#endif							/* ISM_VIEW_COLUMNS_H */

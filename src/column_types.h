/*-------------------------------------------------------------------------
 *
 * column_types.h
 *	  Column types of the state-tables writer (column_types.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_COLUMN_TYPES_H
#define ISM_COLUMN_TYPES_H

typedef enum IsmColumnType
{
	ISM_COL_NONE,				/* no value yet (null): fits any column */
	ISM_COL_BIGINT,
	ISM_COL_DOUBLE,
	ISM_COL_BOOLEAN,
	ISM_COL_JSONB,
	ISM_COL_TIMESTAMPTZ,
	ISM_COL_TEXT,
	ISM_COL_OTHER				/* a type the writer does not make */
} IsmColumnType;

struct cJSON;

extern IsmColumnType ism_value_column_type(const char *key, const struct cJSON *v,
										   bool infer);
extern IsmColumnType ism_column_type_merge(IsmColumnType column, IsmColumnType value);
extern const char *ism_column_type_sql(IsmColumnType type);
extern IsmColumnType ism_column_type_from_sql(const char *name);

#endif							/* ISM_COLUMN_TYPES_H */

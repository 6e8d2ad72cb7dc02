/*-------------------------------------------------------------------------
 *
 * column_types.h
 *	  Column types of the state-tables writer (column_types.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_COLUMN_TYPES_H
#define ISM_COLUMN_TYPES_H

#include "json.h"

typedef enum IsmColumnType
{
	ISM_COL_NONE,				/* no value yet (null): fits any column */
	ISM_COL_BIGINT,
	ISM_COL_DOUBLE,
	ISM_COL_NUMERIC,
	ISM_COL_BOOLEAN,
	ISM_COL_JSONB,
	ISM_COL_TIMESTAMPTZ,
	ISM_COL_TEXT,
	ISM_COL_OTHER				/* a type the writer does not make */
} IsmColumnType;

/* A set of the writer's column types, one bit each: the types that hold values exactly. */
typedef uint16 IsmTypeSet;

#define ISM_TYPE_BIT(t)		((IsmTypeSet) (1 << (t)))
#define ISM_TYPES_ANY		((IsmTypeSet) 0xFFFF)	/* no value to hold (only nulls) */

extern IsmTypeSet ism_value_types(const char *key, const IsmJson *v, bool infer);
extern IsmColumnType ism_column_type_for(IsmTypeSet types);
extern IsmColumnType ism_column_type_widened(IsmColumnType column, IsmTypeSet types);
extern const char *ism_column_type_sql(IsmColumnType type);
extern IsmColumnType ism_column_type_from_sql(const char *name);

#endif							/* ISM_COLUMN_TYPES_H */

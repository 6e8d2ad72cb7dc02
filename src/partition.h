/*-------------------------------------------------------------------------
 *
 * partition.h
 *	  The partition key of an outbound message (partition.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_PARTITION_H
#define ISM_PARTITION_H

#include "json.h"

/* A processor's concurrencyMode (ismcore ConcurrencyMode). */
typedef enum IsmPartitionMode
{
	ISM_PARTITION_PROJECT_ID,
	ISM_PARTITION_USER_ID,
	ISM_PARTITION_ROUTE_ID,
	ISM_PARTITION_EXPRESSION
} IsmPartitionMode;

/* The spellings ism_partition_mode() knows, for error messages. */
#define ISM_PARTITION_MODES \
	"\"project-id\", \"user-id\", \"route-id\", \"expression\" (or PROJECT_ID, USER_ID, ROUTE_ID, EXPRESSION)"

extern bool ism_partition_mode(const char *name, IsmPartitionMode *mode);
extern char *ism_partition_key(IsmPartitionMode mode, const char *expression,
							   const char *project_id, const char *route_id,
							   const IsmJson *context, const IsmJson *data,
							   const char **fallback);

#endif							/* ISM_PARTITION_H */

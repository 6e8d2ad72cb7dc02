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

extern char *ism_partition_key(const char *mode, const char *expression,
							   const char *project_id, const char *route_id,
							   const IsmJson *context, const IsmJson *data);

#endif							/* ISM_PARTITION_H */

/*-------------------------------------------------------------------------
 *
 * processor_props.h
 *	  The processor properties the router uses, read as the platform's
 *	  pydantic model reads them (processor_props.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_PROCESSOR_PROPS_H
#define ISM_PROCESSOR_PROPS_H

#include "json.h"
#include "partition.h"

typedef struct IsmProcessorProps
{
	int			max_batch_size; /* rows per page of a replay */
	int			max_batch_limit;	/* entries per message of a replay */
	IsmPartitionMode concurrency_mode;
	const char *concurrency_expression; /* NULL when none */
} IsmProcessorProps;

extern bool ism_processor_props_read(const IsmJson *props, const char *processor_id,
									 IsmProcessorProps *out, char **error);

#endif							/* ISM_PROCESSOR_PROPS_H */

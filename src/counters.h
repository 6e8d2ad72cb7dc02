/*-------------------------------------------------------------------------
 *
 * counters.h
 *	  Per-route and per-table counters in shared memory (counters.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_COUNTERS_H
#define ISM_COUNTERS_H

#include "datatype/timestamp.h"

typedef enum IsmRouteCounter
{
	ISM_RC_RECEIVED,			/* fetched from the route's consumer */
	ISM_RC_ROUTED,				/* handled: forwarded, or written to a table */
	ISM_RC_PUBLISHED,			/* published to the route's subject */
	ISM_RC_ACKED,
	ISM_RC_NAKED,
	ISM_RC_TERMINATED,
	ISM_RC_FAILED,				/* FAILED status and dead letter */
	ISM_RC_BYTES_IN,
	ISM_RC_BYTES_OUT,
	ISM_RC_REDELIVERIES,		/* received again */
	ISM_NUM_ROUTE_COUNTERS
} IsmRouteCounter;

typedef enum IsmTableCounter
{
	ISM_TC_RECORDS,
	ISM_TC_BATCHES,
	ISM_TC_DDL,
	ISM_TC_FLUSH_US,
	ISM_TC_DEAD_LETTERS,
	ISM_TC_FAILED_FLUSHES,		/* rolled back, to be retried */
	ISM_NUM_TABLE_COUNTERS
} IsmTableCounter;

extern void ism_counters_request_shmem(void);
extern void ism_counters_startup_shmem(void);
extern void ism_counters_attach_worker(int worker);
extern void ism_count_route(const char *selector, IsmRouteCounter counter, int64 n);
extern void ism_route_error(const char *selector, const char *error);
extern void ism_count_table(const char *table, IsmTableCounter counter, int64 n);
extern void ism_table_flushed(const char *table, int64 records, int64 ddl, int64 flush_us);
extern void ism_table_pending(const char *table, int64 records, int64 bytes,
							  TimestampTz oldest);
extern void ism_table_error(const char *table, const char *error);

#endif							/* ISM_COUNTERS_H */

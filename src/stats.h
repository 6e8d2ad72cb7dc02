/*-------------------------------------------------------------------------
 *
 * stats.h
 *	  Shared-memory status of the ism_state workers, the changes they
 *	  follow, and pg_stat_ism_worker (stats.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_STATS_H
#define ISM_STATS_H

#include "nats_conn.h"

/* What a worker does.  Slot 0 is the router; slots 1..N are writers. */
typedef enum IsmWorkerRole
{
	ISM_ROLE_ROUTER,
	ISM_ROLE_WRITER
} IsmWorkerRole;

/* The worker's own lifecycle, as shown in pg_stat_ism_worker.state. */
typedef enum IsmWorkerState
{
	ISM_WORKER_STOPPED,
	ISM_WORKER_STARTING,
	ISM_WORKER_WAITING_FOR_EXTENSION,
	ISM_WORKER_CONFIG_ERROR,
	ISM_WORKER_CONNECTING,
	ISM_WORKER_RUNNING,
	ISM_WORKER_WAITING_FOR_STANDBY, /* acks wait for the WAL (ack_gate.c) */
	ISM_WORKER_STOPPING
} IsmWorkerState;

/* Committed changes the workers follow (see ism_notify_change). */
typedef enum IsmChange
{
	ISM_CHANGE_ROUTES,			/* ism_state.route */
	ISM_CHANGE_REPLAYS,			/* dead letters asked to be replayed */
	ISM_NUM_CHANGES
} IsmChange;

extern const char *ism_worker_role_name(IsmWorkerRole role);

extern void ism_stats_request_shmem(void);
extern void ism_stats_startup_shmem(void);
extern void ism_stats_attach_worker(int slot, IsmWorkerRole role);
extern void ism_stats_set_state(IsmWorkerState state);
extern void ism_stats_set_nats(IsmNatsState state, const char *server,
							   int64 reconnects);
extern void ism_stats_set_error(const char *message);
extern void ism_stats_set_in_flight(int n);
extern void ism_report_activity(bool running, const char *what);
extern void ism_stats_touch(void);

extern void ism_notify_change(IsmChange change);
extern uint64 ism_change_generation(IsmChange change);

#endif							/* ISM_STATS_H */

/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Shared-memory status of the ism_state workers, and the functions
 *	  behind the pg_stat_ism_* views.
 *
 * Each worker owns one slot and is its only writer.  A per-slot spinlock
 * guards it: holders copy a few hundred bytes and let go, so a reader never
 * makes the worker wait, nor the other way round.  The array is sized at
 * postmaster start (ism_state.writer_workers is PGC_POSTMASTER).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "stats.h"
#include "counters.h"
#include "nats_conn.h"
#include "settings.h"
#include "view_columns.h"

#define ISM_SERVER_LEN	256
#define ISM_ERROR_LEN	512
#define ISM_ACTIVITY_LEN 128

typedef struct IsmWorkerSlot
{
	slock_t		mutex;
	pid_t		pid;			/* 0 when not running */
	int			pgprocno;		/* to set the worker's latch (a ProcNumber
								 * from 17) */
	IsmWorkerRole role;
	IsmWorkerState state;
	IsmNatsState nats_state;
	int64		reconnects;		/* connections regained after a loss */
	TimestampTz started_at;
	TimestampTz connected_since;
	TimestampTz last_activity;
	TimestampTz last_error_at;
	char		nats_server[ISM_SERVER_LEN];	/* password masked */
	char		last_error[ISM_ERROR_LEN];
	int			in_flight;		/* fetched, not yet acked, nak'ed or termed */
	char		activity[ISM_ACTIVITY_LEN];
} IsmWorkerSlot;

typedef struct IsmSharedState
{
	/* bumped by each committed change of that kind, see ism_notify_change */
	pg_atomic_uint64 generation[ISM_NUM_CHANGES];
	int			nslots;
	IsmWorkerSlot slots[FLEXIBLE_ARRAY_MEMBER];
} IsmSharedState;

static IsmSharedState *ism_shared = NULL;
static IsmWorkerSlot *my_slot = NULL;

static int
ism_slot_count(void)
{
	return 1 + ism_writer_workers;
}

static Size
ism_shmem_size(void)
{
	return add_size(offsetof(IsmSharedState, slots),
					mul_size(ism_slot_count(), sizeof(IsmWorkerSlot)));
}

void
ism_stats_request_shmem(void)
{
	RequestAddinShmemSpace(ism_shmem_size());
}

void
ism_stats_startup_shmem(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ism_shared = ShmemInitStruct("ism_state", ism_shmem_size(), &found);
	if (!found)
	{
		memset(ism_shared, 0, ism_shmem_size());
		for (int c = 0; c < ISM_NUM_CHANGES; c++)
			pg_atomic_init_u64(&ism_shared->generation[c], 0);
		ism_shared->nslots = ism_slot_count();
		for (int i = 0; i < ism_shared->nslots; i++)
		{
			SpinLockInit(&ism_shared->slots[i].mutex);
			ism_shared->slots[i].role = i == 0 ? ISM_ROLE_ROUTER : ISM_ROLE_WRITER;
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

const char *
ism_worker_role_name(IsmWorkerRole role)
{
	return role == ISM_ROLE_ROUTER ? "router" : "writer";
}

static const char *
worker_state_name(IsmWorkerState state)
{
	switch (state)
	{
		case ISM_WORKER_STOPPED:
			return "stopped";
		case ISM_WORKER_STARTING:
			return "starting";
		case ISM_WORKER_WAITING_FOR_EXTENSION:
			return "waiting_for_extension";
		case ISM_WORKER_CONFIG_ERROR:
			return "config_error";
		case ISM_WORKER_CONNECTING:
			return "connecting";
		case ISM_WORKER_RUNNING:
			return "running";
		case ISM_WORKER_WAITING_FOR_STANDBY:
			return "waiting_for_standby";
		case ISM_WORKER_STOPPING:
			return "stopping";
	}
	return "unknown";
}

static const char *
nats_state_name(IsmNatsState state)
{
	switch (state)
	{
		case ISM_NATS_DISCONNECTED:
			return "disconnected";
		case ISM_NATS_CONNECTING:
			return "connecting";
		case ISM_NATS_CONNECTED:
			return "connected";
		case ISM_NATS_RECONNECTING:
			return "reconnecting";
		case ISM_NATS_CLOSED:
			return "closed";
	}
	return "unknown";
}

static void
detach_worker(int code, Datum arg)
{
	SpinLockAcquire(&my_slot->mutex);
	my_slot->pid = 0;
	my_slot->state = ISM_WORKER_STOPPED;
	my_slot->nats_state = ISM_NATS_DISCONNECTED;
	my_slot->connected_since = 0;
	SpinLockRelease(&my_slot->mutex);
	my_slot = NULL;
}

/*
 * Claim this worker's slot.  The last error survives a restart on purpose:
 * it is often the reason for the restart.
 */
void
ism_stats_attach_worker(int slot, IsmWorkerRole role)
{
	if (ism_shared == NULL || slot < 0 || slot >= ism_shared->nslots)
		elog(FATAL, "ism_state: no shared-memory slot %d for this worker", slot);

	my_slot = &ism_shared->slots[slot];
	SpinLockAcquire(&my_slot->mutex);
	my_slot->pid = MyProcPid;
#if PG_VERSION_NUM >= 170000
	/* 17 removed PGPROC.pgprocno: a backend's number is MyProcNumber */
	my_slot->pgprocno = MyProcNumber;
#else
	my_slot->pgprocno = MyProc->pgprocno;
#endif
	my_slot->role = role;
	my_slot->state = ISM_WORKER_STARTING;
	my_slot->nats_state = ISM_NATS_DISCONNECTED;
	my_slot->started_at = GetCurrentTimestamp();
	my_slot->last_activity = my_slot->started_at;
	my_slot->connected_since = 0;
	my_slot->nats_server[0] = '\0';
	my_slot->in_flight = 0;
	strlcpy(my_slot->activity, "starting", ISM_ACTIVITY_LEN);
	SpinLockRelease(&my_slot->mutex);

	on_shmem_exit(detach_worker, (Datum) 0);
	ism_counters_attach_worker(slot);
}

/*
 * A change the workers act on has committed: bump its generation, which
 * the workers compare with what they last saw, and wake them.  Called at
 * commit by any backend.
 */
void
ism_notify_change(IsmChange change)
{
	if (ism_shared == NULL)
		return;
	pg_atomic_fetch_add_u64(&ism_shared->generation[change], 1);
	for (int i = 0; i < ism_shared->nslots; i++)
	{
		IsmWorkerSlot *slot = &ism_shared->slots[i];
		int			pgprocno = -1;

		SpinLockAcquire(&slot->mutex);
		if (slot->pid != 0)
			pgprocno = slot->pgprocno;
		SpinLockRelease(&slot->mutex);
		if (pgprocno >= 0)
			SetLatch(&GetPGProcByNumber(pgprocno)->procLatch);
	}
}

uint64
ism_change_generation(IsmChange change)
{
	return pg_atomic_read_u64(&ism_shared->generation[change]);
}

void
ism_stats_set_state(IsmWorkerState state)
{
	SpinLockAcquire(&my_slot->mutex);
	my_slot->state = state;
	SpinLockRelease(&my_slot->mutex);
}

/*
 * Record the NATS connection's state.  server is the connected URL (masked)
 * or NULL to keep the last one; new_reconnects is added to the total.
 */
void
ism_stats_set_nats(IsmNatsState state, const char *server, int64 new_reconnects)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&my_slot->mutex);
	if (state == ISM_NATS_CONNECTED && my_slot->nats_state != ISM_NATS_CONNECTED)
		my_slot->connected_since = now;
	else if (state != ISM_NATS_CONNECTED)
		my_slot->connected_since = 0;
	my_slot->nats_state = state;
	if (server)
		strlcpy(my_slot->nats_server, server, ISM_SERVER_LEN);
	my_slot->reconnects += new_reconnects;
	SpinLockRelease(&my_slot->mutex);
}

void
ism_stats_set_error(const char *message)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&my_slot->mutex);
	strlcpy(my_slot->last_error, message, ISM_ERROR_LEN);
	my_slot->last_error_at = now;
	SpinLockRelease(&my_slot->mutex);
}

void
ism_stats_touch(void)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&my_slot->mutex);
	my_slot->last_activity = now;
	SpinLockRelease(&my_slot->mutex);
}

void
ism_stats_set_in_flight(int n)
{
	SpinLockAcquire(&my_slot->mutex);
	my_slot->in_flight = n;
	SpinLockRelease(&my_slot->mutex);
}

/* What the worker does, in pg_stat_activity and in pg_stat_ism_worker. */
void
ism_report_activity(bool running, const char *what)
{
	pgstat_report_activity(running ? STATE_RUNNING : STATE_IDLE, what);
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&my_slot->mutex);
	strlcpy(my_slot->activity, what, ISM_ACTIVITY_LEN);
	SpinLockRelease(&my_slot->mutex);
}

PG_FUNCTION_INFO_V1(ism_stat_worker);

/*
 * A worker not running on a standby is not stopped: it starts when the
 * standby is promoted (BgWorkerStart_RecoveryFinished, worker.c).
 */
static const char *
shown_state(const IsmWorkerSlot *slot)
{
	if (slot->pid == 0 && RecoveryInProgress())
		return "standby";
	return worker_state_name(slot->state);
}

/*
 * ism_state.pg_stat_ism_worker(): one row per configured worker, running
 * or not.
 */
Datum
ism_stat_worker(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	if (ism_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ism_state shared memory is not initialised"),
				 errhint("Add ism_state to shared_preload_libraries and restart the server.")));

	InitMaterializedSRF(fcinfo, 0);

	for (int i = 0; i < ism_shared->nslots; i++)
	{
		IsmWorkerSlot copy;
		Datum		values[15];
		bool		nulls[15] = {0};
		int			c = 0;

		SpinLockAcquire(&ism_shared->slots[i].mutex);
		memcpy(&copy, &ism_shared->slots[i], sizeof(copy));
		SpinLockRelease(&ism_shared->slots[i].mutex);

		values[c++] = Int32GetDatum(i);
		nulls[c] = (copy.pid == 0);
		values[c++] = Int32GetDatum(copy.pid);
		values[c++] = CStringGetTextDatum(ism_worker_role_name(copy.role));
		values[c++] = CStringGetTextDatum(ism_database);
		values[c++] = CStringGetTextDatum(shown_state(&copy));
		values[c++] = CStringGetTextDatum(nats_state_name(copy.nats_state));
		values[c] = ism_text_or_null(copy.nats_server, &nulls[c]);
		c++;
		values[c] = ism_timestamp_or_null(copy.connected_since, &nulls[c]);
		c++;
		values[c++] = Int64GetDatum(copy.reconnects);
		values[c] = ism_text_or_null(copy.last_error, &nulls[c]);
		c++;
		values[c] = ism_timestamp_or_null(copy.last_error_at, &nulls[c]);
		c++;
		values[c] = ism_timestamp_or_null(copy.started_at, &nulls[c]);
		c++;
		values[c] = ism_timestamp_or_null(copy.last_activity, &nulls[c]);
		c++;
		nulls[c] = (copy.pid == 0);
		values[c++] = Int32GetDatum(copy.in_flight);
		nulls[c] = (copy.pid == 0);
		values[c] = nulls[c] ? (Datum) 0 : CStringGetTextDatum(copy.activity);
		c++;
		Assert(c == lengthof(values));

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

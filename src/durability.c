/*-------------------------------------------------------------------------
 *
 * durability.c
 *	  How far the WAL is as durable as ism_state.ack_after asks.
 *
 * A message is acked once the commit holding its effect is durable
 * (ack_gate.c): flushed to this server's WAL; confirmed by the
 * synchronous standbys when synchronous replication is on (the worker's
 * own commits do not wait for them, see xact.c); and, with ack_after =
 * replicated, flushed by a standby (replayed, under synchronous_commit =
 * remote_apply).  What a standby has is read where pg_stat_replication
 * reads it, the walsenders' shared memory, so the worker's role needs no
 * privilege for it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "replication/syncrep.h"
#include "replication/walsender.h"
#include "replication/walsender_private.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/spin.h"

#include "durability.h"
#include "settings.h"

/*
 * Does a commit here wait for synchronous standbys, by the server's
 * settings (SyncRepWaitForLSN's own test), and for which position?
 */
static bool
synchronous_replication(int *mode)
{
	if (!SyncRepRequested() || SyncRepStandbyNames == NULL || SyncRepStandbyNames[0] == '\0')
		return false;
	*mode = synchronous_commit == SYNCHRONOUS_COMMIT_REMOTE_WRITE ? SYNC_REP_WAIT_WRITE :
		synchronous_commit == SYNCHRONOUS_COMMIT_REMOTE_APPLY ? SYNC_REP_WAIT_APPLY :
		SYNC_REP_WAIT_FLUSH;
	return true;
}

/* What the synchronous standbys have confirmed, as a waiting commit reads it. */
static XLogRecPtr
synchronous_standbys_lsn(int mode)
{
	XLogRecPtr	lsn;

	LWLockAcquire(SyncRepLock, LW_SHARED);
	lsn = WalSndCtl->lsn[mode];
	LWLockRelease(SyncRepLock);
	return lsn;
}

/*
 * A walsender of a standby, not of logical replication: a logical
 * walsender is connected to a database (a field every version has, where
 * WalSnd->kind came only in 16).
 */
static bool
serves_a_standby(pid_t pid)
{
	PGPROC	   *proc = BackendPidGetProc(pid);

	return proc != NULL && !OidIsValid(proc->databaseId);
}

/* The most any standby has flushed (or replayed) of this server's WAL. */
static XLogRecPtr
best_standby_lsn(bool replayed)
{
	XLogRecPtr	best = InvalidXLogRecPtr;

	for (int i = 0; i < max_wal_senders; i++)
	{
		WalSnd	   *walsnd = &WalSndCtl->walsnds[i];
		pid_t		pid;
		XLogRecPtr	lsn;

		SpinLockAcquire(&walsnd->mutex);
		pid = walsnd->pid;
		lsn = replayed ? walsnd->apply : walsnd->flush;
		SpinLockRelease(&walsnd->mutex);
		if (pid != 0 && lsn > best && serves_a_standby(pid))
			best = lsn;
	}
	return best;
}

/*
 * The WAL position up to which commits are as durable as the acks need;
 * *waiting_for names what holds it back the most.
 */
XLogRecPtr
ism_durable_horizon(const char **waiting_for)
{
	XLogRecPtr	horizon = GetFlushRecPtr(NULL);
	int			mode;

	*waiting_for = "the WAL flush";
	if (synchronous_replication(&mode))
	{
		XLogRecPtr	confirmed = synchronous_standbys_lsn(mode);

		if (confirmed < horizon)
		{
			horizon = confirmed;
			*waiting_for = "the synchronous standbys (synchronous_standby_names)";
		}
	}
	if (ism_ack_after == ISM_ACK_AFTER_REPLICATED)
	{
		XLogRecPtr	standby = best_standby_lsn(synchronous_commit == SYNCHRONOUS_COMMIT_REMOTE_APPLY);

		if (standby < horizon)
		{
			horizon = standby;
			*waiting_for = "a standby (ism_state.ack_after = replicated)";
		}
	}
	return horizon;
}

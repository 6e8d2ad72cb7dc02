/*-------------------------------------------------------------------------
 *
 * xact.c
 *	  A step of a worker in a transaction of its own.
 *
 * A leaf: it knows no other part of ism_state, so every part can use it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "libpq/pqsignal.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "xact.h"

/* Where the WAL of the last transaction run here ends: see commit_lsn. */
static XLogRecPtr last_commit_lsn = InvalidXLogRecPtr;

/*
 * A worker's commit never waits for a synchronous standby: the loop would
 * stop with it, for as long as the standby is away, and a wait cut short
 * (the postmaster's death, a cancel) returns as if confirmed.  Its acks
 * wait instead, on the loop, until the standbys confirm the commit's WAL
 * (ack_gate.c), which is what synchronous replication promises a client.
 * synchronous_commit = off is left as it is (the acks wait for the flush).
 */
static void
commit_without_standby_wait(void)
{
	if (synchronous_commit > SYNCHRONOUS_COMMIT_LOCAL_FLUSH)
		(void) set_config_option("synchronous_commit", "local",
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
								 true, 0, false);
}

/*
 * Where the WAL of a transaction just committed ends: its commit record
 * (XactLastCommitEnd moved), or, for one that wrote none (it found its
 * work done already), all the WAL there is, which holds the commits whose
 * work it found.
 */
static XLogRecPtr
commit_lsn(XLogRecPtr commit_end_before)
{
	return XactLastCommitEnd != commit_end_before ? XactLastCommitEnd : GetXLogInsertRecPtr();
}

/* The commit an ack of what the last transaction did waits for (ack_gate.c). */
XLogRecPtr
ism_last_commit_lsn(void)
{
	return last_commit_lsn;
}

/*
 * Run fn in a transaction of its own.  An ERROR is caught and rolled back,
 * and its message comes back in errbuf: one failed step never stops the
 * worker.
 *
 * pg_cancel_backend() cancels what fn does (a flush waiting for a lock,
 * say: it is retried), and nothing else: a worker holds cancels off for the
 * rest of its life (ism_hold_cancel).  Anywhere else a pending cancel would
 * be an ERROR that no PG_TRY catches, raised by the next ereport, even a
 * WARNING (errfinish checks for interrupts), and the worker would exit.  A
 * cancel that came between two steps had nothing to cancel: it is dropped.
 */
bool
ism_run_in_transaction(void (*fn) (void *), void *arg, char *errbuf, size_t errlen)
{
	return ism_run_in_transaction_ex(fn, arg, errbuf, errlen, NULL);
}

/* The same, also giving the error's SQLSTATE (when sqlstate is not NULL). */
bool
ism_run_in_transaction_ex(void (*fn) (void *), void *arg, char *errbuf,
						  size_t errlen, int *sqlstate)
{
	MemoryContext caller = CurrentMemoryContext;
	volatile bool ok = true;
	uint32		held = QueryCancelHoldoffCount;
	XLogRecPtr	commit_end_before = XactLastCommitEnd;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		QueryCancelPending = false;
		QueryCancelHoldoffCount = 0;
		commit_without_standby_wait();
		fn(arg);
		QueryCancelHoldoffCount = held;
		CommitTransactionCommand();
		last_commit_lsn = commit_lsn(commit_end_before);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		QueryCancelHoldoffCount = held;

		/* an error never leaves the signals of a NATS call blocked */
		sigprocmask(SIG_SETMASK, &UnBlockSig, NULL);
		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		strlcpy(errbuf, edata->message, errlen);
		if (sqlstate)
			*sqlstate = edata->sqlerrcode;
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	return ok;
}

/*
 * From now on, cancels reach this process only inside
 * ism_run_in_transaction; see there.
 */
void
ism_hold_cancel(void)
{
	HOLD_CANCEL_INTERRUPTS();
}

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
#include "libpq/pqsignal.h"
#include "miscadmin.h"

#include "xact.h"

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

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		QueryCancelPending = false;
		QueryCancelHoldoffCount = 0;
		fn(arg);
		QueryCancelHoldoffCount = held;
		CommitTransactionCommand();
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

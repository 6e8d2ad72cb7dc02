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

#include "xact.h"

/*
 * Run fn in a transaction of its own.  An ERROR is caught and rolled back,
 * and its message comes back in errbuf: one failed step never stops the
 * worker.
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

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		fn(arg);
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

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

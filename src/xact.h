/*-------------------------------------------------------------------------
 *
 * xact.h
 *	  A step of a worker in a transaction of its own (xact.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_XACT_H
#define ISM_XACT_H

#include "access/xlogdefs.h"

extern bool ism_run_in_transaction(void (*fn) (void *), void *arg,
								   char *errbuf, size_t errlen);
extern bool ism_run_in_transaction_ex(void (*fn) (void *), void *arg,
									  char *errbuf, size_t errlen, int *sqlstate);
extern XLogRecPtr ism_last_commit_lsn(void);
extern void ism_hold_cancel(void);

#endif							/* ISM_XACT_H */

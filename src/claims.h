/*-------------------------------------------------------------------------
 *
 * claims.h
 *	  Which of several PostgreSQL instances writes a message, when they
 *	  share the writers' durable consumers (claims.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_CLAIMS_H
#define ISM_CLAIMS_H

#include "jetstream.h"

/* Who writes a message when instances share a consumer */
typedef enum IsmClaim
{
	ISM_CLAIM_OURS,
	ISM_CLAIM_THEIRS,
	ISM_CLAIM_UNKNOWN			/* not known now: ask again later */
} IsmClaim;

extern bool ism_claims_open_locked(char *errbuf, size_t errlen);
extern bool ism_claims_take(const IsmMessage *msgs, int n, IsmClaim *claims,
							char *errbuf, size_t errlen);
extern void ism_claims_close(void);

#endif							/* ISM_CLAIMS_H */

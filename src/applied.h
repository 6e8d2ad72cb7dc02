/*-------------------------------------------------------------------------
 *
 * applied.h
 *	  The writer's exactly-once record: ism_state.applied and
 *	  ism_state.applied_msg_id (applied.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_APPLIED_H
#define ISM_APPLIED_H

#include "jetstream.h"

extern void ism_applied_claim(const IsmMessage *const *msgs, int n, bool *claimed);
extern void ism_applied_prune(int retention_s);

#endif							/* ISM_APPLIED_H */

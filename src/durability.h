/*-------------------------------------------------------------------------
 *
 * durability.h
 *	  How far the WAL is as durable as ism_state.ack_after asks: flushed
 *	  here, confirmed by the synchronous standbys, flushed by a standby
 *	  (durability.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_DURABILITY_H
#define ISM_DURABILITY_H

#include "access/xlogdefs.h"

extern XLogRecPtr ism_durable_horizon(const char **waiting_for);

#endif							/* ISM_DURABILITY_H */

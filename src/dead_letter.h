/*-------------------------------------------------------------------------
 *
 * dead_letter.h
 *	  ism_state.dead_letter: inbound messages a worker gave up on
 *	  (dead_letter.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_DEAD_LETTER_H
#define ISM_DEAD_LETTER_H

#include "jetstream.h"

extern bool ism_dead_letter(const IsmMessage *m, const char *worker,
							const char *route_id, const char *error);
extern bool ism_dead_letter_once(const IsmMessage *m, const char *worker,
								 const char *route_id, const char *error,
								 bool *applied_before);

#endif							/* ISM_DEAD_LETTER_H */

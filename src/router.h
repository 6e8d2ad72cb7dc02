/*-------------------------------------------------------------------------
 *
 * router.h
 *	  The state router: ISM router messages in, query_state messages out
 *	  (router.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_ROUTER_H
#define ISM_ROUTER_H

extern void ism_router_init(bool (*stopping) (void));
extern int	ism_router_consume(int max_messages, int timeout_ms);
extern int	ism_router_replay_dead_letters(char *errbuf, size_t errlen);

#endif							/* ISM_ROUTER_H */

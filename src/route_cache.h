/*-------------------------------------------------------------------------
 *
 * route_cache.h
 *	  A worker's copy of ism_state.route, with the routers' lookup rules
 *	  (route_cache.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_ROUTE_CACHE_H
#define ISM_ROUTE_CACHE_H

#include "route_index.h"

/* A route as the workers use it: a row of ism_state.route. */
typedef struct IsmRoute
{
	char	   *selector;
	char	   *name;			/* stream */
	char	   *subject;
	char	   *url;
	char	   *queue;
	char	   *mode;
	int32		ack_wait;		/* seconds */
	int32		batch_size;
	int32		max_ack_pending;	/* 0: not set */
	bool		jetstream_enabled;
	bool		concurrent_enabled;
	int32		concurrent_max_workers;
	bool		concurrent_priority_enabled;
	int32		concurrent_max_workers_high;
	char	   *mirror;
} IsmRoute;

extern bool ism_route_cache_is_stale(void);
extern void ism_route_cache_invalidate(void);
extern void ism_route_cache_load(void);
extern int	ism_route_cache_count(void);
extern const IsmRoute *ism_route_cache_resolve(const char *selector,
											   RouteLookupResult *result);
extern char *ism_route_cache_candidates(const char *selector);

#endif							/* ISM_ROUTE_CACHE_H */

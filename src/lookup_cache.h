/*-------------------------------------------------------------------------
 *
 * lookup_cache.h
 *	  A short-lived cache of the catalog rows the workers read for every
 *	  message (lookup_cache.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_LOOKUP_CACHE_H
#define ISM_LOOKUP_CACHE_H

#define ISM_LOOKUP_MAX_COLS 3

extern bool ism_lookup_get(char kind, const char *id, char **cols, int ncols);
extern void ism_lookup_put(char kind, const char *id, char **cols, int ncols);

#endif							/* ISM_LOOKUP_CACHE_H */

/*-------------------------------------------------------------------------
 *
 * routes.h
 *	  The route catalogue: loading the routing YAML into ism_state.route
 *	  (routes.c, which also has the route SQL functions).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_ROUTES_H
#define ISM_ROUTES_H

extern int	ism_routes_load_yaml(const char *yaml, size_t len, bool replace);
extern char *ism_read_routing_file(const char *path);

#endif							/* ISM_ROUTES_H */

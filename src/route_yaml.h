/*-------------------------------------------------------------------------
 *
 * route_yaml.h
 *	  Parse an ISM routing YAML into route specs (route_yaml.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_ROUTE_YAML_H
#define ISM_ROUTE_YAML_H

#include "nodes/pg_list.h"

/* A List of RouteSpec * (route_spec.h) */
extern List *ism_parse_routing_yaml(const char *yaml, size_t len);

#endif							/* ISM_ROUTE_YAML_H */

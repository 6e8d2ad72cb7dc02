/*-------------------------------------------------------------------------
 *
 * route_spec.h
 *	  The keys of a route entry: their types, defaults and limits
 *	  (route_spec.c), shared by the YAML loader and add_route().
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_ROUTE_SPEC_H
#define ISM_ROUTE_SPEC_H

#include "lib/stringinfo.h"

/* A value for a route key, typed as YAML or JSON typed it. */
typedef enum RouteValueKind
{
	RV_NULL,
	RV_BOOL,
	RV_INT,
	RV_FLOAT,
	RV_STRING,
	RV_SEQUENCE,
	RV_MAPPING
} RouteValueKind;

typedef struct RouteValue
{
	RouteValueKind kind;
	const char *text;			/* scalars: the text as written */
	bool		boolean;		/* RV_BOOL */
	int64		integer;		/* RV_INT */
	const char *json;			/* the value as JSON, for keys kept in extra */
} RouteValue;

/* One route as a row of ism_state.route; NULL strings are SQL NULLs. */
typedef struct RouteSpec
{
	char	   *selector;
	char	   *name;
	char	   *subject;
	char	   *url;
	char	   *queue;
	char	   *mode;
	int32		ack_wait;
	int32		batch_size;		/* 0: not given, the mode's default */
	int32		max_ack_pending;	/* 0: not given (NULL) */
	bool		jetstream_enabled;
	bool		concurrent_enabled;
	int32		concurrent_max_workers;
	bool		concurrent_priority_enabled;
	int32		concurrent_max_workers_high;
	char	   *mirror;
	StringInfoData extra;		/* JSON object of unknown keys */
	int			nextra;
	/* where it came from, for messages */
	int			line;
	int			column;
} RouteSpec;

extern void ism_route_spec_init(RouteSpec *spec);
extern bool ism_route_spec_set(RouteSpec *spec, const char *key,
						   const RouteValue *value, char **error);
extern bool ism_route_spec_check(RouteSpec *spec, bool from_yaml,
							 const char **missing_key, char **error);
extern bool ism_valid_stream_name(const char *name);
extern bool ism_route_mode_is_known(const char *mode);
extern bool ism_valid_subject(const char *subject);

#endif							/* ISM_ROUTE_SPEC_H */

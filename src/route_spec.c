/*-------------------------------------------------------------------------
 *
 * route_spec.c
 *	  The keys of a route entry: their types, defaults and limits.
 *
 * One table serves both ways in: the YAML loader and add_route()'s jsonb
 * options.  The checks match the table's constraints, so a bad value is
 * reported here with its key (and, from YAML, its line) instead of as a
 * bare constraint violation.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "utils/builtins.h"
#include "utils/json.h"

#include "route_spec.h"

typedef enum RouteKeyType
{
	RK_TEXT,
	RK_NAME,					/* stream, queue or mirror name: any text */
	RK_SUBJECT,
	RK_MODE,					/* any text: see ism_route_mode_is_known */
	RK_BOOL,
	RK_INT
} RouteKeyType;

typedef struct RouteKey
{
	const char *key;
	RouteKeyType type;
	size_t		offset;
	int32		min;
	int32		max;
} RouteKey;

#define FIELD(f) offsetof(RouteSpec, f)

static const RouteKey route_keys[] = {
	{"selector", RK_TEXT, FIELD(selector), 1, 1024},
	{"name", RK_NAME, FIELD(name), 1, 255},
	{"subject", RK_SUBJECT, FIELD(subject), 1, 1024},
	{"url", RK_TEXT, FIELD(url), 1, 1024},
	{"queue", RK_NAME, FIELD(queue), 1, 255},
	{"mode", RK_MODE, FIELD(mode), 1, 32},
	{"ack_wait", RK_INT, FIELD(ack_wait), 1, 86400},
	{"batch_size", RK_INT, FIELD(batch_size), 1, 10000},
	{"max_ack_pending", RK_INT, FIELD(max_ack_pending), 1, 1000000},
	{"jetstream_enabled", RK_BOOL, FIELD(jetstream_enabled), 0, 0},
	{"concurrent_enabled", RK_BOOL, FIELD(concurrent_enabled), 0, 0},
	{"concurrent_max_workers", RK_INT, FIELD(concurrent_max_workers), 1, 1000},
	{"concurrent_priority_enabled", RK_BOOL, FIELD(concurrent_priority_enabled), 0, 0},
	{"concurrent_max_workers_high", RK_INT, FIELD(concurrent_max_workers_high), 1, 1000},
	{"mirror", RK_NAME, FIELD(mirror), 1, 255},
};

/*
 * Keys a routing YAML must give; add_route() may leave out the last one
 * (it derives the stream name from the subject).  Upstream also requires
 * url, but ism_state connects to ism_state.nats_url whatever a route says,
 * so url is optional: a route added without one still exports and loads.
 */
static const struct
{
	const char *key;
	size_t		offset;
}			required_keys[] = {
	{"selector", FIELD(selector)},
	{"subject", FIELD(subject)},
	{"name", FIELD(name)},
};

void
ism_route_spec_init(RouteSpec *spec)
{
	memset(spec, 0, sizeof(*spec));
	spec->mode = "push";
	spec->ack_wait = 90;
	spec->jetstream_enabled = true;
	spec->concurrent_max_workers = 10;
	spec->concurrent_max_workers_high = 5;
	initStringInfo(&spec->extra);
}

/*
 * Does NATS take name as a stream or consumer name: no '.', '*', '>' or
 * white space?  Not checked at load: neither upstream loader does, and a
 * route with such a name fails only where it is used (see
 * ism_state--0.3--0.4.sql).
 */
bool
ism_valid_stream_name(const char *name)
{
	if (*name == '\0')
		return false;
	for (const char *p = name; *p; p++)
		if (*p == '.' || *p == '*' || *p == '>' || isspace((unsigned char) *p))
			return false;
	return true;
}

/*
 * Is mode one core-go names?  Any other is push there (nats_route.go
 * Subscribe: "pull" or else push), so it loads, with a warning.
 */
bool
ism_route_mode_is_known(const char *mode)
{
	return strcmp(mode, "push") == 0 || strcmp(mode, "pull") == 0 ||
		strcmp(mode, "request-reply") == 0;
}

/* A publishable subject: non-empty dot-separated tokens, no wildcards. */
bool
ism_valid_subject(const char *subject)
{
	bool		token_empty = true;

	for (const char *p = subject; *p; p++)
	{
		if (*p == '*' || *p == '>' || isspace((unsigned char) *p))
			return false;
		if (*p == '.')
		{
			if (token_empty)
				return false;
			token_empty = true;
		}
		else
			token_empty = false;
	}
	return !token_empty;
}

static const char *
kind_name(RouteValueKind kind)
{
	switch (kind)
	{
		case RV_NULL:
			return "null";
		case RV_BOOL:
			return "a boolean";
		case RV_INT:
			return "an integer";
		case RV_FLOAT:
			return "a number";
		case RV_STRING:
			return "a string";
		case RV_SEQUENCE:
			return "a list";
		case RV_MAPPING:
			return "a mapping";
	}
	return "a value";
}

static char *
found(const RouteValue *v)
{
	if (v->text && v->kind != RV_STRING)
		return psprintf("%s (%s)", kind_name(v->kind), v->text);
	if (v->text)
		return psprintf("%s \"%s\"", kind_name(v->kind), v->text);
	return pstrdup(kind_name(v->kind));
}

static bool
set_text(RouteSpec *spec, const RouteKey *k, const RouteValue *v, char **error)
{
	char	  **field = (char **) ((char *) spec + k->offset);
	int			len;

	if (v->kind == RV_SEQUENCE || v->kind == RV_MAPPING)
	{
		*error = psprintf("expected a string, found %s", kind_name(v->kind));
		return false;
	}
	/* a scalar of any type stands for its text, as YAML users expect */
	len = strlen(v->text);
	if (len < k->min || len > k->max)
	{
		*error = len == 0 ? pstrdup("must not be empty") :
			psprintf("is longer than %d characters", k->max);
		return false;
	}
	if (k->type == RK_SUBJECT && !ism_valid_subject(v->text))
	{
		*error = psprintf("\"%s\" is not a valid NATS subject (non-empty dot-separated tokens, no wildcards or white space)",
						  v->text);
		return false;
	}
	*field = pstrdup(v->text);
	return true;
}

static bool
set_typed(RouteSpec *spec, const RouteKey *k, const RouteValue *v, char **error)
{
	void	   *field = (char *) spec + k->offset;

	if (k->type == RK_BOOL)
	{
		if (v->kind != RV_BOOL)
		{
			*error = psprintf("expected a boolean, found %s", found(v));
			return false;
		}
		*(bool *) field = v->boolean;
		return true;
	}

	if (v->kind != RV_INT)
	{
		*error = psprintf("expected an integer, found %s", found(v));
		return false;
	}
	if (v->integer < k->min || v->integer > k->max)
	{
		*error = psprintf("%lld is out of range (%d to %d)",
						  (long long) v->integer, k->min, k->max);
		return false;
	}
	*(int32 *) field = (int32) v->integer;
	return true;
}

/* Keep a key neither upstream loader knows in extra, as JSON. */
static void
keep_unknown(RouteSpec *spec, const char *key, const RouteValue *v)
{
	appendStringInfoString(&spec->extra, spec->nextra++ ? ", " : "{");
	escape_json(&spec->extra, key);
	appendStringInfoString(&spec->extra, ": ");
	appendStringInfoString(&spec->extra, v->json);
}

/*
 * Set key to value.  A null value leaves the default, as upstream does.
 * On a bad value, returns false with *error saying what is wrong.
 */
bool
ism_route_spec_set(RouteSpec *spec, const char *key, const RouteValue *value,
			   char **error)
{
	for (size_t i = 0; i < lengthof(route_keys); i++)
	{
		const RouteKey *k = &route_keys[i];

		if (strcmp(k->key, key) != 0)
			continue;
		if (value->kind == RV_NULL)
			return true;
		if (k->type == RK_BOOL || k->type == RK_INT)
			return set_typed(spec, k, value, error);
		return set_text(spec, k, value, error);
	}
	keep_unknown(spec, key, value);
	return true;
}

/*
 * After all keys are set: are the required keys there (all three from
 * YAML, selector and subject from SQL)?  Fills the defaults that depend on other
 * keys.  *missing_key names the first one missing.
 */
bool
ism_route_spec_check(RouteSpec *spec, bool from_yaml, const char **missing_key,
				 char **error)
{
	size_t		nrequired = from_yaml ? lengthof(required_keys) : 2;

	for (size_t i = 0; i < nrequired; i++)
	{
		if (*(char **) ((char *) spec + required_keys[i].offset) == NULL)
		{
			*missing_key = required_keys[i].key;
			*error = psprintf("required key \"%s\" is missing", *missing_key);
			return false;
		}
	}

	/* core-go's default fetch size is 10 in pull mode; ismcore's is 1 */
	if (spec->batch_size == 0)
		spec->batch_size = strcmp(spec->mode, "pull") == 0 ? 10 : 1;
	if (spec->nextra > 0)
		appendStringInfoChar(&spec->extra, '}');
	else
		appendStringInfoString(&spec->extra, "{}");
	return true;
}

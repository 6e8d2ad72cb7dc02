/*
 * fuzz_route_yaml.c
 *	  libFuzzer target: the routing YAML loader.  Any bytes as a routing
 *	  file end in an ERROR, caught as load_routes' caller catches it, or in
 *	  routes that keep the loader's promises: the required keys there,
 *	  every value valid and within its limits, the defaults filled in,
 *	  unknown keys kept as a JSON object, selectors unique.  The same input
 *	  must give the same routes or the same error twice, and an error must
 *	  name a position inside the input.  libyaml allocates with malloc:
 *	  what the loader leaves of it, on success or error, LeakSanitizer
 *	  reports.
 */
#include "postgres.h"

#include <stdlib.h>

#include "json.h"
#include "route_spec.h"
#include "route_yaml.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern void shim_reset(void);
extern const char *shim_error_message(void);

static void
check_text(const char *value, bool required, int max_len)
{
	if (value == NULL)
	{
		if (required)
			abort();			/* a required key missing */
		return;
	}
	if (strlen(value) < 1 || strlen(value) > (size_t) max_len)
		abort();
}

static void
check_range(int32 value, int32 min, int32 max)
{
	if (value < min || value > max)
		abort();
}

/* What route_spec.c promises of a route the loader returns. */
static void
check_spec(const RouteSpec *s)
{
	IsmJson    *extra;
	const IsmJson *item;
	char	   *error;

	check_text(s->selector, true, 1024);
	check_text(s->name, true, 255);
	check_text(s->subject, true, 1024);
	check_text(s->url, false, 1024);
	check_text(s->queue, false, 255);
	check_text(s->mirror, false, 255);
	/* names and mode are any text, as upstream loads them (route_spec.c) */
	if (!ism_valid_subject(s->subject))
		abort();
	check_text(s->mode, true, 32);
	check_range(s->ack_wait, 1, 86400);
	check_range(s->batch_size, 1, 10000);	/* the mode's default, if not given */
	if (s->max_ack_pending != 0)
		check_range(s->max_ack_pending, 1, 1000000);
	check_range(s->concurrent_max_workers, 1, 1000);
	check_range(s->concurrent_max_workers_high, 1, 1000);
	if (s->line < 1 || s->column < 1)
		abort();

	/* extra: a JSON object of the unknown keys, each once */
	if (strlen(s->extra.data) != s->extra.len)
		abort();
	/* (a key given twice would be one member: fewer than nextra) */
	extra = ism_json_parse(s->extra.data, s->extra.len, &error);
	if (!ism_json_is(extra, ISM_JSON_OBJECT) || extra->count != s->nextra)
		abort();
	ism_json_foreach(item, extra)
	{
		static const char *const known[] = {"selector", "name", "subject",
			"url", "queue", "mode", "ack_wait", "batch_size", "max_ack_pending",
			"jetstream_enabled", "concurrent_enabled", "concurrent_max_workers",
			"concurrent_priority_enabled", "concurrent_max_workers_high",
		"mirror"};

		for (int i = 0; i < lengthof(known); i++)
			if (strcmp(item->key, known[i]) == 0)
				abort();		/* a known key kept as unknown */
	}
}

/* The routes as text, every field, to compare two parses. */
static char *
describe(List *specs)
{
	StringInfoData out;
	ListCell   *lc;

	initStringInfo(&out);
	foreach(lc, specs)
	{
		RouteSpec  *s = lfirst(lc);

		appendStringInfo(&out, "%s|%s|%s|%s|%s|%s|%d|%d|%d|%d|%d|%d|%d|%d|%s|%s|%d|%d:%d\n",
						 s->selector, s->name, s->subject,
						 s->url ? s->url : "(null)", s->queue ? s->queue : "(null)",
						 s->mode, s->ack_wait, s->batch_size, s->max_ack_pending,
						 s->jetstream_enabled, s->concurrent_enabled,
						 s->concurrent_max_workers, s->concurrent_priority_enabled,
						 s->concurrent_max_workers_high,
						 s->mirror ? s->mirror : "(null)", s->extra.data, s->nextra,
						 s->line, s->column);
	}
	return out.data;
}

/* The routes described, or NULL with *error set. */
static char *
parse(const uint8_t *data, size_t size, char **error)
{
	List	   *volatile specs = NIL;
	volatile bool failed = false;
	ListCell   *lc;

	PG_TRY();
	{
		specs = ism_parse_routing_yaml((const char *) data, size);
	}
	PG_CATCH();
	{
		failed = true;
		*error = pstrdup(shim_error_message());
	}
	PG_END_TRY();
	if (PG_exception_stack != NULL)
		abort();				/* a PG_TRY left without restoring the stack */
	if (failed)
		return NULL;

	foreach(lc, specs)
	{
		RouteSpec  *s = lfirst(lc);

		check_spec(s);
		for (ListCell *other = lnext(specs, lc); other; other = lnext(specs, other))
			if (strcmp(s->selector, ((RouteSpec *) lfirst(other))->selector) == 0)
				abort();		/* a selector twice */
	}
	return describe(specs);
}

/* An error names a line and column inside the input, if it names one. */
static void
check_error(const char *error, size_t size)
{
	int			line;
	int			column;

	if (error[0] == '\0')
		abort();				/* an error without a message */
	if (sscanf(error, "invalid routing YAML at line %d, column %d:", &line, &column) == 2 &&
		(line < 1 || (size_t) line > size + 1 || column < 1 || (size_t) column > size + 1))
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *error1 = NULL;
	char	   *error2 = NULL;
	char	   *routes1 = parse(data, size, &error1);
	char	   *routes2 = parse(data, size, &error2);

	if ((routes1 == NULL) != (routes2 == NULL))
		abort();				/* loaded once, refused once */
	if (routes1 && strcmp(routes1, routes2) != 0)
		abort();				/* two parses, different routes */
	if (error1)
	{
		check_error(error1, size);
		if (strcmp(error1, error2) != 0)
			abort();			/* two parses, different errors */
	}
	shim_reset();				/* as the loading transaction's memory is */
	return 0;
}

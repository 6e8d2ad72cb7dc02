/*-------------------------------------------------------------------------
 *
 * routes.c
 *	  The route catalogue's SQL functions: load, add, resolve, and the
 *	  trigger that tells the workers a change has committed.
 *
 * Every write goes through one prepared upsert, with values as SPI
 * parameters.  A load is all or nothing: the YAML is parsed and checked
 * whole before the first row is written, and any later error aborts the
 * statement.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <errno.h>
#include <sys/stat.h>

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "routes.h"
#include "route_index.h"
#include "route_spec.h"
#include "route_yaml.h"
#include "stats.h"

#define ROUTING_FILE_MAX_BYTES	(16 * 1024 * 1024)

#define UPSERT_NPARAMS 16

static const char *const upsert_sql =
"INSERT INTO ism_state.route AS r"
" (selector, name, subject, url, queue, mode, ack_wait, batch_size,"
"  max_ack_pending, jetstream_enabled, concurrent_enabled,"
"  concurrent_max_workers, concurrent_priority_enabled,"
"  concurrent_max_workers_high, mirror, extra)"
" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
" ON CONFLICT (selector) DO UPDATE SET"
"  name = EXCLUDED.name, subject = EXCLUDED.subject, url = EXCLUDED.url,"
"  queue = EXCLUDED.queue, mode = EXCLUDED.mode, ack_wait = EXCLUDED.ack_wait,"
"  batch_size = EXCLUDED.batch_size, max_ack_pending = EXCLUDED.max_ack_pending,"
"  jetstream_enabled = EXCLUDED.jetstream_enabled,"
"  concurrent_enabled = EXCLUDED.concurrent_enabled,"
"  concurrent_max_workers = EXCLUDED.concurrent_max_workers,"
"  concurrent_priority_enabled = EXCLUDED.concurrent_priority_enabled,"
"  concurrent_max_workers_high = EXCLUDED.concurrent_max_workers_high,"
"  mirror = EXCLUDED.mirror, extra = EXCLUDED.extra, updated_at = now()"
/* an unchanged route is not rewritten, and its updated_at stays */
" WHERE (r.name, r.subject, r.url, r.queue, r.mode, r.ack_wait, r.batch_size,"
"        r.max_ack_pending, r.jetstream_enabled, r.concurrent_enabled,"
"        r.concurrent_max_workers, r.concurrent_priority_enabled,"
"        r.concurrent_max_workers_high, r.mirror, r.extra)"
"   IS DISTINCT FROM"
"       (EXCLUDED.name, EXCLUDED.subject, EXCLUDED.url, EXCLUDED.queue,"
"        EXCLUDED.mode, EXCLUDED.ack_wait, EXCLUDED.batch_size,"
"        EXCLUDED.max_ack_pending, EXCLUDED.jetstream_enabled,"
"        EXCLUDED.concurrent_enabled, EXCLUDED.concurrent_max_workers,"
"        EXCLUDED.concurrent_priority_enabled,"
"        EXCLUDED.concurrent_max_workers_high, EXCLUDED.mirror, EXCLUDED.extra)";

static SPIPlanPtr upsert_plan = NULL;

static Datum
text_param(const char *s, char *null)
{
	*null = s ? ' ' : 'n';
	return s ? CStringGetTextDatum(s) : (Datum) 0;
}

/* Write one route; the caller is connected to SPI. */
static void
upsert_route(const RouteSpec *spec)
{
	Datum		values[UPSERT_NPARAMS];
	char		nulls[UPSERT_NPARAMS];
	int			rc;

	if (upsert_plan == NULL)
	{
		Oid			types[UPSERT_NPARAMS] = {
			TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID,
			INT4OID, INT4OID, BOOLOID, BOOLOID, INT4OID, BOOLOID, INT4OID,
			TEXTOID, JSONBOID
		};
		SPIPlanPtr	plan = SPI_prepare(upsert_sql, UPSERT_NPARAMS, types);

		if (plan == NULL)
			elog(ERROR, "ism_state: could not prepare the route upsert: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		upsert_plan = plan;
	}

	memset(nulls, ' ', sizeof(nulls));
	values[0] = text_param(spec->selector, &nulls[0]);
	values[1] = text_param(spec->name, &nulls[1]);
	values[2] = text_param(spec->subject, &nulls[2]);
	values[3] = text_param(spec->url, &nulls[3]);
	values[4] = text_param(spec->queue, &nulls[4]);
	values[5] = text_param(spec->mode, &nulls[5]);
	values[6] = Int32GetDatum(spec->ack_wait);
	values[7] = Int32GetDatum(spec->batch_size);
	values[8] = Int32GetDatum(spec->max_ack_pending);
	nulls[8] = spec->max_ack_pending ? ' ' : 'n';
	values[9] = BoolGetDatum(spec->jetstream_enabled);
	values[10] = BoolGetDatum(spec->concurrent_enabled);
	values[11] = Int32GetDatum(spec->concurrent_max_workers);
	values[12] = BoolGetDatum(spec->concurrent_priority_enabled);
	values[13] = Int32GetDatum(spec->concurrent_max_workers_high);
	values[14] = text_param(spec->mirror, &nulls[14]);
	values[15] = DirectFunctionCall1(jsonb_in, CStringGetDatum(spec->extra.data));

	rc = SPI_execute_plan(upsert_plan, values, nulls, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "ism_state: route upsert failed: %s", SPI_result_code_string(rc));
}

/* Delete every route not in specs. */
static void
delete_other_routes(List *specs)
{
	Datum	   *selectors = palloc(sizeof(Datum) * Max(list_length(specs), 1));
	int			n = 0;
	ListCell   *lc;
	Oid			argtypes[1] = {TEXTARRAYOID};
	Datum		args[1];
	int			rc;

	foreach(lc, specs)
		selectors[n++] = CStringGetTextDatum(((RouteSpec *) lfirst(lc))->selector);
	args[0] = PointerGetDatum(construct_array(selectors, n, TEXTOID, -1, false,
											  TYPALIGN_INT));
	rc = SPI_execute_with_args("DELETE FROM ism_state.route "
							   "WHERE selector <> ALL ($1)",
							   1, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "ism_state: route delete failed: %s", SPI_result_code_string(rc));
}

/* --- what loads but will fail at use ----------------------------------- */

/* At most this many routes or pairs named in one warning. */
#define WARN_MAX_NAMED	10

static void
append_named(StringInfo list, int *n, const char *fmt, const char *a, const char *b)
{
	if ((*n)++ < WARN_MAX_NAMED)
	{
		if (list->len)
			appendStringInfoString(list, "; ");
		appendStringInfo(list, fmt, a, b);
	}
}

static void
append_more(StringInfo list, int n, const char *what)
{
	if (n > WARN_MAX_NAMED)
		appendStringInfo(list, "; and %d more %s", n - WARN_MAX_NAMED, what);
}

/*
 * Routes that load as upstream loads them, but that NATS or the lookup will
 * refuse: a warning names them now, and the failure shows where they are
 * used (pg_stat_ism_routes, the worker's last_error, a FAILED status).
 */
static void
warn_about_specs(List *specs)
{
	StringInfoData names;
	StringInfoData modes;
	int			nnames = 0;
	int			nmodes = 0;
	ListCell   *lc;

	initStringInfo(&names);
	initStringInfo(&modes);
	foreach(lc, specs)
	{
		RouteSpec  *spec = lfirst(lc);

		/* JetStream by either platform's rule (ismcore or core-go) */
		if ((spec->jetstream_enabled || spec->queue) && !ism_valid_stream_name(spec->name))
			append_named(&names, &nnames, "\"%s\" (stream \"%s\")", spec->selector, spec->name);
		if (!ism_route_mode_is_known(spec->mode))
			append_named(&modes, &nmodes, "\"%s\" (mode \"%s\")", spec->selector, spec->mode);
	}
	append_more(&names, nnames, "routes");
	append_more(&modes, nmodes, "routes");
	if (nnames > 0)
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("NATS refuses the stream name of %d route%s: %s",
						nnames, nnames > 1 ? "s" : "", names.data),
				 errdetail("A stream name has no '.', '*', '>' or white space. The route is kept, as upstream keeps it; it fails where it is used through JetStream.")));
	if (nmodes > 0)
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown mode on %d route%s: %s", nmodes, nmodes > 1 ? "s" : "",
						modes.data),
				 errdetail("The modes are push, pull and request-reply; as in core-go, any mode but pull is consumed as push.")));
	pfree(names.data);
	pfree(modes.data);
}

/*
 * Wildcard routes whose prefixes nest ("a/" and "a/b/", each with a star)
 * both match a key under the longer prefix, whose lookup then fails: there
 * is no longest-prefix rule (route_index.h).  Upstream loads such files and
 * fails the lookup; so does ism_state, and says so here, for the pairs one
 * of the routes just written (specs) is in.  Sorted bytewise, a prefix
 * comes right before the prefixes it is a prefix of, so one pass with a
 * stack of nested prefixes finds every pair.
 */
static void
warn_overlapping_wildcards(List *specs)
{
	StringInfoData pairs;
	Datum	   *written = palloc(sizeof(Datum) * Max(list_length(specs), 1));
	Oid			argtypes[1] = {TEXTARRAYOID};
	Datum		args[1];
	int			nwritten = 0;
	char	  **stack;
	bool	   *stack_written;
	int			depth = 0;
	int			npairs = 0;
	uint64		n;
	ListCell   *lc;

	foreach(lc, specs)
		written[nwritten++] = CStringGetTextDatum(((RouteSpec *) lfirst(lc))->selector);
	args[0] = PointerGetDatum(construct_array(written, nwritten, TEXTOID, -1, false,
											  TYPALIGN_INT));
	if (SPI_execute_with_args("SELECT selector, selector = ANY ($1) FROM ism_state.route"
							  " WHERE right(selector, 2) = '/*'"
							  " ORDER BY left(selector, -2) COLLATE \"C\"",
							  1, argtypes, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "ism_state: could not read ism_state.route");
	n = SPI_processed;
	stack = palloc(sizeof(char *) * Max(n, 1));
	stack_written = palloc(sizeof(bool) * Max(n, 1));

	initStringInfo(&pairs);
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		char	   *q = SPI_getvalue(t, SPI_tuptable->tupdesc, 1);
		bool		isnull;
		bool		q_written = DatumGetBool(SPI_getbinval(t, SPI_tuptable->tupdesc, 2, &isnull));
		size_t		qlen = strlen(q) - 2;

		/* keep the prefixes of q's prefix */
		while (depth > 0 &&
			   !(strlen(stack[depth - 1]) - 2 <= qlen &&
				 strncmp(stack[depth - 1], q, strlen(stack[depth - 1]) - 2) == 0))
			depth--;
		for (int d = 0; d < depth; d++)
			if (q_written || stack_written[d])
				append_named(&pairs, &npairs, "\"%s\" and \"%s\"", stack[d], q);
		stack_written[depth] = q_written;
		stack[depth++] = q;
	}
	append_more(&pairs, npairs, "pairs");
	if (npairs > 0)
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wildcard routes overlap: %s", pairs.data),
				 errdetail("A selector both of a pair match has no route: its lookup fails, naming them (there is no longest-prefix rule, as upstream).")));
	pfree(pairs.data);
	pfree(stack);
	pfree(stack_written);
}

typedef struct LoadContext
{
	RouteSpec  *spec;
} LoadContext;

static void
load_error_context(void *arg)
{
	LoadContext *lc = arg;

	if (lc->spec)
		errcontext("route \"%s\" at line %d of the routing YAML",
				   lc->spec->selector, lc->spec->line);
}

/*
 * Parse the YAML and upsert its routes (deleting the others when replace).
 * Returns the number of routes in the YAML.  Runs inside the caller's
 * transaction; connects to SPI itself.
 */
int
ism_routes_load_yaml(const char *yaml, size_t len, bool replace)
{
	List	   *specs = ism_parse_routing_yaml(yaml, len);
	LoadContext lctx = {NULL};
	ErrorContextCallback errcallback;
	ListCell   *lc;

	SPI_connect();
	errcallback.callback = load_error_context;
	errcallback.arg = &lctx;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	foreach(lc, specs)
	{
		lctx.spec = lfirst(lc);
		upsert_route(lctx.spec);
	}
	lctx.spec = NULL;
	if (replace)
		delete_other_routes(specs);
	warn_about_specs(specs);
	warn_overlapping_wildcards(specs);

	error_context_stack = errcallback.previous;
	SPI_finish();
	return list_length(specs);
}

/* The whole file, NUL-terminated, or an ERROR that names it. */
char *
ism_read_routing_file(const char *path)
{
	FILE	   *f = AllocateFile(path, PG_BINARY_R);
	struct stat st;
	char	   *buf;
	size_t		got;

	if (f == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open routing file \"%s\": %m", path)));
	if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode))
	{
		FreeFile(f);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("routing file \"%s\" is not a regular file", path)));
	}
	if (st.st_size > ROUTING_FILE_MAX_BYTES)
	{
		FreeFile(f);
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("routing file \"%s\" is %lld bytes, more than the limit of %d",
						path, (long long) st.st_size, ROUTING_FILE_MAX_BYTES)));
	}
	buf = palloc(st.st_size + 1);
	got = fread(buf, 1, st.st_size, f);
	if (ferror(f))
	{
		FreeFile(f);
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read routing file \"%s\": %m", path)));
	}
	FreeFile(f);
	buf[got] = '\0';
	return buf;
}

PG_FUNCTION_INFO_V1(ism_load_routes);

Datum
ism_load_routes(PG_FUNCTION_ARGS)
{
	text	   *yaml = PG_GETARG_TEXT_PP(0);
	bool		replace = PG_GETARG_BOOL(1);

	PG_RETURN_INT32(ism_routes_load_yaml(VARDATA_ANY(yaml),
										 VARSIZE_ANY_EXHDR(yaml), replace));
}

PG_FUNCTION_INFO_V1(ism_load_routes_file);

Datum
ism_load_routes_file(PG_FUNCTION_ARGS)
{
	char	   *path = text_to_cstring(PG_GETARG_TEXT_PP(0));
	bool		replace = PG_GETARG_BOOL(1);
	char	   *yaml;

	/* EXECUTE is revoked from PUBLIC; a grantee still needs file access */
	if (!has_privs_of_role(GetUserId(), ROLE_PG_READ_SERVER_FILES))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to read routing file \"%s\"", path),
				 errhint("Only superusers and members of pg_read_server_files may load routes from a file; use load_routes(text) otherwise.")));

	yaml = ism_read_routing_file(path);
	PG_RETURN_INT32(ism_routes_load_yaml(yaml, strlen(yaml), replace));
}

/* The row of ism_state.route for selector, as a composite Datum. */
static Datum
route_row(const char *selector)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(selector)};
	int			rc;

	/* not read-only: it must see a row this command just wrote */
	rc = SPI_execute_with_args("SELECT * FROM ism_state.route WHERE selector = $1",
							   1, argtypes, args, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "ism_state: route \"%s\" vanished", selector);
	return PointerGetDatum(SPI_returntuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc));
}

/* A jsonb option as a RouteValue, typed as JSON typed it. */
static void
option_value(HeapTuple tuple, TupleDesc desc, RouteValue *v)
{
	char	   *type = SPI_getvalue(tuple, desc, 2);
	char	   *text = SPI_getvalue(tuple, desc, 3);

	memset(v, 0, sizeof(*v));
	v->text = text ? text : "";
	v->json = SPI_getvalue(tuple, desc, 4);
	if (strcmp(type, "null") == 0)
		v->kind = RV_NULL;
	else if (strcmp(type, "boolean") == 0)
	{
		v->kind = RV_BOOL;
		v->boolean = strcmp(text, "true") == 0;
	}
	else if (strcmp(type, "number") == 0)
	{
		char	   *end;

		errno = 0;
		v->integer = strtoll(text, &end, 10);
		v->kind = (*end == '\0' && errno == 0) ? RV_INT : RV_FLOAT;
	}
	else if (strcmp(type, "string") == 0)
		v->kind = RV_STRING;
	else
	{
		v->kind = strcmp(type, "array") == 0 ? RV_SEQUENCE : RV_MAPPING;
		v->text = NULL;
	}
}

/* The stream name add_route() gives a route when none is given. */
static char *
stream_name_from_subject(const char *subject)
{
	char	   *name = pstrdup(subject);

	for (char *p = name; *p; p++)
		if (*p == '.' || *p == '*' || *p == '>' || isspace((unsigned char) *p))
			*p = '_';
	return name;
}

static void
set_or_fail(RouteSpec *spec, const char *key, const RouteValue *v, bool option)
{
	char	   *error;

	if (!ism_route_spec_set(spec, key, v, &error))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s \"%s\": %s", option ? "option" : "argument",
						key, error)));
}

static void
set_argument(RouteSpec *spec, const char *key, FunctionCallInfo fcinfo, int arg)
{
	RouteValue	v = {0};

	if (PG_ARGISNULL(arg))
		return;
	v.kind = RV_STRING;
	v.text = text_to_cstring(PG_GETARG_TEXT_PP(arg));
	set_or_fail(spec, key, &v, false);
}

PG_FUNCTION_INFO_V1(ism_add_route);

/* add_route(selector, subject, name, url, options jsonb) */
Datum
ism_add_route(PG_FUNCTION_ARGS)
{
	static const char *const arguments[] = {"selector", "subject", "name", "url"};
	RouteSpec	spec;
	const char *missing;
	char	   *error;
	Datum		row;

	ism_route_spec_init(&spec);
	for (int i = 0; i < (int) lengthof(arguments); i++)
		set_argument(&spec, arguments[i], fcinfo, i);

	SPI_connect();
	if (!PG_ARGISNULL(4))
	{
		Oid			argtypes[1] = {JSONBOID};
		Datum		args[1] = {PG_GETARG_DATUM(4)};
		int			rc;

		rc = SPI_execute_with_args("SELECT key, jsonb_typeof(value), value #>> '{}', value::text"
								   " FROM jsonb_each($1)", 1, argtypes, args,
								   NULL, true, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "ism_state: could not read add_route options");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tuple = SPI_tuptable->vals[i];
			char	   *key = SPI_getvalue(tuple, SPI_tuptable->tupdesc, 1);
			RouteValue	v;

			for (int a = 0; a < (int) lengthof(arguments); a++)
				if (strcmp(key, arguments[a]) == 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("invalid option \"%s\": it is an argument of add_route()", key)));
			option_value(tuple, SPI_tuptable->tupdesc, &v);
			set_or_fail(&spec, key, &v, true);
		}
	}

	if (spec.subject && !spec.name)
		spec.name = stream_name_from_subject(spec.subject);
	if (!ism_route_spec_check(&spec, false, &missing, &error))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("add_route() needs a %s", missing)));

	upsert_route(&spec);
	warn_about_specs(list_make1(&spec));
	warn_overlapping_wildcards(list_make1(&spec));
	row = route_row(spec.selector);
	SPI_finish();
	PG_RETURN_DATUM(row);
}

PG_FUNCTION_INFO_V1(ism_resolve_route);

/*
 * resolve_route(selector): the routers' lookup rules, applied by the same
 * index code the workers use, to the candidate rows.
 */
Datum
ism_resolve_route(PG_FUNCTION_ARGS)
{
	char	   *selector = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1] = {PG_GETARG_DATUM(0)};
	RouteIndex *index;
	RouteLookupResult result;
	int			ids[16];
	int			nmatches;
	Datum		row;
	int			rc;

	SPI_connect();
	rc = SPI_execute_with_args("SELECT selector FROM ism_state.route"
							   " WHERE selector = $1"
							   "    OR (right(selector, 2) = '/*'"
							   "        AND starts_with($1, left(selector, -2)))"
							   " ORDER BY selector",
							   1, argtypes, args, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "ism_state: could not read routes");

	index = ism_route_index_create(SPI_processed);
	if (index == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	for (uint64 i = 0; i < SPI_processed; i++)
		if (!ism_route_index_add(index,
							 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
							 (int) i))
		{
			ism_route_index_destroy(index);
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
		}
	result = ism_route_index_lookup(index, selector, ids, (int) lengthof(ids), &nmatches);
	ism_route_index_destroy(index);

	if (result == ROUTE_NOT_FOUND)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("no route for selector \"%s\"", selector),
				 errdetail("No route has this selector, and no route's selector ending in \"/*\" is a prefix of it.")));
	if (result == ROUTE_AMBIGUOUS)
	{
		StringInfoData names;

		initStringInfo(&names);
		for (int i = 0; i < Min(nmatches, (int) lengthof(ids)); i++)
			appendStringInfo(&names, "%s\"%s\"", i ? ", " : "",
							 SPI_getvalue(SPI_tuptable->vals[ids[i]],
										  SPI_tuptable->tupdesc, 1));
		ereport(ERROR,
				(errcode(ERRCODE_CARDINALITY_VIOLATION),
				 errmsg("selector \"%s\" matches %d wildcard routes: %s",
						selector, nmatches, names.data),
				 errhint("Wildcard routes must not overlap: there is no longest-prefix rule.")));
	}

	row = route_row(SPI_getvalue(SPI_tuptable->vals[ids[0]], SPI_tuptable->tupdesc, 1));
	SPI_finish();
	PG_RETURN_DATUM(row);
}

/* --- change notification ------------------------------------------------ */

static bool changed_in_xact[ISM_NUM_CHANGES];
static bool xact_callback_registered = false;

/*
 * The workers learn of a change at its commit.  COMMIT PREPARED runs no
 * callback of the preparing backend, so (as PostgreSQL does for NOTIFY) a
 * transaction that changed routes or asked for replays cannot be prepared.
 */
static void
notify_workers_at_commit(XactEvent event, void *arg)
{
	bool		commit = (event == XACT_EVENT_COMMIT ||
						  event == XACT_EVENT_PARALLEL_COMMIT);

	if (event == XACT_EVENT_PRE_PREPARE)
	{
		for (int c = 0; c < ISM_NUM_CHANGES; c++)
			if (changed_in_xact[c])
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that has changed ism_state routes or asked for dead-letter replays"),
						 errhint("Make the change in a transaction of its own, without PREPARE TRANSACTION.")));
		return;
	}
	if (!commit && event != XACT_EVENT_ABORT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	for (int c = 0; c < ISM_NUM_CHANGES; c++)
	{
		if (commit && changed_in_xact[c])
			ism_notify_change((IsmChange) c);
		changed_in_xact[c] = false;
	}
}

PG_FUNCTION_INFO_V1(ism_notify_workers);

/*
 * Statement trigger: notify_workers('routes') on ism_state.route,
 * notify_workers('replays') on ism_state.dead_letter.  At commit, the
 * change's generation is bumped and the workers woken.
 */
Datum
ism_notify_workers(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	const char *what;

	if (!CALLED_AS_TRIGGER(fcinfo) || trigdata->tg_trigger->tgnargs != 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("notify_workers() is a trigger function with one argument")));
	what = trigdata->tg_trigger->tgargs[0];
	if (!xact_callback_registered)
	{
		RegisterXactCallback(notify_workers_at_commit, NULL);
		xact_callback_registered = true;
	}
	if (strcmp(what, "routes") == 0)
		changed_in_xact[ISM_CHANGE_ROUTES] = true;
	else if (strcmp(what, "replays") == 0)
		changed_in_xact[ISM_CHANGE_REPLAYS] = true;
	else
		elog(ERROR, "notify_workers(): unknown change \"%s\"", what);
	return PointerGetDatum(NULL);
}

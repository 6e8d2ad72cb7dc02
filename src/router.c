/*-------------------------------------------------------------------------
 *
 * router.c
 *	  The ISM state router, in the router worker (upstream:
 *	  quantumwake/alethic-ism-state-router main.py).
 *
 * Each inbound message is read from the durable pull consumer, checked,
 * announced ROUTED on the monitor route (when it names a route), handled
 * in a read-only transaction over the ISM catalog, and its outbound
 * query_state messages published without waiting for each PubAck.  Only
 * when every publish is acknowledged is the inbound message acked.
 *
 * What upstream swallows, ism_state settles explicitly:
 *  - permanent failures (bad JSON, missing fields, unknown processor or
 *    route): FAILED status, a row in ism_state.dead_letter, term;
 *  - transient failures (a publish not acknowledged, a database error):
 *    nak with a growing delay, until ism_state.max_deliveries, then as
 *    permanent.
 * Outbound messages carry a Nats-Msg-Id derived from the inbound stream
 * sequence, so a redelivered message's republishes are deduplicated by
 * JetStream within the stream's duplicate window.
 *
 * What is forwarded is what was sent (json.c): the entries, the context
 * and input_route_id are copied from the inbound message as its bytes --
 * every number's digits, every string's escapes -- reprinted only where
 * that text is not the value compactly (white space, a key given twice,
 * of which the last counts, as in upstream's json.loads).  Upstream
 * re-serialises with json.dumps (main.py, execute_query_state_entry),
 * which rewrites floats (1E+2 as 100.0, 1e400 as Infinity).  Replays send
 * data_json_value as jsonb prints it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <inttypes.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "router.h"
#include "ack_gate.h"
#include "counters.h"
#include "dead_letter.h"
#include "jetstream.h"
#include "json.h"
#include "log_limit.h"
#include "lookup_cache.h"
#include "partition.h"
#include "processor_props.h"
#include "route_cache.h"
#include "route_index.h"
#include "route_spec.h"
#include "settings.h"
#include "stats.h"
#include "xact.h"

#define MONITOR_SELECTOR	"processor/monitor"
/* messages fetched, handled and acknowledged together */
#define MAX_FETCH			256

typedef enum Outcome
{
	OUTCOME_DONE,
	OUTCOME_PERMANENT,
	OUTCOME_TRANSIENT
} Outcome;

typedef struct Inbound
{
	IsmMessage *msg;
	IsmJson    *root;
	const char *type;
	const char *route_id;		/* the inbound route_id, when a string */
	int			published;		/* outbound messages so far */
	char		error[1024];
	bool		data_is_raw;	/* FAILED carries the raw message as data */
} Inbound;

typedef struct Processor
{
	char	   *id;
	char	   *provider_id;
	char	   *project_id;
	IsmProcessorProps props;
} Processor;

typedef struct Column
{
	int64		id;
	char	   *name;
	char	   *name_json;		/* the name as a JSON string */
	bool		is_json;
	bool		is_run_stamp;	/* run_id or run_created_at: the replay's own */
} Column;

enum
{
	PLAN_ROUTE,
	PLAN_PROCESSOR,
	PLAN_STATE,
	PLAN_COLUMNS,
	PLAN_PAGE,
	NPLANS
};

static MemoryContext message_context = NULL;
static SPIPlanPtr plans[NPLANS];
static char plan_schema[NAMEDATALEN * 2];
static bool monitor_missing_logged = false;
static bool (*worker_stopping) (void) = NULL;

/* stopping: whether the worker is asked to stop (a long replay gives up) */
void
ism_router_init(bool (*stopping) (void))
{
	worker_stopping = stopping;
	message_context = AllocSetContextCreate(TopMemoryContext,
											"ism_state router message",
											ALLOCSET_DEFAULT_SIZES);
}

static Outcome pg_attribute_printf(3, 4)
fail(Inbound *in, bool data_is_raw, const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	vsnprintf(in->error, sizeof(in->error), fmt, args);
	va_end(args);
	in->data_is_raw = data_is_raw;
	return OUTCOME_PERMANENT;
}

static Outcome pg_attribute_printf(2, 3)
retry(Inbound *in, const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	vsnprintf(in->error, sizeof(in->error), fmt, args);
	va_end(args);
	return OUTCOME_TRANSIENT;
}

/* --- the catalog --------------------------------------------------------- */

static const char *const plan_sql[NPLANS] = {
	"SELECT processor_id, state_id FROM %s.processor_state WHERE id = $1",
	"SELECT provider_id, project_id, properties::text FROM %s.processor WHERE id = $1",
	"SELECT count FROM %s.state WHERE id = $1",
	"SELECT id, name, data_type FROM %s.state_column"
	" WHERE state_id = $1 AND coalesce(name, '') <> ''"
	" ORDER BY display_order NULLS LAST, id",
	/* one page of a state, every column at once */
	"SELECT data_index, column_id, data_value, data_json_value::text"
	"  FROM %s.state_column_data"
	" WHERE column_id = ANY ($1) AND data_index >= $2 AND data_index < $3",
};

static const Oid plan_types[NPLANS][3] = {
	{TEXTOID}, {TEXTOID}, {TEXTOID}, {TEXTOID}, {INT8ARRAYOID, INT8OID, INT8OID},
};

static const int plan_nargs[NPLANS] = {1, 1, 1, 1, 3};

/* Prepared once per catalog schema; the schema is a quoted identifier. */
static SPIPlanPtr
plan(int which)
{
	if (strcmp(plan_schema, ism_catalog_schema) != 0)
	{
		for (int i = 0; i < NPLANS; i++)
			if (plans[i])
			{
				SPI_freeplan(plans[i]);
				plans[i] = NULL;
			}
		strlcpy(plan_schema, ism_catalog_schema, sizeof(plan_schema));
	}
	if (plans[which] == NULL)
	{
		char	   *sql = psprintf(plan_sql[which], quote_identifier(ism_catalog_schema));
		SPIPlanPtr	p = SPI_prepare(sql, plan_nargs[which], (Oid *) plan_types[which]);

		if (p == NULL)
			elog(ERROR, "could not prepare \"%s\": %s", sql,
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		plans[which] = p;
	}
	return plans[which];
}

/*
 * Run a catalog query.  SPI leaves its procedure context current; the
 * caller's (a replay's page context) is restored, so what the page
 * allocates next goes when the page does.
 */
static bool
run_plan(int which, Datum *args, int64 limit)
{
	MemoryContext caller = CurrentMemoryContext;
	int			rc = SPI_execute_plan(plan(which), args, NULL, true, limit);

	MemoryContextSwitchTo(caller);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "catalog query failed: %s", SPI_result_code_string(rc));
	return SPI_processed > 0;
}

static char *
column_text(int row, int col)
{
	return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);
}

/* processor by id, with the properties the router uses (cached a second) */
static bool
load_processor(Inbound *in, const char *id, Processor *p)
{
	char	   *cols[3];
	char	   *props_text;
	char	   *parse_error;
	char	   *error;
	IsmJson    *props;

	if (!ism_lookup_get('p', id, cols, 3))
	{
		Datum		args[1] = {CStringGetTextDatum(id)};

		if (!run_plan(PLAN_PROCESSOR, args, 1))
		{
			fail(in, false, "processor %s not found", id);
			return false;
		}
		for (int i = 0; i < 3; i++)
			cols[i] = column_text(0, i + 1);
		ism_lookup_put('p', id, cols, 3);
	}
	p->id = pstrdup(id);
	p->provider_id = cols[0];
	p->project_id = cols[1];
	props_text = cols[2];
	props = props_text ? ism_json_parse(props_text, strlen(props_text), &parse_error) : NULL;
	/* upstream: ProcessorPropertiesBase(**(processor.properties or {})) */
	if (props_text && (props == NULL || (ism_json_truthy(props) && !ism_json_is(props, ISM_JSON_OBJECT))))
	{
		fail(in, false, "processor %s: properties are not a JSON object", id);
		return false;
	}
	if (!ism_json_truthy(props))
		props = NULL;
	if (!ism_processor_props_read(props, id, &p->props, &error))
	{
		fail(in, false, "%s", error);
		return false;
	}
	return true;
}

/* processor_state (the "route") by id (cached a second) */
static bool
load_route_row(Inbound *in, const char *route_id, char **processor_id, char **state_id)
{
	char	   *cols[2];

	if (!ism_lookup_get('r', route_id, cols, 2))
	{
		Datum		args[1] = {CStringGetTextDatum(route_id)};

		if (!run_plan(PLAN_ROUTE, args, 2))
		{
			fail(in, false, "processor state (route) %s not found", route_id);
			return false;
		}
		cols[0] = column_text(0, 1);
		cols[1] = column_text(0, 2);
		ism_lookup_put('r', route_id, cols, 2);
	}
	*processor_id = cols[0];
	*state_id = cols[1];
	if (*processor_id == NULL)
	{
		fail(in, false, "processor state (route) %s has no processor", route_id);
		return false;
	}
	return true;
}

/* The processor's NATS route, by its provider id and the lookup rules. */
static const IsmRoute *
processor_route(Inbound *in, const Processor *p)
{
	RouteLookupResult result;
	const IsmRoute *r;

	if (p->provider_id == NULL)
	{
		fail(in, true, "processor %s has no provider_id to route by", p->id);
		return NULL;
	}
	r = ism_route_cache_resolve(p->provider_id, &result);
	if (result == ROUTE_AMBIGUOUS)
		fail(in, true, "provider_id \"%s\" of processor %s matches several wildcard routes: %s",
			 p->provider_id, p->id, ism_route_cache_candidates(p->provider_id));
	else if (r == NULL)
		fail(in, true, "no route for provider_id \"%s\" of processor %s",
			 p->provider_id, p->id);
	return r;
}

/* --- outbound ------------------------------------------------------------ */

/*
 * The start of every outbound message, keys in upstream's order: type,
 * input_route_id (always), context (always), route_id and processor_id
 * (when known), then the key of query_state, whose value and the closing
 * brace the caller appends.  input_route_id and context are the inbound
 * message's, as sent.
 */
static void
append_envelope(StringInfo buf, Inbound *in, bool pass_input_route,
				const char *route_id, const char *processor_id)
{
	IsmJson    *input = ism_json_get(in->root, "input_route_id");
	IsmJson    *context = ism_json_get(in->root, "context");

	appendStringInfoString(buf, "{\"type\":\"query_state\",\"input_route_id\":");
	if (pass_input_route && input)
		ism_json_append(buf, input);
	else
		appendStringInfoString(buf, "null");
	/* upstream: "context": context if context else {} */
	appendStringInfoString(buf, ",\"context\":");
	if (ism_json_truthy(context))
		ism_json_append(buf, context);
	else
		appendStringInfoString(buf, "{}");
	if (route_id)
	{
		appendStringInfoString(buf, ",\"route_id\":");
		ism_json_append_string(buf, route_id, strlen(route_id));
	}
	if (processor_id)
	{
		appendStringInfoString(buf, ",\"processor_id\":");
		ism_json_append_string(buf, processor_id, strlen(processor_id));
	}
	appendStringInfoString(buf, ",\"query_state\":");
}

/*
 * The subject for a route, as ismcore's NATSRouteConcurrent.get_publish_subject
 * (alethic-ism-core src/ismcore/messaging/nats_message_route_concurrent.py):
 * the base subject, or on a concurrent
 * priority route subject.{high|low}[.<partition key>].
 */
static char *
outbound_subject(Inbound *in, const IsmRoute *r, const char *partition_key)
{
	IsmJson    *priority = ism_json_get(in->root, "priority");
	const char *level = "low";
	char	   *key;
	char	   *subject;

	if (!(r->concurrent_enabled && r->concurrent_priority_enabled))
		return r->subject;
	/* upstream (ismcore NATSRouteConcurrent.get_publish_subject): priority or "low" */
	if (ism_json_truthy(priority))
	{
		level = ism_json_cstring(priority);
		if (level == NULL || (strcmp(level, "high") != 0 && strcmp(level, "low") != 0))
		{
			fail(in, false, "\"priority\" must be \"high\" or \"low\"");
			return NULL;
		}
	}
	if (partition_key == NULL || partition_key[0] == '\0')
		return psprintf("%s.%s", r->subject, level);

	/* upstream does not sanitise; NATS refuses these in a subject */
	key = pstrdup(partition_key);
	for (char *p = key; *p; p++)
		if (*p == '*' || *p == '>' || isspace((unsigned char) *p))
			*p = '_';
	subject = psprintf("%s.%s.%s", r->subject, level, key);
	if (!ism_valid_subject(subject))
	{
		fail(in, false, "partition key \"%s\" does not make a valid subject", partition_key);
		return NULL;
	}
	return subject;
}

/*
 * The Nats-Msg-Id of an outbound message: its inbound message's stream and
 * sequence, then the status it reports (id_suffix) or its ordinal and a
 * hash of its body.  A redelivered message publishing the same messages
 * again has them deduplicated by JetStream, even to another subject of the
 * stream (its processor's concurrencyMode changed meanwhile: the same
 * content under another partition key is still the same message); one
 * building other pages (its state changed meanwhile) has them all
 * delivered.  None for a message from no stream (nothing to derive it
 * from).
 */
static char *
outbound_msg_id(Inbound *in, const StringInfo body, const char *id_suffix)
{
	const IsmMessage *m = in->msg;
	uint64		h;

	if (!m->from_stream)
		return NULL;
	if (id_suffix)
		return psprintf("ism:%s:" UINT64_FORMAT ":%s", m->stream, m->stream_seq, id_suffix);
	h = hash_bytes_extended((const unsigned char *) body->data, body->len, 0);
	return psprintf("ism:%s:" UINT64_FORMAT ":%d:%016" PRIx64,
					m->stream, m->stream_seq, ++in->published, h);
}

static Outcome
publish(Inbound *in, const IsmRoute *r, const char *subject, StringInfo body,
		const char *id_suffix)
{
	char		err[512];
	char	   *msg_id;

	/* loaded as upstream loads it (route_spec.c), but no retry can help */
	if (r->jetstream_enabled && !ism_valid_stream_name(r->name))
	{
		fail(in, true, "route \"%s\" has a stream name NATS refuses: \"%s\" (no '.', '*', '>' or white space)",
			 r->selector, r->name);
		ism_route_error(r->selector, in->error);
		return OUTCOME_PERMANENT;
	}
	if (r->jetstream_enabled && !ism_nats_ensure_stream(r->name, r->subject, err, sizeof(err)))
		return retry(in, "%s", err);
	msg_id = outbound_msg_id(in, body, id_suffix);
	if (!ism_nats_publish(r->selector, subject, body->data, body->len, msg_id,
						  r->jetstream_enabled, err, sizeof(err)))
		return retry(in, "%s", err);
	return OUTCOME_DONE;
}

/*
 * A processor_state status on the monitor route (alethic-ism-core
 * src/ismcore/processor/monitored_processor_state.py send_processor_state_update).
 */
static void
publish_status(Inbound *in, const char *status, const char *exception, bool with_raw_data)
{
	RouteLookupResult result;
	const IsmRoute *monitor = ism_route_cache_resolve(MONITOR_SELECTOR, &result);
	StringInfoData body;

	if (monitor == NULL)
	{
		if (!monitor_missing_logged)
			ereport(WARNING,
					(errmsg("ism_state router: no route \"%s\"; status messages are not sent",
							MONITOR_SELECTOR)));
		monitor_missing_logged = true;
		return;
	}
	monitor_missing_logged = false;
	initStringInfo(&body);
	appendStringInfoString(&body, "{\"type\":\"processor_state\",\"route_id\":");
	ism_json_append_cstring_or_null(&body, in->route_id);
	appendStringInfoString(&body, ",\"status\":");
	ism_json_append_string(&body, status, strlen(status));
	appendStringInfoString(&body, ",\"exception\":");
	ism_json_append_cstring_or_null(&body, exception);
	appendStringInfoString(&body, ",\"data\":");
	if (with_raw_data)
		ism_json_append_string(&body, in->msg->data, in->msg->len);
	else
		appendStringInfoString(&body, "null");
	appendStringInfoChar(&body, '}');
	(void) publish(in, monitor, monitor->subject, &body, status);
}

/* --- the three inbound types ---------------------------------------------- */

static const char *
required_string(Inbound *in, const char *key)
{
	IsmJson    *v = ism_json_get(in->root, key);
	const char *s;

	if (v == NULL || v->type == ISM_JSON_NULL)
	{
		fail(in, false, "%s message without \"%s\"", in->type, key);
		return NULL;
	}
	if ((s = ism_json_cstring(v)) == NULL)
	{
		fail(in, false, "\"%s\" must be a string", key);
		return NULL;
	}
	return s;
}

/*
 * query_state: a list, or any other value (an object, null, a scalar) sent
 * as a list of one, as upstream wraps it (main.py: if not
 * isinstance(query_state, list): query_state = [query_state]).
 */
static IsmJson *
entries(Inbound *in)
{
	IsmJson    *qs = ism_json_get(in->root, "query_state");

	if (qs == NULL)
		fail(in, false, "%s message without \"query_state\"", in->type);
	return qs;
}

/*
 * The partition key; an expression that gives the project id instead is
 * logged once per processor and expression (upstream logs each time).
 */
static char *
partition_key(const Processor *p, const char *route_id, const IsmJson *context,
			  const IsmJson *data)
{
	const char *fallback;
	char	   *key = ism_partition_key(p->props.concurrency_mode, p->props.concurrency_expression,
										p->project_id, route_id, context, data, &fallback);

	if (fallback)
		ism_log_once(WARNING, psprintf("%s\n%s", p->id, p->props.concurrency_expression),
					 "ism_state router: processor %s: concurrencyExpression \"%.200s\" %s; the partition key is the project id (logged once for this processor and expression)",
					 p->id, p->props.concurrency_expression, fallback);
	return key;
}

/*
 * The entries (see entries()) forwarded as the inbound message has them.
 * The expression's data is the first entry, or the entries themselves
 * when there is none (upstream: query_state[0] if query_state else
 * query_state).
 */
static Outcome
send_entries(Inbound *in, const Processor *p, const IsmRoute *r, IsmJson *list,
			 const char *key_route_id, bool pass_input_route,
			 const char *route_id, const char *processor_id)
{
	bool		one = list->type != ISM_JSON_ARRAY;
	char	   *key = partition_key(p, key_route_id, ism_json_get(in->root, "context"),
									!one && list->child ? list->child : list);
	char	   *subject = outbound_subject(in, r, key);
	StringInfoData body;

	if (subject == NULL)
		return OUTCOME_PERMANENT;
	initStringInfo(&body);
	append_envelope(&body, in, pass_input_route, route_id, processor_id);
	if (one)
		appendStringInfoChar(&body, '[');
	ism_json_append(&body, list);
	appendStringInfoString(&body, one ? "]}" : "}");
	return publish(in, r, subject, &body, NULL);
}

/* main.py execute_query_state_entry: forward the entries through an input route */
static Outcome
query_state_entry(Inbound *in)
{
	const char *route_id = required_string(in, "route_id");
	char	   *processor_id;
	char	   *state_id;
	Processor	p;
	const IsmRoute *r;
	IsmJson    *list;

	if (route_id == NULL || (list = entries(in)) == NULL ||
		!load_route_row(in, route_id, &processor_id, &state_id) ||
		!load_processor(in, processor_id, &p) || (r = processor_route(in, &p)) == NULL)
		return OUTCOME_PERMANENT;
	return send_entries(in, &p, r, list, route_id, true, route_id, processor_id);
}

/* main.py execute_query_processor_entry: send straight to a processor */
static Outcome
query_processor_entry(Inbound *in)
{
	const char *processor_id = required_string(in, "processor_id");
	Processor	p;
	const IsmRoute *r;
	IsmJson    *list;

	if (processor_id == NULL || (list = entries(in)) == NULL ||
		!load_processor(in, processor_id, &p) || (r = processor_route(in, &p)) == NULL)
		return OUTCOME_PERMANENT;
	return send_entries(in, &p, r, list, processor_id, false, NULL, processor_id);
}

/*
 * run_id (8 hex characters) and run_created_at (ISO 8601, UTC, µs), as
 * upstream, but derived from the request rather than drawn at random: a
 * replay redelivered after a failure then publishes the very same messages
 * under the same Nats-Msg-Ids, and JetStream keeps each once.
 */
static void
run_stamp(const IsmMessage *m, char *run_id, char *created_at)
{
	char	   *key = psprintf("%s:" UINT64_FORMAT ":" INT64_FORMAT,
							   m->stream, m->stream_seq, m->timestamp_ns);
	uint32		h = hash_bytes((const unsigned char *) key, strlen(key));
	struct pg_tm tm;
	fsec_t		fsec;
	TimestampTz stored = (TimestampTz) (m->timestamp_ns / 1000) -
		((TimestampTz) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);

	snprintf(run_id, 9, "%08x", h);
	if (m->timestamp_ns == 0)
		stored = GetCurrentTimestamp();
	timestamp2tm(stored, NULL, &tm, &fsec, NULL, NULL);
	snprintf(created_at, 40, "%04d-%02d-%02dT%02d:%02d:%02d.%06d+00:00",
			 tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
			 (int) fsec);
}

static int
column_position(const Column *cols, int ncols, int64 id)
{
	for (int i = 0; i < ncols; i++)
		if (cols[i].id == id)
			return i;
	return -1;
}

/*
 * A page of a replay: its rows' JSON objects, one after another in text,
 * row i from start[i] to start[i + 1].
 */
typedef struct ReplayPage
{
	StringInfoData text;
	int		   *start;
} ReplayPage;

/*
 * The cells of rows [offset, offset + n): per row and column the value's
 * JSON text, NULL where there is none (null).  A text column's value is a
 * JSON string; a json column's is data_json_value as jsonb prints it.
 */
static char **
load_cells(const Column *cols, int ncols, int64 offset, int n)
{
	char	  **cells = palloc0(sizeof(char *) * n * ncols);
	Datum	   *ids = palloc(sizeof(Datum) * ncols);
	Datum		args[3];
	StringInfoData string;

	for (int c = 0; c < ncols; c++)
		ids[c] = Int64GetDatum(cols[c].id);
	args[0] = PointerGetDatum(construct_array(ids, ncols, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = Int64GetDatum(offset);
	args[2] = Int64GetDatum(offset + n);
	run_plan(PLAN_PAGE, args, 0);

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64		index = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		int64		column = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
		int			pos = column_position(cols, ncols, column);
		char	   *text;

		if (pos < 0 || index < offset || index >= offset + n)
			continue;
		text = column_text(i, cols[pos].is_json ? 4 : 3);
		if (text && !cols[pos].is_json)
		{
			initStringInfo(&string);
			ism_json_append_string(&string, text, strlen(text));
			text = string.data;
		}
		cells[(index - offset) * ncols + pos] = text;
	}
	SPI_freetuptable(SPI_tuptable);
	return cells;
}

/*
 * Rows [offset, offset + n) of the state as dense entries: every column
 * (null where a row has no value), then run_id and run_created_at (a
 * column of either name gives way to them, as upstream).
 */
static ReplayPage *
load_page(const Column *cols, int ncols, int64 offset, int n,
		  const char *run_id, const char *created_at)
{
	char	  **cells = load_cells(cols, ncols, offset, n);
	ReplayPage	   *page = palloc(sizeof(ReplayPage));

	page->start = palloc(sizeof(int) * (n + 1));
	initStringInfo(&page->text);
	for (int i = 0; i < n; i++)
	{
		page->start[i] = page->text.len;
		appendStringInfoChar(&page->text, '{');
		for (int c = 0; c < ncols; c++)
		{
			const char *cell = cells[i * ncols + c];

			if (cols[c].is_run_stamp)
				continue;
			appendStringInfoString(&page->text, cols[c].name_json);
			appendStringInfoChar(&page->text, ':');
			appendStringInfoString(&page->text, cell ? cell : "null");
			appendStringInfoChar(&page->text, ',');
		}
		appendStringInfo(&page->text, "\"run_id\":\"%s\",\"run_created_at\":\"%s\"}",
						 run_id, created_at);
	}
	page->start[n] = page->text.len;
	return page;
}

/* ReplayPage rows [from, to) as a JSON list. */
static void
append_rows(StringInfo buf, const ReplayPage *page, int from, int to)
{
	appendStringInfoChar(buf, '[');
	for (int i = from; i < to; i++)
	{
		if (i > from)
			appendStringInfoChar(buf, ',');
		appendBinaryStringInfo(buf, page->text.data + page->start[i],
							   page->start[i + 1] - page->start[i]);
	}
	appendStringInfoChar(buf, ']');
}

static Column *
load_columns(const char *state_id, int *ncols)
{
	Datum		args[1] = {CStringGetTextDatum(state_id)};
	Column	   *cols;
	StringInfoData name;

	run_plan(PLAN_COLUMNS, args, 0);
	*ncols = (int) SPI_processed;
	cols = palloc(sizeof(Column) * Max(*ncols, 1));
	for (int i = 0; i < *ncols; i++)
	{
		char	   *type = column_text(i, 3);

		cols[i].id = atoll(column_text(i, 1));
		cols[i].name = column_text(i, 2);
		/* exact lower-case, as ism-db */
		cols[i].is_json = type && strcmp(type, "json") == 0;
		cols[i].is_run_stamp = strcmp(cols[i].name, "run_id") == 0 ||
			strcmp(cols[i].name, "run_created_at") == 0;
		initStringInfo(&name);
		ism_json_append_string(&name, cols[i].name, strlen(cols[i].name));
		cols[i].name_json = name.data;
	}
	return cols;
}

/* A message of a replay: the envelope and entries [from, to) of the page (or none). */
static Outcome
publish_replay(Inbound *in, const IsmRoute *r, const char *subject, const char *route_id,
			   const ReplayPage *page, int from, int to)
{
	StringInfoData body;

	initStringInfo(&body);
	append_envelope(&body, in, true, route_id, NULL);
	if (page)
		append_rows(&body, page, from, to);
	else
		appendStringInfoString(&body, "[]");
	appendStringInfoChar(&body, '}');
	return publish(in, r, subject, &body, NULL);
}

/* The first row of a page as a tree: the partition key's data (upstream). */
static IsmJson *
first_row(const ReplayPage *page)
{
	char	   *error;

	return ism_json_parse(page->text.data, page->start[1], &error);
}

/*
 * main.py execute_processor_state_route: replay a whole state through a
 * route, page by page
 */
static Outcome
query_state_route(Inbound *in)
{
	const char *route_id = required_string(in, "route_id");
	char	   *processor_id;
	char	   *state_id;
	Processor	p;
	const IsmRoute *r;
	Datum		args[1];
	int64		count;
	Column	   *cols;
	int			ncols;
	char		run_id[9];
	char		created_at[40];
	IsmJson    *context = ism_json_get(in->root, "context");
	MemoryContext page_context;
	MemoryContext outer;
	char		err[512];

	if (route_id == NULL || !load_route_row(in, route_id, &processor_id, &state_id))
		return OUTCOME_PERMANENT;
	ism_report_activity(true, psprintf("replaying route %s", route_id));
	args[0] = CStringGetTextDatum(state_id ? state_id : "");
	if (!run_plan(PLAN_STATE, args, 1))
		return fail(in, false, "state %s of route %s not found", state_id ? state_id : "(null)", route_id);
	count = atoll(column_text(0, 1) ? column_text(0, 1) : "0");
	cols = load_columns(state_id, &ncols);
	if (!load_processor(in, processor_id, &p) || (r = processor_route(in, &p)) == NULL)
		return OUTCOME_PERMANENT;

	if (count <= 0)
	{
		char	   *key = partition_key(&p, route_id, context, NULL);
		char	   *subject = outbound_subject(in, r, key);

		if (subject == NULL)
			return OUTCOME_PERMANENT;
		return publish_replay(in, r, subject, route_id, NULL, 0, 0);
	}
	if (ncols == 0)
	{
		ereport(WARNING,
				(errmsg("ism_state router: state %s has no columns; nothing to replay for route %s",
						state_id, route_id)));
		return OUTCOME_DONE;
	}

	run_stamp(in->msg, run_id, created_at);
	page_context = AllocSetContextCreate(CurrentMemoryContext, "ism_state replay page",
										 ALLOCSET_DEFAULT_SIZES);
	for (int64 offset = 0; offset < count; offset += p.props.max_batch_size)
	{
		int			n = (int) Min(count - offset, (int64) p.props.max_batch_size);
		ReplayPage	   *page;
		char	   *key;
		char	   *subject;
		Outcome		o = OUTCOME_DONE;

		if (worker_stopping())
			return retry(in, "stopping in the middle of a replay");
		outer = MemoryContextSwitchTo(page_context);
		page = load_page(cols, ncols, offset, n, run_id, created_at);
		/* the page's first row decides the partition key (upstream) */
		key = partition_key(&p, route_id, context, first_row(page));
		subject = outbound_subject(in, r, key);
		if (subject == NULL)
			o = OUTCOME_PERMANENT;
		for (int start = 0; o == OUTCOME_DONE && start < n; start += p.props.max_batch_limit)
			o = publish_replay(in, r, subject, route_id, page, start,
							   Min(n, start + p.props.max_batch_limit));
		MemoryContextSwitchTo(outer);
		MemoryContextReset(page_context);
		if (o != OUTCOME_DONE)
			return o;
		/* a long replay must not reach ack_wait and be replayed twice */
		if (!ism_nats_settle(in->msg, ISM_IN_PROGRESS, 0, err, sizeof(err)))
			return retry(in, "%s", err);
	}
	return OUTCOME_DONE;
}

/* --- one message ----------------------------------------------------------- */

static Outcome
dispatch(Inbound *in)
{
	IsmJson    *type = ism_json_get(in->root, "type");

	if (type == NULL || type->type == ISM_JSON_NULL)
		return fail(in, false, "message has no \"type\"");
	if ((in->type = ism_json_cstring(type)) == NULL)
		return fail(in, false, "\"type\" must be a string");

	if (strcmp(in->type, "query_state_entry") == 0)
		return query_state_entry(in);
	if (strcmp(in->type, "query_processor_entry") == 0)
		return query_processor_entry(in);
	if (strcmp(in->type, "query_state_route") == 0)
		return query_state_route(in);
	return fail(in, false, "unknown message type \"%s\"", in->type);
}

typedef struct Dispatch
{
	Inbound    *in;
	Outcome		outcome;
} Dispatch;

static void
dispatch_with_spi(void *arg)
{
	Dispatch   *d = arg;

	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	d->outcome = dispatch(d->in);
	PopActiveSnapshot();
	SPI_finish();
}

/* Handle in a read-only transaction; a database error is transient. */
static Outcome
dispatch_in_transaction(Inbound *in)
{
	Dispatch	d = {in, OUTCOME_DONE};
	char		err[512];

	if (!ism_run_in_transaction(dispatch_with_spi, &d, err, sizeof(err)))
		return retry(in, "database error: %s", err);
	return d.outcome;
}

/* Size, encoding, JSON, an object: before anything else. */
static Outcome
parse(Inbound *in)
{
	IsmMessage *m = in->msg;
	char	   *error;

	if (m->len > ism_max_message_bytes)
		return fail(in, false, "message is %d bytes, more than ism_state.max_message_bytes (%d)",
					m->len, ism_max_message_bytes);
	if (!pg_verify_mbstr(PG_UTF8, m->data, m->len, true))
		return fail(in, false, "message is not valid UTF-8");
	in->root = ism_json_parse(m->data, m->len, &error);
	if (in->root == NULL)
		return fail(in, false, "message is %s", error);
	if (in->root->type != ISM_JSON_OBJECT)
		return fail(in, false, "message is not a JSON object");
	in->route_id = ism_json_cstring(ism_json_get(in->root, "route_id"));
	return OUTCOME_DONE;
}

/* Record a message given up on; false when even that failed. */
static bool
dead_letter(Inbound *in)
{
	return ism_dead_letter(in->msg, "router", in->route_id, in->error);
}

static void
settle_or_warn(IsmMessage *m, IsmSettle how, int64 delay)
{
	char		err[512];

	if (!ism_nats_settle(m, how, delay, err, sizeof(err)))
		ereport(WARNING, (errmsg("ism_state router: %s", err)));
}

/*
 * Handle one message up to its publishes.  A message given up on is
 * settled here (FAILED, dead letter, term); one to retry is nak'ed; one
 * done is left for the caller to ack once the batch's publishes are
 * acknowledged.
 */
static Outcome
handle_message(IsmMessage *m)
{
	Inbound		in;
	Outcome		outcome;

	memset(&in, 0, sizeof(in));
	in.msg = m;

	outcome = parse(&in);
	if (outcome == OUTCOME_DONE)
	{
		/* before validation, as upstream; not without a route to name */
		if (in.route_id)
			publish_status(&in, "ROUTED", NULL, false);
		outcome = dispatch_in_transaction(&in);
	}

	if (outcome == OUTCOME_TRANSIENT && !ism_nats_can_retry(m))
	{
		strlcpy(in.error, ism_nats_why_no_retry(m, in.error), sizeof(in.error));
		in.data_is_raw = true;
		outcome = OUTCOME_PERMANENT;
	}

	if (outcome == OUTCOME_PERMANENT)
	{
		ism_log_limited(WARNING, in.error,
						"ism_state router: message %s:" UINT64_FORMAT " on \"%s\" failed: %s",
						m->stream, m->stream_seq, m->subject, in.error);
		ism_count_inbound(ISM_RC_FAILED, 1);
		ism_inbound_error(in.error);
		publish_status(&in, "FAILED", in.error,
					   in.data_is_raw && m->len <= ism_max_message_bytes);
		/* never lost: terminated only once recorded */
		if (dead_letter(&in))
			ism_settle_after_commit(m, ISM_TERM);
		else
			settle_or_warn(m, ISM_NAK, ism_nats_redelivery_delay_ms(m));
	}
	else if (outcome == OUTCOME_TRANSIENT)
	{
		ism_log_limited(WARNING, in.error,
						"ism_state router: message %s:" UINT64_FORMAT " will be retried: %s",
						m->stream, m->stream_seq, in.error);
		settle_or_warn(m, ISM_NAK, ism_nats_redelivery_delay_ms(m));
	}
	return outcome;
}

static void
republish_marked(void *arg)
{
	int		   *nreplayed = arg;
	char		err[512];
	Datum	   *ids;
	Oid			argtypes[1] = {INT8ARRAYOID};
	Datum		args[1];
	uint64		n;

	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_execute("SELECT id, subject, payload, stream <> '' FROM ism_state.dead_letter"
					" WHERE replay_requested_at IS NOT NULL"
					" ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED",
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read ism_state.dead_letter");
	n = SPI_processed;
	ids = palloc(sizeof(Datum) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(t, SPI_tuptable->tupdesc, 1, &isnull));
		char	   *subject = SPI_getvalue(t, SPI_tuptable->tupdesc, 2);
		bytea	   *payload = DatumGetByteaPP(SPI_getbinval(t, SPI_tuptable->tupdesc, 3, &isnull));
		char	   *msg_id = psprintf("ism:replay:" INT64_FORMAT, id);

		/* a message from no stream (a core NATS route) goes back the same way */
		bool		jetstream = DatumGetBool(SPI_getbinval(t, SPI_tuptable->tupdesc, 4, &isnull));

		if (!ism_nats_publish(NULL, subject, VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload),
							  msg_id, jetstream, err, sizeof(err)))
			elog(ERROR, "could not replay dead letter " INT64_FORMAT ": %s", id, err);
		ids[i] = Int64GetDatum(id);
	}
	/* deleted only once JetStream holds every one of them */
	if (n > 0 && !ism_nats_publish_wait(ism_publish_timeout_ms, err, sizeof(err)))
		elog(ERROR, "could not replay dead letters: %s", err);
	args[0] = PointerGetDatum(construct_array(ids, (int) n, INT8OID, 8,
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	if (n > 0 &&
		SPI_execute_with_args("DELETE FROM ism_state.dead_letter WHERE id = ANY ($1)",
							  1, argtypes, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete replayed dead letters");
	PopActiveSnapshot();
	SPI_finish();
	*nreplayed = (int) n;
}

/*
 * Republish the dead letters marked for replay.  Returns how many, or -1
 * when it failed (the rows stay marked; the caller tries again later).
 */
int
ism_router_replay_dead_letters(char *errbuf, size_t errlen)
{
	int			n = 0;

	return ism_run_in_transaction(republish_marked, &n, errbuf, errlen) ? n : -1;
}

/*
 * A message whose publishes were not all acknowledged, and that nothing
 * will deliver again (past ism_state.max_deliveries, or from core NATS):
 * a dead letter, not a silent loss.
 */
static void
give_up_unpublished(IsmMessage *m, const char *error)
{
	MemoryContext old = MemoryContextSwitchTo(message_context);
	char	   *why = ism_nats_why_no_retry(m, error);

	ism_count_inbound(ISM_RC_FAILED, 1);
	ism_inbound_error(why);
	if (ism_dead_letter(m, "router", NULL, why))
		ism_settle_after_commit(m, ISM_TERM);
	else
		settle_or_warn(m, ISM_NAK, ism_nats_redelivery_delay_ms(m));
	MemoryContextSwitchTo(old);
	MemoryContextReset(message_context);
}

/*
 * Fetch and handle up to max_messages, waiting at most timeout_ms for the
 * first.  Returns the number handled, -1 when fetching failed.
 */
int
ism_router_consume(int max_messages, int timeout_ms)
{
	static IsmMessage msgs[MAX_FETCH];	/* 80 kB: not on the stack */
	bool		done[MAX_FETCH];
	bool		any_done = false;
	char		err[512];
	int			n;

	n = ism_nats_fetch(msgs, Min(Max(max_messages, 1), MAX_FETCH), timeout_ms,
					   err, sizeof(err));
	if (n < 0)
	{
		ism_stats_set_error(err);
		return -1;
	}
	if (n > 0)
		ism_report_activity(true, "routing messages");
	for (int i = 0; i < n; i++)
	{
		MemoryContext old = MemoryContextSwitchTo(message_context);

		done[i] = handle_message(&msgs[i]) == OUTCOME_DONE;
		any_done |= done[i];
		MemoryContextSwitchTo(old);
		MemoryContextReset(message_context);
	}

	/*
	 * One wait for the whole batch's PubAcks, then the acks.  Should any
	 * publish fail, the batch's messages come back (their republishes are
	 * deduplicated by Msg-Id).
	 */
	if (n > 0 && !ism_nats_publish_wait(ism_publish_timeout_ms, err, sizeof(err)) && any_done)
	{
		ereport(WARNING,
				(errmsg("ism_state router: %d messages will be retried: %s", n, err)));
		for (int i = 0; i < n; i++)
			if (done[i] && ism_nats_can_retry(&msgs[i]))
				settle_or_warn(&msgs[i], ISM_NAK, ism_nats_redelivery_delay_ms(&msgs[i]));
			else if (done[i])
				give_up_unpublished(&msgs[i], err);
	}
	else
	{
		int			routed = 0;

		for (int i = 0; i < n; i++)
			if (done[i])
			{
				settle_or_warn(&msgs[i], ISM_ACK, 0);
				routed++;
			}
		ism_count_inbound(ISM_RC_ROUTED, routed);
	}
	ism_nats_release(msgs, n);
	if (n > 0)
		ism_report_activity(false, "idle");
	return n;
}

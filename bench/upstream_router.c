/*
 * upstream-router: the Python state router's algorithm, for the router
 * benchmark (bench/router_bench.sh), in C with nats.c and libpq, as
 * bench/external_consumer.c is the Go state-tables service's.
 *
 *   upstream-router -s NATS_URL --stream STREAM --durable DURABLE -d CONNINFO
 *       [--fetch N]
 *
 * Upstream is quantumwake/alethic-ism-state-router main.py
 * (MessagingStateRouterConsumer) over two libraries: "ismcore" stands for
 * quantumwake/alethic-ism-core src/ismcore/ (the consumer loop, routes,
 * statuses), "ismdb" for quantumwake/alethic-ism-db src/ismdb/ at v1.0.47,
 * the version the router's requirements.txt pins (every catalog query).
 * Per message it makes the round trips upstream makes, in the same order;
 * what Python adds on top (decoding, pydantic, the event loop) is not
 * reproduced, so it is upstream's algorithm at C's speed: a lower bound on
 * the service's cost.
 *
 * Consuming (ismcore messaging/nats_message_route.py NATSRoute.consume,
 * _fetch_messages; messaging/base_message_provider.py
 * BaseMessageConsumer.on_receive): it binds the existing durable pull
 * consumer, fetches --fetch messages (the route's batch_size, 1 by
 * default) waiting 0.1 s, doubled while none come up to 1 s, and handles
 * them one after another; each is acked when it has been handled, whatever
 * happened (on_receive's finally), without waiting for the ack.  SIGTERM
 * or SIGINT stops it after the current fetch; it prints
 * "messages=<n> published=<m>" (messages handled, messages published).
 *
 * Routes (ismcore messaging/base_message_router.py Router): upstream reads
 * the routing YAML once at start; here the same routes are read once at
 * start from ism_state.route, where ism_state loaded that file.  A
 * processor's route is the exact selector of its provider_id, else the one
 * wildcard (a selector ending in a slash and a star) whose prefix starts it
 * (find_route_wildcard).  Before a route's first publish its stream is made,
 * or given its missing subjects [subject, subject.>] (NATSRoute.connect,
 * create_stream).  A publish is a JetStream publish that waits for its
 * PubAck (NATSRoute.publish; core NATS when jetstream_enabled is false);
 * one that fails is logged and the message goes on, as there.  Concurrent
 * priority routes publish to subject.{high|low}[.<partition key>]
 * (messaging/nats_message_route_concurrent.py get_publish_subject).
 *
 * Statuses (ismcore processor/monitored_processor_state.py): ROUTED on
 * processor/monitor before anything (main.py pre_execute), FAILED when the
 * message fails; an inbound message that is not JSON gets neither
 * (on_receive's handler raises again decoding it) and is acked.
 *
 * Catalog queries (ismdb base.py and the storage classes, over psycopg2):
 * each runs on the pool's one connection (MIN_DB_CONNECTIONS 1) in a
 * transaction that psycopg2 opens with a BEGIN of its own
 * (psycopg/pqpath.c pq_begin_locked) and that the pool rolls back when the
 * connection is returned (psycopg2 lib/pool.py _putconn): BEGIN, the
 * query, ROLLBACK, three round trips, in the simple query protocol with
 * the parameters quoted into the text, as psycopg2 sends them.
 *
 *   query_state_entry (execute_query_state_entry), then one publish:
 *     SELECT * FROM processor_state WHERE id = route_id
 *         (processor_state_storage.py fetch_processor_state_route_by_route_id)
 *     SELECT * FROM processor WHERE id = processor_id
 *         (processor_storage.py fetch_processor)
 *   query_processor_entry: the second only.
 *   query_state_route (execute_processor_state_route):
 *     processor_state as above (fetch_processor_state_route);
 *     the state's metadata (state_storage.py load_state_metadata):
 *       load_state_basic: SELECT * FROM state WHERE id; the five
 *       state_column_key_definition lookups; state_config; then state_column;
 *     processor as above;
 *     then per page of maxBatchSize rows (load_state with offset and limit):
 *       load_state_basic again, state_column, one state_column_data query
 *       per column (fetch_state_data_by_column_id), and
 *       state_column_data_mapping of the whole state (load_state_data_mappings
 *       is called without the page's offset); then a publish per
 *       maxBatchLimit entries.
 *
 * Not reproduced: the EXPRESSION concurrency mode (a Python expression
 * evaluator, utils/evaluate.py safer_evaluate): the project id instead,
 * said once; columns holding a constant or an expression (state_column
 * value) are sent as their stored data; pydantic's lax coercions of the
 * properties (only JSON integers and the mode's names are taken); one NATS
 * connection rather than one per route.  Messages are printed compactly
 * (json.dumps puts a space after separators and escapes non-ASCII): the
 * same values.  The tables ismdb reads besides ism_state's catalog
 * (state_config, state_column_key_definition, state_column_data_mapping)
 * must exist: bench/router_bench.sh makes them as the platform's
 * bootstrap.sql does.
 */
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <nats/nats.h>

#include "bench_util.h"

const char *bench_program = "upstream-router";

#define FIRST_WAIT_MS	100		/* ismcore consume: backoff_base 0.1 s */
#define LAST_WAIT_MS	1000	/* max_backoff 1 s */
#define MONITOR			"processor/monitor"
#define ERR_LEN			1024

typedef struct Options
{
	const char *url;
	const char *stream;
	const char *durable;
	const char *conninfo;
	int			fetch;
} Options;

/* one entry of the routing file */
typedef struct Route
{
	char	   *selector;
	char	   *name;
	char	   *subject;
	bool		jetstream;
	bool		concurrent;
	bool		priority;
	bool		connected;		/* its stream has been made or checked */
} Route;

typedef enum Mode
{
	MODE_PROJECT_ID,
	MODE_USER_ID,
	MODE_ROUTE_ID,
	MODE_EXPRESSION
} Mode;

/* processor and its properties (ProcessorPropertiesBase) */
typedef struct Processor
{
	char	   *id;
	char	   *project_id;		/* NULL when SQL NULL */
	Route	   *route;
	long		max_batch_size;
	long		max_batch_limit;
	Mode		mode;
	bool		has_expression;
} Processor;

typedef struct Column
{
	long		id;
	char	   *name;
	bool		is_json;
} Column;

/* a state as load_state_basic and fetch_state_columns give it */
typedef struct State
{
	long		count;
	Column	   *cols;
	int			ncols;
} State;

typedef enum Lookup
{
	LOOKUP_FOUND,
	LOOKUP_MISSING,
	LOOKUP_FAILED				/* a database error, in err */
} Lookup;

static Options opt = {.fetch = 1};
static PGconn *pg;
static natsConnection *nc;
static jsCtx *js;
static Route *routes;
static int	nroutes;
static long nmessages;
static long npublished;
static volatile sig_atomic_t stopping;

/* ---- small helpers (more in bench_util.c) ------------------------------- */

static bool
failf(char *err, const char *fmt,...) __attribute__((format(printf, 2, 3)));
static bool
failf(char *err, const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(err, ERR_LEN, fmt, ap);
	va_end(ap);
	return false;
}

/* A string parameter as psycopg2 quotes it into the statement. */
static void
buf_add_literal(Buf *b, const char *value)
{
	char	   *quoted = PQescapeLiteral(pg, value, strlen(value));

	if (quoted == NULL)
		die("could not quote a parameter: %s", PQerrorMessage(pg));
	buf_add(b, "%s", quoted);
	PQfreemem(quoted);
}

/* ---- JSON as Python's json.loads leaves it -------------------------------- */

/* message.get(key): the last member of that name (a dict keeps the last) */
static cJSON *
member(const cJSON *obj, const char *key)
{
	cJSON	   *found = NULL;

	for (cJSON *c = cJSON_IsObject(obj) ? obj->child : NULL; c; c = c->next)
		if (strcmp(c->string, key) == 0)
			found = c;
	return found;
}

/* Python's truth value of a decoded JSON value */
static bool
truthy(const cJSON *v)
{
	if (v == NULL || cJSON_IsNull(v) || cJSON_IsFalse(v))
		return false;
	if (cJSON_IsNumber(v))
		return v->valuedouble != 0;
	if (cJSON_IsString(v))
		return v->valuestring[0] != '\0';
	if (cJSON_IsArray(v) || cJSON_IsObject(v))
		return v->child != NULL;
	return true;
}

/* A reference to v (not copied, not freed with obj), or null when absent. */
static void
add_value(cJSON *obj, const char *key, cJSON *v)
{
	if (v)
		cJSON_AddItemReferenceToObject(obj, key, v);
	else
		need(cJSON_AddNullToObject(obj, key));
}

/* ---- PostgreSQL: ismdb's queries over psycopg2 --------------------------- */

static void
pg_error(const PGresult *res, char *err)
{
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;

	snprintf(err, ERR_LEN, "%s", msg ? msg : PQerrorMessage(pg));
	if (PQstatus(pg) == CONNECTION_BAD)
		die("lost the database connection: %s", err);
}

static bool
pg_command(const char *sql, char *err)
{
	PGresult   *res = PQexec(pg, sql);
	bool		ok = PQresultStatus(res) == PGRES_COMMAND_OK;

	if (!ok)
		pg_error(res, err);
	PQclear(res);
	return ok;
}

/*
 * One ismdb query: psycopg2's BEGIN, the query, the pool's ROLLBACK (see
 * the header).  The rows, or NULL with err.
 */
static PGresult *
catalog(Buf *sql, char *err)
{
	PGresult   *res;
	bool		ok;

	if (!pg_command("BEGIN", err))
	{
		free(sql->data);
		return NULL;
	}
	res = PQexec(pg, sql->data);
	free(sql->data);
	ok = PQresultStatus(res) == PGRES_TUPLES_OK;
	if (!ok)
		pg_error(res, err);
	if (!pg_command("ROLLBACK", err) || !ok)
	{
		PQclear(res);
		return NULL;
	}
	return res;
}

/* A column of a SELECT * row by name; NULL when SQL NULL. */
static const char *
field(const PGresult *res, int row, const char *name)
{
	int			col = PQfnumber(res, name);

	if (col < 0 || PQgetisnull(res, row, col))
		return NULL;
	return PQgetvalue(res, row, col);
}

/* execute_query_one: none, one, or more rows, which is an error */
static Lookup
one_row(PGresult *res, char *err)
{
	if (res == NULL)
		return LOOKUP_FAILED;
	if (PQntuples(res) > 1)
	{
		PQclear(res);
		failf(err, "Multiple rows returned when expecting a single value.");
		return LOOKUP_FAILED;
	}
	if (PQntuples(res) == 0)
	{
		PQclear(res);
		return LOOKUP_MISSING;
	}
	return LOOKUP_FOUND;
}

/* fetch_processor_state_route: SELECT * FROM processor_state WHERE id = … */
static PGresult *
processor_state_rows(const char *route_id, char *err)
{
	Buf			sql = {0};

	buf_add(&sql, "SELECT * FROM processor_state WHERE id = ");
	buf_add_literal(&sql, route_id);
	return catalog(&sql, err);
}

/* The query whose rows ismdb reads and this program does not need. */
static bool
catalog_discard(Buf *sql, char *err)
{
	PGresult   *res = catalog(sql, err);

	PQclear(res);
	return res != NULL;
}

/*
 * load_state_basic (state_storage.py): fetch_state, the five key
 * definitions (fetch_state_key_definition), fetch_state_config; the state's
 * count, and its type checked as there.
 */
static Lookup
load_state_basic(const char *state_id, long *count, char *err)
{
	static const char *const definitions[] = {
		"primary_key", "query_state_inheritance", "state_join_key",
		"remap_query_state_columns", "template_columns"
	};
	static const char *const types[] = {
		"StateConfig", "StateConfigLM", "StateConfigVisual", "StateConfigCode"
	};
	Buf			sql = {0};
	PGresult   *res;
	Lookup		found;
	const char *type;
	bool		known = false;

	buf_add(&sql, "SELECT * FROM state WHERE id = ");
	buf_add_literal(&sql, state_id);
	res = catalog(&sql, err);
	if ((found = one_row(res, err)) != LOOKUP_FOUND)
		return found;
	*count = field(res, 0, "count") ? atol(field(res, 0, "count")) : 0;
	type = field(res, 0, "state_type");
	for (size_t i = 0; type && i < sizeof(types) / sizeof(types[0]); i++)
		known |= strcmp(type, types[i]) == 0;
	if (!known)
		failf(err, "unsupported type %s", type ? type : "None");
	PQclear(res);

	for (size_t i = 0; i < sizeof(definitions) / sizeof(definitions[0]); i++)
	{
		sql = (Buf) {0};
		buf_add(&sql, "select id, state_id, name, alias, required, callable, definition_type"
				" from state_column_key_definition where state_id = ");
		buf_add_literal(&sql, state_id);
		buf_add(&sql, " and definition_type = ");
		buf_add_literal(&sql, definitions[i]);
		if (!catalog_discard(&sql, err))
			return LOOKUP_FAILED;
	}
	sql = (Buf) {0};
	buf_add(&sql, "select * from state_config where state_id = ");
	buf_add_literal(&sql, state_id);
	if (!catalog_discard(&sql, err))
		return LOOKUP_FAILED;
	/* the config is built after the queries, and only then the type fails */
	return known ? LOOKUP_FOUND : LOOKUP_FAILED;
}

static void
free_columns(State *s)
{
	for (int i = 0; i < s->ncols; i++)
		free(s->cols[i].name);
	free(s->cols);
	s->cols = NULL;
	s->ncols = 0;
}

/* fetch_state_columns: select * from state_column, those with a name */
static bool
load_columns(const char *state_id, State *s, char *err)
{
	Buf			sql = {0};
	PGresult   *res;

	buf_add(&sql, "select * from state_column where state_id = ");
	buf_add_literal(&sql, state_id);
	if ((res = catalog(&sql, err)) == NULL)
		return false;
	s->cols = need(calloc(PQntuples(res) + 1, sizeof(Column)));
	for (int i = 0; i < PQntuples(res); i++)
	{
		const char *name = field(res, i, "name");
		const char *type = field(res, i, "data_type");

		if (name == NULL || name[0] == '\0')
			continue;
		s->cols[s->ncols].id = atol(field(res, i, "id"));
		s->cols[s->ncols].name = xstrdup(name);
		s->cols[s->ncols].is_json = type && strcmp(type, "json") == 0;
		s->ncols++;
	}
	PQclear(res);
	return true;
}

/*
 * fetch_state_data_by_column_id with an offset: the column's values of rows
 * [offset, offset + limit) placed by data_index, NULL for none, the list cut
 * to the state's count; *n their number.  Values are decoded as psycopg2
 * decodes them (jsonb into objects, text as strings).
 */
static cJSON **
load_column_page(const Column *c, long state_count, long offset, long limit, long *n,
				 char *err)
{
	Buf			sql = {0};
	PGresult   *res;
	cJSON	  **values;

	buf_add(&sql, "SELECT column_id, data_index, %s FROM state_column_data"
			" WHERE column_id = %ld AND data_index >= %ld AND data_index < %ld"
			" ORDER BY data_index", c->is_json ? "data_json_value" : "data_value",
			c->id, offset, offset + limit);
	if ((res = catalog(&sql, err)) == NULL)
		return NULL;
	values = need(calloc(limit, sizeof(cJSON *)));
	for (int i = 0; i < PQntuples(res); i++)
	{
		long		at = atol(PQgetvalue(res, i, 1)) - offset;

		if (at < 0 || at >= limit || PQgetisnull(res, i, 2))
			continue;
		cJSON_Delete(values[at]);
		values[at] = c->is_json ? cJSON_Parse(PQgetvalue(res, i, 2))
			: cJSON_CreateString(PQgetvalue(res, i, 2));
	}
	PQclear(res);
	*n = state_count - offset < limit ? state_count - offset : limit;
	if (*n < 0)
		*n = 0;
	for (long i = *n; i < limit; i++)
		cJSON_Delete(values[i]);
	return values;
}

/* load_state_data_mappings(state_id): every mapping of the state */
static bool
load_mappings(const char *state_id, char *err)
{
	Buf			sql = {0};

	buf_add(&sql, "select state_key, data_index from state_column_data_mapping where state_id = ");
	buf_add_literal(&sql, state_id);
	return catalog_discard(&sql, err);
}

/* ---- routes, processors ---------------------------------------------------- */

/* The routing file's routes, once (Router.create_routing_table). */
static void
load_routes(void)
{
	PGresult   *res = PQexec(pg, "SELECT selector, name, subject, jetstream_enabled,"
							 " concurrent_enabled, concurrent_priority_enabled"
							 " FROM ism_state.route");
	char		err[ERR_LEN];

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		pg_error(res, err);
		die("could not read the routes: %s", err);
	}
	nroutes = PQntuples(res);
	routes = need(calloc(nroutes + 1, sizeof(Route)));
	for (int i = 0; i < nroutes; i++)
	{
		routes[i].selector = xstrdup(PQgetvalue(res, i, 0));
		routes[i].name = xstrdup(PQgetvalue(res, i, 1));
		routes[i].subject = xstrdup(PQgetvalue(res, i, 2));
		routes[i].jetstream = strcmp(PQgetvalue(res, i, 3), "t") == 0;
		routes[i].concurrent = strcmp(PQgetvalue(res, i, 4), "t") == 0;
		routes[i].priority = strcmp(PQgetvalue(res, i, 5), "t") == 0;
	}
	PQclear(res);
}

static Route *
find_route(const char *selector)
{
	for (int i = 0; i < nroutes; i++)
		if (strcmp(routes[i].selector, selector) == 0)
			return &routes[i];
	return NULL;
}

/* find_route_wildcard: the exact selector, else the one matching wildcard */
static Route *
find_route_wildcard(const char *key, char *err)
{
	Route	   *found = find_route(key);
	int			matches = 0;

	for (int i = 0; found == NULL && i < nroutes; i++)
	{
		size_t		len = strlen(routes[i].selector);

		if (len >= 2 && strcmp(routes[i].selector + len - 2, "/*") == 0 &&
			strncmp(routes[i].selector, key, len - 2) == 0 && matches++ == 0)
			found = &routes[i];
	}
	if (matches > 1)
		found = NULL;
	if (found == NULL)
		failf(err, "Route not found for provider: %s", key);
	return found;
}

/* An integral JSON number or null (its default), as an int property. */
static bool
int_property(const cJSON *props, const char *key, long *value, char *err)
{
	const cJSON *v = member(props, key);

	if (v == NULL || cJSON_IsNull(v))
		return true;
	if (!cJSON_IsNumber(v) || v->valuedouble != (double) (long) v->valuedouble)
		return failf(err, "%s: Input should be a valid integer", key);
	*value = (long) v->valuedouble;
	return true;
}

/* concurrencyMode: ConcurrencyMode's values, or its names in any case */
static bool
mode_property(const cJSON *props, Mode *mode, char *err)
{
	static const struct
	{
		const char *value;
		const char *name;
		Mode		mode;
	}			modes[] = {
		{"project-id", "PROJECT_ID", MODE_PROJECT_ID},
		{"user-id", "USER_ID", MODE_USER_ID},
		{"route-id", "ROUTE_ID", MODE_ROUTE_ID},
		{"expression", "EXPRESSION", MODE_EXPRESSION},
	};
	const cJSON *v = member(props, "concurrencyMode");

	if (v == NULL || cJSON_IsNull(v))
		return true;
	for (size_t i = 0; cJSON_IsString(v) && i < sizeof(modes) / sizeof(modes[0]); i++)
		if (strcmp(v->valuestring, modes[i].value) == 0 ||
			strcasecmp(v->valuestring, modes[i].name) == 0)
		{
			*mode = modes[i].mode;
			return true;
		}
	return failf(err, "concurrencyMode: Input should be 'project-id', 'user-id', 'route-id' or 'expression'");
}

/* ProcessorPropertiesBase(**(processor.properties or {})) */
static bool
parse_properties(const char *text, Processor *p, char *err)
{
	cJSON	   *props = text ? cJSON_Parse(text) : NULL;
	bool		ok;

	p->max_batch_size = 100;
	p->max_batch_limit = 1;
	p->mode = MODE_PROJECT_ID;
	if (truthy(props) && !cJSON_IsObject(props))
		ok = failf(err, "processor %s: properties are not an object", p->id);
	else
		ok = int_property(props, "maxBatchSize", &p->max_batch_size, err) &&
			int_property(props, "maxBatchLimit", &p->max_batch_limit, err) &&
			mode_property(props, &p->mode, err);
	p->has_expression = truthy(member(props, "concurrencyExpression"));
	if (ok && (p->max_batch_size <= 0 || p->max_batch_limit <= 0))
		ok = failf(err, "processor %s: maxBatchSize and maxBatchLimit must be positive", p->id);
	cJSON_Delete(props);
	return ok;
}

static void
free_processor(Processor *p)
{
	free(p->id);
	free(p->project_id);
	memset(p, 0, sizeof(*p));
}

/*
 * _fetch_processor_and_route: fetch_processor (SELECT * FROM processor
 * WHERE id = …), the route of its provider, and its properties.
 */
static bool
load_processor(const char *processor_id, Processor *p, char *err)
{
	Buf			sql = {0};
	PGresult   *res;
	Lookup		found;
	bool		ok;

	memset(p, 0, sizeof(*p));
	buf_add(&sql, "SELECT * FROM processor WHERE id = ");
	buf_add_literal(&sql, processor_id);
	res = catalog(&sql, err);
	if ((found = one_row(res, err)) != LOOKUP_FOUND)
		return found == LOOKUP_MISSING ? failf(err, "Processor not found: %s", processor_id) : false;
	p->id = xstrdup(processor_id);
	if (field(res, 0, "project_id"))
		p->project_id = xstrdup(field(res, 0, "project_id"));
	ok = (p->route = find_route_wildcard(field(res, 0, "provider_id") ?
										 field(res, 0, "provider_id") : "None", err)) != NULL &&
		parse_properties(field(res, 0, "properties"), p, err);
	PQclear(res);
	if (!ok)
		free_processor(p);
	return ok;
}

/* ---- publishing ------------------------------------------------------------ */

/* NATSRoute.create_stream: made with [subject, subject.>], or given them. */
static void
connect_route(Route *r)
{
	jsStreamInfo *si = NULL;
	jsStreamConfig cfg;
	jsErrCode	jerr = 0;
	char	   *wild;
	const char *subjects[2];
	natsStatus	s;

	r->connected = true;
	if (!r->jetstream)
		return;
	wild = need(malloc(strlen(r->subject) + 3));
	sprintf(wild, "%s.>", r->subject);
	subjects[0] = r->subject;
	subjects[1] = wild;
	s = js_GetStreamInfo(&si, js, r->name, NULL, &jerr);
	if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr)
	{
		jsStreamConfig_Init(&cfg);
		cfg.Name = r->name;
		cfg.Subjects = subjects;
		cfg.SubjectsLen = 2;
		cfg.Storage = js_FileStorage;
		cfg.Retention = js_WorkQueuePolicy;
		s = js_AddStream(NULL, js, &cfg, NULL, &jerr);
	}
	else if (s == NATS_OK)
	{
		int			have = si->Config->SubjectsLen;
		const char **all = need(calloc(have + 2, sizeof(char *)));
		int			n = 0;

		for (int i = 0; i < have; i++)
			all[n++] = si->Config->Subjects[i];
		for (int k = 0; k < 2; k++)
		{
			bool		present = false;

			for (int i = 0; i < have; i++)
				present |= strcmp(si->Config->Subjects[i], subjects[k]) == 0;
			if (!present)
				all[n++] = subjects[k];
		}
		if (n > have)
		{
			const char **own = si->Config->Subjects;

			/* lent for the update: the stream info frees its own list */
			si->Config->Subjects = all;
			si->Config->SubjectsLen = n;
			s = js_UpdateStream(NULL, js, si->Config, NULL, &jerr);
			si->Config->Subjects = own;
			si->Config->SubjectsLen = have;
		}
		free(all);
	}
	if (s != NATS_OK)
		warn("failed to connect to route: %s, subject: %s: %s (JetStream error %d)",
			 r->name, r->subject, natsStatus_GetText(s), (int) jerr);
	jsStreamInfo_Destroy(si);
	free(wild);
}

/* NATSRoute.publish: a failure is logged, not raised. */
static void
publish(Route *r, const char *subject, cJSON *message)
{
	char	   *text = need(cJSON_PrintUnformatted(message));
	jsErrCode	jerr = 0;
	natsStatus	s;

	if (!r->connected)
		connect_route(r);
	if (r->jetstream)
		s = js_Publish(NULL, js, subject, text, (int) strlen(text), NULL, &jerr);
	else
		s = natsConnection_PublishString(nc, subject, text);
	if (s == NATS_OK)
		npublished++;
	else
		warn("failed to publish message: %s (JetStream error %d)", natsStatus_GetText(s),
			 (int) jerr);
	free(text);
}

/* send_processor_state_update on the monitor route */
static void
publish_status(cJSON *route_id, const char *status, const char *exception)
{
	Route	   *monitor = find_route(MONITOR);
	cJSON	   *m;

	if (monitor == NULL)
	{
		warn("no monitor route defined, unable to provide processor state status updates");
		return;
	}
	m = need(cJSON_CreateObject());
	need(cJSON_AddStringToObject(m, "type", "processor_state"));
	add_value(m, "route_id", route_id);
	need(cJSON_AddStringToObject(m, "status", status));
	if (exception)
		need(cJSON_AddStringToObject(m, "exception", exception));
	else
		need(cJSON_AddNullToObject(m, "exception"));
	need(cJSON_AddNullToObject(m, "data"));
	publish(monitor, monitor->subject, m);
	cJSON_Delete(m);
}

/* ---- partition key and subject --------------------------------------------- */

/* _get_partition_key; NULL for none (a processor without a project) */
static char *
partition_key(const Processor *p, const char *route_id, const cJSON *context)
{
	static bool expression_said = false;
	const cJSON *user;

	switch (p->mode)
	{
		case MODE_USER_ID:
			if (!truthy(context))
				break;
			if ((user = member(context, "user_id")) == NULL)
				break;
			return cJSON_IsString(user) ? xstrdup(user->valuestring)
				: need(cJSON_PrintUnformatted(user));
		case MODE_ROUTE_ID:
			return xstrdup(route_id);
		case MODE_EXPRESSION:
			if (p->has_expression && !expression_said)
				warn("processor %s: concurrencyExpression not evaluated here: the project id instead",
					 p->id);
			expression_said |= p->has_expression;
			break;
		case MODE_PROJECT_ID:
			break;
	}
	return p->project_id ? xstrdup(p->project_id) : NULL;
}

/* get_publish_subject; NULL with err for a priority neither high nor low */
static char *
publish_subject(const Route *r, const cJSON *message, const char *key, char *err)
{
	const cJSON *priority = member(message, "priority");
	const char *level = "low";
	Buf			subject = {0};

	if (!(r->concurrent && r->priority))
		return xstrdup(r->subject);
	if (truthy(priority))
	{
		if (!cJSON_IsString(priority) ||
			(strcmp(priority->valuestring, "high") != 0 && strcmp(priority->valuestring, "low") != 0))
		{
			failf(err, "priority must be 'high' or 'low'");
			return NULL;
		}
		level = priority->valuestring;
	}
	buf_add(&subject, "%s.%s", r->subject, level);
	if (key && key[0])
		buf_add(&subject, ".%s", key);
	return subject.data;
}

/* The route's subject for this processor's key. */
static char *
processor_subject(const Processor *p, const cJSON *message, const char *route_id, char *err)
{
	char	   *key = partition_key(p, route_id, member(message, "context"));
	char	   *subject = publish_subject(p->route, message, key, err);

	free(key);
	return subject;
}

/* ---- the three message types ----------------------------------------------- */

/* _build_base_route_message */
static cJSON *
base_message(const cJSON *message, bool input_route, cJSON *route_id,
			 const char *processor_id)
{
	cJSON	   *m = need(cJSON_CreateObject());
	cJSON	   *context = member(message, "context");

	need(cJSON_AddStringToObject(m, "type", "query_state"));
	add_value(m, "input_route_id", input_route ? member(message, "input_route_id") : NULL);
	if (truthy(context))
		cJSON_AddItemReferenceToObject(m, "context", context);
	else
		need(cJSON_AddObjectToObject(m, "context"));
	if (route_id)
		cJSON_AddItemReferenceToObject(m, "route_id", route_id);
	if (processor_id)
		need(cJSON_AddStringToObject(m, "processor_id", processor_id));
	return m;
}

/* {**base, …}: a new message holding base's keys (references) */
static cJSON *
message_from(const cJSON *base)
{
	cJSON	   *m = need(cJSON_CreateObject());

	for (cJSON *c = base->child; c; c = c->next)
		cJSON_AddItemReferenceToObject(m, c->string, c);
	return m;
}

/* message[key], a string here (psycopg2 would quote a number as one) */
static const char *
required_string(const cJSON *message, const char *key, char *err)
{
	const cJSON *v = member(message, key);

	if (v == NULL)
		failf(err, "%s does not exist in message envelope", key);
	else if (!cJSON_IsString(v))
		failf(err, "%s is not a string", key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The entries as sent, a non-list wrapped in one; then the publish. */
static bool
send_entries(const cJSON *message, const Processor *p, cJSON *route_id,
			 const char *key_route_id, const char *processor_id, bool input_route, char *err)
{
	cJSON	   *qs = member(message, "query_state");
	char	   *subject = processor_subject(p, message, key_route_id, err);
	cJSON	   *m;
	cJSON	   *list;

	if (subject == NULL)
		return false;
	m = base_message(message, input_route, route_id, processor_id);
	if (cJSON_IsArray(qs))
		cJSON_AddItemReferenceToObject(m, "query_state", qs);
	else
	{
		list = need(cJSON_AddArrayToObject(m, "query_state"));
		cJSON_AddItemReferenceToArray(list, qs);
	}
	publish(p->route, subject, m);
	cJSON_Delete(m);
	free(subject);
	return true;
}

/* execute_query_state_entry */
static bool
query_state_entry(const cJSON *message, char *err)
{
	const char *route_id = required_string(message, "route_id", err);
	PGresult   *res;
	Lookup		found;
	char	   *processor_id;
	Processor	p;
	bool		ok;

	if (route_id == NULL)
		return false;
	if (member(message, "query_state") == NULL)
		return failf(err, "no query_state entries found in message envelop");
	res = processor_state_rows(route_id, err);
	if (res && PQntuples(res) > 1)
	{
		PQclear(res);
		return failf(err, "returned too many routes for given %s", route_id);
	}
	if ((found = one_row(res, err)) != LOOKUP_FOUND)
		return found == LOOKUP_MISSING ?
			failf(err, "processor state not found for route_id: %s", route_id) : false;
	processor_id = xstrdup(field(res, 0, "processor_id") ? field(res, 0, "processor_id") : "None");
	PQclear(res);
	ok = load_processor(processor_id, &p, err);
	if (ok)
	{
		ok = send_entries(message, &p, member(message, "route_id"), route_id, processor_id,
						  true, err);
		free_processor(&p);
	}
	free(processor_id);
	return ok;
}

/* execute_query_processor_entry: no route lookup, no input route */
static bool
query_processor_entry(const cJSON *message, char *err)
{
	const char *processor_id = required_string(message, "processor_id", err);
	Processor	p;
	bool		ok;

	if (processor_id == NULL)
		return false;
	if (member(message, "query_state") == NULL)
		return failf(err, "no query_state entries found in message envelope");
	if (!load_processor(processor_id, &p, err))
		return false;
	ok = send_entries(message, &p, NULL, processor_id, processor_id, false, err);
	free_processor(&p);
	return ok;
}

/* run_id (uuid4().hex[:8]) and run_created_at (datetime.now(utc).isoformat()) */
static void
run_stamp(char *run_id, char *created_at, size_t len)
{
	struct timeval tv;
	struct tm	tm;
	char		second[32];

	snprintf(run_id, 9, "%08lx", ((unsigned long) random() << 1 ^ (unsigned long) random()) & 0xffffffffUL);
	gettimeofday(&tv, NULL);
	strftime(second, sizeof(second), "%Y-%m-%dT%H:%M:%S", gmtime_r(&tv.tv_sec, &tm));
	snprintf(created_at, len, "%s.%06ld+00:00", second, (long) tv.tv_usec);
}

/* entry.update(apply_to_all): an existing key keeps its place */
static void
stamp_entry(cJSON *entry, const char *key, const char *value)
{
	cJSON	   *v = need(cJSON_CreateString(value));

	if (cJSON_GetObjectItemCaseSensitive(entry, key))
		cJSON_ReplaceItemInObjectCaseSensitive(entry, key, v);
	else
		cJSON_AddItemToObject(entry, key, v);
}

/* One page of a replay, read as load_state(offset, limit) reads it. */
typedef struct Page
{
	State		state;
	cJSON	 ***values;			/* per column, its rows' values */
	long	   *nvalues;
} Page;

static void
free_page(Page *page)
{
	for (int c = 0; c < page->state.ncols; c++)
	{
		for (long i = 0; page->values && page->values[c] && i < page->nvalues[c]; i++)
			cJSON_Delete(page->values[c][i]);
		if (page->values)
			free(page->values[c]);
	}
	free(page->values);
	free(page->nvalues);
	free_columns(&page->state);
}

/*
 * load_state(state_id, load_data=True, offset, limit): false with err on a
 * database error; a state gone meanwhile is a page without columns.
 */
static bool
load_page(const char *state_id, long offset, long limit, Page *page, char *err)
{
	Lookup		found;

	memset(page, 0, sizeof(*page));
	if ((found = load_state_basic(state_id, &page->state.count, err)) != LOOKUP_FOUND)
		return found == LOOKUP_MISSING;
	if (!load_columns(state_id, &page->state, err))
		return false;
	page->values = need(calloc(page->state.ncols + 1, sizeof(cJSON **)));
	page->nvalues = need(calloc(page->state.ncols + 1, sizeof(long)));
	for (int c = 0; c < page->state.ncols; c++)
		if ((page->values[c] = load_column_page(&page->state.cols[c], page->state.count, offset,
												limit, &page->nvalues[c], err)) == NULL)
			return false;
	return load_mappings(state_id, err);
}

/* _build_query_state_entries for rows [from, to) of the page, stamped */
static cJSON *
page_entries(const Page *page, long from, long to, const char *run_id, const char *created_at)
{
	cJSON	   *list = need(cJSON_CreateArray());

	for (long i = from; i < to; i++)
	{
		cJSON	   *entry = need(cJSON_CreateObject());

		for (int c = 0; c < page->state.ncols; c++)
		{
			cJSON	   *v = i < page->nvalues[c] ? page->values[c][i] : NULL;

			add_value(entry, page->state.cols[c].name, v);
		}
		stamp_entry(entry, "run_id", run_id);
		stamp_entry(entry, "run_created_at", created_at);
		cJSON_AddItemToArray(list, entry);
	}
	return list;
}

/* _process_state_batch: one page, then its messages of maxBatchLimit entries */
static bool
replay_page(const cJSON *message, const cJSON *base, const Processor *p, const char *route_id,
			const char *state_id, long count, long number, const char *run_id,
			const char *created_at, char *err)
{
	long		offset = number * p->max_batch_size;
	long		rows = count - offset < p->max_batch_size ? count - offset : p->max_batch_size;
	Page		page;
	char	   *subject = NULL;
	bool		ok = load_page(state_id, offset, p->max_batch_size, &page, err);

	if (ok && page.state.ncols == 0)
		warn("batch %ld returned no data, skipping", number + 1);
	else if (ok && (subject = processor_subject(p, message, route_id, err)) == NULL)
		ok = false;
	for (long start = 0; subject && start < rows; start += p->max_batch_limit)
	{
		long		end = start + p->max_batch_limit < rows ? start + p->max_batch_limit : rows;
		cJSON	   *m = message_from(base);

		cJSON_AddItemToObject(m, "query_state", page_entries(&page, start, end, run_id, created_at));
		publish(p->route, subject, m);
		cJSON_Delete(m);
	}
	free(subject);
	free_page(&page);
	return ok;
}

/* execute_processor_state_route */
static bool
query_state_route(const cJSON *message, char *err)
{
	const char *route_id = required_string(message, "route_id", err);
	PGresult   *res;
	char	   *state_id = NULL;
	char	   *processor_id = NULL;
	State		metadata = {0};
	Processor	p = {0};
	cJSON	   *base = NULL;
	char		run_id[9];
	char		created_at[48];
	bool		ok = false;

	if (route_id == NULL || (res = processor_state_rows(route_id, err)) == NULL)
		return false;
	if (PQntuples(res) == 0)
		failf(err, "invalid route: %s, not found", route_id);
	else if (PQntuples(res) > 1)
		failf(err, "invalid number of routes. expected 1, got %d", PQntuples(res));
	else
	{
		state_id = xstrdup(field(res, 0, "state_id") ? field(res, 0, "state_id") : "None");
		processor_id = xstrdup(field(res, 0, "processor_id") ? field(res, 0, "processor_id") : "None");
		ok = true;
	}
	PQclear(res);

	/* load_state_metadata */
	if (ok)
	{
		Lookup		found = load_state_basic(state_id, &metadata.count, err);

		if (found == LOOKUP_MISSING)
			failf(err, "State metadata not found for state_id: %s", state_id);
		ok = found == LOOKUP_FOUND && load_columns(state_id, &metadata, err);
	}
	if (ok)
	{
		run_stamp(run_id, created_at, sizeof(created_at));
		base = base_message(message, true, member(message, "route_id"), NULL);
		/* _prepare_processor_and_route: its failure is reported, not raised */
		if (!load_processor(processor_id, &p, err))
			publish_status(member(message, "route_id"), "FAILED", err);
		else if (metadata.count == 0)
		{
			/* _handle_empty_state */
			char	   *subject = processor_subject(&p, message, route_id, err);
			cJSON	   *m = message_from(base);

			if ((ok = subject != NULL))
			{
				need(cJSON_AddArrayToObject(m, "query_state"));
				publish(p.route, subject, m);
			}
			cJSON_Delete(m);
			free(subject);
		}
		else
			for (long b = 0; ok && b * p.max_batch_size < metadata.count; b++)
				ok = replay_page(message, base, &p, route_id, state_id, metadata.count, b,
								 run_id, created_at, err);
	}
	cJSON_Delete(base);
	free_processor(&p);
	free_columns(&metadata);
	free(state_id);
	free(processor_id);
	return ok;
}

/* MessagingStateRouterConsumer.execute */
static bool
execute(const cJSON *message, char *err)
{
	const cJSON *type = member(message, "type");

	if (type == NULL)
		return failf(err, "inbound message did not have a type");
	if (cJSON_IsString(type) && strcmp(type->valuestring, "query_state_entry") == 0)
		return query_state_entry(message, err);
	if (cJSON_IsString(type) && strcmp(type->valuestring, "query_processor_entry") == 0)
		return query_processor_entry(message, err);
	if (cJSON_IsString(type) && strcmp(type->valuestring, "query_state_route") == 0)
		return query_state_route(message, err);
	return failf(err, "query state value does not exist in message envelope");
}

/* on_receive: decode, ROUTED, execute (FAILED on error), then the ack */
static void
handle(natsMsg *msg)
{
	cJSON	   *message = cJSON_ParseWithLength(natsMsg_GetData(msg),
												(size_t) natsMsg_GetDataLength(msg));
	char		err[ERR_LEN] = "";
	natsStatus	s;

	if (message == NULL)
		warn("critical error trying to process message: not JSON");
	else
	{
		cJSON	   *route_id = member(message, "route_id");

		publish_status(route_id, "ROUTED", NULL);
		if (!cJSON_IsObject(message))
			failf(err, "inbound message did not have a type");
		if (err[0] || !execute(message, err))
			publish_status(route_id, "FAILED", err);
	}
	cJSON_Delete(message);
	s = natsMsg_Ack(msg, NULL);
	if (s != NATS_OK)
		nats_die("could not ack a message", s, 0);
	nmessages++;
}

/* ---- NATS and the main loop ---------------------------------------------- */

static natsSubscription *
subscribe(void)
{
	natsSubscription *sub = NULL;
	jsSubOptions so;
	jsErrCode	jerr = 0;
	natsStatus	s;

	bench_connect(opt.url, &nc, &js);
	jsSubOptions_Init(&so);
	so.Stream = opt.stream;
	so.Consumer = opt.durable;
	s = js_PullSubscribe(&sub, js, NULL, opt.durable, NULL, &so, &jerr);
	if (s != NATS_OK)
		nats_die("could not bind the durable pull consumer", s, jerr);
	return sub;
}

/* NATSRoute.consume: fetch, handle in order, back off while idle */
static void
consume(natsSubscription *sub)
{
	int			wait_ms = FIRST_WAIT_MS;

	while (!stopping)
	{
		natsMsgList list = {0};
		jsErrCode	jerr = 0;
		natsStatus	s = natsSubscription_Fetch(&list, sub, opt.fetch, wait_ms, &jerr);

		if (s != NATS_OK && s != NATS_TIMEOUT)
			nats_die("could not fetch", s, jerr);
		for (int i = 0; i < list.Count; i++)
			handle(list.Msgs[i]);
		wait_ms = list.Count > 0 ? FIRST_WAIT_MS
			: (2 * wait_ms < LAST_WAIT_MS ? 2 * wait_ms : LAST_WAIT_MS);
		natsMsgList_Destroy(&list);
	}
}

static void
on_signal(int signo)
{
	(void) signo;
	stopping = 1;
}

static void
usage(void)
{
	fprintf(stderr,
			"usage: upstream-router -s NATS_URL --stream STREAM --durable DURABLE -d CONNINFO\n"
			"           [--fetch N]\n");
	exit(2);
}

static void
parse_options(int argc, char **argv)
{
	enum
	{
		OPT_STREAM = 256, OPT_DURABLE, OPT_FETCH
	};
	static const struct option longopts[] = {
		{"stream", required_argument, NULL, OPT_STREAM},
		{"durable", required_argument, NULL, OPT_DURABLE},
		{"fetch", required_argument, NULL, OPT_FETCH},
		{NULL, 0, NULL, 0}
	};
	int			c;
	char	   *end;

	while ((c = getopt_long(argc, argv, "s:d:", longopts, NULL)) != -1)
		switch (c)
		{
			case 's': opt.url = optarg; break;
			case 'd': opt.conninfo = optarg; break;
			case OPT_STREAM: opt.stream = optarg; break;
			case OPT_DURABLE: opt.durable = optarg; break;
			case OPT_FETCH:
				opt.fetch = (int) strtol(optarg, &end, 10);
				if (*optarg == '\0' || *end != '\0' || opt.fetch <= 0 || opt.fetch > 10000)
					usage();
				break;
			default: usage();
		}
	if (optind != argc || !opt.url || !opt.stream || !opt.durable || !opt.conninfo)
		usage();
}

int
main(int argc, char **argv)
{
	struct sigaction sa = {.sa_handler = on_signal};
	natsSubscription *sub;
	natsStatus	s;

	parse_options(argc, argv);
	srandom((unsigned) time(NULL) ^ (unsigned) getpid());
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	pg = PQconnectdb(opt.conninfo);
	if (PQstatus(pg) != CONNECTION_OK)
		die("could not connect to PostgreSQL: %s", PQerrorMessage(pg));
	load_routes();
	sub = subscribe();
	consume(sub);

	/* the acks are in the connection's buffer: see them out */
	s = natsConnection_FlushTimeout(nc, 10000);
	if (s != NATS_OK)
		nats_die("could not flush the acks", s, 0);
	printf("messages=%ld published=%ld\n", nmessages, npublished);

	/* destroying (not unsubscribing) keeps the durable consumer */
	natsSubscription_Destroy(sub);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	nats_Close();
	PQfinish(pg);
	return 0;
}

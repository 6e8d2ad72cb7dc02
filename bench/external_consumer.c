/*
 * external-consumer: the architecture ism_state replaces, for the benchmark.
 * An external service pulls state-tables messages from a JetStream durable
 * consumer and writes their records into PostgreSQL over libpq.
 *
 *   external-consumer --mode upstream|tuned -s NATS_URL --stream STREAM
 *       --durable DURABLE --subject SUBJECT -d CONNINFO [--fetch N]
 *       [--max-ack-pending N] [--idle-exit SECONDS] [--schema SCHEMA]
 *       [--monitor SUBJECT]
 *
 * Upstream is the Go state-tables service: "state-tables" below stands for
 * quantumwake/alethic-ism-state-tables pkg/handler/, "core-go" for
 * quantumwake/alethic-ism-core-go.
 *
 * It binds the durable pull consumer (created when absent: explicit ack,
 * filter SUBJECT; destroying the subscription at exit keeps it), fetches
 * (waiting at most 1 s a fetch; upstream waits 5 s, core-go
 * pkg/routing/nats/nats_route.go subscribePull, which matters only when
 * the stream is idle) and exits once it has processed a message and then
 * seen none for --idle-exit seconds (default 5), printing
 * "records=<n> messages=<m> seconds=<t>": the records taken from the
 * messages, the messages fetched, and the time from the first fetched
 * message to the last commit.  SCHEMA (default public) is the catalog's;
 * the tables written are unqualified, as upstream's (state-tables
 * database.go), so they go where the connection's search_path puts them.
 *
 * Both modes read the messages and the catalog as state-tables does
 * (handler.go MessageCallback): a RouteMessage's route_id and query_state,
 * every other key ignored (core-go pkg/data/models/route_message.go);
 * route_id -> processor_state.processor_id -> processor.properties in
 * SCHEMA, cached for the whole run (upstream: 30 s, setup.go
 * SetupCachedBackend); the properties with their defaults and Go's
 * decoding rules (config.go parseProperties over core-go
 * pkg/repository/processor/tables/config.go); one writer per processor
 * (manager_cache.go GetBatchWriter); the table "<processor_id>_<tableName>",
 * or "<processor_id>" when tableName is empty (database.go
 * FormatTableName), every column TEXT; _timestamp as RFC 3339 UTC at
 * second precision, one per message (table_manager.go BatchWriter.Add).
 * Values are written as TEXT the way ism_state writes them
 * (src/copy_text.c): strings as they are, null as NULL, numbers, booleans,
 * objects and arrays as compact JSON.  Upstream with pgx's default mode
 * cannot bind anything but strings to a TEXT column (database.go
 * InsertRecord binds the decoded Go values; jackc/pgx#2307); the
 * benchmark's records have numbers, so both modes use ism_state's mapping
 * to compare the write paths rather than a failure.
 *
 * --mode upstream (fetch 10 by default, as subscribePull) reproduces the
 * Go algorithm (table_manager.go):
 *   - each message is acked as soon as its records are in memory, before
 *     any write (MessageCallback acks on return); a message that cannot be
 *     decoded, whose route or processor is unknown, whose lookup fails or
 *     whose properties do not parse is logged, acked and dropped;
 *   - records are appended to their processor's batch, which is flushed
 *     when it holds batchSize records (Add) and every batchWindowTTL
 *     seconds from the writer's creation when that is at least 5
 *     (NewBatchWriter, backgroundFlush).
 *     Upstream flushes in goroutines; here the size flush runs right after
 *     the ack and the timer between fetches, on the one thread, doing the
 *     same work (the timer's resolution is the 1 s fetch wait).  For one
 *     processor that is upstream's behaviour, since its next Add waits for
 *     the flush (both hold the writer's mutex); flushes of different
 *     processors, which upstream can run at once on several connections
 *     (database.go GetDB, a pool), run one after another;
 *   - a writer's first flush runs CREATE TABLE IF NOT EXISTS with the keys
 *     of the first pending record only (flush, database.go
 *     CreateTableFromMap); no ALTER ever;
 *   - a flush is one autocommitted INSERT per record naming that record's
 *     keys (database.go InsertRecord), each statement prepared once per
 *     distinct SQL text as pgx's statement cache does.  A key the table
 *     lacks is not dropped: the INSERT fails, as upstream, the flush stops
 *     there and logs, the rows already inserted stay, the batch stays
 *     pending and is written again from its start at the next flush,
 *     duplicating them;
 *   - with --monitor, after a successful flush, one COMPLETED status per
 *     distinct route of the flush, each a JetStream publish followed by a
 *     connection flush (monitoring.go PublishRouteStatus).
 *   Not reproduced: idle writer eviction (manager_cache.go cleanup) and the
 *   30 s cache expiry.
 *   At exit, records still pending are flushed (upstream would hold them
 *   until its timer, or lose them at shutdown: setup.go Teardown does not
 *   wait for the writers' last flushes) so that the tables are complete; a
 *   warning then says the time includes the idle wait.
 *
 * --mode tuned (fetch 100 by default) is the best a careful external
 *   consumer could do: per fetched batch, the records grouped by table, one
 *   transaction with CREATE TABLE IF NOT EXISTS / ADD COLUMN IF NOT EXISTS
 *   for keys not seen before and multi-row INSERTs (at most 60,000
 *   parameters each), then COMMIT, and only then the acks (bad messages
 *   terminated).  batchSize and batchWindowTTL do not apply: the fetch is the
 *   batch.  A database error (lookups included) exits without acking, so
 *   the batch is redelivered.
 *
 * Unlike upstream (database.go quotes identifiers without escaping them),
 * identifiers are escaped with PQescapeIdentifier; ordinary names are the
 * same bytes.  Lookups and writes share one connection (upstream has a
 * pool each: database.go GetDB, and the core-go backends of setup.go).
 */
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <nats/nats.h>

#include "bench_util.h"

const char *bench_program = "external-consumer";

#define FETCH_WAIT_MS	1000
#define MAX_PARAMS		60000	/* bind parameters in one tuned INSERT */
#define MIN_WINDOW_S	5		/* shorter batchWindowTTLs start no timer */

typedef enum Mode
{
	MODE_UPSTREAM,
	MODE_TUNED
} Mode;

typedef struct Options
{
	Mode		mode;
	const char *url;
	const char *stream;
	const char *durable;
	const char *subject;
	const char *conninfo;
	const char *schema;
	const char *monitor;		/* COMPLETED statuses go here; NULL: none */
	int			fetch;
	int			max_ack_pending;
	int			idle_exit_s;
} Options;

typedef struct PtrList
{
	void	  **items;
	int			n;
	int			cap;
} PtrList;

/*
 * processor.properties (core-go TableProcessorConfig); a JSON null clears a
 * setting
 */
typedef struct TableConfig
{
	char	   *table_name;		/* "" when null */
	bool		has_batch_size;
	long		batch_size;
	bool		has_window;
	long		window_s;
	bool		include_timestamp;
} TableConfig;

/* Upstream's BatchWriter, one per processor, with the tuned columns. */
typedef struct Writer
{
	char	   *processor_id;
	char	   *config_error;	/* properties did not parse: drop its messages */
	TableConfig config;
	char	   *table;			/* quoted identifier */
	PtrList		batch;			/* of cJSON *, pending records */
	PtrList		routes;			/* of char *, distinct routes since last flush */
	bool		table_ready;	/* upstream: the DDL has run */
	double		next_tick;		/* upstream: next timer flush; 0 when none */
	PtrList		columns;		/* tuned: of char *, the table's columns */
	bool		columns_known;
	bool		touched;		/* tuned: has messages in this fetch */
	struct Writer *next_touched;
	struct Writer *next;
} Writer;

typedef struct Route
{
	char	   *id;
	Writer	   *writer;
	struct Route *next;
} Route;

/* upstream: a prepared INSERT per distinct SQL text, like pgx's cache */
typedef struct Statement
{
	char	   *sql;
	char		name[24];
	struct Statement *next;
} Statement;

typedef enum Lookup
{
	LOOKUP_OK,
	LOOKUP_DROP,				/* bad message, unknown route, bad properties */
	LOOKUP_DB_ERROR
} Lookup;

static Options opt = {.schema = "public", .max_ack_pending = 1000, .idle_exit_s = 5};
static PGconn *pg;
static natsConnection *nc;
static jsCtx *js;
static char *route_sql;
static char *processor_sql;
static Writer *writers;
static Route *route_cache;
static Statement *statements;
static int	nstatements;
static long nrecords;
static long nmessages;
static double first_message_at;
static double last_commit_at;

/* ---- small helpers (more in bench_util.c) ---------------------------- */

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
list_push(PtrList *l, void *p)
{
	if (l->n == l->cap)
	{
		l->cap = l->cap ? 2 * l->cap : 16;
		l->items = need(realloc(l->items, l->cap * sizeof(void *)));
	}
	l->items[l->n++] = p;
}

static bool
list_has_string(const PtrList *l, const char *s)
{
	for (int i = 0; i < l->n; i++)
		if (strcmp(l->items[i], s) == 0)
			return true;
	return false;
}

static void
buf_add_ident(Buf *b, const char *name)
{
	char	   *quoted = PQescapeIdentifier(pg, name, strlen(name));

	if (quoted == NULL)
		die("could not quote identifier: %s", PQerrorMessage(pg));
	buf_add(b, "%s", quoted);
	PQfreemem(quoted);
}

/* ---- PostgreSQL ------------------------------------------------------ */

/* res's error (or the connection's) in err; a lost connection is fatal. */
static void
pg_error(const PGresult *res, char *err, size_t errlen)
{
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	size_t		n;

	snprintf(err, errlen, "%s", msg ? msg : PQerrorMessage(pg));
	n = strlen(err);
	while (n > 0 && err[n - 1] == '\n')
		err[--n] = '\0';
	if (PQstatus(pg) == CONNECTION_BAD)
		die("lost the database connection: %s", err);
}

/* Check res for expected and clear it; false with err filled otherwise. */
static bool
pg_result(PGresult *res, ExecStatusType expected, char *err, size_t errlen)
{
	bool		ok = PQresultStatus(res) == expected;

	if (!ok)
		pg_error(res, err, errlen);
	PQclear(res);
	return ok;
}

static void
pg_must(const char *sql)
{
	char		err[1024];

	if (!pg_result(PQexec(pg, sql), PGRES_COMMAND_OK, err, sizeof(err)))
		die("%s", err);
}

static void
connect_pg(void)
{
	char	   *schema;
	Buf			sql = {0};

	pg = PQconnectdb(opt.conninfo);
	if (PQstatus(pg) != CONNECTION_OK)
		die("could not connect to PostgreSQL: %s", PQerrorMessage(pg));
	/* no "already exists, skipping" notices on stderr */
	pg_must("SET client_min_messages = warning");

	/*
	 * gorm First, as core-go pkg/repository/route/route.go FindRouteByID:
	 * ... WHERE id = $1 ORDER BY id LIMIT 1
	 */
	schema = PQescapeIdentifier(pg, opt.schema, strlen(opt.schema));
	if (schema == NULL)
		die("could not quote schema: %s", PQerrorMessage(pg));
	buf_add(&sql, "SELECT processor_id FROM %s.processor_state WHERE id = $1 ORDER BY id LIMIT 1",
			schema);
	route_sql = sql.data;
	sql = (Buf) {0};
	buf_add(&sql, "SELECT properties::text FROM %s.processor WHERE id = $1 ORDER BY id LIMIT 1",
			schema);
	processor_sql = sql.data;
	PQfreemem(schema);
}

/*
 * The first column of the first row of sql($1): *found, and *value (NULL for
 * SQL NULL, else the caller's).  False on a database error.
 */
static bool
catalog_value(const char *sql, const char *param, bool *found, char **value,
			  char *err, size_t errlen)
{
	PGresult   *res = PQexecParams(pg, sql, 1, NULL, &param, NULL, NULL, 0);

	*found = false;
	*value = NULL;
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		pg_result(res, PGRES_TUPLES_OK, err, errlen);
		return false;
	}
	if (PQntuples(res) > 0)
	{
		*found = true;
		if (!PQgetisnull(res, 0, 0))
			*value = xstrdup(PQgetvalue(res, 0, 0));
	}
	PQclear(res);
	return true;
}

/* ---- properties, writers, routes ------------------------------------- */

/* An integral JSON number, as Go decodes into an int. */
static bool
json_integer(const cJSON *v, long *out)
{
	if (!cJSON_IsNumber(v) || v->valuedouble < -9.2e18 || v->valuedouble > 9.2e18 ||
		v->valuedouble != (double) (long) v->valuedouble)
		return false;
	*out = (long) v->valuedouble;
	return true;
}

static bool
string_array(const cJSON *v)
{
	const cJSON *e;

	if (!cJSON_IsArray(v))
		return false;
	cJSON_ArrayForEach(e, v)
	{
		if (!cJSON_IsString(e) && !cJSON_IsNull(e))
			return false;
	}
	return true;
}

/*
 * processor.properties as upstream decodes them over the defaults
 * (parseProperties): keys matched case-insensitively, unknown keys ignored,
 * null clears a setting, a wrong type is an error.  indexColumns is checked,
 * not used.
 */
static bool
parse_properties(const char *text, TableConfig *c, char *err, size_t errlen)
{
	cJSON	   *props,
			   *p;
	bool		ok = true;

	*c = (TableConfig) {"hello_world", true, 10, true, 15, true};
	props = text ? cJSON_Parse(text) : NULL;
	if (text && !cJSON_IsNull(props) && !cJSON_IsObject(props))
	{
		snprintf(err, errlen, "properties are not a JSON object");
		ok = false;
	}
	for (p = cJSON_IsObject(props) ? props->child : NULL; p && ok; p = p->next)
	{
		const char *key = p->string;

		if (strcasecmp(key, "tableName") == 0)
		{
			ok = cJSON_IsString(p) || cJSON_IsNull(p);
			c->table_name = cJSON_IsString(p) ? p->valuestring : "";
		}
		else if (strcasecmp(key, "batchSize") == 0)
		{
			c->has_batch_size = !cJSON_IsNull(p);
			ok = !c->has_batch_size || json_integer(p, &c->batch_size);
		}
		else if (strcasecmp(key, "batchWindowTTL") == 0)
		{
			c->has_window = !cJSON_IsNull(p);
			ok = !c->has_window || json_integer(p, &c->window_s);
		}
		else if (strcasecmp(key, "includeTimestamp") == 0)
		{
			ok = cJSON_IsBool(p) || cJSON_IsNull(p);
			c->include_timestamp = cJSON_IsTrue(p);
		}
		else if (strcasecmp(key, "indexColumns") == 0)
			ok = cJSON_IsNull(p) || string_array(p);
		if (!ok)
			snprintf(err, errlen, "property \"%s\" has the wrong type", key);
	}
	c->table_name = xstrdup(c->table_name);
	cJSON_Delete(props);
	return ok;
}

/* "<processor_id>_<tableName>" or "<processor_id>", quoted (FormatTableName) */
static char *
table_identifier(const char *processor_id, const char *table_name)
{
	Buf			name = {0};
	char	   *quoted;

	buf_add(&name, "%s%s%s", processor_id, *table_name ? "_" : "", table_name);
	quoted = PQescapeIdentifier(pg, name.data, name.len);
	if (quoted == NULL)
		die("could not quote table name: %s", PQerrorMessage(pg));
	free(name.data);
	return quoted;
}

static Writer *
find_writer(const char *processor_id)
{
	for (Writer *w = writers; w; w = w->next)
		if (strcmp(w->processor_id, processor_id) == 0)
			return w;
	return NULL;
}

/* The writer of a processor, its config captured now (NewBatchWriter). */
static Writer *
new_writer(const char *processor_id, const char *properties)
{
	Writer	   *w = need(calloc(1, sizeof(Writer)));
	char		err[256];

	w->processor_id = xstrdup(processor_id);
	if (!parse_properties(properties, &w->config, err, sizeof(err)))
		w->config_error = xstrdup(err);
	else
	{
		w->table = table_identifier(processor_id, w->config.table_name);
		if (w->config.has_window && w->config.window_s >= MIN_WINDOW_S)
			w->next_tick = now_s() + w->config.window_s;
	}
	w->next = writers;
	writers = w;
	return w;
}

/*
 * route_id -> processor_state.processor_id -> processor.properties, cached;
 * lookup errors and misses are not cached (core-go pkg/cache/cached_backend.go
 * GetCached).
 */
static Lookup
resolve(const char *route_id, Writer **writer, char *err, size_t errlen)
{
	Route	   *r;
	char	   *processor_id,
			   *properties;
	bool		found;

	for (r = route_cache; r; r = r->next)
		if (strcmp(r->id, route_id) == 0)
			break;
	if (r == NULL)
	{
		Writer	   *w;
		Lookup		outcome = LOOKUP_DROP;

		if (!catalog_value(route_sql, route_id, &found, &processor_id, err, errlen))
			return LOOKUP_DB_ERROR;
		if (processor_id == NULL)
		{
			snprintf(err, errlen, "route \"%s\" not found", route_id);
			return LOOKUP_DROP;
		}
		w = find_writer(processor_id);
		if (w == NULL)
		{
			if (!catalog_value(processor_sql, processor_id, &found, &properties, err, errlen))
				outcome = LOOKUP_DB_ERROR;
			else if (!found)
				snprintf(err, errlen, "processor \"%s\" not found", processor_id);
			else
				w = new_writer(processor_id, properties);
			free(properties);
		}
		free(processor_id);
		if (w == NULL)
			return outcome;
		r = need(calloc(1, sizeof(Route)));
		r->id = xstrdup(route_id);
		r->writer = w;
		r->next = route_cache;
		route_cache = r;
	}
	if (r->writer->config_error)
	{
		snprintf(err, errlen, "processor \"%s\": %s", r->writer->processor_id,
				 r->writer->config_error);
		return LOOKUP_DROP;
	}
	*writer = r->writer;
	return LOOKUP_OK;
}

/* ---- messages and records -------------------------------------------- */

/* The last member named key, any case: Go decoding into a struct. */
static cJSON *
struct_member(const cJSON *obj, const char *key)
{
	cJSON	   *found = NULL;

	for (cJSON *c = obj->child; c; c = c->next)
		if (strcasecmp(c->string, key) == 0)
			found = c;
	return found;
}

/*
 * A RouteMessage (core-go route_message.go): a JSON object whose route_id
 * is a string or null and whose query_state is absent, null, or an array of
 * objects and nulls.  *root is the caller's to delete, even on failure.
 */
static bool
decode_message(natsMsg *msg, cJSON **root, const char **route_id, cJSON **records,
			   char *err, size_t errlen)
{
	const char *data = natsMsg_GetData(msg);
	size_t		len = (size_t) natsMsg_GetDataLength(msg);
	const char *end = NULL;
	cJSON	   *rid,
			   *qs,
			   *rec;

	*root = len ? cJSON_ParseWithLengthOpts(data, len, &end, false) : NULL;
	while (*root && end < data + len && *end && strchr(" \t\r\n", *end))
		end++;
	if (!cJSON_IsObject(*root) || end != data + len)
	{
		snprintf(err, errlen, "not a JSON object");
		return false;
	}
	rid = struct_member(*root, "route_id");
	qs = struct_member(*root, "query_state");
	if (rid && !cJSON_IsString(rid) && !cJSON_IsNull(rid))
	{
		snprintf(err, errlen, "route_id is not a string");
		return false;
	}
	if (qs && !cJSON_IsArray(qs) && !cJSON_IsNull(qs))
	{
		snprintf(err, errlen, "query_state is not an array");
		return false;
	}
	*route_id = cJSON_IsString(rid) ? rid->valuestring : "";
	*records = cJSON_IsArray(qs) ? qs : NULL;
	cJSON_ArrayForEach(rec, *records)
	{
		if (!cJSON_IsObject(rec) && !cJSON_IsNull(rec))
		{
			snprintf(err, errlen, "a query_state entry is not an object");
			return false;
		}
	}
	return true;
}

/*
 * A query_state entry as upstream holds it, a Go map (models.Data, Add): null
 * becomes an empty record, a repeated key keeps its last value, and with a
 * stamp _timestamp is set, replacing any sent.
 */
static cJSON *
normalise_record(cJSON *record, const char *stamp)
{
	cJSON	   *next;

	if (cJSON_IsNull(record))
	{
		cJSON_Delete(record);
		record = need(cJSON_CreateObject());
	}
	for (cJSON *c = record->child; c; c = next)
	{
		next = c->next;
		for (cJSON *d = next; d; d = d->next)
			if (strcmp(c->string, d->string) == 0)
			{
				cJSON_Delete(cJSON_DetachItemViaPointer(record, c));
				break;
			}
	}
	if (stamp)
	{
		cJSON_DeleteItemFromObjectCaseSensitive(record, "_timestamp");
		need(cJSON_AddStringToObject(record, "_timestamp", stamp));
	}
	return record;
}

/* A value as TEXT (src/copy_text.c); *owned: the caller frees it, or NULL. */
static const char *
value_text(const cJSON *v, char **owned)
{
	*owned = NULL;
	if (cJSON_IsString(v))
		return v->valuestring;
	if (cJSON_IsNull(v))
		return NULL;
	if (cJSON_IsNumber(v))
	{
		/* every digit, as ism_state writes numbers (cJSON's printer rounds) */
		double		d = v->valuedouble;

		*owned = need(malloc(32));
		if (floor(d) == d && fabs(d) < 1e18)
			snprintf(*owned, 32, "%lld", (long long) d);
		else
			snprintf(*owned, 32, "%.17g", d);
		return *owned;
	}
	*owned = need(cJSON_PrintUnformatted(v));
	return *owned;
}

/*
 * Decode msg, find its writer and append its records there (upstream's
 * Add).  The writer, or NULL with err and *outcome saying why.
 */
static Writer *
accept_message(natsMsg *msg, Lookup *outcome, char *err, size_t errlen)
{
	cJSON	   *root,
			   *records;
	const char *route_id;
	Writer	   *w = NULL;

	*outcome = LOOKUP_DROP;
	if (decode_message(msg, &root, &route_id, &records, err, errlen) &&
		(*outcome = resolve(route_id, &w, err, errlen)) == LOOKUP_OK)
	{
		char		stamp[32] = "";

		if (w->config.include_timestamp)
		{
			time_t		t = time(NULL);
			struct tm	tm;

			strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
		}
		if (!list_has_string(&w->routes, route_id))
			list_push(&w->routes, xstrdup(route_id));
		while (records && records->child)
		{
			cJSON	   *rec = cJSON_DetachItemViaPointer(records, records->child);

			list_push(&w->batch, normalise_record(rec, *stamp ? stamp : NULL));
			nrecords++;
		}
	}
	cJSON_Delete(root);
	return w;
}

static void
ack(natsMsg *msg)
{
	natsStatus	s = natsMsg_Ack(msg, NULL);

	if (s != NATS_OK)
		nats_die("could not ack a message", s, 0);
}

/*
 * {"type":"models","route_id":…,"status":"COMPLETED","data":null} per route
 * (monitoring.go PublishRouteStatus, core-go models/monitor.go).
 */
static void
publish_completed(Writer *w)
{
	if (opt.monitor == NULL)
		return;
	for (int i = 0; i < w->routes.n; i++)
	{
		cJSON	   *m = need(cJSON_CreateObject());
		char	   *text;
		natsStatus	s;
		jsErrCode	jerr = 0;

		need(cJSON_AddStringToObject(m, "type", "models"));
		need(cJSON_AddStringToObject(m, "route_id", w->routes.items[i]));
		need(cJSON_AddStringToObject(m, "status", "COMPLETED"));
		need(cJSON_AddNullToObject(m, "data"));
		text = need(cJSON_PrintUnformatted(m));
		s = js_Publish(NULL, js, opt.monitor, text, (int) strlen(text), NULL, &jerr);
		if (s == NATS_OK && opt.mode == MODE_UPSTREAM)
			s = natsConnection_Flush(nc);
		if (s != NATS_OK)
			warn("COMPLETED for route \"%s\" not published: %s (JetStream error %d)",
				 (char *) w->routes.items[i], natsStatus_GetText(s), (int) jerr);
		free(text);
		cJSON_Delete(m);
	}
}

/* After a successful write: the batch and its routes are done. */
static void
clear_batch(Writer *w)
{
	for (int i = 0; i < w->batch.n; i++)
		cJSON_Delete(w->batch.items[i]);
	for (int i = 0; i < w->routes.n; i++)
		free(w->routes.items[i]);
	w->batch.n = 0;
	w->routes.n = 0;
}

/*
 * CREATE TABLE IF NOT EXISTS t ("k" TEXT, …), keys of char *
 * (CreateTableFromMap).
 */
static char *
create_table_sql(const char *table, const PtrList *keys)
{
	Buf			sql = {0};

	buf_add(&sql, "CREATE TABLE IF NOT EXISTS %s (", table);
	for (int i = 0; i < keys->n; i++)
	{
		buf_add(&sql, "%s", i ? ", " : "");
		buf_add_ident(&sql, keys->items[i]);
		buf_add(&sql, " TEXT");
	}
	buf_add(&sql, ")");
	return sql.data;
}

/* ---- mode upstream ----------------------------------------------------- */

/* The statement for sql, prepared on first use (as pgx's statement cache). */
static const char *
prepared(const char *sql, int nparams, char *err, size_t errlen)
{
	Statement  *s;

	for (s = statements; s; s = s->next)
		if (strcmp(s->sql, sql) == 0)
			return s->name;
	s = need(calloc(1, sizeof(Statement)));
	snprintf(s->name, sizeof(s->name), "insert_%d", ++nstatements);
	if (!pg_result(PQprepare(pg, s->name, sql, nparams, NULL), PGRES_COMMAND_OK, err, errlen))
	{
		free(s);
		return NULL;
	}
	s->sql = xstrdup(sql);
	s->next = statements;
	statements = s;
	return s->name;
}

/* The writer's DDL, from the keys of its first pending record (flush). */
static bool
upstream_create_table(Writer *w, char *err, size_t errlen)
{
	const cJSON *first = w->batch.items[0];
	PtrList		keys = {0};
	char	   *sql;
	bool		ok;

	for (const cJSON *c = first->child; c; c = c->next)
		list_push(&keys, c->string);
	sql = create_table_sql(w->table, &keys);
	ok = pg_result(PQexec(pg, sql), PGRES_COMMAND_OK, err, errlen);
	free(sql);
	free(keys.items);
	return ok;
}

/*
 * INSERT INTO t (that record's keys) VALUES ($1, …), autocommitted
 * (InsertRecord).
 */
static bool
upstream_insert(Writer *w, const cJSON *record, char *err, size_t errlen)
{
	int			n = cJSON_GetArraySize(record);
	const char **values = need(calloc(n + 1, sizeof(char *)));
	char	  **owned = need(calloc(n + 1, sizeof(char *)));
	Buf			sql = {0};
	const char *name;
	const cJSON *c;
	int			i = 0;
	bool		ok = false;

	buf_add(&sql, "INSERT INTO %s (", w->table);
	for (c = record->child; c; c = c->next, i++)
	{
		buf_add(&sql, "%s", i ? ", " : "");
		buf_add_ident(&sql, c->string);
		values[i] = value_text(c, &owned[i]);
	}
	buf_add(&sql, ") VALUES (");
	for (i = 1; i <= n; i++)
		buf_add(&sql, "%s$%d", i > 1 ? ", " : "", i);
	buf_add(&sql, ")");

	name = prepared(sql.data, n, err, errlen);
	if (name)
		ok = pg_result(PQexecPrepared(pg, name, n, values, NULL, NULL, 0),
					   PGRES_COMMAND_OK, err, errlen);
	for (i = 0; i < n; i++)
		free(owned[i]);
	free(owned);
	free(values);
	free(sql.data);
	return ok;
}

/*
 * Upstream's flush: the DDL once, then the records one by one; on an error
 * the batch stays pending and the rows written so far stay.
 */
static bool
upstream_flush(Writer *w, char *err, size_t errlen)
{
	if (w->batch.n == 0)
		return true;
	if (!w->table_ready)
	{
		if (!upstream_create_table(w, err, errlen))
			return false;
		w->table_ready = true;
	}
	for (int i = 0; i < w->batch.n; i++)
		if (!upstream_insert(w, w->batch.items[i], err, errlen))
			return false;
	last_commit_at = now_s();
	publish_completed(w);
	clear_batch(w);
	return true;
}

/* A flush whose error is only logged (upstream logs it on the size path). */
static void
upstream_flush_logged(Writer *w)
{
	char		err[1024];

	if (!upstream_flush(w, err, sizeof(err)))
		warn("error flushing batch writer: %s", err);
}

/* The callback (MessageCallback): Add, ack, then the size-triggered flush. */
static void
upstream_message(natsMsg *msg)
{
	Lookup		outcome;
	char		err[1024];
	Writer	   *w = accept_message(msg, &outcome, err, sizeof(err));

	if (w == NULL)
		warn("dropping message: %s", err);
	ack(msg);
	if (w && w->config.has_batch_size && w->batch.n >= w->config.batch_size)
		upstream_flush_logged(w);
}

/* The timer flushes (backgroundFlush); a slow flush skips ticks, as in Go. */
static void
upstream_ticks(void)
{
	double		now = now_s();

	for (Writer *w = writers; w; w = w->next)
		if (w->next_tick > 0 && now >= w->next_tick)
		{
			upstream_flush_logged(w);
			while (w->next_tick <= now)
				w->next_tick += w->config.window_s;
		}
}

/* At exit: what upstream would still hold (see the header comment). */
static void
upstream_flush_leftovers(void)
{
	long		pending = 0;
	char		err[1024];

	for (Writer *w = writers; w; w = w->next)
		pending += w->batch.n;
	if (pending == 0)
		return;
	warn("%ld records still pending at exit, flushed now: seconds includes the idle wait",
		 pending);
	for (Writer *w = writers; w; w = w->next)
		if (!upstream_flush(w, err, sizeof(err)))
			die("error flushing batch writer: %s", err);
}

/* ---- mode tuned -------------------------------------------------------- */

/* The table's columns, from the catalog. */
static void
tuned_load_columns(Writer *w)
{
	const char *sql = "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass"
		" AND attnum > 0 AND NOT attisdropped";
	const char *param = w->table;
	PGresult   *res = PQexecParams(pg, sql, 1, NULL, &param, NULL, NULL, 0);
	char		err[1024];

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		pg_result(res, PGRES_TUPLES_OK, err, sizeof(err));
		die("could not read the columns of %s: %s", w->table, err);
	}
	for (int i = 0; i < PQntuples(res); i++)
		list_push(&w->columns, xstrdup(PQgetvalue(res, i, 0)));
	PQclear(res);
}

/* The table, with a TEXT column for each of keys. */
static void
tuned_ensure_columns(Writer *w, const PtrList *keys)
{
	Buf			sql = {0};

	if (!w->columns_known)
	{
		char	   *create = create_table_sql(w->table, keys);

		pg_must(create);
		free(create);
		tuned_load_columns(w);
		w->columns_known = true;
	}
	for (int i = 0; i < keys->n; i++)
		if (!list_has_string(&w->columns, keys->items[i]))
		{
			buf_add(&sql, sql.len ? ", " : "ALTER TABLE %s ", w->table);
			buf_add(&sql, "ADD COLUMN IF NOT EXISTS ");
			buf_add_ident(&sql, keys->items[i]);
			buf_add(&sql, " TEXT");
			list_push(&w->columns, xstrdup(keys->items[i]));
		}
	if (sql.len)
		pg_must(sql.data);
	free(sql.data);
}

/* INSERT INTO t (keys) VALUES (…), … for nrows records from first. */
static void
tuned_insert_rows(Writer *w, const PtrList *keys, int first, int nrows)
{
	int			n = nrows * keys->n;
	const char **values = need(calloc(n, sizeof(char *)));
	char	  **owned = need(calloc(n, sizeof(char *)));
	Buf			sql = {0};
	char		err[1024];
	int			p = 0;

	buf_add(&sql, "INSERT INTO %s (", w->table);
	for (int k = 0; k < keys->n; k++)
	{
		buf_add(&sql, "%s", k ? ", " : "");
		buf_add_ident(&sql, keys->items[k]);
	}
	buf_add(&sql, ") VALUES ");
	for (int r = 0; r < nrows; r++)
	{
		const cJSON *record = w->batch.items[first + r];

		buf_add(&sql, "%s(", r ? ", " : "");
		for (int k = 0; k < keys->n; k++, p++)
		{
			const cJSON *v = cJSON_GetObjectItemCaseSensitive(record, keys->items[k]);

			buf_add(&sql, "%s$%d", k ? ", " : "", p + 1);
			values[p] = v ? value_text(v, &owned[p]) : NULL;
		}
		buf_add(&sql, ")");
	}
	if (!pg_result(PQexecParams(pg, sql.data, n, NULL, values, NULL, NULL, 0),
				   PGRES_COMMAND_OK, err, sizeof(err)))
		die("could not insert into %s: %s", w->table, err);
	for (int i = 0; i < n; i++)
		free(owned[i]);
	free(owned);
	free(values);
	free(sql.data);
}

/* Records without keys (null entries, no _timestamp): a row of NULLs each. */
static void
tuned_insert_empty_rows(Writer *w)
{
	Buf			sql = {0};

	buf_add(&sql, "INSERT INTO %s DEFAULT VALUES", w->table);
	for (int i = 0; i < w->batch.n; i++)
		pg_must(sql.data);
	free(sql.data);
}

/* The writer's records of this fetch, in the open transaction. */
static void
tuned_write(Writer *w)
{
	PtrList		keys = {0};
	int			per_statement;

	if (w->batch.n == 0)
		return;
	for (int i = 0; i < w->batch.n; i++)
		for (const cJSON *c = ((cJSON *) w->batch.items[i])->child; c; c = c->next)
			if (!list_has_string(&keys, c->string))
				list_push(&keys, c->string);
	tuned_ensure_columns(w, &keys);
	if (keys.n == 0)
		tuned_insert_empty_rows(w);
	per_statement = keys.n ? MAX_PARAMS / keys.n : 0;
	for (int first = 0; keys.n > 0 && first < w->batch.n; first += per_statement)
		tuned_insert_rows(w, &keys, first,
						  w->batch.n - first < per_statement ? w->batch.n - first : per_statement);
	free(keys.items);
}

/* One fetched batch: one transaction, then the acks (bad messages: TERM). */
static void
tuned_batch(natsMsgList *list)
{
	Writer	   *touched = NULL;
	bool	   *dropped = need(calloc(list->Count, sizeof(bool)));
	Lookup		outcome;
	char		err[1024];

	for (int i = 0; i < list->Count; i++)
	{
		Writer	   *w = accept_message(list->Msgs[i], &outcome, err, sizeof(err));

		if (w == NULL && outcome == LOOKUP_DB_ERROR)
			die("%s", err);
		if (w == NULL)
		{
			warn("terminating message: %s", err);
			dropped[i] = true;
		}
		else if (!w->touched)
		{
			w->touched = true;
			w->next_touched = touched;
			touched = w;
		}
	}
	if (touched)
	{
		pg_must("BEGIN");
		for (Writer *w = touched; w; w = w->next_touched)
			tuned_write(w);
		pg_must("COMMIT");
		last_commit_at = now_s();
	}
	for (int i = 0; i < list->Count; i++)
	{
		natsStatus	s = dropped[i] ? natsMsg_Term(list->Msgs[i], NULL)
			: natsMsg_Ack(list->Msgs[i], NULL);

		if (s != NATS_OK)
			nats_die("could not ack or terminate a message", s, 0);
	}
	for (Writer *w = touched; w; w = w->next_touched)
	{
		publish_completed(w);
		clear_batch(w);
		w->touched = false;
	}
	free(dropped);
}

/* ---- NATS and the main loop -------------------------------------------- */

/* Bind the durable pull consumer, creating it when absent. */
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
	so.Config.AckPolicy = js_AckExplicit;
	so.Config.MaxAckPending = opt.max_ack_pending;
	s = js_PullSubscribe(&sub, js, opt.subject, opt.durable, NULL, &so, &jerr);
	if (s != NATS_OK)
		nats_die("could not bind the durable pull consumer", s, jerr);
	return sub;
}

/* Fetch and write until idle for --idle-exit seconds after a message. */
static void
consume(natsSubscription *sub)
{
	double		last_message_at = 0;

	for (;;)
	{
		natsMsgList list = {0};
		jsErrCode	jerr = 0;
		natsStatus	s = natsSubscription_Fetch(&list, sub, opt.fetch, FETCH_WAIT_MS, &jerr);
		int			count = list.Count;

		if (s != NATS_OK && s != NATS_TIMEOUT)
			nats_die("could not fetch", s, jerr);
		if (count > 0)
		{
			last_message_at = now_s();
			if (first_message_at == 0)
				first_message_at = last_message_at;
			nmessages += count;
			if (opt.mode == MODE_TUNED)
				tuned_batch(&list);
			else
				for (int i = 0; i < count; i++)
					upstream_message(list.Msgs[i]);
		}
		natsMsgList_Destroy(&list);
		if (opt.mode == MODE_UPSTREAM)
			upstream_ticks();
		if (count == 0 && nmessages > 0 && now_s() - last_message_at >= opt.idle_exit_s)
			break;
	}
	if (opt.mode == MODE_UPSTREAM)
		upstream_flush_leftovers();
}

static void
usage(void)
{
	fprintf(stderr,
			"usage: external-consumer --mode upstream|tuned -s NATS_URL --stream STREAM\n"
			"           --durable DURABLE --subject SUBJECT -d CONNINFO [--fetch N]\n"
			"           [--max-ack-pending N] [--idle-exit SECONDS] [--schema SCHEMA]\n"
			"           [--monitor SUBJECT]\n");
	exit(2);
}

static int
positive_int(const char *arg)
{
	char	   *end;
	long		v = strtol(arg, &end, 10);

	if (*arg == '\0' || *end != '\0' || v <= 0 || v > 1000000000)
		usage();
	return (int) v;
}

static void
parse_options(int argc, char **argv)
{
	enum
	{
		OPT_MODE = 256, OPT_STREAM, OPT_DURABLE, OPT_SUBJECT, OPT_FETCH,
		OPT_MAX_ACK_PENDING, OPT_IDLE_EXIT, OPT_SCHEMA, OPT_MONITOR
	};
	static const struct option longopts[] = {
		{"mode", required_argument, NULL, OPT_MODE},
		{"stream", required_argument, NULL, OPT_STREAM},
		{"durable", required_argument, NULL, OPT_DURABLE},
		{"subject", required_argument, NULL, OPT_SUBJECT},
		{"fetch", required_argument, NULL, OPT_FETCH},
		{"max-ack-pending", required_argument, NULL, OPT_MAX_ACK_PENDING},
		{"idle-exit", required_argument, NULL, OPT_IDLE_EXIT},
		{"schema", required_argument, NULL, OPT_SCHEMA},
		{"monitor", required_argument, NULL, OPT_MONITOR},
		{NULL, 0, NULL, 0}
	};
	const char *mode = NULL;
	int			c;

	while ((c = getopt_long(argc, argv, "s:d:", longopts, NULL)) != -1)
		switch (c)
		{
			case 's': opt.url = optarg; break;
			case 'd': opt.conninfo = optarg; break;
			case OPT_MODE: mode = optarg; break;
			case OPT_STREAM: opt.stream = optarg; break;
			case OPT_DURABLE: opt.durable = optarg; break;
			case OPT_SUBJECT: opt.subject = optarg; break;
			case OPT_FETCH: opt.fetch = positive_int(optarg); break;
			case OPT_MAX_ACK_PENDING: opt.max_ack_pending = positive_int(optarg); break;
			case OPT_IDLE_EXIT: opt.idle_exit_s = positive_int(optarg); break;
			case OPT_SCHEMA: opt.schema = optarg; break;
			case OPT_MONITOR: opt.monitor = optarg; break;
			default: usage();
		}
	if (optind != argc || mode == NULL || !opt.url || !opt.stream || !opt.durable ||
		!opt.subject || !opt.conninfo)
		usage();
	if (strcmp(mode, "upstream") == 0)
		opt.mode = MODE_UPSTREAM;
	else if (strcmp(mode, "tuned") == 0)
		opt.mode = MODE_TUNED;
	else
		usage();
	if (opt.fetch == 0)
		opt.fetch = opt.mode == MODE_TUNED ? 100 : 10;
}

int
main(int argc, char **argv)
{
	natsSubscription *sub;
	natsStatus	s;

	parse_options(argc, argv);
	connect_pg();
	sub = subscribe();
	consume(sub);

	/* the acks are in the connection's buffer: see them out */
	s = natsConnection_FlushTimeout(nc, 10000);
	if (s != NATS_OK)
		nats_die("could not flush the acks", s, 0);
	printf("records=%ld messages=%ld seconds=%.3f\n", nrecords, nmessages,
		   last_commit_at > 0 ? last_commit_at - first_message_at : 0.0);

	/* destroying (not unsubscribing) keeps the durable consumer */
	natsSubscription_Destroy(sub);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	nats_Close();
	PQfinish(pg);
	return 0;
}

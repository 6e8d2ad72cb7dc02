/*-------------------------------------------------------------------------
 *
 * ism_state.h
 *	  Declarations shared by the ism_state extension's source files.
 *
 * ism_state runs the Alethic ISM state router and state-tables writer as
 * background workers inside PostgreSQL.  Each worker owns one NATS
 * connection, driven from its main thread only (see nats_conn.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_STATE_H
#define ISM_STATE_H

#include "postgres.h"

#include "datatype/timestamp.h"

#include "route_index.h"

#define ISM_EXTENSION_NAME	"ism_state"

/* Upper bound of ism_state.writer_workers; the router is one more worker. */
#define ISM_MAX_WRITERS		16

/* Most servers ism_state.nats_url may list. */
#define ISM_MAX_NATS_SERVERS	32

/* Settings (settings.c) */
extern char *ism_database;
extern char *ism_role;
extern int	ism_writer_workers;
extern char *ism_nats_url;
extern char *ism_routing_file;
extern char *ism_catalog_schema;
extern char *ism_data_schema;
extern char *ism_nats_user;
extern char *ism_nats_password;
extern char *ism_nats_token;
extern char *ism_nats_creds_file;
extern char *ism_nats_tls_ca;
extern char *ism_nats_tls_cert;
extern char *ism_nats_tls_key;
extern int	ism_nats_connect_timeout_ms;
extern int	ism_nats_reconnect_wait_ms;
extern int	ism_stream_replicas;
extern int	ism_max_message_bytes;
extern int	ism_max_deliveries;
extern int	ism_publish_timeout_ms;
extern int	ism_applied_retention_s;
extern int	ism_writer_lock_timeout_ms;
extern int	ism_writer_batch_max_records;
extern int	ism_writer_batch_max_kb;
extern int	ism_writer_max_pending_records;
extern int	ism_writer_max_pending_kb;
extern int	ism_max_tracked_tables;
extern char *ism_claims_bucket;
extern int	ism_claims_ttl_s;
extern char *ism_instance_name;

extern void ism_define_settings(void);
extern bool ism_validate_nats_url(const char *url, char *errbuf, size_t errlen);
extern void ism_redact_url(const char *url, char *buf, size_t buflen);

/* What a worker does.  Slot 0 is the router; slots 1..N are writers. */
typedef enum IsmWorkerRole
{
	ISM_ROLE_ROUTER,
	ISM_ROLE_WRITER
} IsmWorkerRole;

/* The worker's own lifecycle, as shown in pg_stat_ism_worker.state. */
typedef enum IsmWorkerState
{
	ISM_WORKER_STOPPED,
	ISM_WORKER_STARTING,
	ISM_WORKER_WAITING_FOR_EXTENSION,
	ISM_WORKER_CONFIG_ERROR,
	ISM_WORKER_CONNECTING,
	ISM_WORKER_RUNNING,
	ISM_WORKER_STOPPING
} IsmWorkerState;

/* The NATS connection's state, as shown in pg_stat_ism_worker.nats_state. */
typedef enum IsmNatsState
{
	ISM_NATS_DISCONNECTED,
	ISM_NATS_CONNECTING,
	ISM_NATS_CONNECTED,
	ISM_NATS_RECONNECTING,
	ISM_NATS_CLOSED
} IsmNatsState;

extern const char *ism_worker_role_name(IsmWorkerRole role);

/* Shared memory and statistics (stats.c) */
extern void ism_stats_request_shmem(void);
extern void ism_stats_startup_shmem(void);
extern void ism_stats_attach_worker(int slot, IsmWorkerRole role);
extern void ism_stats_set_state(IsmWorkerState state);
extern void ism_stats_set_nats(IsmNatsState state, const char *server,
							   int64 reconnects);
extern void ism_stats_set_error(const char *message);
extern void ism_stats_set_in_flight(int n);
extern void ism_report_activity(bool running, const char *what);
extern void ism_stats_touch(void);
/* Committed changes the workers follow (see ism_notify_change). */
typedef enum IsmChange
{
	ISM_CHANGE_ROUTES,			/* ism_state.route */
	ISM_CHANGE_REPLAYS,			/* dead letters asked to be replayed */
	ISM_NUM_CHANGES
} IsmChange;

extern void ism_notify_change(IsmChange change);
extern uint64 ism_change_generation(IsmChange change);

/* A route as the workers use it: a row of ism_state.route. */
typedef struct IsmRoute
{
	char	   *selector;
	char	   *name;			/* stream */
	char	   *subject;
	char	   *url;
	char	   *queue;
	char	   *mode;
	int32		ack_wait;		/* seconds */
	int32		batch_size;
	int32		max_ack_pending;	/* 0: not set */
	bool		jetstream_enabled;
	bool		concurrent_enabled;
	int32		concurrent_max_workers;
	bool		concurrent_priority_enabled;
	int32		concurrent_max_workers_high;
	char	   *mirror;
} IsmRoute;

/* The worker's route cache (route_cache.c) */
extern bool ism_route_cache_is_stale(void);
extern void ism_route_cache_invalidate(void);
extern void ism_route_cache_load(void);
extern int	ism_route_cache_count(void);
extern const IsmRoute *ism_route_cache_resolve(const char *selector,
											   RouteLookupResult *result);

/* Table and column names of the state-tables writer (ident.c) */
extern void ism_sha256_hex(const char *data, size_t len, char *hex, size_t nhex);
extern char *ism_identifier(const char *name, size_t len);
extern char *ism_table_name(const char *processor_id, const char *table_name);

/* Column types of the state-tables writer (column_types.c) */
typedef enum IsmColumnType
{
	ISM_COL_NONE,				/* no value yet (null): fits any column */
	ISM_COL_BIGINT,
	ISM_COL_DOUBLE,
	ISM_COL_BOOLEAN,
	ISM_COL_JSONB,
	ISM_COL_TIMESTAMPTZ,
	ISM_COL_TEXT,
	ISM_COL_OTHER				/* a type the writer does not make */
} IsmColumnType;

struct cJSON;
extern IsmColumnType ism_value_column_type(const char *key, const struct cJSON *v,
										   bool infer);
extern IsmColumnType ism_column_type_merge(IsmColumnType column, IsmColumnType value);
extern const char *ism_column_type_sql(IsmColumnType type);
extern IsmColumnType ism_column_type_from_sql(const char *name);

/* Per-route and per-table counters (counters.c) */
typedef enum IsmRouteCounter
{
	ISM_RC_RECEIVED,			/* fetched from the route's consumer */
	ISM_RC_ROUTED,				/* handled: forwarded, or written to a table */
	ISM_RC_PUBLISHED,			/* published to the route's subject */
	ISM_RC_ACKED,
	ISM_RC_NAKED,
	ISM_RC_TERMINATED,
	ISM_RC_FAILED,				/* FAILED status and dead letter */
	ISM_RC_BYTES_IN,
	ISM_RC_BYTES_OUT,
	ISM_RC_REDELIVERIES,		/* received again */
	ISM_NUM_ROUTE_COUNTERS
} IsmRouteCounter;

typedef enum IsmTableCounter
{
	ISM_TC_RECORDS,
	ISM_TC_BATCHES,
	ISM_TC_DDL,
	ISM_TC_FLUSH_US,
	ISM_TC_DEAD_LETTERS,
	ISM_TC_FAILED_FLUSHES,		/* rolled back, to be retried */
	ISM_NUM_TABLE_COUNTERS
} IsmTableCounter;

extern void ism_counters_request_shmem(void);
extern void ism_counters_startup_shmem(void);
extern void ism_counters_attach_worker(int worker);
extern void ism_count_route(const char *selector, IsmRouteCounter counter, int64 n);
extern void ism_route_error(const char *selector, const char *error);
extern void ism_count_table(const char *table, IsmTableCounter counter, int64 n);
extern void ism_table_flushed(const char *table, int64 records, int64 ddl, int64 flush_us);
extern void ism_table_pending(const char *table, int64 records, int64 bytes,
							  TimestampTz oldest);
extern void ism_table_error(const char *table, const char *error);

/* Log lines that repeat are rate-limited and counted (log_limit.c) */
extern void ism_log_limited(int elevel, const char *key, const char *fmt,...) pg_attribute_printf(3, 4);

/* Background worker (worker.c) */
extern void ism_register_workers(void);
extern PGDLLEXPORT void ism_worker_main(Datum main_arg);

/* NATS connection (nats_conn.c); main thread only */
extern bool ism_nats_connect(const char *client_name, char *errbuf, size_t errlen);
extern bool ism_nats_is_open(void);
extern IsmNatsState ism_nats_poll(char *server, size_t serverlen,
								  int64 *reconnects,
								  char *errbuf, size_t errlen);
extern void ism_nats_on_disconnect(void (*hook) (void));
extern void ism_nats_disconnect(void);

/* What to consume: a stream through a durable pull consumer. */
typedef struct IsmConsumerSpec
{
	const char *selector;		/* the route, for the counters */
	const char *stream;
	const char *subject;
	const char *durable;
	const char *filter_subject; /* NULL: the whole stream */
	int			ack_wait_s;
	int			max_ack_pending;
	/* also opened, signals blocked: the claims (ism_claims_open_locked), or NULL */
	bool		(*open_locked) (char *errbuf, size_t errlen);
} IsmConsumerSpec;

/* JetStream (jetstream.c); main thread only */
extern bool ism_nats_subscribe(const IsmConsumerSpec *spec, char *errbuf,
							   size_t errlen);
extern bool ism_nats_is_subscribed(void);
extern void ism_nats_unsubscribe(void);

/* A fetched message; valid until ism_nats_release. */
typedef struct IsmMessage
{
	void	   *handle;			/* the natsMsg */
	const char *subject;
	const char *data;
	int			len;
	uint64		stream_seq;
	uint64		deliveries;		/* 1 the first time */
	int64		timestamp_ns;	/* when the stream stored it, Unix ns */
	char		stream[256];
	const char *msg_id;			/* its Nats-Msg-Id header, or NULL */
	int64		duplicate_window_ns;	/* its stream's duplicate window */
	/*
	 * Its JetStream metadata was read: stream, stream_seq and deliveries
	 * say where it is in its stream.  A message without (published to the
	 * subscription's inbox, not stored) has no place to be known by: it is
	 * handled once as it comes, with no exactly-once bookkeeping.
	 */
	bool		from_stream;
} IsmMessage;

typedef enum IsmSettle
{
	ISM_ACK,
	ISM_NAK,
	ISM_TERM,
	ISM_IN_PROGRESS
} IsmSettle;

extern int	ism_nats_fetch(IsmMessage *msgs, int max, int timeout_ms,
						   char *errbuf, size_t errlen);
extern void ism_nats_release(IsmMessage *msgs, int n);
extern void ism_count_inbound(IsmRouteCounter counter, int64 n);
extern void ism_inbound_error(const char *error);
extern bool ism_nats_settle(IsmMessage *m, IsmSettle how, int64 delay_ms,
							char *errbuf, size_t errlen);
extern int64 ism_nats_redelivery_delay_ms(const IsmMessage *m);
extern bool ism_nats_can_retry(const IsmMessage *m);
extern char *ism_nats_why_no_retry(const IsmMessage *m, const char *error);
extern bool ism_nats_ensure_stream(const char *stream, const char *subject,
								   char *errbuf, size_t errlen);
extern bool ism_nats_publish(const char *selector, const char *subject,
							 const char *data, size_t len,
							 const char *msg_id, bool jetstream,
							 char *errbuf, size_t errlen);
extern bool ism_nats_publish_wait(int timeout_ms, char *errbuf, size_t errlen);
extern bool ism_nats_flush(int timeout_ms, char *errbuf, size_t errlen);

/* Who writes a message when instances share a consumer (claims.c) */
typedef enum IsmClaim
{
	ISM_CLAIM_OURS,
	ISM_CLAIM_THEIRS,
	ISM_CLAIM_UNKNOWN			/* not known now: ask again later */
} IsmClaim;

extern bool ism_claims_take(const IsmMessage *msgs, int n, IsmClaim *claims,
							char *errbuf, size_t errlen);

/* dead_letter.c */
extern bool ism_dead_letter(const IsmMessage *m, const char *worker,
							const char *route_id, const char *error);
extern bool ism_dead_letter_once(const IsmMessage *m, const char *worker,
								 const char *route_id, const char *error,
								 bool *applied_before);
extern void ism_nats_shutdown(void);

#endif							/* ISM_STATE_H */

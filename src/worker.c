/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The ism_state background workers: lifecycle, signals and main loop.
 *
 * One router worker and ism_state.writer_workers writer workers, each a
 * static background worker connected to ism_state.database.  A worker
 * waits until the extension exists there, then holds a NATS connection and
 * loops on its latch.  All PostgreSQL and nats.c calls happen on the
 * worker's main thread.
 *
 * Signals: SIGTERM sets a flag, so the worker finishes what it has in hand
 * and exits at the top of its loop; SIGHUP reloads the settings; SIGUSR1
 * keeps PostgreSQL's own handler, whose interrupts (such as the barrier
 * DROP DATABASE waits for) are served by CHECK_FOR_INTERRUPTS after every
 * wait.  No wait in the loop is longer than a second or the NATS connect
 * timeout, so none of these is left waiting.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/extension.h"
#include "libpq/pqsignal.h"
#include "utils/snapmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/backend_status.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "worker.h"
#include "ack_gate.h"
#include "claims.h"
#include "jetstream.h"
#include "nats_conn.h"
#include "route_cache.h"
#include "route_index.h"
#include "router.h"
#include "routes.h"
#include "settings.h"
#include "stats.h"
#include "writer.h"
#include "xact.h"

#define ISM_EXTENSION_NAME	"ism_state"

/* Seconds the postmaster waits before restarting a worker that exited. */
#define ISM_RESTART_SECONDS		5

/* How often the loop looks at the extension and the NATS connection. */
#define ISM_POLL_MS				1000

/* How long a worker with unusable settings sleeps (SIGHUP wakes it). */
#define ISM_CONFIG_ERROR_SLEEP_MS	60000

/* How often a worker asks whether the consumer it is bound to still exists. */
#define ISM_CONSUMER_CHECK_MS	5000

/* Longest a fetch waits for messages: the loop's wait while consuming. */
#define ISM_FETCH_WAIT_MS		500

/* How long a stopping worker waits for its held acks' commits. */
#define ISM_EXIT_ACK_WAIT_MS	5000

/* First retry delay after a failed connection attempt; doubles each time. */
#define ISM_FIRST_BACKOFF_MS	100

#define ISM_MSG_LEN				512

/* The route each role consumes, by selector (as upstream). */
#define ISM_ROUTER_SELECTOR		"processor/state/router"
#define ISM_WRITER_SELECTOR		"data/transformers/mixer/state-tables-1.0"

/* Remembers the last message logged, to log a repeated one only once. */
typedef struct LogOnce
{
	char		last[ISM_MSG_LEN * 2];
} LogOnce;

typedef struct IsmWorker
{
	int			slot;
	IsmWorkerRole role;
	char		client_name[BGW_MAXLEN + NAMEDATALEN + 4];
	bool		settings_ok;
	char	   *nats_settings;	/* fingerprint of the connection settings */
	bool		extension_present;
	TimestampTz next_extension_check;
	bool		waiting_logged;
	bool		ever_connected; /* a later connect counts as a reconnect */
	IsmNatsState nats_state;
	int			backoff_ms;
	TimestampTz next_connect_at;
	char		server[256];	/* masked */
	char		logged_error[ISM_MSG_LEN];	/* last connect error logged */
	char		activity[128];
	bool		seed_pending;	/* router: load ism_state.routing_file */
	char		consuming[ISM_MSG_LEN]; /* what the subscription is for */
	TimestampTz next_subscribe_at;
	TimestampTz next_consumer_check;	/* see consumer_still_there */
	LogOnce		subscribe_log;
	LogOnce		cache_log;
	uint64		replays_seen;	/* router: replay generation handled */
	TimestampTz next_replay_at; /* after a failed replay */
	LogOnce		replay_log;
} IsmWorker;

static volatile sig_atomic_t got_sigterm = false;

/* For long work (a replay) to give up early on SIGTERM. */
static bool
worker_stopping(void)
{
	return got_sigterm;
}

static void
handle_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

void
ism_register_workers(void)
{
	for (int slot = 0; slot <= ism_writer_workers; slot++)
	{
		BackgroundWorker worker;
		IsmWorkerRole role = slot == 0 ? ISM_ROLE_ROUTER : ISM_ROLE_WRITER;

		memset(&worker, 0, sizeof(worker));
		worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
			BGWORKER_BACKEND_DATABASE_CONNECTION;
		worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
		worker.bgw_restart_time = ISM_RESTART_SECONDS;
		strlcpy(worker.bgw_library_name, "ism_state", BGW_MAXLEN);
		strlcpy(worker.bgw_function_name, "ism_worker_main", BGW_MAXLEN);
		snprintf(worker.bgw_type, BGW_MAXLEN, "ism_state %s",
				 ism_worker_role_name(role));
		if (role == ISM_ROLE_ROUTER)
			snprintf(worker.bgw_name, BGW_MAXLEN, "ism_state router");
		else
			snprintf(worker.bgw_name, BGW_MAXLEN, "ism_state writer %d", slot);
		worker.bgw_main_arg = Int32GetDatum(slot);
		RegisterBackgroundWorker(&worker);
	}
}

/* ism_report_activity, only when the text changes. */
static void
report_activity(IsmWorker *w, BackendState state, const char *what)
{
	if (strcmp(w->activity, what) == 0)
		return;
	strlcpy(w->activity, what, sizeof(w->activity));
	ism_report_activity(state == STATE_RUNNING, what);
}

/*
 * Log msg at elevel unless it is what this LogOnce logged last, and record
 * it in the view either way.
 */
static void
log_once(LogOnce *once, int elevel, const char *msg)
{
	ism_stats_set_error(msg);
	if (strcmp(once->last, msg) == 0)
		return;
	ereport(elevel, (errmsg("%s: %s", MyBgworkerEntry->bgw_name, msg)));
	strlcpy(once->last, msg, sizeof(once->last));
}

static void
load_routing_file(void *arg)
{
	int		   *nroutes = arg;
	char	   *yaml;

	PushActiveSnapshot(GetTransactionSnapshot());
	yaml = ism_read_routing_file(ism_routing_file);
	*nroutes = ism_routes_load_yaml(yaml, strlen(yaml), false);
	PopActiveSnapshot();
}

/*
 * Router: upsert the routes of ism_state.routing_file.  Routes added with
 * SQL stay: the file adds and updates, it never deletes.
 */
static void
seed_routes(IsmWorker *w)
{
	char		err[ISM_MSG_LEN];
	char		msg[ISM_MSG_LEN + 64];
	int			nroutes = 0;

	w->seed_pending = false;
	if (w->role != ISM_ROLE_ROUTER || !ism_routing_file[0])
		return;

	report_activity(w, STATE_RUNNING, "loading the routing file");
	if (ism_run_in_transaction(load_routing_file, &nroutes, err, sizeof(err)))
		ereport(LOG,
				(errmsg("%s: loaded %d routes from \"%s\"",
						MyBgworkerEntry->bgw_name, nroutes, ism_routing_file)));
	else
	{
		snprintf(msg, sizeof(msg), "could not load ism_state.routing_file: %s", err);
		ereport(WARNING,
				(errmsg("%s: %s", MyBgworkerEntry->bgw_name, msg),
				 errdetail("The route table is unchanged; fix the file and reload the configuration.")));
		ism_stats_set_error(msg);
	}
}

static void
load_route_cache(void *arg)
{
	ism_route_cache_load();
}

/* Reload the route cache after a committed change. */
static void
refresh_route_cache(IsmWorker *w)
{
	char		err[ISM_MSG_LEN];
	char		msg[ISM_MSG_LEN + 64];

	if (!ism_route_cache_is_stale())
		return;
	report_activity(w, STATE_RUNNING, "loading routes");
	if (ism_run_in_transaction(load_route_cache, NULL, err, sizeof(err)))
	{
		elog(DEBUG1, "%s: %d routes cached", MyBgworkerEntry->bgw_name,
			 ism_route_cache_count());
		w->cache_log.last[0] = '\0';
		return;
	}
	snprintf(msg, sizeof(msg), "could not load routes: %s", err);
	log_once(&w->cache_log, WARNING, msg);
}

/*
 * Unsubscribe, or close the connection.  First the server stops sending
 * (what the subscription had received is given back), then the acks held
 * for their commits go (those not durable within a second are nak'ed),
 * then the writer lets go of the messages its batches hold, nak'ed: they
 * belong to the subscription that goes, and come back from the server at
 * once (its flushes recorded what they applied, so nothing is written
 * twice).  Nak'ed after the server stopped sending, they cannot come back
 * to the subscription that goes.
 */
static void
drop_nats(IsmWorker *w, bool connection)
{
	ism_nats_stop_delivery();
	ism_ack_gate_let_go(ISM_POLL_MS);
	if (w->role == ISM_ROLE_WRITER)
		ism_writer_release_pending();
	if (connection)
		ism_nats_disconnect();
	else
		ism_nats_unsubscribe();
}

/* Everything that decides how to reach NATS, to notice changes on reload. */
static char *
nats_settings_fingerprint(void)
{
	return psprintf("%s|%s|%s|%s|%s|%s|%s|%s|%d|%d|%d",
					ism_nats_url, ism_nats_user, ism_nats_password,
					ism_nats_token, ism_nats_creds_file, ism_nats_tls_ca,
					ism_nats_tls_cert, ism_nats_tls_key,
					ism_nats_connect_timeout_ms, ism_nats_reconnect_wait_ms,
					ism_stream_replicas);
}

/* Can the worker reach NATS with these settings at all? */
static bool
nats_settings_are_usable(void)
{
	char		err[ISM_MSG_LEN];
	char		msg[ISM_MSG_LEN + 64];

	if (!ism_validate_nats_url(ism_nats_url, err, sizeof(err)))
		snprintf(msg, sizeof(msg), "invalid ism_state.nats_url: %s", err);
	else if (ism_nats_tls_cert[0] && !ism_nats_tls_key[0])
		snprintf(msg, sizeof(msg),
				 "ism_state.nats_tls_cert is set but ism_state.nats_tls_key is not");
	else
		return true;

	ereport(WARNING,
			(errmsg("%s: %s", MyBgworkerEntry->bgw_name, msg),
			 errhint("Fix the setting and reload the configuration (SELECT pg_reload_conf()).")));
	ism_stats_set_error(msg);
	return false;
}

/* Re-read settings; a change in how to reach NATS means a new connection. */
static void
apply_settings(IsmWorker *w)
{
	char	   *fingerprint = nats_settings_fingerprint();

	w->settings_ok = nats_settings_are_usable();
	if (w->nats_settings && strcmp(fingerprint, w->nats_settings) != 0 &&
		ism_nats_is_open())
	{
		ereport(LOG,
				(errmsg("%s: NATS settings changed, reconnecting",
						MyBgworkerEntry->bgw_name)));
		drop_nats(w, true);
		w->nats_state = ISM_NATS_DISCONNECTED;
		ism_stats_set_nats(ISM_NATS_DISCONNECTED, NULL, 0);
	}
	if (w->nats_settings)
		pfree(w->nats_settings);
	w->nats_settings = fingerprint;
	w->backoff_ms = 0;
	w->next_connect_at = 0;
	w->logged_error[0] = '\0';
	w->seed_pending = true;
}

static void
look_for_extension(void *arg)
{
	*(bool *) arg = OidIsValid(get_extension_oid(ISM_EXTENSION_NAME, true));
}

/* Is the extension there?  What was known before, when the look failed. */
static bool
extension_exists(bool known)
{
	bool		exists = known;
	char		err[ISM_MSG_LEN];

	if (!ism_run_in_transaction(look_for_extension, &exists, err, sizeof(err)))
		return known;
	return exists;
}

/*
 * Is the extension installed in our database?  Logs once when it is
 * missing and once when it appears; drops the NATS connection while it is
 * missing, as there is nothing to do with it.
 */
static bool
ensure_extension(IsmWorker *w)
{
	bool		present;

	/* while it is there, a look a second is plenty */
	if (w->extension_present && GetCurrentTimestamp() < w->next_extension_check)
		return true;
	w->next_extension_check = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														  ISM_POLL_MS);
	present = extension_exists(w->extension_present);

	if (present && !w->extension_present)
	{
		ereport(LOG,
				(errmsg("%s: extension \"%s\" found in database \"%s\"",
						MyBgworkerEntry->bgw_name, ISM_EXTENSION_NAME,
						ism_database)));
		/* a new extension, a new route table */
		ism_route_cache_invalidate();
		w->seed_pending = true;
	}
	else if (!present && !w->waiting_logged)
	{
		ereport(LOG,
				(errmsg("%s: extension \"%s\" is not installed in database \"%s\"; waiting",
						MyBgworkerEntry->bgw_name, ISM_EXTENSION_NAME, ism_database),
				 errhint("Run CREATE EXTENSION %s in database \"%s\".",
						 ISM_EXTENSION_NAME, ism_database)));
		w->waiting_logged = true;
	}

	if (!present)
	{
		if (ism_nats_is_open())
		{
			drop_nats(w, true);
			w->nats_state = ISM_NATS_DISCONNECTED;
			ism_stats_set_nats(ISM_NATS_DISCONNECTED, NULL, 0);
		}
		ism_stats_set_state(ISM_WORKER_WAITING_FOR_EXTENSION);
		report_activity(w, STATE_IDLE, "waiting for CREATE EXTENSION ism_state");
	}
	else
		w->waiting_logged = false;

	w->extension_present = present;
	return present;
}

static long
ms_until(TimestampTz when)
{
	long		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), when);

	return Max(ms, 1);
}

/* One connection attempt when its time has come; returns the next wait. */
static long
try_connect(IsmWorker *w)
{
	char		err[ISM_MSG_LEN];
	char		msg[ISM_MSG_LEN * 2];
	char		target[256];
	int64		reconnects;

	if (GetCurrentTimestamp() < w->next_connect_at)
		return Min(ms_until(w->next_connect_at), ISM_POLL_MS);

	ism_redact_url(ism_nats_url, target, sizeof(target));
	ism_stats_set_state(ISM_WORKER_CONNECTING);
	ism_stats_set_nats(ISM_NATS_CONNECTING, target, 0);
	report_activity(w, STATE_RUNNING, "connecting to NATS");

	if (ism_nats_connect(w->client_name, err, sizeof(err)))
	{
		w->server[0] = '\0';
		(void) ism_nats_poll(w->server, sizeof(w->server), &reconnects,
							 err, sizeof(err));
		ereport(LOG,
				(errmsg("%s: connected to NATS at %s",
						MyBgworkerEntry->bgw_name, w->server)));
		ism_stats_set_nats(ISM_NATS_CONNECTED, w->server,
						   w->ever_connected ? 1 : 0);
		ism_stats_set_state(ISM_WORKER_RUNNING);
		w->ever_connected = true;
		w->nats_state = ISM_NATS_CONNECTED;
		w->backoff_ms = 0;
		w->logged_error[0] = '\0';
		report_activity(w, STATE_IDLE, "idle");
		return ISM_POLL_MS;
	}

	w->backoff_ms = w->backoff_ms == 0 ? ISM_FIRST_BACKOFF_MS :
		Min(w->backoff_ms * 2, ism_nats_reconnect_wait_ms);
	w->next_connect_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													 w->backoff_ms);
	w->nats_state = ISM_NATS_DISCONNECTED;
	ism_stats_set_nats(ISM_NATS_DISCONNECTED, NULL, 0);

	snprintf(msg, sizeof(msg), "could not connect to NATS at %s: %s", target, err);
	ism_stats_set_error(msg);
	/* once per distinct failure, not once per attempt */
	if (strcmp(err, w->logged_error) != 0)
	{
		ereport(WARNING,
				(errmsg("%s: %s", MyBgworkerEntry->bgw_name, msg),
				 errdetail("Retrying for ever, at most %d ms apart.",
						   ism_nats_reconnect_wait_ms)));
		strlcpy(w->logged_error, err, sizeof(w->logged_error));
	}
	report_activity(w, STATE_IDLE, "waiting for NATS");
	return w->backoff_ms;
}

/* Follow the connection nats.c is keeping up, and log its changes. */
static void
watch_connection(IsmWorker *w)
{
	char		err[ISM_MSG_LEN];
	char		msg[ISM_MSG_LEN * 2];
	char		server[256] = "";
	int64		reconnects;
	IsmNatsState state;

	state = ism_nats_poll(server, sizeof(server), &reconnects, err, sizeof(err));
	if (server[0])
		strlcpy(w->server, server, sizeof(w->server));

	if (state != w->nats_state)
	{
		if (state == ISM_NATS_CONNECTED)
			ereport(LOG,
					(errmsg("%s: reconnected to NATS at %s",
							MyBgworkerEntry->bgw_name, w->server)));
		else
		{
			snprintf(msg, sizeof(msg), "lost connection to NATS at %s%s%s",
					 w->server, err[0] ? ": " : "", err);
			ereport(WARNING,
					(errmsg("%s: %s", MyBgworkerEntry->bgw_name, msg),
					 errdetail(state == ISM_NATS_CLOSED ?
							   "The connection was closed; opening a new one." :
							   "The NATS client is reconnecting.")));
			ism_stats_set_error(msg);
		}
	}
	else if (state == ISM_NATS_CONNECTED && reconnects > 0)
	{
		/* lost and regained between two looks (the worker was busy meanwhile) */
		ereport(LOG,
				(errmsg("%s: reconnected to NATS at %s",
						MyBgworkerEntry->bgw_name, w->server),
				 errdetail("The connection was lost and restored since the worker last looked.")));
	}
	w->nats_state = state;

	if (state == ISM_NATS_CLOSED)
	{
		drop_nats(w, true);
		w->nats_state = ISM_NATS_DISCONNECTED;
		w->next_connect_at = 0;
		ism_stats_set_nats(ISM_NATS_DISCONNECTED, NULL, reconnects);
		return;
	}

	ism_stats_set_nats(state, server[0] ? server : NULL, reconnects);
	report_activity(w, STATE_IDLE,
					state == ISM_NATS_CONNECTED ? "idle" : "waiting for NATS");
}

/*
 * Is the JetStream consumer being consumed still there?  Asked every
 * ISM_CONSUMER_CHECK_MS (see ism_nats_consumer_exists); false makes the
 * worker subscribe again, which makes it anew.
 */
static bool
consumer_still_there(IsmWorker *w, const char *selector)
{
	char		err[ISM_MSG_LEN];
	char		msg[ISM_MSG_LEN * 2];

	if (GetCurrentTimestamp() < w->next_consumer_check)
		return true;
	w->next_consumer_check = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														 ISM_CONSUMER_CHECK_MS);
	if (ism_nats_consumer_exists(err, sizeof(err)))
		return true;
	snprintf(msg, sizeof(msg), "route \"%s\": %s; making it again", selector, err);
	ism_stats_set_error(msg);
	ereport(WARNING, (errmsg("%s: %s", MyBgworkerEntry->bgw_name, msg)));
	return false;
}

/*
 * Does the server deliver every message of a consumer with several filter
 * subjects, as a concurrent priority route's two are?  Such consumers came
 * with 2.10; from 2.10.26 a literal filter beside a wildcard one misses
 * messages (nats-io/nats-server#6824: 2.10.27 routes none of the literal
 * subjects' messages here, test/t/028_priority_route.pl), fixed for good
 * only in 2.11.12, 2.12.4 and 2.14.0 (nats-server#7713, "Subject
 * tree-driven intersection").  Decided by the version of the server
 * connected to, which the worker learns when it connects.
 */
static bool
server_serves_filters(bool *known)
{
	if (!ism_nats_server_at_least(2, 10, 0, known))
		return false;
	if (!ism_nats_server_at_least(2, 10, 26, known))
		return true;
	if (!ism_nats_server_at_least(2, 11, 12, known))
		return false;
	if (!ism_nats_server_at_least(2, 12, 0, known))
		return true;
	return ism_nats_server_at_least(2, 12, 4, known);
}

/*
 * Is the concurrent priority route consumed as the platform does?  A route
 * served as a plain one for want of a server that can is said once.
 */
static bool
priority_served(const IsmRoute *r)
{
	static bool said = false;
	bool		known;

	if (server_serves_filters(&known))
	{
		said = false;
		return true;
	}
	if (!said)
		ereport(LOG,
				(errmsg("%s: route \"%s\" is a concurrent priority route, consumed as a plain one"
						" (consumer \"%s_sub_1\"): %s", MyBgworkerEntry->bgw_name, r->selector,
						r->name, known ?
						"its two consumers need a nats-server that delivers every message on consumers with several filter subjects"
						" (2.10.0 to 2.10.25, 2.11.12 or later 2.11, 2.12.4 or later)" :
						"this nats.c does not tell the server's version")));
	said = true;
	return false;
}

/*
 * A concurrent priority route's two pull consumers on nats-server 2.10, as
 * ismcore makes them (alethic-ism-core,
 * ismcore/messaging/nats_message_route_concurrent.py _subscribe_priority):
 * "<name>_high_1" on subject.high and subject.high.>, and "<name>_low_1"
 * on subject (publishers knowing no priority), subject.low and
 * subject.low.>; spec becomes the low one, spec->high the other.
 */
static void
priority_consumers(const IsmRoute *r, IsmConsumerSpec *spec, char *durable, size_t durable_len)
{
	IsmConsumerSpec *high = palloc(sizeof(IsmConsumerSpec));

	snprintf(durable, durable_len, "%s_low_1", r->name);
	spec->filter_subjects[0] = r->subject;
	spec->filter_subjects[1] = psprintf("%s.low", r->subject);
	spec->filter_subjects[2] = psprintf("%s.low.>", r->subject);
	spec->nfilter_subjects = 3;
	*high = *spec;
	high->durable = psprintf("%s_high_1", r->name);
	high->filter_subjects[0] = psprintf("%s.high", r->subject);
	high->filter_subjects[1] = psprintf("%s.high.>", r->subject);
	high->nfilter_subjects = 2;
	spec->high = high;
}

/*
 * How the worker consumes its route: as the platform's service it stands in
 * for does, so that it takes over the consumer that service left.
 *
 * The router follows ismcore, the Python state router's library
 * (alethic-ism-core, ismcore/messaging/nats_message_route.py): JetStream
 * unless jetstream_enabled is false (subscribe()), then the durable pull
 * consumer "<name>_sub_1" (subscribe_pull_jetstream(), consumer_id "1");
 * it reads neither mode nor queue for that.  Its filters, [subject,
 * subject.>], cover what the stream holds, and nats-server 2.9 has no
 * consumer with two: a consumer made here has none.  A concurrent
 * priority route is two consumers instead (see priority_consumers).
 *
 * The writer follows core-go, the Go state-tables service's library
 * (alethic-ism-core-go, pkg/routing/nats): JetStream when the route has a
 * queue (route.go JetStreamEnabled: name and queue, and a route here always
 * has a name); mode "pull" is the pull consumer named after the queue and
 * filtered on the subject (subscribePull), and any other mode, or none, is
 * push (Subscribe: "push" is the default, and all but "pull" is push):
 * js.QueueSubscribe's durable consumer, named after the queue, with the
 * queue as deliver group (subscribePush; see init_push_config).
 *
 * A route without JetStream is a core NATS subscription to the subject,
 * in a queue group (the route's queue, or its name): every worker of every
 * instance gets a share, not a copy.  Upstream's core subscriptions have
 * none without a queue, and so hand each message to every replica.
 */
static void
platform_consumer(IsmWorker *w, const IsmRoute *r, IsmConsumerSpec *spec,
				  char *durable, size_t durable_len)
{
	bool		jetstream = w->role == ISM_ROLE_ROUTER ? r->jetstream_enabled : r->queue != NULL;

	memset(spec, 0, sizeof(*spec));
	spec->selector = r->selector;
	spec->subject = r->subject;
	if (!jetstream)
	{
		spec->mode = ISM_CONSUME_CORE;
		spec->queue = r->queue ? r->queue : r->name;
		durable[0] = '\0';
		return;
	}
	spec->stream = r->name;
	spec->durable = durable;
	if (w->role == ISM_ROLE_ROUTER)
	{
		spec->mode = ISM_CONSUME_PULL;
		snprintf(durable, durable_len, "%s_sub_1", r->name);
	}
	else
	{
		spec->mode = strcmp(r->mode, "pull") == 0 ? ISM_CONSUME_PULL : ISM_CONSUME_PUSH;
		strlcpy(durable, r->queue, durable_len);
		spec->queue = r->queue;
		spec->filter_subject = r->subject;
	}
	spec->ack_wait_s = r->ack_wait;
	/* ismcore fixes 1000; core-go leaves it to the server, whose default is 1000 */
	spec->max_ack_pending = r->max_ack_pending ? r->max_ack_pending : 1000;
	spec->open_locked = w->role == ISM_ROLE_WRITER && ism_claims_bucket[0] ?
		ism_claims_open_locked : NULL;
	if (w->role == ISM_ROLE_ROUTER && r->concurrent_enabled &&
		r->concurrent_priority_enabled && priority_served(r))
		priority_consumers(r, spec, durable, durable_len);
}

/*
 * The consumer this worker's route asks for, as spec and as a fingerprint;
 * false with *why when there is none (why: NULL when there is simply no
 * route, else the lookup's error).
 */
static bool
wanted_consumer(IsmWorker *w, const char *selector, IsmConsumerSpec *spec,
				char *durable, size_t durable_len, char *fingerprint, size_t len,
				char **why)
{
	RouteLookupResult result;
	const IsmRoute *r = ism_route_cache_resolve(selector, &result);

	*why = NULL;
	if (result == ROUTE_AMBIGUOUS)
		*why = psprintf("route \"%s\" matches several wildcard routes: %s",
						selector, ism_route_cache_candidates(selector));
	if (r == NULL)
		return false;
	platform_consumer(w, r, spec, durable, durable_len);
	snprintf(fingerprint, len, "%d|%s|%s|%s|%s|%s|%s|%d|%d", (int) spec->mode,
			 spec->stream ? spec->stream : "", spec->subject, durable,
			 spec->queue ? spec->queue : "",
			 spec->filter_subject ? spec->filter_subject : "",
			 r->selector, spec->ack_wait_s, spec->max_ack_pending);
	return true;
}

/*
 * A subscription that failed, or a route that cannot be consumed: the
 * worker's last_error and, with a route to count it on, its row in
 * pg_stat_ism_routes; logged once.  The other routes are not held up.
 */
static void
consumer_failed(IsmWorker *w, const char *selector, const char *msg)
{
	if (selector)
		ism_route_error(selector, msg);
	log_once(&w->subscribe_log, WARNING, msg);
}

static void sync_subscription_turn(IsmWorker *w);

/*
 * Hold the subscription this worker's route asks for: subscribe when the
 * route appears or changes, unsubscribe when it goes (and again when its
 * consumer has gone).  Called when connected and the route cache is fresh.
 */
static void
sync_subscription(IsmWorker *w)
{
	static MemoryContext turn_context = NULL;
	MemoryContext old;

	/* what a turn allocates (an ambiguous route's message) goes with it */
	if (turn_context == NULL)
		turn_context = AllocSetContextCreate(TopMemoryContext, "ism_state subscription",
											 ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(turn_context);
	sync_subscription_turn(w);
	MemoryContextSwitchTo(old);
	MemoryContextReset(turn_context);
}

static void
sync_subscription_turn(IsmWorker *w)
{
	const char *selector = w->role == ISM_ROLE_ROUTER ?
		ISM_ROUTER_SELECTOR : ISM_WRITER_SELECTOR;
	IsmConsumerSpec spec;
	char		durable[300];
	char		want[ISM_MSG_LEN] = "";
	char		err[ISM_MSG_LEN];
	char		bound[ISM_MSG_LEN];
	char		msg[ISM_MSG_LEN * 2];
	char	   *why;
	const char *have = ism_nats_is_subscribed() ? w->consuming : "";

	if (!wanted_consumer(w, selector, &spec, durable, sizeof(durable),
						 want, sizeof(want), &why))
		want[0] = '\0';
	/* an ambiguous route: said once, until it changes */
	if (why && strcmp(why, w->subscribe_log.last) != 0)
		consumer_failed(w, NULL, why);
	if (strcmp(want, have) == 0 && (!have[0] || consumer_still_there(w, selector)))
		return;

	if (have[0])
	{
		drop_nats(w, false);
		ereport(LOG,
				(errmsg("%s: stopped consuming route \"%s\" (%s)",
						MyBgworkerEntry->bgw_name, selector,
						strcmp(want, have) != 0 ? (want[0] ? "route changed" : "route removed") :
						"its consumer is gone")));
	}
	w->consuming[0] = '\0';
	if (!want[0] || GetCurrentTimestamp() < w->next_subscribe_at)
		return;

	report_activity(w, STATE_RUNNING, "subscribing");
	if (ism_nats_subscribe(&spec, bound, sizeof(bound), err, sizeof(err)))
	{
		strlcpy(w->consuming, want, sizeof(w->consuming));
		w->subscribe_log.last[0] = '\0';
		w->next_consumer_check = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															 ISM_CONSUMER_CHECK_MS);
		ereport(LOG,
				(errmsg("%s: consuming route \"%s\": %s",
						MyBgworkerEntry->bgw_name, selector, bound)));
		return;
	}
	w->next_subscribe_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   ism_nats_reconnect_wait_ms);
	snprintf(msg, sizeof(msg), "could not consume route \"%s\": %s", spec.selector, err);
	consumer_failed(w, spec.selector, msg);
}

/* Router: republish the dead letters an operator asked to replay. */
static void
replay_dead_letters(IsmWorker *w)
{
	uint64		generation = ism_change_generation(ISM_CHANGE_REPLAYS);
	char		err[ISM_MSG_LEN];
	char		msg[ISM_MSG_LEN + 64];
	int			n;

	if (generation == w->replays_seen || GetCurrentTimestamp() < w->next_replay_at)
		return;
	report_activity(w, STATE_RUNNING, "replaying dead letters");
	n = ism_router_replay_dead_letters(err, sizeof(err));
	if (n < 0)
	{
		w->next_replay_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														ism_nats_reconnect_wait_ms);
		snprintf(msg, sizeof(msg), "could not replay dead letters: %s", err);
		log_once(&w->replay_log, WARNING, msg);
		return;
	}
	w->replay_log.last[0] = '\0';
	if (n > 0)
		ereport(LOG, (errmsg("%s: replayed %d dead letters", MyBgworkerEntry->bgw_name, n)));
	/* a full batch: there may be more, so look again next turn */
	if (n < 1000)
		w->replays_seen = generation;
}

/*
 * Router: handle what the subscription has.  The fetch itself is the
 * loop's wait (short, so signals and route changes are seen promptly).
 */
static long
consume(IsmWorker *w)
{
	RouteLookupResult result;
	const IsmRoute *r = ism_route_cache_resolve(ISM_ROUTER_SELECTOR, &result);
	int			room;
	long		fetch_ms;
	int			n;

	/*
	 * The route's batch_size is upstream's fetch size (1 by default); the
	 * router fetches up to 256 so that one fetch and one wait for the
	 * PubAcks serve them all (bench/router_bench.sh: 64 gave about two
	 * thirds of the rate), and still handles them in order; never more
	 * than JetStream would deliver with the acks it holds (see
	 * platform_consumer).
	 */
	room = (r && r->max_ack_pending ? r->max_ack_pending : 1000) - ism_nats_in_flight();
	if (room <= 0)
		return ism_ack_gate_wait_ms(ISM_POLL_MS);
	fetch_ms = ism_ack_gate_wait_ms(ISM_FETCH_WAIT_MS);
	n = ism_router_consume(Min(Max(r ? r->batch_size : 1, 256), room), (int) fetch_ms);
	/* the activity report is the router's while it handles messages */
	w->activity[0] = '\0';
	if (n < 0)
		return ISM_POLL_MS;
	/* a short fetch asks for what there is and does not wait: the latch does */
	return n == 0 && fetch_ms < ISM_SHORTEST_PULL_WAIT_MS ? fetch_ms : 0;
}

/* The ack_wait of the route the worker consumes (JetStream's 30 s without). */
static int
route_ack_wait_ms(IsmWorker *w)
{
	RouteLookupResult result;
	const IsmRoute *r = ism_route_cache_resolve(w->role == ISM_ROLE_ROUTER ?
												ISM_ROUTER_SELECTOR : ISM_WRITER_SELECTOR,
												&result);

	return (r && r->ack_wait > 0 ? r->ack_wait : 30) * 1000;
}

/*
 * Writer: fetch records into batches, flushing those due.  The fetch waits
 * at most until the next batch is due, or the next look at held acks; with
 * as many messages in flight as JetStream lets be pending (acks held for
 * their commits, say) there is nothing to fetch, and the loop waits.
 */
static long
consume_records(IsmWorker *w)
{
	RouteLookupResult result;
	const IsmRoute *r = ism_route_cache_resolve(ISM_WRITER_SELECTOR, &result);
	int			max_ack_pending = r && r->max_ack_pending ? r->max_ack_pending : 1000;
	long		fetch_ms = ism_ack_gate_wait_ms(ism_writer_next_due_ms(ISM_FETCH_WAIT_MS));
	int			n;

	n = ism_writer_consume((int) fetch_ms, max_ack_pending, route_ack_wait_ms(w));
	w->activity[0] = '\0';
	if (n < 0 || (n == 0 && ism_nats_in_flight() >= max_ack_pending))
		return ism_ack_gate_wait_ms(ism_writer_next_due_ms(ISM_POLL_MS));
	/* a short fetch asks for what there is and does not wait: the latch does */
	if (n == 0 && fetch_ms < ISM_SHORTEST_PULL_WAIT_MS)
		return fetch_ms;
	return 0;
}

/* One turn of the loop; returns how long to wait before the next. */
static long
worker_step(IsmWorker *w)
{
	ism_stats_touch();

	if (!ensure_extension(w))
		return ISM_POLL_MS;
	if (w->seed_pending)
		seed_routes(w);
	refresh_route_cache(w);

	if (!w->settings_ok)
	{
		ism_stats_set_state(ISM_WORKER_CONFIG_ERROR);
		report_activity(w, STATE_IDLE, "waiting for valid settings");
		return ISM_CONFIG_ERROR_SLEEP_MS;
	}

	if (!ism_nats_is_open())
		return try_connect(w);

	watch_connection(w);
	if (w->nats_state != ISM_NATS_CONNECTED)
		return ISM_POLL_MS;
	sync_subscription(w);
	report_activity(w, STATE_IDLE, "idle");
	ism_ack_gate_turn(route_ack_wait_ms(w));
	if (w->role == ISM_ROLE_ROUTER)
		replay_dead_letters(w);
	if (w->role == ISM_ROLE_ROUTER && ism_nats_is_subscribed())
		return consume(w);
	if (w->role == ISM_ROLE_WRITER && ism_nats_is_subscribed())
		return consume_records(w);
	return ism_ack_gate_wait_ms(ISM_POLL_MS);
}

static void
close_nats_at_exit(int code, Datum arg)
{
	ism_nats_shutdown();
}

/*
 * From 17 the worker's role needs no LOGIN: a role nobody can log in as
 * (scripts/worker-role.sql makes it NOLOGIN there).
 */
static uint32
connection_flags(void)
{
#if PG_VERSION_NUM >= 170000
	return BGWORKER_BYPASS_ROLELOGINCHECK;
#else
	return 0;
#endif
}

void
ism_worker_main(Datum main_arg)
{
	IsmWorker	w;

	memset(&w, 0, sizeof(w));
	w.slot = DatumGetInt32(main_arg);
	/* replays marked before a restart are looked for at once */
	w.replays_seen = PG_UINT64_MAX;
	w.role = w.slot == 0 ? ISM_ROLE_ROUTER : ISM_ROLE_WRITER;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, handle_sigterm);
	BackgroundWorkerUnblockSignals();
	ism_hold_cancel();

	ism_stats_attach_worker(w.slot, w.role);
	/* what goes with the connection: its JetStream state, and with that the claims */
	ism_nats_on_disconnect(ism_js_close);
	ism_js_on_close(ism_claims_close);
	before_shmem_exit(close_nats_at_exit, (Datum) 0);

	BackgroundWorkerInitializeConnection(ism_database, ism_role[0] ? ism_role : NULL,
										 connection_flags());
	pgstat_report_appname(MyBgworkerEntry->bgw_name);
	snprintf(w.client_name, sizeof(w.client_name), "%s [%s]",
			 MyBgworkerEntry->bgw_name, ism_database);
	ereport(LOG,
			(errmsg("%s started in database \"%s\"",
					MyBgworkerEntry->bgw_name, ism_database)));
	if (!ism_role[0])
		ereport(WARNING,
				(errmsg("%s connects as the bootstrap superuser", MyBgworkerEntry->bgw_name),
				 errhint("Set ism_state.role to a role with only the privileges the workers need "
						 "(scripts/worker-role.sql).")));

	apply_settings(&w);
	if (w.role == ISM_ROLE_ROUTER)
		ism_router_init(worker_stopping);
	else
		ism_writer_init();

	while (!got_sigterm)
	{
		long		timeout = worker_step(&w);

		if (got_sigterm)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);

		/*
		 * pg_cancel_backend() cancels the statement the worker runs (a
		 * flush waiting for a lock, say: it is retried); between
		 * statements there is nothing to cancel (see
		 * ism_run_in_transaction).
		 */
		QueryCancelPending = false;
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			apply_settings(&w);
		}
	}

	ism_stats_set_state(ISM_WORKER_STOPPING);
	report_activity(&w, STATE_RUNNING, "stopping");
	/* what is pending is written and acked; what cannot be comes back later */
	if (w.role == ISM_ROLE_WRITER && w.extension_present)
		ism_writer_flush(true);
	ism_nats_stop_delivery();
	ism_ack_gate_let_go(ISM_EXIT_ACK_WAIT_MS);
	ism_nats_shutdown();
	ereport(LOG, (errmsg("%s stopped", MyBgworkerEntry->bgw_name)));

	/* exit code 1: restarted after bgw_restart_time unless the server stops */
	proc_exit(1);
}

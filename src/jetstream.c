/*-------------------------------------------------------------------------
 *
 * jetstream.c
 *	  JetStream on the worker's connection: streams and consumers, the
 *	  subscription (pull, push or core NATS), fetch and acknowledgements,
 *	  and pipelined publishing.
 *
 * The thread rules of nats_conn.c hold here too.  nats.c creates threads
 * lazily (the dispatcher of the reply subscription that API requests and
 * asynchronous publish acknowledgements arrive on), so every call that can
 * reach the library's request or publish machinery runs with all signals
 * blocked.  Nothing in those regions can raise a PostgreSQL error: no
 * palloc, no elog; messages go to fixed buffers.  The one callback, which
 * counts failed asynchronous publishes, touches only C11 atomics.
 *
 * Every kind of subscription is synchronous and polled from the main
 * thread: a pull subscription is fetched from; a push one (the platform's
 * Go services consume so) and a core NATS one queue what the server sends
 * in the library, and a fetch takes it from there with
 * natsSubscription_NextMsg.  No message callback is ever registered.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdatomic.h>
#include <stdio.h>

#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "jetstream.h"
#include "counters.h"
#include "json.h"
#include "log_limit.h"
#include "nats_conn.h"
#include "settings.h"
#include "stats.h"

#define ISM_MAX_ENSURED_STREAMS	64
/*
 * publishes awaiting their PubAck before js_PublishAsync stalls: the
 * router publishes two per message (status and forward), up to 256
 * messages a fetch
 */
#define ISM_MAX_PUBLISH_PENDING	512
#define ISM_PUBLISH_STALL_MS	5000
/* the server's duplicate window for a stream made without one */
#define ISM_DEFAULT_DUPLICATE_WINDOW_NS	(INT64CONST(120) * 1000000000)

/*
 * The consumers being consumed: one, or a priority route's two (its high
 * consumer first).  A push or core NATS subscription is always alone.
 */
#define ISM_MAX_BOUND 2
typedef struct BoundSub
{
	natsSubscription *sub;
	char		durable[256];	/* JetStream: its consumer */
} BoundSub;

static jsCtx *js = NULL;
static BoundSub bound_subs[ISM_MAX_BOUND];
static int	nbound = 0;
/* ism_nats_stop_delivery was called: bound, but nothing more to fetch */
static bool delivery_stopped = false;
static IsmConsumeMode subscription_mode;	/* how they are bound */
static char bound_stream[256];	/* JetStream: their stream */
static char inbound_selector[256];	/* the route being consumed, for the counters */
static int64 inbound_duplicate_window_ns;	/* of the stream being consumed */
static int	in_flight = 0;		/* fetched and not yet released */
static void (*before_close) (void) = NULL;

static void take_message(IsmMessage *out, natsMsg *m, const char *durable);

/*
 * The wait event shown in pg_stat_activity while waiting for the NATS
 * server: a named one where the server has custom wait events (17 and
 * later), "Extension" before.
 */
static uint32
nats_wait_event(void)
{
#if PG_VERSION_NUM >= 170000
	static uint32 event = 0;

	if (event == 0)
		event = WaitEventExtensionNew("IsmNatsServer");
	return event;
#else
	return PG_WAIT_EXTENSION;
#endif
}

static char ensured_streams[ISM_MAX_ENSURED_STREAMS][256];
static int	nensured_streams = 0;
static bool pending_core_publishes = false;
/* a publish failed, or pending ones were given up on, since the last wait */
static bool publish_trouble = false;

/* written by the publish-error callback on a nats.c thread */
static atomic_int publish_errors = 0;
static atomic_int last_publish_status = 0;
static atomic_int last_publish_errcode = 0;

static void
count_publish_error(jsCtx *ctx, jsPubAckErr *pae, void *closure)
{
	atomic_fetch_add(&publish_errors, 1);
	atomic_store(&last_publish_status, (int) pae->Err);
	atomic_store(&last_publish_errcode, (int) pae->ErrCode);
}

/* "<what>: <status>[: detail][ (JetStream error N)]" */
static bool
js_failure(const char *what, natsStatus s, jsErrCode jerr,
		   char *errbuf, size_t errlen)
{
	char		detail[512];

	ism_nats_describe_failure(s, detail, sizeof(detail));
	if (jerr)
		snprintf(errbuf, errlen, "%s: %s (JetStream error %d)", what, detail, (int) jerr);
	else
		snprintf(errbuf, errlen, "%s: %s", what, detail);
	return false;
}

/* The JetStream context of the connection; signals blocked by the caller. */
static bool
open_js(char *errbuf, size_t errlen)
{
	jsOptions	jo;
	natsStatus	s;

	if (js)
		return true;
	if (ism_nats_connection() == NULL)
	{
		snprintf(errbuf, errlen, "not connected to NATS");
		return false;
	}
	jsOptions_Init(&jo);
	jo.Wait = ism_nats_connect_timeout_ms;
	jo.PublishAsync.MaxPending = ISM_MAX_PUBLISH_PENDING;
	jo.PublishAsync.ErrHandler = count_publish_error;
	jo.PublishAsync.StallWait = ISM_PUBLISH_STALL_MS;
	s = natsConnection_JetStream(&js, ism_nats_connection(), &jo);
	if (s != NATS_OK)
	{
		js = NULL;
		return js_failure("could not open a JetStream context", s, 0, errbuf, errlen);
	}
	return true;
}

/* The JetStream context, for claims.c; signals blocked by the caller. */
jsCtx *
ism_js_context(char *errbuf, size_t errlen)
{
	return open_js(errbuf, errlen) ? js : NULL;
}

static bool
has_subject(const jsStreamConfig *cfg, const char *subject)
{
	for (int i = 0; i < cfg->SubjectsLen; i++)
		if (strcmp(cfg->Subjects[i], subject) == 0)
			return true;
	return false;
}

/*
 * The stream as the upstream router makes it: subjects [subject, subject.>],
 * file storage, work-queue retention.  An existing stream keeps its
 * settings and gains whichever of the two subjects it lacks.  Signals
 * blocked by the caller.
 */
static bool
ensure_stream_locked(const char *stream, const char *subject,
					 char *errbuf, size_t errlen)
{
	char		wildcard[1024];
	const char *wanted[2] = {subject, wildcard};
	char		what[512];
	jsStreamInfo *si = NULL;
	jsErrCode	jerr = 0;
	natsStatus	s;

	for (int i = 0; i < nensured_streams; i++)
		if (strcmp(ensured_streams[i], stream) == 0)
			return true;

	snprintf(wildcard, sizeof(wildcard), "%s.>", subject);
	s = js_GetStreamInfo(&si, js, stream, NULL, &jerr);
	if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr)
	{
		jsStreamConfig cfg;

		jsStreamConfig_Init(&cfg);
		cfg.Name = stream;
		cfg.Subjects = wanted;
		cfg.SubjectsLen = 2;
		cfg.Storage = js_FileStorage;
		cfg.Retention = js_WorkQueuePolicy;
		cfg.Replicas = ism_stream_replicas;
		jerr = 0;
		s = js_AddStream(NULL, js, &cfg, NULL, &jerr);
		snprintf(what, sizeof(what), "could not create stream \"%s\"", stream);
	}
	else if (s == NATS_OK &&
			 (!has_subject(si->Config, wanted[0]) || !has_subject(si->Config, wanted[1])))
	{
		jsStreamConfig cfg = *si->Config;

		/* every subject the operator gave the stream stays (malloc: no palloc here) */
		const char **subjects = malloc(sizeof(char *) * (cfg.SubjectsLen + 2));
		int			n = 0;

		snprintf(what, sizeof(what), "could not add subjects to stream \"%s\"", stream);
		if (subjects == NULL)
			s = NATS_NO_MEMORY;
		else
		{
			for (int i = 0; i < cfg.SubjectsLen; i++)
				subjects[n++] = cfg.Subjects[i];
			for (int i = 0; i < 2; i++)
				if (!has_subject(si->Config, wanted[i]))
					subjects[n++] = wanted[i];
			cfg.Subjects = subjects;
			cfg.SubjectsLen = n;
			jerr = 0;
			s = js_UpdateStream(NULL, js, &cfg, NULL, &jerr);
			free(subjects);
		}
	}
	else
		snprintf(what, sizeof(what), "could not look up stream \"%s\"", stream);
	jsStreamInfo_Destroy(si);

	if (s != NATS_OK)
		return js_failure(what, s, jerr, errbuf, errlen);
	if (nensured_streams < ISM_MAX_ENSURED_STREAMS)
		strlcpy(ensured_streams[nensured_streams++], stream, sizeof(ensured_streams[0]));
	return true;
}

/*
 * How long the stream drops a second publication of a Msg-Id; see
 * IsmMessage.msg_id.  Signals blocked by the caller.
 */
static int64
duplicate_window_locked(const char *stream)
{
	jsStreamInfo *si = NULL;
	jsErrCode	jerr = 0;
	int64		window = ISM_DEFAULT_DUPLICATE_WINDOW_NS;

	if (js_GetStreamInfo(&si, js, stream, NULL, &jerr) == NATS_OK &&
		si->Config->Duplicates > 0)
		window = si->Config->Duplicates;
	jsStreamInfo_Destroy(si);
	return window;
}

/* A durable consumer as it is on the server. */
typedef struct BoundConsumer
{
	bool		push;			/* has a deliver subject */
	char		deliver_group[256]; /* push: its deliver group, "" for none */
} BoundConsumer;

static void
describe_consumer(const jsConsumerConfig *cfg, BoundConsumer *bc)
{
	bc->push = cfg->DeliverSubject != NULL && cfg->DeliverSubject[0] != '\0';
	strlcpy(bc->deliver_group, bc->push && cfg->DeliverGroup ? cfg->DeliverGroup : "",
			sizeof(bc->deliver_group));
}

/*
 * A push consumer made as core-go makes one: its js.QueueSubscribe (nats.go
 * js.go subscribe(), v1.42.0) names the durable after the queue, and
 * creates it with a new inbox as deliver subject, the queue as deliver
 * group, the subject as filter, deliver all, explicit ack and instant
 * replay (and ack_wait and max_ack_pending when the route gives them,
 * which ism_state always does: its table has defaults for both).
 */
static void
init_push_config(jsConsumerConfig *cfg, const IsmConsumerSpec *spec, const char *inbox)
{
	cfg->DeliverSubject = inbox;
	cfg->DeliverGroup = spec->queue;
	cfg->ReplayPolicy = js_ReplayInstant;
}

/*
 * The durable consumer: created when missing, as spec->mode says; its ack
 * wait and in-flight limit brought in line with the route when they differ.
 * An existing one keeps its kind (pull or push) and deliver group: it is
 * what the platform's service left, and bc says what it is.  Made here
 * rather than by js_PullSubscribe or js_SubscribeSync, so that
 * unsubscribing never deletes it (nats.c deletes consumers it created
 * itself; nats.go too, which is why the Go services' consumers can vanish
 * when they stop: see ism_nats_consumer_exists).
 */
static bool
ensure_consumer_locked(const IsmConsumerSpec *spec, BoundConsumer *bc,
					   char *errbuf, size_t errlen)
{
	jsConsumerInfo *ci = NULL;
	jsConsumerConfig cfg;
	jsErrCode	jerr = 0;
	natsStatus	s;
	int64_t		ack_wait_ns = (int64_t) spec->ack_wait_s * 1000000000;
	char		what[512];

	s = js_GetConsumerInfo(&ci, js, spec->stream, spec->durable, NULL, &jerr);
	if (s == NATS_OK)
	{
		describe_consumer(ci->Config, bc);
		if (ci->Config->AckWait != ack_wait_ns ||
			ci->Config->MaxAckPending != spec->max_ack_pending)
		{
			cfg = *ci->Config;
			cfg.AckWait = ack_wait_ns;
			cfg.MaxAckPending = spec->max_ack_pending;
			jerr = 0;
			s = js_UpdateConsumer(NULL, js, spec->stream, &cfg, NULL, &jerr);
		}
		jsConsumerInfo_Destroy(ci);
		snprintf(what, sizeof(what), "could not update consumer \"%s\"", spec->durable);
	}
	else if (s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr)
	{
		natsInbox  *inbox = NULL;

		jsConsumerConfig_Init(&cfg);
		cfg.Durable = spec->durable;
		cfg.DeliverPolicy = js_DeliverAll;
		cfg.AckPolicy = js_AckExplicit;
		cfg.AckWait = ack_wait_ns;
		cfg.MaxAckPending = spec->max_ack_pending;
		cfg.FilterSubject = spec->filter_subject;
		s = NATS_OK;
		if (spec->mode == ISM_CONSUME_PUSH && (s = natsInbox_Create(&inbox)) == NATS_OK)
			init_push_config(&cfg, spec, inbox);
		jerr = 0;
		if (s == NATS_OK)
			s = js_AddConsumer(NULL, js, spec->stream, &cfg, NULL, &jerr);
		if (s == NATS_OK)
			describe_consumer(&cfg, bc);
		natsInbox_Destroy(inbox);
		snprintf(what, sizeof(what), "could not create consumer \"%s\"", spec->durable);
	}
	else
		snprintf(what, sizeof(what), "could not look up consumer \"%s\"", spec->durable);

	return s == NATS_OK || js_failure(what, s, jerr, errbuf, errlen);
}

/*
 * Bind a synchronous subscription to the consumer as it is (bc): pull, or
 * push in its deliver group.  Signals blocked by the caller.
 */
static bool
bind_consumer_locked(const IsmConsumerSpec *spec, const BoundConsumer *bc,
					 natsSubscription **subscription, char *errbuf, size_t errlen)
{
	jsSubOptions so;
	jsErrCode	jerr = 0;
	natsStatus	s;
	char		what[512];

	jsSubOptions_Init(&so);
	so.Stream = spec->stream;
	so.Consumer = spec->durable;
	if (bc->push)
	{
		so.Queue = bc->deliver_group[0] ? bc->deliver_group : NULL;
		so.ManualAck = true;
		s = js_SubscribeSync(subscription, js, spec->subject, NULL, &so, &jerr);
	}
	else
		/* nats.c 3.10 wants a subject the consumer filters on, if any */
		s = js_PullSubscribe(subscription, js,
							 spec->nfilter_subjects > 0 ? spec->filter_subjects[0] : spec->subject,
							 spec->durable, NULL, &so, &jerr);
	if (s == NATS_OK)
		return true;
	*subscription = NULL;
	snprintf(what, sizeof(what), "could not subscribe to consumer \"%s\"", spec->durable);
	return js_failure(what, s, jerr, errbuf, errlen);
}

/* Subscribe to a core NATS subject.  Signals blocked by the caller. */
static bool
subscribe_core_locked(const IsmConsumerSpec *spec, natsSubscription **subscription,
					  char *errbuf, size_t errlen)
{
	natsConnection *nc = ism_nats_connection();
	natsStatus	s;
	char		what[512];

	if (nc == NULL)
	{
		snprintf(errbuf, errlen, "not connected to NATS");
		return false;
	}
	s = spec->queue ?
		natsConnection_QueueSubscribeSync(subscription, nc, spec->subject, spec->queue) :
		natsConnection_SubscribeSync(subscription, nc, spec->subject);
	/* the server has the interest once this returns */
	if (s == NATS_OK)
		s = natsConnection_FlushTimeout(nc, ism_nats_connect_timeout_ms);
	if (s == NATS_OK)
		return true;
	if (*subscription)
		natsSubscription_Destroy(*subscription);
	*subscription = NULL;
	snprintf(what, sizeof(what), "could not subscribe to subject \"%s\"", spec->subject);
	return js_failure(what, s, 0, errbuf, errlen);
}

/* What the subscription is, for the worker's log line. */
static void
describe_subscription(const IsmConsumerSpec *spec, const BoundConsumer *bc,
					  char *bound, size_t boundlen)
{
	if (spec->mode == ISM_CONSUME_CORE)
		snprintf(bound, boundlen, "core NATS subject \"%s\"%s%s%s", spec->subject,
				 spec->queue ? ", queue group \"" : "", spec->queue ? spec->queue : "",
				 spec->queue ? "\"" : "");
	else if (spec->high)
		snprintf(bound, boundlen,
				 "stream \"%s\", priority pull consumers \"%s\" (%s, %s) before \"%s\" (%s, %s, %s)",
				 spec->stream, spec->high->durable,
				 spec->high->filter_subjects[0], spec->high->filter_subjects[1],
				 spec->durable, spec->filter_subjects[0], spec->filter_subjects[1],
				 spec->filter_subjects[2]);
	else if (bc->push)
		snprintf(bound, boundlen, "stream \"%s\", push consumer \"%s\"%s%s%s%s",
				 spec->stream, spec->durable,
				 bc->deliver_group[0] ? ", deliver group \"" : "",
				 bc->deliver_group, bc->deliver_group[0] ? "\"" : "",
				 spec->mode == ISM_CONSUME_PULL ? " (as it is; the route says pull)" : "");
	else
		snprintf(bound, boundlen, "stream \"%s\", pull consumer \"%s\"%s",
				 spec->stream, spec->durable,
				 spec->mode == ISM_CONSUME_PUSH ? " (as it is; the route says push)" : "");
}

/*
 * The JetStream API request that makes a pull consumer filtered on several
 * subjects, or brings an existing one in line, as ismcore's add_consumer
 * does (alethic-ism-core, ismcore/messaging/nats_message_route_concurrent.py
 * _subscribe_priority): deliver all, explicit ack, the route's ack_wait.
 * nats.c 3.4 has no FilterSubjects, so the request is made here.
 */
static char *
filtered_consumer_request(const IsmConsumerSpec *spec)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"stream_name\":");
	ism_json_append_string(&buf, spec->stream, strlen(spec->stream));
	appendStringInfoString(&buf, ",\"config\":{\"durable_name\":");
	ism_json_append_string(&buf, spec->durable, strlen(spec->durable));
	appendStringInfo(&buf, ",\"deliver_policy\":\"all\",\"ack_policy\":\"explicit\","
					 "\"ack_wait\":" INT64_FORMAT ",\"max_ack_pending\":%d,\"filter_subjects\":[",
					 (int64) spec->ack_wait_s * 1000000000, spec->max_ack_pending);
	for (int i = 0; i < spec->nfilter_subjects; i++)
	{
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		ism_json_append_string(&buf, spec->filter_subjects[i],
							   strlen(spec->filter_subjects[i]));
	}
	appendStringInfoString(&buf, "]}}");
	return buf.data;
}

/*
 * The server's answer to filtered_consumer_request: no error, and the
 * filter subjects asked for kept (a server before 2.10 would drop them
 * and filter on nothing).
 */
static bool
filtered_consumer_made(const IsmConsumerSpec *spec, const char *reply, int len,
					   char *errbuf, size_t errlen)
{
	char	   *perr = NULL;
	IsmJson    *root = ism_json_parse(reply, len, &perr);
	IsmJson    *error = ism_json_get(root, "error");
	IsmJson    *filters = ism_json_get(ism_json_get(root, "config"), "filter_subjects");
	IsmJson    *f;
	int			i = 0;

	if (!ism_json_is(root, ISM_JSON_OBJECT))
	{
		snprintf(errbuf, errlen, "could not create consumer \"%s\": the server's answer is not a JSON object",
				 spec->durable);
		return false;
	}
	if (error)
	{
		const char *description = ism_json_cstring(ism_json_get(error, "description"));
		IsmJson    *code = ism_json_get(error, "err_code");

		snprintf(errbuf, errlen, "could not create consumer \"%s\": %s (JetStream error %.*s)",
				 spec->durable, description ? description : "(no description)",
				 ism_json_is(code, ISM_JSON_NUMBER) ? code->len : 1,
				 ism_json_is(code, ISM_JSON_NUMBER) ? code->text : "?");
		return false;
	}
	ism_json_foreach(f, ism_json_is(filters, ISM_JSON_ARRAY) ? filters : NULL)
	{
		const char *subject = ism_json_cstring(f);

		if (i >= spec->nfilter_subjects || subject == NULL ||
			strcmp(subject, spec->filter_subjects[i]) != 0)
			break;
		i++;
	}
	if (!ism_json_is(filters, ISM_JSON_ARRAY) || filters->count != spec->nfilter_subjects ||
		i != spec->nfilter_subjects)
	{
		snprintf(errbuf, errlen, "consumer \"%s\" was not given its %d filter subjects"
				 " (a nats-server before 2.10 in the cluster?)",
				 spec->durable, spec->nfilter_subjects);
		return false;
	}
	return true;
}

/* Make or update a pull consumer filtered on several subjects. */
static bool
ensure_filtered_consumer(const IsmConsumerSpec *spec, char *errbuf, size_t errlen)
{
	char	   *body = filtered_consumer_request(spec);
	char	   *subject = psprintf("$JS.API.CONSUMER.CREATE.%s.%s", spec->stream, spec->durable);
	natsConnection *nc = ism_nats_connection();
	natsMsg    *reply = NULL;
	natsStatus	s = NATS_CONNECTION_CLOSED;
	sigset_t	saved;
	char		what[512];
	char	   *answer;

	ism_block_signals(&saved);
	pgstat_report_wait_start(nats_wait_event());
	if (nc)
		s = natsConnection_Request(&reply, nc, subject, body, (int) strlen(body),
								   ism_nats_connect_timeout_ms);
	pgstat_report_wait_end();
	ism_restore_signals(&saved);
	if (s != NATS_OK)
	{
		snprintf(what, sizeof(what), "could not create consumer \"%s\"", spec->durable);
		return js_failure(what, s, 0, errbuf, errlen);
	}
	answer = pnstrdup(natsMsg_GetData(reply), natsMsg_GetDataLength(reply));
	natsMsg_Destroy(reply);
	return filtered_consumer_made(spec, answer, strlen(answer), errbuf, errlen);
}

/*
 * Make sure the durable consumer spec names exists, and bind a
 * subscription to it in the next free slot.
 */
static bool
consume_consumer(const IsmConsumerSpec *spec, BoundConsumer *bc, char *errbuf, size_t errlen)
{
	BoundSub   *b = &bound_subs[nbound];
	sigset_t	saved;
	bool		ok = true;

	Assert(nbound < ISM_MAX_BOUND);
	if (spec->nfilter_subjects > 0)
		ok = ensure_filtered_consumer(spec, errbuf, errlen);
	ism_block_signals(&saved);
	if (ok && spec->nfilter_subjects == 0)
		ok = ensure_consumer_locked(spec, bc, errbuf, errlen);
	if (ok)
		ok = bind_consumer_locked(spec, bc, &b->sub, errbuf, errlen);
	ism_restore_signals(&saved);
	if (!ok)
		return false;
	strlcpy(b->durable, spec->durable, sizeof(b->durable));
	nbound++;
	return true;
}

/*
 * Consume what spec says: make sure the stream and the durable consumer
 * (a priority route's two) exist and bind to them, or subscribe to a core
 * NATS subject.  Replaces any current subscription.  bound says what it is
 * bound to.
 */
bool
ism_nats_subscribe(const IsmConsumerSpec *spec, char *bound, size_t boundlen,
				   char *errbuf, size_t errlen)
{
	BoundConsumer bc = {0};
	sigset_t	saved;
	bool		ok;

	ism_nats_unsubscribe();
	(void) nats_wait_event();	/* registered here, outside the blocked region */
	strlcpy(inbound_selector, spec->selector, sizeof(inbound_selector));
	ism_block_signals(&saved);
	ok = open_js(errbuf, errlen) &&
		(spec->open_locked == NULL || spec->open_locked(errbuf, errlen));
	if (ok && spec->mode == ISM_CONSUME_CORE)
	{
		ok = subscribe_core_locked(spec, &bound_subs[0].sub, errbuf, errlen);
		nbound = ok ? 1 : 0;
	}
	else if (ok)
	{
		ok = ensure_stream_locked(spec->stream, spec->subject, errbuf, errlen);
		if (ok)
			inbound_duplicate_window_ns = duplicate_window_locked(spec->stream);
	}
	ism_restore_signals(&saved);
	if (ok && spec->mode != ISM_CONSUME_CORE)
	{
		ok = (spec->high == NULL || consume_consumer(spec->high, &bc, errbuf, errlen)) &&
			consume_consumer(spec, &bc, errbuf, errlen);
		if (!ok)
			ism_nats_unsubscribe();
	}
	if (!ok)
		return false;

	subscription_mode = spec->mode == ISM_CONSUME_CORE ? ISM_CONSUME_CORE :
		bc.push ? ISM_CONSUME_PUSH : ISM_CONSUME_PULL;
	strlcpy(bound_stream, spec->mode == ISM_CONSUME_CORE ? "" : spec->stream,
			sizeof(bound_stream));
	describe_subscription(spec, &bc, bound, boundlen);
	return true;
}

/*
 * Are the consumers still there?  A push subscription whose consumer was
 * deleted just receives nothing: nats.go deletes a consumer its subscribe
 * created when that subscription ends, so a Go service stopping after
 * ism_state bound to the consumer it made takes it away.  The worker asks
 * now and then, and subscribes again (making it anew) when it is gone.
 * true when they are, or cannot be told (a timeout, say), or for core NATS.
 */
bool
ism_nats_consumer_exists(char *errbuf, size_t errlen)
{
	if (nbound == 0 || subscription_mode == ISM_CONSUME_CORE || js == NULL)
		return true;
	for (int i = 0; i < nbound; i++)
	{
		jsConsumerInfo *ci = NULL;
		jsErrCode	jerr = 0;
		natsStatus	s;
		sigset_t	saved;

		ism_block_signals(&saved);
		pgstat_report_wait_start(nats_wait_event());
		s = js_GetConsumerInfo(&ci, js, bound_stream, bound_subs[i].durable, NULL, &jerr);
		pgstat_report_wait_end();
		ism_restore_signals(&saved);
		jsConsumerInfo_Destroy(ci);
		if (s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr || jerr == JSStreamNotFoundErr)
		{
			snprintf(errbuf, errlen, "consumer \"%s\" of stream \"%s\" is gone",
					 bound_subs[i].durable, bound_stream);
			return false;
		}
	}
	return true;
}

bool
ism_nats_is_subscribed(void)
{
	return nbound > 0;
}

/*
 * The next message a draining pull subscription has queued, waiting at
 * most wait_ms for the drain to end.  A pull subscription's queue is read
 * only by a fetch; one for a single message of at most one byte, no_wait,
 * takes what is queued and asks the server nothing, or, should a status
 * (a request's end) come first, asks for a message no message fits.
 */
static bool
next_queued_pull_locked(natsSubscription *subscription, int64_t wait_ms, natsMsg **m)
{
	int64_t		deadline = nats_Now() + wait_ms;

	for (;;)
	{
		int			queued = 0;
		jsFetchRequest req;
		natsMsgList list = {0};

		if (natsSubscription_GetPending(subscription, &queued, NULL) != NATS_OK)
			return false;		/* the drain is over */
		if (queued == 0)
		{
			int64_t		left = deadline - nats_Now();

			if (left <= 0 ||
				natsSubscription_WaitForDrainCompletion(subscription, Min(left, 5)) == NATS_OK)
				return false;
			continue;
		}
		jsFetchRequest_Init(&req);
		req.Batch = 1;
		req.MaxBytes = 1;
		req.NoWait = true;
		if (natsSubscription_FetchRequest(&list, subscription, &req) == NATS_OK && list.Count == 1)
		{
			*m = list.Msgs[0];
			list.Msgs[0] = NULL;
		}
		natsMsgList_Destroy(&list);
		if (*m)
			return true;
	}
}

/*
 * What a subscription that goes had received: nats.c frees the messages
 * queued in a subscription it destroys, and drops those still on their way
 * to it; the server holds a stream's as delivered, and sends them again
 * only after the consumer's ack wait (60 s on the platform's writer
 * route), a core NATS one never.  A pull request can outlive its fetch on
 * a busy server (it expires there by the server's clock), and deliver
 * after it.  So the subscription is drained instead (the server stops
 * sending, and what it sent before is taken), at most connect_timeout
 * long.  Collected with malloc (signals blocked by the caller); *n of
 * them.
 */
static natsMsg **
drain_queued_locked(natsSubscription *subscription, bool pull, int *n)
{
	int64_t		deadline = nats_Now() + ism_nats_connect_timeout_ms;
	bool		draining;
	natsMsg   **got = NULL;
	int			cap = 0;

	*n = 0;
	draining = natsSubscription_DrainTimeout(subscription, ism_nats_connect_timeout_ms) == NATS_OK;
	for (;;)
	{
		natsMsg    *m = NULL;
		int64_t		left = draining ? Max(deadline - nats_Now(), 0) : 0;

		/* draining: until the drain is over; else only what is there */
		if (pull ? !next_queued_pull_locked(subscription, left, &m) :
			natsSubscription_NextMsg(&m, subscription, left) != NATS_OK)
			break;
		if (*n == cap)
		{
			natsMsg   **more = realloc(got, sizeof(natsMsg *) * (cap = Max(cap * 2, 64)));

			if (more == NULL)
			{
				natsMsg_Destroy(m);
				break;
			}
			got = more;
		}
		got[(*n)++] = m;
	}
	if (!draining)
		natsSubscription_Unsubscribe(subscription);
	return got;
}

/*
 * Messages a core NATS subscription had received when it went, handed out
 * by the next fetch (of whatever subscription follows) before anything
 * else: nothing would ever send them again.  In TopMemoryContext.
 */
static IsmMessage *leftovers = NULL;
static int	nleftovers = 0;
static int	leftovers_cap = 0;

static void
keep_leftover(const IsmMessage *m)
{
	if (nleftovers == leftovers_cap)
	{
		leftovers_cap = Max(leftovers_cap * 2, 64);
		leftovers = leftovers == NULL ?
			MemoryContextAlloc(TopMemoryContext, sizeof(IsmMessage) * leftovers_cap) :
			repalloc(leftovers, sizeof(IsmMessage) * leftovers_cap);
	}
	leftovers[nleftovers++] = *m;
}

/*
 * Give back what the drained subscription had received: a stream's
 * message is nak'ed, to come again at once (to the next subscription, or
 * another member of the deliver group); any other is kept for the next
 * fetch.  Returns how many were nak'ed.
 */
static int
give_back(natsMsg **got, int n, const char *durable)
{
	int			naked = 0;

	for (int i = 0; i < n; i++)
	{
		IsmMessage	m;

		take_message(&m, got[i], durable);
		if (!m.from_stream)
		{
			keep_leftover(&m);
			continue;
		}
		if (natsMsg_Nak(got[i], NULL) == NATS_OK)
			naked++;
		natsMsg_Destroy(got[i]);
	}
	ism_count_inbound(ISM_RC_NAKED, naked);
	return naked;
}

/*
 * The naks and acks sent so far on their way, before the connection may
 * go.
 */
static void
flush_settles(void)
{
	sigset_t	saved;

	ism_block_signals(&saved);
	natsConnection_FlushTimeout(ism_nats_connection(), ism_nats_connect_timeout_ms);
	ism_restore_signals(&saved);
}

/*
 * Stop the server sending to this worker; the subscriptions stay until
 * ism_nats_unsubscribe, so that the messages they delivered can still be
 * settled.  What they had received and not handed out is given back.
 * Whatever the caller nak's afterwards comes again to the
 * next subscription or another member of the group, never to this one
 * (a nak sent while it still listened could come back to it just as it
 * went, and wait out the ack wait).
 */
void
ism_nats_stop_delivery(void)
{
	int			n = 0;
	int			kept = nleftovers;
	int			naked = 0;

	if (delivery_stopped || nbound == 0)
		return;
	for (int i = 0; i < nbound; i++)
	{
		sigset_t	saved;
		natsMsg   **got;
		int			got_n;

		ism_block_signals(&saved);
		got = drain_queued_locked(bound_subs[i].sub, subscription_mode == ISM_CONSUME_PULL, &got_n);
		ism_restore_signals(&saved);
		naked += give_back(got, got_n, bound_subs[i].durable);
		free(got);
		n += got_n;
	}
	delivery_stopped = true;
	if (naked > 0)
		flush_settles();
	if (n > 0)
		ereport(LOG,
				(errmsg("ism_state: the subscription to \"%s\" had received %d messages when it ended:"
						" %d given back to the server, %d kept to be handled next",
						inbound_selector, n, naked, nleftovers - kept)));
}

/* Stop consuming; the durable consumers stay on the server. */
void
ism_nats_unsubscribe(void)
{
	sigset_t	saved;

	ism_nats_stop_delivery();
	ism_block_signals(&saved);
	for (int i = 0; i < ISM_MAX_BOUND; i++)
		if (bound_subs[i].sub)
		{
			natsSubscription_Destroy(bound_subs[i].sub);
			bound_subs[i].sub = NULL;
		}
	ism_restore_signals(&saved);
	nbound = 0;
	delivery_stopped = false;
}

/*
 * What goes before the JetStream context does: what claims.c opened on it
 * (ism_claims_close).  The worker passes it in, so that this file calls
 * nothing of the modules built on it.
 */
void
ism_js_on_close(void (*hook) (void))
{
	before_close = hook;
}

/* Before the connection goes: the subscription, the context, the caches. */
void
ism_js_close(void)
{
	ism_nats_unsubscribe();
	if (before_close)
		before_close();
	jsCtx_Destroy(js);
	js = NULL;
	nensured_streams = 0;
	pending_core_publishes = false;
	publish_trouble = false;
	atomic_store(&publish_errors, 0);
}

/*
 * The messages a push or core NATS subscription has queued, up to max,
 * waiting at most timeout_ms for the first.  Signals blocked by the caller.
 */
static natsStatus
take_queued_locked(natsMsg **got, int max, int timeout_ms, int *n)
{
	natsStatus	s = NATS_OK;

	*n = 0;
	while (*n < max)
	{
		natsMsg    *m = NULL;

		/* no wait once one came: a batch is what is there */
		s = natsSubscription_NextMsg(&m, bound_subs[0].sub, *n == 0 ? timeout_ms : 0);
		if (s != NATS_OK)
			break;
		got[(*n)++] = m;
	}
	if (s == NATS_TIMEOUT || (*n > 0 && s != NATS_SLOW_CONSUMER))
		s = NATS_OK;			/* an error shows at the next fetch */
	return s;
}

/*
 * Fill out from m, which it now owns.  Only a JetStream subscription's
 * messages are read for JetStream metadata, and only metadata naming the
 * consumer bound to counts: a core NATS message whose reply subject merely
 * looks like an ack subject (anyone may publish one) must not be taken for
 * a stream's message, to be acked through a JetStream context it has not,
 * nor a message published straight to a push consumer's deliver subject be
 * recorded as another stream's sequence.
 */
static void
take_message(IsmMessage *out, natsMsg *m, const char *durable)
{
	jsMsgMetaData *meta = NULL;

	memset(out, 0, sizeof(*out));
	out->handle = m;
	out->subject = natsMsg_GetSubject(m);
	out->data = natsMsg_GetData(m);
	out->len = natsMsg_GetDataLength(m);
	if (subscription_mode == ISM_CONSUME_CORE)
		return;
	if (natsMsg_GetMetaData(&meta, m) == NATS_OK &&
		strcmp(meta->Stream, bound_stream) == 0 &&
		strcmp(meta->Consumer, durable) == 0)
	{
		out->stream_seq = meta->Sequence.Stream;
		out->deliveries = meta->NumDelivered;
		out->timestamp_ns = meta->Timestamp;
		strlcpy(out->stream, meta->Stream, sizeof(out->stream));
		out->from_stream = true;
		if (natsMsgHeader_Get(m, "Nats-Msg-Id", &out->msg_id) != NATS_OK ||
			out->msg_id[0] == '\0')
			out->msg_id = NULL;
		out->duplicate_window_ns = inbound_duplicate_window_ns;
	}
	else
		ism_log_limited(WARNING, "no JetStream metadata",
						"ism_state: a message on \"%s\" came with no JetStream metadata of consumer \"%s\" (not from the stream);"
						" it is handled as it comes, without exactly-once bookkeeping",
						out->subject ? out->subject : "", durable);
	jsMsgMetaData_Destroy(meta);
}

/* Up to max of the leftovers, oldest first; counted as received now. */
static int
take_leftovers(IsmMessage *msgs, int max)
{
	int			n = Min(max, nleftovers);
	int64		bytes = 0;

	for (int i = 0; i < n; i++)
	{
		msgs[i] = leftovers[i];
		bytes += msgs[i].len;
	}
	memmove(leftovers, leftovers + n, sizeof(IsmMessage) * (nleftovers - n));
	nleftovers -= n;
	ism_count_inbound(ISM_RC_RECEIVED, n);
	ism_count_inbound(ISM_RC_BYTES_IN, bytes);
	in_flight += n;
	ism_stats_set_in_flight(in_flight);
	return n;
}

/*
 * Up to max messages from a pull subscription, appended to got[*n],
 * waiting at most timeout_ms, or not at all (no_wait: what the consumer
 * has now).  Signals blocked by the caller.
 */
static natsStatus
fetch_pull_locked(natsSubscription *sub, natsMsg **got, int max, int timeout_ms,
				  bool no_wait, int *n, jsErrCode *jerr)
{
	natsMsgList list = {0};
	natsStatus	s;
	int			queued = 0;

	/*
	 * Messages a server delivered after an earlier fetch had ended wait in
	 * the subscription; a fetch takes them first.  Before nats.c 3.9 one
	 * that found more of them than half its batch, and fewer than all of
	 * it, wrote past its array (nats.c#749, "Fix heap buffer overflow in
	 * _fetch"; bookworm has 3.4): the worker died of a corrupt heap.  A
	 * fetch for exactly what waits asks the server nothing, and is safe.
	 */
	if (natsSubscription_GetPending(sub, &queued, NULL) == NATS_OK && queued > 0)
		max = Min(max, queued);

	/*
	 * A pull request outlives its fetch on the server unless it waits long
	 * enough for nats.c to make it expire there first (10 ms before the
	 * fetch gives up, from 20 ms: js.c _sendPullRequest): a shorter wait
	 * (the next batch due in a few ms, acks held) asks for what there is
	 * now instead, which leaves nothing to come after the fetch.
	 */
	if (timeout_ms < ISM_SHORTEST_PULL_WAIT_MS)
		no_wait = true;

	if (no_wait)
	{
		jsFetchRequest req;

		jsFetchRequest_Init(&req);
		req.Batch = max;
		req.NoWait = true;
		/* the client's own limit; the server answers at once */
		req.Expires = (int64_t) timeout_ms * 1000000;
		s = natsSubscription_FetchRequest(&list, sub, &req);
		if (s == NATS_NOT_FOUND)
			s = NATS_TIMEOUT;	/* nothing there */
	}
	else
		s = natsSubscription_Fetch(&list, sub, max, timeout_ms, jerr);
	for (int i = 0; s == NATS_OK && i < list.Count; i++)
	{
		got[(*n)++] = list.Msgs[i];
		list.Msgs[i] = NULL;	/* ours now */
	}
	natsMsgList_Destroy(&list);
	return s;
}

/*
 * A priority route's fetch (two pull subscriptions, the high one first):
 * the high consumer's messages, up to half of max, without waiting; then
 * the low one's for the rest, waiting only when the high one had none.
 * Each turn takes from both, so that neither waits behind the other's
 * backlog, as ismcore's two consume loops with their own worker pools
 * (alethic-ism-core, nats_message_route_concurrent.py consume()).  *nhigh
 * says how many came from the high one.  Signals blocked by the caller.
 */
static natsStatus
fetch_priority_locked(natsMsg **got, int max, int timeout_ms, int *n, int *nhigh,
					  jsErrCode *jerr)
{
	natsStatus	s;

	s = fetch_pull_locked(bound_subs[0].sub, got, Max(max / 2, 1), timeout_ms, true, n, jerr);
	*nhigh = *n;
	if ((s == NATS_OK || s == NATS_TIMEOUT) && max > *n)
		s = fetch_pull_locked(bound_subs[1].sub, got, max - *n, timeout_ms, *n > 0, n, jerr);
	/* what came is handled; an error shows at the next fetch */
	return *n > 0 ? NATS_OK : s;
}

/*
 * Up to max messages from the subscription, waiting at most timeout_ms:
 * fetched from a pull consumer (a priority route's two), or taken from
 * what a push consumer or a core NATS subject has sent.  Returns how many (0 when none came), or -1
 * with errbuf filled.  The caller settles each (ack, nak or term) and then
 * releases them.
 */
int
ism_nats_fetch(IsmMessage *msgs, int max, int timeout_ms, char *errbuf, size_t errlen)
{
	natsMsg   **got;
	jsErrCode	jerr = 0;
	natsStatus	s;
	sigset_t	saved;
	int			n = 0;
	int			nhigh = 0;
	int64		bytes = 0;
	int64		redeliveries = 0;

	if (nleftovers > 0)
		return take_leftovers(msgs, max);
	if (nbound == 0 || delivery_stopped)
		return 0;
	max = Max(max, 1);
	got = palloc(sizeof(natsMsg *) * max);
	ism_block_signals(&saved);
	pgstat_report_wait_start(nats_wait_event());
	if (subscription_mode == ISM_CONSUME_PULL && nbound == 2)
		s = fetch_priority_locked(got, max, timeout_ms, &n, &nhigh, &jerr);
	else if (subscription_mode == ISM_CONSUME_PULL)
		s = fetch_pull_locked(bound_subs[0].sub, got, max, timeout_ms, false, &n, &jerr);
	else
		s = take_queued_locked(got, max, timeout_ms, &n);
	pgstat_report_wait_end();
	ism_restore_signals(&saved);

	if (s == NATS_SLOW_CONSUMER)
		/* the library's queue was full: JetStream delivers those again, core NATS not */
		ism_log_limited(WARNING, "slow consumer",
						"ism_state: the NATS client dropped messages on \"%s\": more came than its queue holds%s",
						inbound_selector, subscription_mode == ISM_CONSUME_CORE ?
						" (core NATS: they are lost)" : " (they come again after the ack wait)");
	else if (s == NATS_TIMEOUT)
		n = 0;
	else if (s != NATS_OK)
	{
		pfree(got);
		js_failure("could not fetch messages", s, jerr, errbuf, errlen);
		return -1;
	}

	for (int i = 0; i < n; i++)
	{
		take_message(&msgs[i], got[i],
					 bound_subs[i < nhigh ? 0 : nbound - 1].durable);
		bytes += msgs[i].len;
		redeliveries += msgs[i].deliveries > 1;
	}
	pfree(got);
	ism_count_inbound(ISM_RC_RECEIVED, n);
	ism_count_inbound(ISM_RC_BYTES_IN, bytes);
	ism_count_inbound(ISM_RC_REDELIVERIES, redeliveries);
	in_flight += n;
	ism_stats_set_in_flight(in_flight);
	return n;
}

void
ism_nats_release(IsmMessage *msgs, int n)
{
	for (int i = 0; i < n; i++)
	{
		if (msgs[i].handle != NULL)
			in_flight--;
		natsMsg_Destroy((natsMsg *) msgs[i].handle);
		msgs[i].handle = NULL;
	}
	ism_stats_set_in_flight(in_flight);
}

/*
 * Messages fetched and not yet released: what the server counts against
 * the consumer's max_ack_pending (acks held for their commit included).
 */
int
ism_nats_in_flight(void)
{
	return in_flight;
}

/* Count on the route being consumed (pg_stat_ism_routes). */
void
ism_count_inbound(IsmRouteCounter counter, int64 n)
{
	if (inbound_selector[0])
		ism_count_route(inbound_selector, counter, n);
}

void
ism_inbound_error(const char *error)
{
	if (inbound_selector[0])
		ism_route_error(inbound_selector, error);
}

/*
 * Can m be nak'ed for another try?  Not after ism_state.max_deliveries,
 * nor when it is from no stream (nothing would deliver it again): then it
 * is given up, for the reason ism_nats_why_no_retry gives.
 */
bool
ism_nats_can_retry(const IsmMessage *m)
{
	return m->from_stream && m->deliveries < (uint64) ism_max_deliveries;
}

char *
ism_nats_why_no_retry(const IsmMessage *m, const char *error)
{
	if (!m->from_stream)
		return psprintf("failed and cannot be retried (not from a stream): %s", error);
	return psprintf("gave up after " UINT64_FORMAT " deliveries: %s", m->deliveries, error);
}

/* A nak's delay: 1 s, 2 s, 4 s … by delivery, at most a minute. */
int64
ism_nats_redelivery_delay_ms(const IsmMessage *m)
{
	int			shift = (int) Min(m->deliveries > 0 ? m->deliveries - 1 : 0, 6);

	return Min((int64) 1000 << shift, 60000);
}

/*
 * Ack, nak (redeliver after delay_ms), term, or ask for more time.  Each is
 * a publish on the open connection, which starts no thread: signals need
 * not be blocked here (two system calls per message, measured as a fifth
 * of the writer's system time).
 */
bool
ism_nats_settle(IsmMessage *m, IsmSettle how, int64 delay_ms, char *errbuf, size_t errlen)
{
	natsMsg    *msg = (natsMsg *) m->handle;
	natsStatus	s = NATS_OK;

	if (!m->from_stream)
		return true;			/* nobody to tell */
	switch (how)
	{
		case ISM_ACK:
			s = natsMsg_Ack(msg, NULL);
			break;
		case ISM_NAK:
			s = natsMsg_NakWithDelay(msg, delay_ms, NULL);
			break;
		case ISM_TERM:
			s = natsMsg_Term(msg, NULL);
			break;
		case ISM_IN_PROGRESS:
			s = natsMsg_InProgress(msg, NULL);
			break;
	}
	if (s == NATS_OK && how != ISM_IN_PROGRESS)
		ism_count_inbound(how == ISM_ACK ? ISM_RC_ACKED :
						  how == ISM_NAK ? ISM_RC_NAKED : ISM_RC_TERMINATED, 1);
	return s == NATS_OK || js_failure("could not acknowledge a message", s, 0, errbuf, errlen);
}

/* Make sure a stream exists for subject before publishing to it. */
bool
ism_nats_ensure_stream(const char *stream, const char *subject,
					   char *errbuf, size_t errlen)
{
	sigset_t	saved;
	bool		ok;

	ism_block_signals(&saved);
	ok = open_js(errbuf, errlen) &&
		ensure_stream_locked(stream, subject, errbuf, errlen);
	ism_restore_signals(&saved);
	return ok;
}

/*
 * Give up on the publishes still waiting for their PubAck: after a failure
 * they would otherwise hold their places (a restarted server never answers
 * them) and stall every later publish.  Signals blocked by the caller.
 */
static int
drop_pending_publishes(void)
{
	natsMsgList pending = {0};
	int			n = 0;

	if (js && js_PublishAsyncGetPendingList(&pending, js) == NATS_OK)
	{
		n = pending.Count;
		natsMsgList_Destroy(&pending);
	}
	return n;
}

/*
 * Publish without waiting: through JetStream (msg_id deduplicates a
 * republish within the stream's window) or core NATS.  At most
 * ISM_MAX_PUBLISH_PENDING wait for their PubAck; past that this call waits
 * up to ISM_PUBLISH_STALL_MS.  ism_nats_publish_wait says how they ended.
 */
bool
ism_nats_publish(const char *selector, const char *subject, const char *data, size_t len,
				 const char *msg_id, bool jetstream, char *errbuf, size_t errlen)
{
	natsStatus	s;
	sigset_t	saved;
	bool		ok = true;

	(void) nats_wait_event();
	ism_block_signals(&saved);
	if (jetstream)
	{
		jsPubOptions po;

		ok = open_js(errbuf, errlen);
		if (ok)
		{
			jsPubOptions_Init(&po);
			po.MsgId = msg_id;
			/* nats.c itself fails a PubAck that takes longer */
			po.MaxWait = ism_publish_timeout_ms;
			s = js_PublishAsync(js, subject, data, (int) len, &po);
			if (s != NATS_OK)
			{
				ok = js_failure("could not publish", s, 0, errbuf, errlen);
				drop_pending_publishes();
				publish_trouble = true;
			}
		}
	}
	else
	{
		s = natsConnection_Publish(ism_nats_connection(), subject, data, (int) len);
		pending_core_publishes = true;
		if (s != NATS_OK)
		{
			ok = js_failure("could not publish", s, 0, errbuf, errlen);
			publish_trouble = true;
		}
	}
	ism_restore_signals(&saved);
	if (ok)
	{
		ism_count_route(selector, ISM_RC_PUBLISHED, 1);
		ism_count_route(selector, ISM_RC_BYTES_OUT, (int64) len);
	}
	return ok;
}

/*
 * A round trip to the server: everything sent before (acks, say) has been
 * read and handled by it when this returns true.
 */
bool
ism_nats_flush(int timeout_ms, char *errbuf, size_t errlen)
{
	sigset_t	saved;
	natsStatus	s;

	ism_block_signals(&saved);
	pgstat_report_wait_start(nats_wait_event());
	s = natsConnection_FlushTimeout(ism_nats_connection(), timeout_ms);
	pgstat_report_wait_end();
	ism_restore_signals(&saved);
	return s == NATS_OK || js_failure("could not flush to the server", s, 0, errbuf, errlen);
}

/*
 * Wait until every publish since the last call is acknowledged (JetStream)
 * or flushed (core NATS).  false when any failed, was given up on, or
 * timeout_ms passed; the ones still pending are then given up.
 */
bool
ism_nats_publish_wait(int timeout_ms, char *errbuf, size_t errlen)
{
	natsStatus	s = NATS_OK;
	sigset_t	saved;
	int			failed;
	bool		ok = true;

	ism_block_signals(&saved);
	if (js)
	{
		jsPubOptions po;

		jsPubOptions_Init(&po);
		po.MaxWait = timeout_ms;
		pgstat_report_wait_start(nats_wait_event());
		s = js_PublishAsyncComplete(js, &po);
		pgstat_report_wait_end();
		if (s == NATS_TIMEOUT)
		{
			snprintf(errbuf, errlen, "%d publishes not acknowledged within %d ms",
					 drop_pending_publishes(), timeout_ms);
			ok = false;
		}
		else if (s != NATS_OK)
			ok = js_failure("could not complete publishing", s, 0, errbuf, errlen);
	}
	if (ok && pending_core_publishes)
	{
		s = natsConnection_FlushTimeout(ism_nats_connection(), timeout_ms);
		if (s != NATS_OK)
			ok = js_failure("could not flush publishes", s, 0, errbuf, errlen);
		pending_core_publishes = false;
	}
	ism_restore_signals(&saved);

	if (ok && publish_trouble)
	{
		snprintf(errbuf, errlen, "an earlier publish failed");
		ok = false;
	}
	publish_trouble = false;
	failed = atomic_exchange(&publish_errors, 0);
	if (ok && failed > 0)
	{
		char		what[128];

		snprintf(what, sizeof(what), "%d publishes failed", failed);
		return js_failure(what, (natsStatus) atomic_load(&last_publish_status),
						  (jsErrCode) atomic_load(&last_publish_errcode), errbuf, errlen);
	}
	return ok;
}

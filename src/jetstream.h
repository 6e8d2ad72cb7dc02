/*-------------------------------------------------------------------------
 *
 * jetstream.h
 *	  JetStream on the worker's connection: streams and consumers, the
 *	  subscription (pull, push or core NATS), fetch and acknowledgements,
 *	  and pipelined publishing (jetstream.c); main thread only.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_JETSTREAM_H
#define ISM_JETSTREAM_H

#include <nats/nats.h>

#include "counters.h"

/* How a route is consumed (worker.c decides, by the platform's rules). */
typedef enum IsmConsumeMode
{
	ISM_CONSUME_PULL,			/* a durable pull consumer, fetched from */
	ISM_CONSUME_PUSH,			/* a durable push consumer's deliver subject,
								 * in its deliver group */
	ISM_CONSUME_CORE			/* core NATS: the subject itself, no stream */
} IsmConsumeMode;

#define ISM_MAX_FILTER_SUBJECTS 3

/* What to consume. */
typedef struct IsmConsumerSpec
{
	IsmConsumeMode mode;
	const char *selector;		/* the route, for the counters */
	const char *stream;			/* JetStream only, as durable */
	const char *subject;
	const char *durable;
	/*
	 * push: the deliver group of a consumer made here (an existing one keeps
	 * its own); core: the queue group, NULL for none
	 */
	const char *queue;
	const char *filter_subject; /* NULL: the whole stream */
	/*
	 * pull: instead, these several filter subjects (nats-server 2.10 and
	 * later; the consumer is made through the JetStream API, nats.c 3.4
	 * having no FilterSubjects)
	 */
	const char *filter_subjects[ISM_MAX_FILTER_SUBJECTS];
	int			nfilter_subjects;
	/* a priority route: its high consumer (pull, same stream), fetched first */
	const struct IsmConsumerSpec *high;
	int			ack_wait_s;
	int			max_ack_pending;
	/* also opened, signals blocked: the claims (ism_claims_open_locked), or NULL */
	bool		(*open_locked) (char *errbuf, size_t errlen);
} IsmConsumerSpec;

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

extern bool ism_nats_subscribe(const IsmConsumerSpec *spec, char *bound,
							   size_t boundlen, char *errbuf, size_t errlen);
extern bool ism_nats_is_subscribed(void);
extern bool ism_nats_consumer_exists(char *errbuf, size_t errlen);
extern void ism_nats_stop_delivery(void);
extern void ism_nats_unsubscribe(void);

/*
 * A pull fetch waiting less than this asks for what there is and returns
 * at once (see fetch_pull_locked): its caller waits on its latch instead.
 */
#define ISM_SHORTEST_PULL_WAIT_MS	20

extern int	ism_nats_fetch(IsmMessage *msgs, int max, int timeout_ms,
						   char *errbuf, size_t errlen);
extern void ism_nats_release(IsmMessage *msgs, int n);
extern int	ism_nats_in_flight(void);
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

/* The context for claims.c, the closing for the connection's going */
extern jsCtx *ism_js_context(char *errbuf, size_t errlen);
extern void ism_js_on_close(void (*hook) (void));
extern void ism_js_close(void);

#endif							/* ISM_JETSTREAM_H */

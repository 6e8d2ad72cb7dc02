/*-------------------------------------------------------------------------
 *
 * claims.c
 *	  Which of several PostgreSQL instances writes a message, when they
 *	  share the writers' durable consumers (ism_state.claims_bucket).
 *
 * Each instance remembers what it wrote in its own ism_state.applied, so
 * on its own it writes a message once.  Shared consumers break that: an
 * instance that dies between its commit and its ack has the message
 * redelivered to another, which has no record of it.  So before writing,
 * an instance claims each message in a JetStream key-value bucket, the key
 * being the message's stream and sequence, the value the instance's name.
 * A claim is created only if the key has no value (the PubAck of a publish
 * expecting subject sequence 0), so exactly one instance owns a message:
 * the owner writes it (or finds it in its ism_state.applied) and acks it;
 * any other instance hands it back with a delayed nak, so that it comes
 * round to the owner.  A claim expires after ism_state.claims_ttl; only
 * then is the message of an instance that never came back written by
 * another.
 *
 * The claims of one fetch are pipelined: one publish each, their replies
 * gathered on a synchronous subscription by the worker's main thread.
 * The thread rules of jetstream.c hold: no PostgreSQL call while signals
 * are blocked.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "access/xlog.h"
#include "utils/memutils.h"

#include "claims.h"
#include "jetstream.h"
#include "json.h"
#include "nats_conn.h"
#include "settings.h"

/* "=", a stream name of 255 bytes in hex, ".", a sequence: with room */
#define CLAIM_KEY_LEN			544
/* JetStream's "wrong last sequence": the key has a value already */
#define JS_WRONG_LAST_SEQUENCE	10071

static kvStore *bucket = NULL;
static natsSubscription *replies = NULL;
static char reply_prefix[128];
static uint64 round_number = 0;
static char instance[NAMEDATALEN * 2 + 32];

/* ism_state.instance_name, or "<system identifier>-<database>" */
static const char *
instance_name(void)
{
	if (instance[0] == '\0')
	{
		if (ism_instance_name[0])
			strlcpy(instance, ism_instance_name, sizeof(instance));
		else
			snprintf(instance, sizeof(instance), UINT64_FORMAT "-%s",
					 GetSystemIdentifier(), ism_database);
	}
	return instance;
}

/*
 * A message's key: "<stream>.<sequence>"; a stream name with characters
 * other than letters, digits, '-' and '_' goes in hex after a '=' (which a
 * plain name cannot have, so the two never meet).
 */
static void
claim_key(const IsmMessage *m, char *key, size_t len)
{
	bool		plain = true;
	size_t		n = 0;

	for (const char *c = m->stream; *c; c++)
		plain = plain && (isalnum((unsigned char) *c) || *c == '-' || *c == '_');
	if (plain)
		n = strlcpy(key, m->stream, len);
	else
	{
		n = strlcpy(key, "=", len);
		for (const unsigned char *c = (const unsigned char *) m->stream; *c && n + 3 < len; c++)
			n += snprintf(key + n, len - n, "%02x", *c);
	}
	snprintf(key + Min(n, len - 1), len - Min(n, len - 1), "." UINT64_FORMAT, m->stream_seq);
}

/* The bucket (created when missing) and the reply subscription; signals blocked. */
bool
ism_claims_open_locked(char *errbuf, size_t errlen)
{
	jsCtx	   *js;
	natsInbox  *inbox = NULL;
	char		wildcard[160];
	natsStatus	s;

	if (bucket && replies)
		return true;
	js = ism_js_context(errbuf, errlen);
	if (js == NULL)
		return false;
	if (bucket == NULL)
	{
		s = js_KeyValue(&bucket, js, ism_claims_bucket);
		if (s == NATS_NOT_FOUND)
		{
			kvConfig	cfg;

			kvConfig_Init(&cfg);
			cfg.Bucket = ism_claims_bucket;
			cfg.Description = "ism_state: which instance writes a message";
			cfg.History = 1;
			cfg.TTL = (int64_t) ism_claims_ttl_s * 1000000000;
			cfg.StorageType = js_FileStorage;
			cfg.Replicas = ism_stream_replicas;
			s = js_CreateKeyValue(&bucket, js, &cfg);
		}
		if (s != NATS_OK)
		{
			char		detail[512];

			bucket = NULL;
			ism_nats_describe_failure(s, detail, sizeof(detail));
			snprintf(errbuf, errlen, "could not open the claims bucket \"%s\": %s",
					 ism_claims_bucket, detail);
			return false;
		}
	}
	if (replies == NULL)
	{
		s = natsInbox_Create(&inbox);
		if (s == NATS_OK)
		{
			strlcpy(reply_prefix, (const char *) inbox, sizeof(reply_prefix));
			snprintf(wildcard, sizeof(wildcard), "%s.>", reply_prefix);
			s = natsConnection_SubscribeSync(&replies, ism_nats_connection(), wildcard);
		}
		natsInbox_Destroy(inbox);
		if (s != NATS_OK)
		{
			char		detail[512];

			replies = NULL;
			ism_nats_describe_failure(s, detail, sizeof(detail));
			snprintf(errbuf, errlen, "could not subscribe to claim replies: %s", detail);
			return false;
		}
	}
	return true;
}

/* Publish a claim of msgs[i] whose PubAck comes to "<prefix>.<round>.<i>". */
static natsStatus
send_claim(const IsmMessage *m, int i)
{
	char		subject[CLAIM_KEY_LEN + 128];
	char		key[CLAIM_KEY_LEN];
	char		reply[200];
	const char *me = instance_name();
	natsMsg    *msg = NULL;
	natsStatus	s;

	claim_key(m, key, sizeof(key));
	snprintf(subject, sizeof(subject), "$KV.%s.%s", ism_claims_bucket, key);
	snprintf(reply, sizeof(reply), "%s." UINT64_FORMAT ".%d", reply_prefix, round_number, i);
	s = natsMsg_Create(&msg, subject, reply, me, (int) strlen(me));
	if (s == NATS_OK)
		s = natsMsgHeader_Set(msg, "Nats-Expected-Last-Subject-Sequence", "0");
	if (s == NATS_OK)
		s = natsConnection_PublishMsg(ism_nats_connection(), msg);
	natsMsg_Destroy(msg);
	return s;
}

/*
 * Wait (at most until deadline) for the PubAcks of this round; answers[i]
 * gets the reply to msgs[i].  Returns how many came.
 */
static int
gather_replies(natsMsg **answers, int n, int64_t deadline)
{
	char		prefix[200];
	size_t		prefix_len;
	int			got = 0;

	prefix_len = snprintf(prefix, sizeof(prefix), "%s." UINT64_FORMAT ".",
						  reply_prefix, round_number);
	while (got < n)
	{
		natsMsg    *reply = NULL;
		int64_t		left = deadline - nats_Now();
		const char *subject;
		char	   *end;
		long		i;

		if (left <= 0 ||
			natsSubscription_NextMsg(&reply, replies, left) != NATS_OK)
			break;
		subject = natsMsg_GetSubject(reply);
		/* a late reply of an earlier round is dropped */
		if (strncmp(subject, prefix, prefix_len) == 0)
		{
			i = strtol(subject + prefix_len, &end, 10);
			if (*end == '\0' && i >= 0 && i < n && answers[i] == NULL)
			{
				answers[i] = reply;
				got++;
				continue;
			}
		}
		natsMsg_Destroy(reply);
	}
	return got;
}

/* What a PubAck's JSON says (parsed in the current memory context). */
static IsmClaim
read_pub_ack(const char *data, int len, char *why, size_t whylen)
{
	char	   *parse_error;
	IsmJson    *ack = ism_json_parse(data, len, &parse_error);
	IsmJson    *error = ism_json_get(ack, "error");
	int			code;

	if (error)
	{
		const char *text = ism_json_cstring(ism_json_get(error, "description"));

		if (ism_json_whole_int(ism_json_get(error, "err_code"), &code) &&
			code == JS_WRONG_LAST_SEQUENCE)
			return ISM_CLAIM_THEIRS;	/* for now: the owner is read next */
		snprintf(why, whylen, "a claim was refused: %s", text ? text : "(no description)");
		return ISM_CLAIM_UNKNOWN;
	}
	if (ism_json_is(ism_json_get(ack, "seq"), ISM_JSON_NUMBER))
		return ISM_CLAIM_OURS;
	snprintf(why, whylen, "a claim had an answer that is not a PubAck");
	return ISM_CLAIM_UNKNOWN;
}

/* What a PubAck says: created, taken already, or (why) not known. */
static IsmClaim
read_reply(natsMsg *reply, char *why, size_t whylen)
{
	static MemoryContext reply_context = NULL;
	MemoryContext old;
	IsmClaim	claim;

	if (reply == NULL)
	{
		snprintf(why, whylen, "a claim had no answer within %d ms", ism_publish_timeout_ms);
		return ISM_CLAIM_UNKNOWN;
	}
	if (natsMsg_IsNoResponders(reply))
	{
		/* the server knows no stream on the subject: no leader (yet) */
		snprintf(why, whylen, "a claim reached no stream (no responders): the bucket's stream has no leader");
		return ISM_CLAIM_UNKNOWN;
	}
	if (natsMsg_GetDataLength(reply) == 0)
	{
		snprintf(why, whylen, "a claim had an empty answer");
		return ISM_CLAIM_UNKNOWN;
	}
	if (reply_context == NULL)
		reply_context = AllocSetContextCreate(TopMemoryContext, "ism_state claim replies",
											  ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(reply_context);
	claim = read_pub_ack(natsMsg_GetData(reply), natsMsg_GetDataLength(reply), why, whylen);
	MemoryContextSwitchTo(old);
	MemoryContextReset(reply_context);
	return claim;
}

/*
 * Whose claim on m is it: ours (from before a restart, say) or another's?
 * *answered: the bucket answered (the claim may be missing), not a timeout.
 */
static IsmClaim
read_owner(const IsmMessage *m, bool *answered, char *why, size_t whylen)
{
	char		key[CLAIM_KEY_LEN];
	char		detail[256];
	kvEntry    *entry = NULL;
	sigset_t	saved;
	natsStatus	s;
	IsmClaim	claim = ISM_CLAIM_UNKNOWN;

	claim_key(m, key, sizeof(key));
	ism_block_signals(&saved);
	s = kvStore_Get(&entry, bucket, key);
	*answered = s == NATS_OK || s == NATS_NOT_FOUND;
	if (s == NATS_OK)
		claim = strcmp(kvEntry_ValueString(entry), instance_name()) == 0 ?
			ISM_CLAIM_OURS : ISM_CLAIM_THEIRS;
	kvEntry_Destroy(entry);
	ism_restore_signals(&saved);
	if (claim == ISM_CLAIM_UNKNOWN)
	{
		ism_nats_describe_failure(s, detail, sizeof(detail));
		snprintf(why, whylen, "could not read the claim \"%s\": %s", key, detail);
	}
	return claim;
}

/*
 * Claim the n messages of a fetch: claims[i] says whether this instance
 * writes msgs[i], another instance does, or it could not be told (the
 * bucket unreachable, say: try again later).  false, with errbuf saying
 * why, when any could not be told.
 */
bool
ism_claims_take(const IsmMessage *msgs, int n, IsmClaim *claims,
				char *errbuf, size_t errlen)
{
	natsMsg   **answers;
	sigset_t	saved;
	bool		ok;
	bool		reads_answered = true;
	int			sent = 0;

	errbuf[0] = '\0';
	for (int i = 0; i < n; i++)
		claims[i] = ISM_CLAIM_UNKNOWN;
	(void) instance_name();		/* outside the blocked region */
	answers = palloc0(sizeof(natsMsg *) * n);

	ism_block_signals(&saved);
	ok = ism_claims_open_locked(errbuf, errlen);
	if (ok)
	{
		round_number++;
		while (sent < n && send_claim(&msgs[sent], sent) == NATS_OK)
			sent++;
		gather_replies(answers, sent, nats_Now() + ism_publish_timeout_ms);
	}
	ism_restore_signals(&saved);

	for (int i = 0; ok && i < n; i++)
	{
		char		why[512] = "";
		char		unread[512];
		bool		answered = true;

		claims[i] = i < sent ? read_reply(answers[i], why, sizeof(why)) : ISM_CLAIM_UNKNOWN;
		if (claims[i] == ISM_CLAIM_THEIRS)
			claims[i] = read_owner(&msgs[i], &answered, why, sizeof(why));

		/*
		 * A claim with no answer may have been made all the same: its
		 * stream's leader died after storing it, and the new leader can
		 * leave a claim on that key unanswered for long (half a minute on
		 * nats-server 2.15).  The key says whose it is; read while the
		 * bucket answers reads.
		 */
		else if (i < sent && claims[i] == ISM_CLAIM_UNKNOWN && reads_answered &&
				 (answers[i] == NULL || natsMsg_GetDataLength(answers[i]) == 0))
		{
			claims[i] = read_owner(&msgs[i], &answered, unread, sizeof(unread));
			reads_answered = answered;
		}
		if (i >= sent)
			snprintf(why, sizeof(why), "could not publish a claim");
		if (claims[i] == ISM_CLAIM_UNKNOWN && errbuf[0] == '\0')
			strlcpy(errbuf, why, errlen);
	}
	for (int i = 0; i < n; i++)
		natsMsg_Destroy(answers[i]);
	pfree(answers);
	return ok && errbuf[0] == '\0';
}

/* Before the connection goes. */
void
ism_claims_close(void)
{
	sigset_t	saved;

	ism_block_signals(&saved);
	if (replies)
		natsSubscription_Unsubscribe(replies);
	natsSubscription_Destroy(replies);
	ism_restore_signals(&saved);
	replies = NULL;
	kvStore_Destroy(bucket);
	bucket = NULL;
}

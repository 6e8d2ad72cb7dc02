/*-------------------------------------------------------------------------
 *
 * settings.c
 *	  ism_state.* configuration parameters.
 *
 * Everything a worker needs to find its database and its NATS servers.
 * Secrets (password, token) are visible to superusers only, and URLs are
 * shown and logged with any embedded password masked.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <limits.h>

#include "lib/stringinfo.h"
#include "utils/guc.h"

#include "settings.h"

char	   *ism_database = NULL;
char	   *ism_role = NULL;
int			ism_writer_workers = 1;
char	   *ism_nats_url = NULL;
char	   *ism_routing_file = NULL;
char	   *ism_catalog_schema = NULL;
char	   *ism_data_schema = NULL;
char	   *ism_nats_user = NULL;
char	   *ism_nats_password = NULL;
char	   *ism_nats_token = NULL;
char	   *ism_nats_creds_file = NULL;
char	   *ism_nats_tls_ca = NULL;
char	   *ism_nats_tls_cert = NULL;
char	   *ism_nats_tls_key = NULL;
int			ism_nats_connect_timeout_ms = 2000;
int			ism_nats_reconnect_wait_ms = 2000;
int			ism_stream_replicas = 1;
int			ism_max_message_bytes = 8 * 1024 * 1024;
int			ism_max_deliveries = 10;
int			ism_publish_timeout_ms = 10000;
int			ism_applied_retention_s = 2 * 86400;
int			ism_writer_lock_timeout_ms = 1000;
int			ism_writer_batch_max_records = 10000;
int			ism_writer_batch_max_kb = 16 * 1024;
int			ism_writer_max_pending_records = 100000;
int			ism_writer_max_pending_kb = 64 * 1024;
int			ism_max_tracked_tables = 1000;
char	   *ism_claims_bucket = NULL;
int			ism_claims_ttl_s = 3600;
char	   *ism_instance_name = NULL;
int			ism_ack_after = ISM_ACK_AFTER_COMMIT;

static const struct config_enum_entry ack_after_options[] = {
	{"commit", ISM_ACK_AFTER_COMMIT, false},
	{"replicated", ISM_ACK_AFTER_REPLICATED, false},
	{NULL, 0, false}
};

static const char *show_nats_url(void);

static void
define_string(const char *name, const char *desc, char **var,
			  const char *boot, GucContext context, int flags)
{
	DefineCustomStringVariable(name, desc, NULL, var, boot, context, flags,
							   NULL, NULL, NULL);
}

void
ism_define_settings(void)
{
	define_string("ism_state.database",
				  "Database the ism_state workers connect to.",
				  &ism_database, "postgres", PGC_POSTMASTER, 0);
	define_string("ism_state.role",
				  "Role the ism_state workers connect as (empty: the bootstrap superuser).",
				  &ism_role, "", PGC_POSTMASTER, 0);

	DefineCustomIntVariable("ism_state.writer_workers",
							"Number of state-tables writer workers.",
							NULL, &ism_writer_workers, 1, 0, ISM_MAX_WRITERS,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);

	DefineCustomStringVariable("ism_state.nats_url",
							   "NATS server URL, or a comma-separated list of them.",
							   "Schemes nats:// and tls://; put credentials in "
							   "ism_state.nats_user/nats_password rather than here.",
							   &ism_nats_url, "nats://127.0.0.1:4222",
							   PGC_SIGHUP, 0, NULL, NULL, show_nats_url);

	define_string("ism_state.routing_file",
				  "ISM routing YAML the route catalogue is seeded from (empty: none).",
				  &ism_routing_file, "", PGC_SIGHUP, 0);
	define_string("ism_state.catalog_schema",
				  "Schema holding the ISM catalog tables (processor, state, ...).",
				  &ism_catalog_schema, "public", PGC_SIGHUP, 0);
	define_string("ism_state.data_schema",
				  "Schema the state-tables writer creates its tables in.",
				  &ism_data_schema, "public", PGC_SIGHUP, 0);

	define_string("ism_state.nats_user", "NATS user name.",
				  &ism_nats_user, "", PGC_SIGHUP, 0);
	define_string("ism_state.nats_password", "NATS password.",
				  &ism_nats_password, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY);
	define_string("ism_state.nats_token", "NATS authentication token.",
				  &ism_nats_token, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY);
	define_string("ism_state.nats_creds_file",
				  "NATS credentials file (JWT and NKey seed).",
				  &ism_nats_creds_file, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY);
	define_string("ism_state.nats_tls_ca",
				  "CA certificate file that signs the NATS servers' certificates.",
				  &ism_nats_tls_ca, "", PGC_SIGHUP, 0);
	define_string("ism_state.nats_tls_cert",
				  "Client certificate file for NATS TLS.",
				  &ism_nats_tls_cert, "", PGC_SIGHUP, 0);
	define_string("ism_state.nats_tls_key",
				  "Client private key file for NATS TLS.",
				  &ism_nats_tls_key, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY);

	DefineCustomIntVariable("ism_state.nats_connect_timeout",
							"How long one attempt to connect to NATS may take.",
							NULL, &ism_nats_connect_timeout_ms, 2000, 100, 60000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("ism_state.nats_reconnect_wait",
							"Longest wait between two attempts to reach NATS.",
							"Failed first connections back off from 100 ms up to "
							"this; a lost connection is retried at this interval.",
							&ism_nats_reconnect_wait_ms, 2000, 100, 300000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);

	DefineCustomIntVariable("ism_state.stream_replicas",
							"Replicas of the JetStream streams ism_state creates.",
							"1 for a single nats-server; 3 on a JetStream cluster.",
							&ism_stream_replicas, 1, 1, 5,
							PGC_SIGHUP, 0, NULL, NULL, NULL);

	define_string("ism_state.claims_bucket",
				  "JetStream key-value bucket through which several PostgreSQL "
				  "instances sharing the writers' consumers claim messages.",
				  &ism_claims_bucket, "", PGC_POSTMASTER, 0);
	define_string("ism_state.instance_name",
				  "This instance's name in the claims bucket; empty: "
				  "the cluster's system identifier and ism_state.database.",
				  &ism_instance_name, "", PGC_POSTMASTER, 0);
	DefineCustomIntVariable("ism_state.claims_ttl",
							"How long a claim holds a message for the instance that took it.",
							"Applied when ism_state creates the claims bucket.  A message "
							"claimed by an instance that stays down longer is written "
							"by another.",
							&ism_claims_ttl_s, 3600, 60, 30 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);

	DefineCustomIntVariable("ism_state.max_message_bytes",
							"Largest inbound message handled; larger ones are dead-lettered.",
							NULL, &ism_max_message_bytes, 8 * 1024 * 1024,
							1024, 64 * 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("ism_state.max_deliveries",
							"Deliveries of a message that keeps failing for a passing reason before it is dead-lettered.",
							NULL, &ism_max_deliveries, 10, 1, 1000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ism_state.publish_timeout",
							"How long to wait for the PubAcks of a message's publishes.",
							NULL, &ism_publish_timeout_ms, 10000, 100, 600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);

	DefineCustomEnumVariable("ism_state.ack_after",
							 "How durable a commit is before the messages it holds are acknowledged.",
							 "commit: flushed to the local WAL, and confirmed by the synchronous "
							 "standbys when synchronous_standby_names is set; replicated: also "
							 "flushed by a standby (replayed there under synchronous_commit = remote_apply).",
							 &ism_ack_after, ISM_ACK_AFTER_COMMIT, ack_after_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("ism_state.applied_retention",
							"How long ism_state.applied remembers a written message.",
							"Longer than any route's ack_wait (at most a day): a message whose ack "
							"was lost comes back after ack_wait and must still be recognised.",
							&ism_applied_retention_s, 2 * 86400, 1, 365 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);

	DefineCustomIntVariable("ism_state.max_tracked_tables",
							"Tables each writer keeps counters for in pg_stat_ism_tables.",
							NULL, &ism_max_tracked_tables, 1000, 10, 100000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ism_state.writer_lock_timeout",
							"How long a flush waits for its table's lock before the batch is retried later.",
							"So that one locked table does not hold up the others; 0 leaves lock_timeout as it is.",
							&ism_writer_lock_timeout_ms, 1000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("ism_state.writer_batch_max_records",
							"Records one table's batch may hold before it is flushed, whatever batchSize says.",
							NULL, &ism_writer_batch_max_records, 10000, 1, 1000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ism_state.writer_batch_max_memory",
							"Memory one table's batch may hold before it is flushed, whatever batchSize says.",
							NULL, &ism_writer_batch_max_kb, 16 * 1024, 64, 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("ism_state.writer_max_pending_records",
							"Records all of a writer's batches may hold; past this it flushes them all before fetching more.",
							NULL, &ism_writer_max_pending_records, 100000, 1, 10000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ism_state.writer_max_pending_memory",
							"Memory all of a writer's batches may hold; past this it flushes them all before fetching more.",
							NULL, &ism_writer_max_pending_kb, 64 * 1024, 64, 4 * 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);

	MarkGUCPrefixReserved("ism_state");
}

/* SHOW and pg_settings display the URL with any password masked. */
static const char *
show_nats_url(void)
{
	static char buf[1024];

	ism_redact_url(ism_nats_url ? ism_nats_url : "", buf, sizeof(buf));
	return buf;
}

/*
 * Copy url to buf, replacing the password of each "user:password@" (or a
 * bare "token@") with "***".  Works on comma-separated lists.
 */
void
ism_redact_url(const char *url, char *buf, size_t buflen)
{
	StringInfoData out;
	const char *p = url;

	initStringInfo(&out);
	while (*p)
	{
		const char *end = strchr(p, ',');
		const char *stop = end ? end : p + strlen(p);
		const char *host = p;
		const char *scheme_end = strstr(p, "://");
		const char *at = NULL;

		if (scheme_end && scheme_end < stop)
			host = scheme_end + 3;
		for (const char *q = host; q < stop; q++)
			if (*q == '@')
				at = q;

		if (at)
		{
			const char *colon = memchr(host, ':', at - host);

			appendBinaryStringInfo(&out, p, host - p);
			if (colon)
				appendBinaryStringInfo(&out, host, colon - host + 1);
			appendStringInfoString(&out, "***");
			appendBinaryStringInfo(&out, at, stop - at);
		}
		else
			appendBinaryStringInfo(&out, p, stop - p);

		if (!end)
			break;
		appendStringInfoChar(&out, ',');
		p = end + 1;
	}
	strlcpy(buf, out.data, buflen);
	pfree(out.data);
}

static bool
validate_one_server(const char *s, size_t len, char *errbuf, size_t errlen)
{
	const char *stop = s + len;
	const char *host = s;
	const char *hostend;
	const char *sep;

	for (const char *q = s; q < stop; q++)
		if (isspace((unsigned char) *q))
		{
			snprintf(errbuf, errlen, "server \"%.*s\" contains white space",
					 (int) len, s);
			return false;
		}

	sep = strstr(s, "://");
	if (sep && sep < stop)
	{
		size_t		slen = sep - s;

		if (!((slen == 4 && pg_strncasecmp(s, "nats", 4) == 0) ||
			  (slen == 3 && pg_strncasecmp(s, "tls", 3) == 0)))
		{
			snprintf(errbuf, errlen,
					 "unsupported scheme \"%.*s\" (use nats:// or tls://)",
					 (int) slen, s);
			return false;
		}
		host = sep + 3;
	}

	/* skip user information */
	for (const char *q = host; q < stop; q++)
		if (*q == '@')
			host = q + 1;

	if (host < stop && *host == '[')
	{
		hostend = memchr(host, ']', stop - host);
		if (hostend == NULL)
		{
			snprintf(errbuf, errlen, "unterminated IPv6 address in \"%.*s\"",
					 (int) len, s);
			return false;
		}
		hostend++;
	}
	else
	{
		hostend = host;
		while (hostend < stop && *hostend != ':' && *hostend != '/')
			hostend++;
	}

	if (hostend == host)
	{
		snprintf(errbuf, errlen, "server \"%.*s\" has no host", (int) len, s);
		return false;
	}

	if (hostend < stop && *hostend == ':')
	{
		const char *port = hostend + 1;
		long		value = 0;

		if (port == stop)
		{
			snprintf(errbuf, errlen, "server \"%.*s\" has an empty port",
					 (int) len, s);
			return false;
		}
		for (const char *q = port; q < stop; q++)
		{
			if (!isdigit((unsigned char) *q) || value > 65535)
			{
				snprintf(errbuf, errlen, "invalid port in \"%.*s\"", (int) len, s);
				return false;
			}
			value = value * 10 + (*q - '0');
		}
		if (value < 1 || value > 65535)
		{
			snprintf(errbuf, errlen, "port out of range in \"%.*s\"", (int) len, s);
			return false;
		}
	}
	else if (hostend < stop)
	{
		snprintf(errbuf, errlen, "unexpected \"%.*s\" after the host",
				 (int) (stop - hostend), hostend);
		return false;
	}
	return true;
}

/*
 * Check a NATS server list: comma-separated [scheme://][user[:pass]@]host[:port]
 * entries.  The check runs on the redacted list, so errbuf (which may quote
 * an entry) never holds a password.
 */
bool
ism_validate_nats_url(const char *url, char *errbuf, size_t errlen)
{
	char		redacted[1024];
	const char *p = redacted;

	if (url == NULL || *url == '\0')
	{
		snprintf(errbuf, errlen, "no server given");
		return false;
	}
	if (strlen(url) >= sizeof(redacted) / 2)
	{
		snprintf(errbuf, errlen, "server list longer than %zu bytes",
				 sizeof(redacted) / 2 - 1);
		return false;
	}
	ism_redact_url(url, redacted, sizeof(redacted));

	for (int n = 1;; n++)
	{
		const char *end = strchr(p, ',');
		size_t		len = end ? (size_t) (end - p) : strlen(p);

		while (len > 0 && *p == ' ')
			p++, len--;
		while (len > 0 && p[len - 1] == ' ')
			len--;
		if (len == 0)
		{
			snprintf(errbuf, errlen, "empty entry in server list");
			return false;
		}
		if (!validate_one_server(p, len, errbuf, errlen))
			return false;
		if (!end)
			return true;
		if (n == ISM_MAX_NATS_SERVERS)
		{
			snprintf(errbuf, errlen, "more than %d servers", ISM_MAX_NATS_SERVERS);
			return false;
		}
		p = end + 1;
	}
}

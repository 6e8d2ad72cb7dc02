/*-------------------------------------------------------------------------
 *
 * nats_conn.c
 *	  The worker's NATS connection, through nats.c.
 *
 * Rules that keep nats.c and PostgreSQL apart:
 *
 * - Every call here runs on the worker's main thread.  No callbacks are
 *   registered: the worker polls the connection's state instead, so no
 *   PostgreSQL code can ever run on a nats.c thread.
 * - nats.c starts threads in nats_Open and in natsConnection_Connect (and
 *   those threads start the reconnect thread).  Threads inherit the signal
 *   mask of their creator, so all signals are blocked around those calls:
 *   SIGTERM, SIGHUP, SIGUSR1 and SIGURG (latches) must reach the main thread.
 * - Nothing here reports errors itself: they come back as text in the
 *   caller's buffer, and the caller decides how loud to be.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>

#include "nats_conn.h"
#include "settings.h"

static natsConnection *conn = NULL;
static natsStatistics *conn_stats = NULL;
static bool library_open = false;
static uint64_t seen_reconnects = 0;
static void (*before_disconnect) (void) = NULL;

/*
 * Run the calls that may create threads with every signal blocked but
 * SIGQUIT: the threads they start inherit the mask, so PostgreSQL's
 * signals (SIGTERM, SIGHUP, SIGINT, SIGUSR1, SIGURG) reach only the main
 * thread, while SIGQUIT, whose handler just exits the process, is taken
 * at once by whichever thread has it (an immediate shutdown never waits
 * for a NATS call to end).  Nothing between this and ism_restore_signals
 * may raise a PostgreSQL error; ism_run_in_transaction restores the
 * worker's mask after any error all the same.
 */
void
ism_block_signals(sigset_t *saved)
{
	sigset_t	all;

	sigfillset(&all);
	sigdelset(&all, SIGQUIT);
	pthread_sigmask(SIG_SETMASK, &all, saved);
}

void
ism_restore_signals(const sigset_t *saved)
{
	pthread_sigmask(SIG_SETMASK, saved, NULL);
}

/*
 * "<status text>: <library detail>", without the detail's "(file.c:123): "
 * prefix and without saying the same thing twice.
 */
void
ism_nats_describe_failure(natsStatus s, char *errbuf, size_t errlen)
{
	natsStatus	detail_status;
	const char *detail = nats_GetLastError(&detail_status);
	const char *text = natsStatus_GetText(s);

	if (detail && detail[0] == '(')
	{
		const char *after = strstr(detail, "): ");

		if (after)
			detail = after + 3;
	}
	if (detail && detail[0] && strcmp(detail, text) != 0)
		snprintf(errbuf, errlen, "%s: %s", text, detail);
	else
		snprintf(errbuf, errlen, "%s", text);
}

/*
 * A TLS server that wants a client certificate and gets none closes the
 * connection after the handshake, which nats.c reports as a protocol error
 * with nothing read (3.4), or as a closed connection (3.10 and later): say
 * what is most likely missing.
 */
static void
explain_closed_tls(natsStatus s, char *errbuf, size_t errlen)
{
	size_t		len = strlen(errbuf);

	if (!((s == NATS_PROTOCOL_ERROR && strstr(errbuf, "got ''") != NULL) ||
		  s == NATS_CONNECTION_CLOSED) ||
		ism_nats_tls_cert[0] != '\0' ||
		(strncmp(ism_nats_url, "tls://", 6) != 0 && ism_nats_tls_ca[0] == '\0'))
		return;
	snprintf(errbuf + len, errlen - len,
			 " (the server closed the TLS connection: does it require a client certificate?"
			 " Set ism_state.nats_tls_cert and ism_state.nats_tls_key)");
}

/*
 * A secret setting holds the secret itself or "file:<path>", naming a file
 * whose first line is the secret.  The file form keeps the secret out of
 * the server log, where PostgreSQL writes every setting changed by a
 * reload; it is read at each connection, so a rotated secret is picked up.
 */
static bool
resolve_secret(const char *name, const char *value, char *buf, size_t buflen,
			   char *errbuf, size_t errlen)
{
	FILE	   *f;

	if (strncmp(value, "file:", 5) != 0)
	{
		strlcpy(buf, value, buflen);
		return true;
	}
	f = fopen(value + 5, "r");
	if (f == NULL)
	{
		snprintf(errbuf, errlen, "could not open %s file \"%s\": %s",
				 name, value + 5, strerror(errno));
		return false;
	}
	if (fgets(buf, buflen, f) == NULL)
		buf[0] = '\0';
	fclose(f);
	buf[strcspn(buf, "\r\n")] = '\0';
	return true;
}

typedef struct NatsSecrets
{
	char		password[1024];
	char		token[1024];
} NatsSecrets;

/* The password is read only for a user: it means nothing without one. */
static bool
resolve_secrets(NatsSecrets *secrets, char *errbuf, size_t errlen)
{
	secrets->password[0] = '\0';
	return (!ism_nats_user[0] ||
			resolve_secret("ism_state.nats_password", ism_nats_password,
						   secrets->password, sizeof(secrets->password),
						   errbuf, errlen)) &&
		resolve_secret("ism_state.nats_token", ism_nats_token,
					   secrets->token, sizeof(secrets->token),
					   errbuf, errlen);
}

static natsStatus
set_credentials(natsOptions *opts, const NatsSecrets *secrets)
{
	natsStatus	s = NATS_OK;

	if (s == NATS_OK && ism_nats_user[0])
		s = natsOptions_SetUserInfo(opts, ism_nats_user,
									secrets->password[0] ? secrets->password : NULL);
	if (s == NATS_OK && secrets->token[0])
		s = natsOptions_SetToken(opts, secrets->token);
	if (s == NATS_OK && ism_nats_creds_file[0])
		s = natsOptions_SetUserCredentialsFromFiles(opts, ism_nats_creds_file, NULL);
	return s;
}

static natsStatus
set_tls(natsOptions *opts)
{
	natsStatus	s = NATS_OK;

	if (!ism_nats_tls_ca[0] && !ism_nats_tls_cert[0])
		return NATS_OK;

	s = natsOptions_SetSecure(opts, true);
	if (s == NATS_OK && ism_nats_tls_ca[0])
		s = natsOptions_LoadCATrustedCertificates(opts, ism_nats_tls_ca);
	if (s == NATS_OK && ism_nats_tls_cert[0])
		s = natsOptions_LoadCertificatesChain(opts, ism_nats_tls_cert,
											  ism_nats_tls_key);
	return s;
}

/*
 * The servers of ism_state.nats_url, a comma-separated list (validated by
 * settings.c).  natsOptions_SetURL takes one URL only: a list goes to
 * natsOptions_SetServers, which nats.c also uses to fail over between them.
 */
static natsStatus
set_servers(natsOptions *opts)
{
	char		list[1024];
	const char *servers[ISM_MAX_NATS_SERVERS];
	int			n = 0;
	char	   *save = NULL;

	strlcpy(list, ism_nats_url, sizeof(list));
	for (char *url = strtok_r(list, ",", &save); url && n < ISM_MAX_NATS_SERVERS;
		 url = strtok_r(NULL, ",", &save))
	{
		char	   *end = url + strlen(url);

		while (*url == ' ')
			url++;
		while (end > url && end[-1] == ' ')
			*--end = '\0';
		servers[n++] = url;
	}
	return natsOptions_SetServers(opts, servers, n);
}

static natsStatus
build_options(natsOptions **opts, const char *client_name,
			  const NatsSecrets *secrets)
{
	natsStatus	s = natsOptions_Create(opts);

	if (s == NATS_OK)
		s = set_servers(*opts);
	if (s == NATS_OK)
		s = natsOptions_SetName(*opts, client_name);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(*opts, ism_nats_connect_timeout_ms);
	/* once connected, nats.c keeps trying for ever on its own */
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(*opts, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(*opts, ism_nats_reconnect_wait_ms);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectJitter(*opts, 100, 1000);
	if (s == NATS_OK)
		s = set_credentials(*opts, secrets);
	if (s == NATS_OK)
		s = set_tls(*opts);
	return s;
}

/*
 * One attempt to connect with the current settings.  Returns false with
 * errbuf filled when the servers cannot be reached or refuse us.
 */
bool
ism_nats_connect(const char *client_name, char *errbuf, size_t errlen)
{
	natsOptions *opts = NULL;
	natsStatus	s = NATS_OK;
	sigset_t	saved;
	NatsSecrets secrets;

	if (conn != NULL)
		return true;
	if (!resolve_secrets(&secrets, errbuf, errlen))
		return false;

	ism_block_signals(&saved);
	if (!library_open)
	{
		s = nats_Open(-1);
		library_open = (s == NATS_OK);
	}
	if (s == NATS_OK && conn_stats == NULL)
		s = natsStatistics_Create(&conn_stats);
	if (s == NATS_OK)
		s = build_options(&opts, client_name, &secrets);
	if (s == NATS_OK)
		s = natsConnection_Connect(&conn, opts);
	ism_restore_signals(&saved);

	if (s != NATS_OK)
	{
		ism_nats_describe_failure(s, errbuf, errlen);
		explain_closed_tls(s, errbuf, errlen);
		natsConnection_Destroy(conn);
		conn = NULL;
	}
	natsOptions_Destroy(opts);
	explicit_bzero(&secrets, sizeof(secrets));
	seen_reconnects = 0;
	return s == NATS_OK;
}

bool
ism_nats_is_open(void)
{
	return conn != NULL;
}

natsConnection *
ism_nats_connection(void)
{
	return conn;
}

/*
 * Is the server this connection is on at least major.minor.update?  nats.c keeps
 * the version every server announces in its INFO, on each connect and
 * reconnect, but has no public function for it (3.4 to 3.14); its own
 * natsConn_srvVersionAtLeast, exported by libnats in all of them, is found
 * at run time so that a libnats without it still loads.  *known is false
 * then (and with no connection), and the answer false.
 */
bool
ism_nats_server_at_least(int major, int minor, int update, bool *known)
{
	typedef bool (*AtLeastFn) (natsConnection *nc, int major, int minor, int update);
	static AtLeastFn at_least = NULL;
	static bool looked_up = false;

	if (!looked_up)
	{
		at_least = (AtLeastFn) dlsym(RTLD_DEFAULT, "natsConn_srvVersionAtLeast");
		looked_up = true;
	}
	/* while reconnecting: the last server's, until the next one's INFO */
	*known = at_least != NULL && conn != NULL;
	return *known && at_least(conn, major, minor, update);
}

/*
 * The connection's state now.  Fills server with the connected URL
 * (password masked), *reconnects with the reconnections since the last
 * poll, and errbuf with the library's last error on this connection.
 */
IsmNatsState
ism_nats_poll(char *server, size_t serverlen, int64 *reconnects,
			  char *errbuf, size_t errlen)
{
	uint64_t	total = 0;
	const char *last_error = NULL;
	char		url[512];

	*reconnects = 0;
	errbuf[0] = '\0';
	if (conn == NULL)
		return ISM_NATS_DISCONNECTED;

	if (natsConnection_GetConnectedUrl(conn, url, sizeof(url)) == NATS_OK && url[0])
		ism_redact_url(url, server, serverlen);

	if (natsConnection_GetStats(conn, conn_stats) == NATS_OK &&
		natsStatistics_GetCounts(conn_stats, NULL, NULL, NULL, NULL, &total) == NATS_OK)
	{
		*reconnects = (int64) (total - seen_reconnects);
		seen_reconnects = total;
	}

	if (natsConnection_GetLastError(conn, &last_error) != NATS_OK && last_error)
		strlcpy(errbuf, last_error, errlen);

	switch (natsConnection_Status(conn))
	{
		case NATS_CONN_STATUS_CONNECTED:
		case NATS_CONN_STATUS_DRAINING_SUBS:
		case NATS_CONN_STATUS_DRAINING_PUBS:
			return ISM_NATS_CONNECTED;
		case NATS_CONN_STATUS_CONNECTING:
			return ISM_NATS_CONNECTING;
		case NATS_CONN_STATUS_RECONNECTING:
			return ISM_NATS_RECONNECTING;
		case NATS_CONN_STATUS_CLOSED:
			return ISM_NATS_CLOSED;
		case NATS_CONN_STATUS_DISCONNECTED:
			return ISM_NATS_DISCONNECTED;
	}
	return ISM_NATS_DISCONNECTED;
}

/*
 * What goes before the connection does: the JetStream state made on it
 * (ism_js_close).  The worker passes it in, so that this file calls
 * nothing of the modules built on it.
 */
void
ism_nats_on_disconnect(void (*hook) (void))
{
	before_disconnect = hook;
}

void
ism_nats_disconnect(void)
{
	if (conn == NULL)
		return;
	if (before_disconnect)
		before_disconnect();
	natsConnection_Destroy(conn);
	conn = NULL;
}

/* At worker exit: close the connection and let nats.c's threads finish. */
void
ism_nats_shutdown(void)
{
	ism_nats_disconnect();
	if (conn_stats)
		natsStatistics_Destroy(conn_stats);
	conn_stats = NULL;
	if (library_open)
		nats_CloseAndWait(1000);
	library_open = false;
}

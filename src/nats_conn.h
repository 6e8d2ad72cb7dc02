/*-------------------------------------------------------------------------
 *
 * nats_conn.h
 *	  The worker's NATS connection, through nats.c (nats_conn.c); main
 *	  thread only.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_NATS_CONN_H
#define ISM_NATS_CONN_H

#include <signal.h>

#include <nats/nats.h>

/* The NATS connection's state, as shown in pg_stat_ism_worker.nats_state. */
typedef enum IsmNatsState
{
	ISM_NATS_DISCONNECTED,
	ISM_NATS_CONNECTING,
	ISM_NATS_CONNECTED,
	ISM_NATS_RECONNECTING,
	ISM_NATS_CLOSED
} IsmNatsState;

extern bool ism_nats_connect(const char *client_name, char *errbuf, size_t errlen);
extern bool ism_nats_is_open(void);
extern IsmNatsState ism_nats_poll(char *server, size_t serverlen,
								  int64 *reconnects,
								  char *errbuf, size_t errlen);
extern bool ism_nats_server_at_least(int major, int minor, int update, bool *known);
extern void ism_nats_on_disconnect(void (*hook) (void));
extern void ism_nats_disconnect(void);
extern void ism_nats_shutdown(void);

/* For the JetStream calls made on the connection (jetstream.c, claims.c) */
extern natsConnection *ism_nats_connection(void);
extern void ism_block_signals(sigset_t *saved);
extern void ism_restore_signals(const sigset_t *saved);
extern void ism_nats_describe_failure(natsStatus s, char *errbuf, size_t errlen);

#endif							/* ISM_NATS_CONN_H */

/*-------------------------------------------------------------------------
 *
 * nats_internal.h
 *	  What nats_conn.c and jetstream.c share; nats.c types stay here.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_NATS_INTERNAL_H
#define ISM_NATS_INTERNAL_H

#include "ism_state.h"

#include <signal.h>

#include <nats/nats.h>

/* nats_conn.c */
extern natsConnection *ism_nats_connection(void);
extern void ism_block_signals(sigset_t *saved);
extern void ism_restore_signals(const sigset_t *saved);
extern void ism_nats_describe_failure(natsStatus s, char *errbuf, size_t errlen);

/* jetstream.c */
extern jsCtx *ism_js_context(char *errbuf, size_t errlen);
extern void ism_js_on_close(void (*hook) (void));
extern void ism_js_close(void);

/* claims.c */
extern bool ism_claims_open_locked(char *errbuf, size_t errlen);
extern void ism_claims_close(void);

#endif							/* ISM_NATS_INTERNAL_H */

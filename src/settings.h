/*-------------------------------------------------------------------------
 *
 * settings.h
 *	  The ism_state.* settings, and the NATS server list's checks
 *	  (settings.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_SETTINGS_H
#define ISM_SETTINGS_H

/* Upper bound of ism_state.writer_workers; the router is one more worker. */
#define ISM_MAX_WRITERS		16

/* Most servers ism_state.nats_url may list. */
#define ISM_MAX_NATS_SERVERS	32

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

/* ism_state.ack_after: how durable a commit is before its messages are acked */
typedef enum IsmAckAfter
{
	ISM_ACK_AFTER_COMMIT,		/* flushed locally (and by the synchronous
								 * standbys, when synchronous replication
								 * is on) */
	ISM_ACK_AFTER_REPLICATED	/* also flushed by a standby */
} IsmAckAfter;

extern int	ism_ack_after;

extern void ism_define_settings(void);
extern bool ism_validate_nats_url(const char *url, char *errbuf, size_t errlen);
extern void ism_redact_url(const char *url, char *buf, size_t buflen);

#endif							/* ISM_SETTINGS_H */

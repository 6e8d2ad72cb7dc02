/*-------------------------------------------------------------------------
 *
 * applied.c
 *	  The writer's exactly-once record.  Every message whose outcome the
 *	  writer commits, written or dead-lettered alike, is claimed here in
 *	  that transaction: its (stream, stream_seq) in ism_state.applied, its
 *	  Nats-Msg-Id, if it has one, in ism_state.applied_msg_id.  A claim
 *	  that finds the message there already (a redelivery whose ack was
 *	  lost, a delivery to the other writer while the first held it, a copy
 *	  stored again under the same Msg-Id) fails, and the message is acked
 *	  without being written or dead-lettered again.  The primary keys
 *	  settle two writers claiming at once: the second waits for the first
 *	  to commit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "applied.h"
#include "ident.h"
#include "jetstream.h"
#include "log_limit.h"

/* a Msg-Id longer than this is recorded by its SHA-256 */
#define MSG_ID_MAX_LEN	200

/* Per message: named by a (stream, stream_seq) row SPI returned. */
static bool *
returned_messages(const IsmMessage *const *msgs, int n)
{
	bool	   *returned = palloc0(sizeof(bool) * n);

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		char	   *stream = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);
		int64		seq = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull));

		for (int i = 0; i < n; i++)
			if (msgs[i]->from_stream && (int64) msgs[i]->stream_seq == seq &&
				strcmp(msgs[i]->stream, stream) == 0)
			{
				returned[i] = true;
				break;
			}
	}
	return returned;
}

/*
 * The stream sequences claimed: those recorded before come back false.  A
 * message from no stream has no sequence to be known by: it is claimed as
 * it comes (see IsmMessage.from_stream).
 */
static void
claim_sequences(const IsmMessage *const *msgs, int n, bool *claimed)
{
	Datum	   *streams = palloc(sizeof(Datum) * n);
	Datum	   *seqs = palloc(sizeof(Datum) * n);
	int			nseqs = 0;
	Oid			types[2] = {TEXTARRAYOID, INT8ARRAYOID};
	Datum		args[2];
	MemoryContext caller = CurrentMemoryContext;
	bool	   *returned;

	for (int i = 0; i < n; i++)
	{
		claimed[i] = !msgs[i]->from_stream;
		if (!msgs[i]->from_stream)
			continue;
		streams[nseqs] = CStringGetTextDatum(msgs[i]->stream);
		seqs[nseqs++] = Int64GetDatum((int64) msgs[i]->stream_seq);
	}
	if (nseqs == 0)
		return;
	args[0] = PointerGetDatum(construct_array(streams, nseqs, TEXTOID, -1, false, TYPALIGN_INT));
	args[1] = PointerGetDatum(construct_array(seqs, nseqs, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	if (SPI_execute_with_args("INSERT INTO ism_state.applied (stream, stream_seq)"
							  " SELECT * FROM unnest($1::text[], $2::bigint[])"
							  " ON CONFLICT DO NOTHING RETURNING stream, stream_seq",
							  2, types, args, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not record applied messages");
	MemoryContextSwitchTo(caller);
	returned = returned_messages(msgs, n);
	for (int i = 0; i < n; i++)
		claimed[i] = claimed[i] || returned[i];
}

/*
 * A Msg-Id as recorded: as it is, or its SHA-256 when it is long or not
 * text in the database's encoding (a header may be any bytes), so that it
 * always fits the primary key's index.
 */
static char *
msg_id_key(const char *id)
{
	size_t		len = strlen(id);
	char		hex[2 * PG_SHA256_DIGEST_LENGTH + 1];

	if (len <= MSG_ID_MAX_LEN && pg_verify_mbstr(GetDatabaseEncoding(), id, len, true))
		return pstrdup(id);
	ism_sha256_hex(id, len, hex, sizeof(hex) - 1);
	return psprintf("sha256:%s", hex);
}

/* When the stream stored m, as a timestamptz. */
static TimestampTz
stored_at(const IsmMessage *m)
{
	return (TimestampTz) (m->timestamp_ns / 1000) -
		((TimestampTz) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
}

/*
 * Of the messages claimed so far, those with a Nats-Msg-Id: a copy of a
 * message already claimed (the same Msg-Id on the same stream, stored
 * within the stream's duplicate window) is not.  JetStream drops such a
 * copy itself, except after a restart that forgot the Msg-Ids of the
 * messages a work-queue stream no longer holds (see
 * ism_state.applied_msg_id).  The first copy, by stream time, wins; a
 * Msg-Id used again after the window is a new message.
 */
static void
claim_msg_ids(const IsmMessage *const *msgs, int n, bool *claimed)
{
	Datum	   *cols[4];
	int			nids = 0;
	int64		window_us = 0;
	Oid			types[5] = {TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, INT8OID};
	Datum		args[5];
	MemoryContext caller = CurrentMemoryContext;
	bool	   *returned;

	for (int c = 0; c < 4; c++)
		cols[c] = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		if (!claimed[i] || msgs[i]->msg_id == NULL)
			continue;
		cols[0][nids] = CStringGetTextDatum(msgs[i]->stream);
		cols[1][nids] = CStringGetTextDatum(msg_id_key(msgs[i]->msg_id));
		cols[2][nids] = Int64GetDatum((int64) msgs[i]->stream_seq);
		cols[3][nids++] = TimestampTzGetDatum(stored_at(msgs[i]));
		/* one subscription's messages: one stream, one window */
		window_us = Max(window_us, msgs[i]->duplicate_window_ns / 1000);
	}
	if (nids == 0)
		return;
	args[0] = PointerGetDatum(construct_array(cols[0], nids, TEXTOID, -1, false, TYPALIGN_INT));
	args[1] = PointerGetDatum(construct_array(cols[1], nids, TEXTOID, -1, false, TYPALIGN_INT));
	args[2] = PointerGetDatum(construct_array(cols[2], nids, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[3] = PointerGetDatum(construct_array(cols[3], nids, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[4] = Int64GetDatum(window_us);
	if (SPI_execute_with_args("INSERT INTO ism_state.applied_msg_id AS a (stream, msg_id, stream_seq, stored_at)"
							  " SELECT DISTINCT ON (s, m) s, m, q, t"
							  "   FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[]) AS u(s, m, q, t)"
							  "  ORDER BY s, m, t, q"
							  " ON CONFLICT (stream, msg_id) DO UPDATE"
							  "   SET stream_seq = excluded.stream_seq, stored_at = excluded.stored_at"
							  "   WHERE a.stored_at <= excluded.stored_at - $5 * interval '1 microsecond'"
							  " RETURNING stream, stream_seq",
							  5, types, args, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not record applied Msg-Ids");
	MemoryContextSwitchTo(caller);
	returned = returned_messages(msgs, n);
	for (int i = 0; i < n; i++)
		if (msgs[i]->msg_id != NULL)
			claimed[i] = claimed[i] && returned[i];
	if (SPI_processed < (uint64) nids)
		ism_log_limited(LOG, "writer copy skipped",
						"ism_state writer: %d of %d messages were copies of messages already handled"
						" (the same Nats-Msg-Id within the duplicate window); not handled again",
						(int) (nids - SPI_processed), nids);
}

/*
 * Claim msgs for the current transaction (SPI connected): claimed[i] is
 * true for each message whose outcome this transaction decides.
 */
void
ism_applied_claim(const IsmMessage *const *msgs, int n, bool *claimed)
{
	claim_sequences(msgs, n, claimed);
	claim_msg_ids(msgs, n, claimed);
}

/*
 * Forget what is older than retention_s (SPI connected): it only needs to
 * outlive a lost ack's redelivery and a stream's duplicate window.
 */
void
ism_applied_prune(int retention_s)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(retention_s)};

	if (SPI_execute_with_args("DELETE FROM ism_state.applied"
							  " WHERE applied_at < now() - make_interval(secs => $1)",
							  1, types, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not prune ism_state.applied");
	if (SPI_execute_with_args("DELETE FROM ism_state.applied_msg_id"
							  " WHERE stored_at < now() - make_interval(secs => $1)",
							  1, types, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not prune ism_state.applied_msg_id");
}

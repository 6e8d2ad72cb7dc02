/*-------------------------------------------------------------------------
 *
 * dead_letter.c
 *	  ism_state.dead_letter: inbound messages a worker gave up on, whole,
 *	  with the reason.  A message is terminated only once its row is
 *	  committed, so nothing is ever silently dropped.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

#include "dead_letter.h"
#include "applied.h"
#include "jetstream.h"
#include "xact.h"

typedef struct DeadLetter
{
	const IsmMessage *msg;
	const char *worker;
	const char *route_id;
	const char *error;
	bool		claim_applied;	/* first record m in ism_state.applied */
	bool		applied_before; /* out: it was there: nothing recorded */
} DeadLetter;

/*
 * The writer claims every message whose outcome it commits (applied.c),
 * written or dead-lettered alike: a message held in one writer's batch can
 * come again to the other (its ack wait ran out), or be stored again under
 * its Msg-Id; whichever commits first decides, and the other finds its
 * claim.  A message is never both written and a dead letter, nor a dead
 * letter twice.
 */
static bool
claimed(const IsmMessage *m)
{
	bool		ok;

	ism_applied_claim(&m, 1, &ok);
	return ok;
}

static void
insert_dead_letter(void *arg)
{
	DeadLetter *dl = arg;
	const IsmMessage *m = dl->msg;
	Oid			types[8] = {TEXTOID, TEXTOID, TEXTOID, INT8OID, INT8OID, TEXTOID, BYTEAOID, TEXTOID};
	Datum		args[8];
	char		nulls[8];
	bytea	   *payload = palloc(VARHDRSZ + m->len);

	/* no string initializer: GCC 15 refuses one that drops its NUL */
	memset(nulls, ' ', sizeof(nulls));

	SET_VARSIZE(payload, VARHDRSZ + m->len);
	memcpy(VARDATA(payload), m->data, m->len);
	args[0] = CStringGetTextDatum(dl->worker);
	args[1] = CStringGetTextDatum(m->subject ? m->subject : "");
	args[2] = CStringGetTextDatum(m->stream);
	args[3] = Int64GetDatum((int64) m->stream_seq);
	args[4] = Int64GetDatum((int64) m->deliveries);
	args[5] = dl->route_id ? CStringGetTextDatum(dl->route_id) : (Datum) 0;
	nulls[5] = dl->route_id ? ' ' : 'n';
	args[6] = PointerGetDatum(payload);
	args[7] = CStringGetTextDatum(dl->error);

	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (dl->claim_applied && !claimed(m))
	{
		dl->applied_before = true;
		PopActiveSnapshot();
		SPI_finish();
		return;
	}
	/*
	 * Once per message: a dead letter whose term was lost (the connection
	 * dropped after the commit) comes back, and is recorded already.
	 */
	if (SPI_execute_with_args("INSERT INTO ism_state.dead_letter"
							  " (worker, subject, stream, stream_seq, deliveries,"
							  "  route_id, payload, error)"
							  " SELECT $1, $2, $3, $4, $5, $6, $7, $8"
							  " WHERE $3 = '' OR NOT EXISTS (SELECT FROM ism_state.dead_letter d"
							  "  WHERE d.stream = $3 AND d.stream_seq = $4 AND d.worker = $1"
							  "  AND d.replay_requested_at IS NULL)",
							  8, types, args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert into ism_state.dead_letter");
	PopActiveSnapshot();
	SPI_finish();
}

static bool
record(DeadLetter *dl)
{
	char		err[512];

	if (ism_run_in_transaction(insert_dead_letter, dl, err, sizeof(err)))
		return true;
	ereport(WARNING,
			(errmsg("ism_state %s: could not record dead letter for message %s:" UINT64_FORMAT ": %s",
					dl->worker, dl->msg->stream, dl->msg->stream_seq, err)));
	return false;
}

/* Record m in its own transaction; false (and a WARNING) when that failed. */
bool
ism_dead_letter(const IsmMessage *m, const char *worker, const char *route_id,
				const char *error)
{
	DeadLetter	dl = {m, worker, route_id, error, false, false};

	return record(&dl);
}

/*
 * The same for the writer, whose messages have their outcome recorded once
 * in ism_state.applied (see claim_applied): *applied_before is set, and
 * nothing recorded, when another delivery's outcome was committed first.
 */
bool
ism_dead_letter_once(const IsmMessage *m, const char *worker, const char *route_id,
					 const char *error, bool *applied_before)
{
	DeadLetter	dl = {m, worker, route_id, error, true, false};
	bool		ok = record(&dl);

	*applied_before = dl.applied_before;
	return ok;
}

/*-------------------------------------------------------------------------
 *
 * ack_gate.c
 *	  Acks held until the commit they follow is durable.
 *
 * A message is acked (or, once its dead letter is recorded, terminated)
 * only when the commit holding its effect is as durable as
 * ism_state.ack_after asks (durability.c): an ack that goes out first
 * takes the message from its stream while a failover can still take the
 * effect from the database.  Such an ack is held here, with its message,
 * and the worker's loop lets it go when the WAL is far enough; meanwhile
 * the loop goes on (a short wait while anything is held; held acks count
 * against the consumer's max_ack_pending, so the worker fetches no more
 * than JetStream would deliver), JetStream hears
 * that the message is in progress every half ack_wait, and a worker whose
 * acks wait long shows waiting_for_standby in pg_stat_ism_worker.  A worker
 * whose postmaster has died acks nothing more: it exits, and its messages
 * come back to whoever takes over.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "ack_gate.h"
#include "durability.h"
#include "jetstream.h"
#include "stats.h"
#include "xact.h"

/* How often the loop looks at the WAL while an ack is held... */
#define ISM_ACK_POLL_MS			2
/* ...and once one has waited ISM_ACK_STALL_MS (no standby, say). */
#define ISM_ACK_SLOW_POLL_MS	100
#define ISM_ACK_STALL_MS		1000
/* Held this long: a WARNING, once until the acks flow again. */
#define ISM_ACK_WARN_MS			10000

typedef struct HeldAck
{
	IsmMessage	msg;			/* its natsMsg is the gate's now */
	IsmSettle	how;			/* ISM_ACK, or ISM_TERM after a dead letter */
	XLogRecPtr	lsn;			/* the commit it follows */
	TimestampTz held_since;
	TimestampTz progress_at;	/* when JetStream last heard of it */
} HeldAck;

static HeldAck *held = NULL;
static int	nheld = 0;
static int	held_size = 0;
static bool stalled = false;
static bool warned = false;

/*
 * How far the WAL was durable when last asked in this turn of the loop: a
 * flush acks each of its messages after one commit, and asks once.  Good
 * for one turn only (a reload, between turns, can ask for more).
 */
static XLogRecPtr durable_this_turn = InvalidXLogRecPtr;

/*
 * The postmaster is gone: none of what this worker committed may be
 * confirmed any more (a synchronous commit's wait ends at its death as if
 * it had been confirmed), and a standby is about to take over.  Ack
 * nothing; exit, and let the messages come back.
 */
static void
exit_if_postmaster_died(void)
{
	if (PostmasterIsAlive())
		return;
	ereport(LOG,
			(errmsg("%s: the postmaster died; exiting without acknowledging %d held messages",
					MyBgworkerEntry->bgw_name, nheld),
			 errdetail("Their commits may not be on the server that takes over; JetStream delivers them again after ack_wait.")));
	proc_exit(1);
}

static void
settle_now(IsmMessage *m, IsmSettle how)
{
	char		err[512];

	if (!ism_nats_settle(m, how, 0, err, sizeof(err)))
		ereport(WARNING, (errmsg("%s: %s", MyBgworkerEntry->bgw_name, err)));
}

static void
hold(IsmMessage *m, IsmSettle how, XLogRecPtr lsn)
{
	HeldAck    *h;

	if (nheld == held_size)
	{
		held_size = Max(64, held_size * 2);
		held = held ? repalloc(held, sizeof(HeldAck) * held_size) :
			MemoryContextAlloc(TopMemoryContext, sizeof(HeldAck) * held_size);
	}
	h = &held[nheld++];
	h->msg = *m;
	h->how = how;
	h->lsn = lsn;
	h->held_since = h->progress_at = GetCurrentTimestamp();
	/* the caller's ism_nats_release leaves it to the gate */
	m->handle = NULL;
}

/*
 * Ack (ISM_ACK) or terminate (ISM_TERM) m once the commit the worker just
 * made is durable: now if it is, else held and let go by a later turn.
 * The caller releases m as usual.
 */
void
ism_settle_after_commit(IsmMessage *m, IsmSettle how)
{
	XLogRecPtr	lsn = ism_last_commit_lsn();
	const char *waiting_for;

	exit_if_postmaster_died();
	if (m->from_stream && nheld == 0 && lsn > durable_this_turn)
		durable_this_turn = ism_durable_horizon(&waiting_for);
	if (!m->from_stream || (nheld == 0 && lsn <= durable_this_turn))
		settle_now(m, how);
	else
		hold(m, how, lsn);
}

/* The worker's state while acks wait long, and a WARNING when very long. */
static void
show_stall(TimestampTz now, const char *waiting_for)
{
	bool		stall = nheld > 0 &&
		TimestampDifferenceExceeds(held[0].held_since, now, ISM_ACK_STALL_MS);

	if (stall)
	{
		char		activity[128];

		snprintf(activity, sizeof(activity), "%d acknowledgements wait for %s", nheld, waiting_for);
		ism_report_activity(true, activity);
		if (!warned && TimestampDifferenceExceeds(held[0].held_since, now, ISM_ACK_WARN_MS))
		{
			ereport(WARNING,
					(errmsg("%s: %d messages written but not acknowledged for %ld s: waiting for %s",
							MyBgworkerEntry->bgw_name, nheld,
							TimestampDifferenceMilliseconds(held[0].held_since, now) / 1000,
							waiting_for),
					 errhint("ism_state.ack_after and synchronous_standby_names decide what an acknowledgement waits for.")));
			warned = true;
		}
	}
	else
		warned = false;
	if (stall != stalled)
		ism_stats_set_state(stall ? ISM_WORKER_WAITING_FOR_STANDBY : ISM_WORKER_RUNNING);
	stalled = stall;
}

/*
 * One turn of the loop: settle what has become durable; tell JetStream
 * that the rest is in progress, every half ack_wait.
 */
void
ism_ack_gate_turn(int ack_wait_ms)
{
	const char *waiting_for = "";
	XLogRecPtr	horizon;
	TimestampTz now = GetCurrentTimestamp();
	int			kept = 0;

	durable_this_turn = InvalidXLogRecPtr;
	if (nheld == 0)
	{
		show_stall(now, waiting_for);
		return;
	}
	exit_if_postmaster_died();
	horizon = ism_durable_horizon(&waiting_for);
	for (int i = 0; i < nheld; i++)
	{
		HeldAck    *h = &held[i];

		if (h->lsn <= horizon)
		{
			settle_now(&h->msg, h->how);
			ism_nats_release(&h->msg, 1);
			continue;
		}
		if (ack_wait_ms > 0 && TimestampDifferenceExceeds(h->progress_at, now, ack_wait_ms / 2))
		{
			settle_now(&h->msg, ISM_IN_PROGRESS);
			h->progress_at = now;
		}
		held[kept++] = *h;
	}
	nheld = kept;
	show_stall(now, waiting_for);
}

/* How long the loop may wait, at most wait_ms. */
long
ism_ack_gate_wait_ms(long wait_ms)
{
	if (nheld == 0)
		return wait_ms;
	return Min(wait_ms, stalled ? ISM_ACK_SLOW_POLL_MS : ISM_ACK_POLL_MS);
}

/*
 * Before the subscription or the connection goes (their messages can be
 * settled only through them): wait up to wait_ms for the held acks'
 * commits, settle those that are durable and nak the others, which come
 * back at once (what they did is recorded: see ism_state.applied).
 */
void
ism_ack_gate_let_go(int wait_ms)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);
	char		err[512];

	while (nheld > 0 && GetCurrentTimestamp() < until)
	{
		ism_ack_gate_turn(0);
		if (nheld > 0)
			(void) WaitLatch(NULL, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ISM_ACK_POLL_MS * 5,
							 PG_WAIT_EXTENSION);
	}
	ism_ack_gate_turn(0);
	for (int i = 0; i < nheld; i++)
	{
		if (!ism_nats_settle(&held[i].msg, ISM_NAK, 0, err, sizeof(err)))
			elog(DEBUG1, "%s: %s", MyBgworkerEntry->bgw_name, err);
		ism_nats_release(&held[i].msg, 1);
	}
	nheld = 0;
	show_stall(GetCurrentTimestamp(), "");
}

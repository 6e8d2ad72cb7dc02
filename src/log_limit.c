/*-------------------------------------------------------------------------
 *
 * log_limit.c
 *	  Log lines that repeat, rate-limited and counted.
 *
 * A poison message redelivered, a table that stays locked, a server that
 * stays away: the same line would otherwise fill the log.  Lines are
 * alike when their key (the error, say, without the message's sequence
 * number) is: the first is written; the others within LOG_LIMIT_MS are only
 * counted, and the next one written after that says how many were left out.
 * Or once: a warning about a setting (a processor's concurrencyExpression
 * the router cannot evaluate) is written the first time its key is seen.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "utils/timestamp.h"

#include "log_limit.h"

#define LOG_LIMIT_MS	10000
#define REMEMBERED		32		/* distinct lines remembered */
#define ONCE_REMEMBERED	1024	/* keys logged once remembered; then forgotten all */

typedef struct RecentLine
{
	uint32		hash;
	TimestampTz logged_at;
	int64		left_out;
} RecentLine;

static RecentLine recent[REMEMBERED];
static int	next_slot = 0;
static uint64 logged_once[ONCE_REMEMBERED];
static int	nlogged_once = 0;

void
ism_log_limited(int elevel, const char *key, const char *fmt,...)
{
	char		line[1024];
	va_list		args;
	uint32		hash;
	TimestampTz now = GetCurrentTimestamp();
	RecentLine *r = NULL;

	va_start(args, fmt);
	vsnprintf(line, sizeof(line), fmt, args);
	va_end(args);
	hash = hash_bytes((const unsigned char *) key, strlen(key));

	for (int i = 0; i < REMEMBERED; i++)
		if (recent[i].hash == hash && recent[i].logged_at != 0)
			r = &recent[i];
	if (r && !TimestampDifferenceExceeds(r->logged_at, now, LOG_LIMIT_MS))
	{
		r->left_out++;
		return;
	}
	if (r == NULL)
	{
		r = &recent[next_slot];
		next_slot = (next_slot + 1) % REMEMBERED;
		r->hash = hash;
		r->left_out = 0;
	}
	if (r->left_out > 0)
		ereport(elevel, (errmsg("%s", line),
						 errdetail(INT64_FORMAT " more like it were left out of the log in the last %d seconds.",
								   r->left_out, LOG_LIMIT_MS / 1000)));
	else
		ereport(elevel, (errmsg("%s", line)));
	r->logged_at = now;
	r->left_out = 0;
}

/*
 * A line written the first time its key is seen, never again (memory
 * bounded: after ONCE_REMEMBERED keys all are forgotten, and a key may be
 * logged once more).
 */
void
ism_log_once(int elevel, const char *key, const char *fmt,...)
{
	char		line[1024];
	va_list		args;
	uint64		hash = hash_bytes_extended((const unsigned char *) key, strlen(key), 0);

	for (int i = 0; i < nlogged_once; i++)
		if (logged_once[i] == hash)
			return;
	if (nlogged_once == ONCE_REMEMBERED)
		nlogged_once = 0;
	logged_once[nlogged_once++] = hash;
	va_start(args, fmt);
	vsnprintf(line, sizeof(line), fmt, args);
	va_end(args);
	ereport(elevel, (errmsg("%s", line)));
}

/*-------------------------------------------------------------------------
 *
 * lookup_cache.c
 *	  A short-lived cache of the catalog rows the router reads for every
 *	  message (processor_state by id, processor by id).
 *
 * An entry serves for ISM_LOOKUP_TTL_MS, so a change to a processor (its
 * properties, say) applies within that time without a query per message.
 * Only rows found are cached: a route or processor created a moment ago is
 * seen at once.  The cache is dropped whole when it grows past its bound.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "lookup_cache.h"

#define ISM_LOOKUP_TTL_MS		1000
#define ISM_LOOKUP_MAX_ENTRIES	10000
#define ISM_LOOKUP_KEY_LEN		128

typedef struct LookupEntry
{
	char		key[ISM_LOOKUP_KEY_LEN];	/* kind character + id */
	TimestampTz fetched_at;
	int			ncols;
	char	   *cols[ISM_LOOKUP_MAX_COLS];
} LookupEntry;

static HTAB *lookups = NULL;
static MemoryContext lookup_context = NULL;

static bool
make_key(char kind, const char *id, char *key)
{
	if (strlen(id) + 2 > ISM_LOOKUP_KEY_LEN)
		return false;			/* not cached: looked up every time */
	key[0] = kind;
	strlcpy(key + 1, id, ISM_LOOKUP_KEY_LEN - 1);
	return true;
}

static void
create_cache(void)
{
	HASHCTL		ctl;

	lookup_context = AllocSetContextCreate(TopMemoryContext, "ism_state lookup cache",
										   ALLOCSET_DEFAULT_SIZES);
	ctl.keysize = ISM_LOOKUP_KEY_LEN;
	ctl.entrysize = sizeof(LookupEntry);
	ctl.hcxt = lookup_context;
	lookups = hash_create("ism_state lookups", 256, &ctl,
						  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

/* A fresh cached row: copies of its columns, in the current context. */
bool
ism_lookup_get(char kind, const char *id, char **cols, int ncols)
{
	char		key[ISM_LOOKUP_KEY_LEN] = {0};
	LookupEntry *e;

	if (lookups == NULL || !make_key(kind, id, key))
		return false;
	e = hash_search(lookups, key, HASH_FIND, NULL);
	if (e == NULL || e->ncols != ncols ||
		TimestampDifferenceExceeds(e->fetched_at, GetCurrentTimestamp(), ISM_LOOKUP_TTL_MS))
		return false;
	for (int i = 0; i < ncols; i++)
		cols[i] = e->cols[i] ? pstrdup(e->cols[i]) : NULL;
	return true;
}

void
ism_lookup_put(char kind, const char *id, char **cols, int ncols)
{
	char		key[ISM_LOOKUP_KEY_LEN] = {0};
	LookupEntry *e;
	bool		found;

	Assert(ncols <= ISM_LOOKUP_MAX_COLS);
	if (!make_key(kind, id, key))
		return;
	if (lookups && hash_get_num_entries(lookups) >= ISM_LOOKUP_MAX_ENTRIES)
	{
		MemoryContextDelete(lookup_context);
		lookups = NULL;
	}
	if (lookups == NULL)
		create_cache();
	e = hash_search(lookups, key, HASH_ENTER, &found);
	for (int i = 0; found && i < e->ncols; i++)
		if (e->cols[i])
			pfree(e->cols[i]);
	e->ncols = ncols;
	e->fetched_at = GetCurrentTimestamp();
	for (int i = 0; i < ncols; i++)
		e->cols[i] = cols[i] ? MemoryContextStrdup(lookup_context, cols[i]) : NULL;
}

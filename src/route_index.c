/*-------------------------------------------------------------------------
 *
 * route_index.c
 *	  Selector lookup with the ISM routers' rules (see route_index.h).
 *
 * Two open-addressing hash tables: every selector, for the exact match,
 * and every wildcard prefix.  FNV-1a hashes a string one byte at a time,
 * so walking the key once gives the hash of each of its prefixes: a lookup
 * costs one probe per byte of the key, whatever the number of routes,
 * where the upstream routers scan every route.
 *
 *-------------------------------------------------------------------------
 */
#include "route_index.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FNV_OFFSET	UINT64_C(14695981039346656037)
#define FNV_PRIME	UINT64_C(1099511628211)

typedef struct Entry
{
	uint64_t	hash;
	char	   *key;			/* NULL: empty slot */
	size_t		len;
	int			id;
} Entry;

typedef struct Table
{
	Entry	   *slots;
	size_t		mask;			/* capacity - 1, capacity a power of 2 */
	size_t		used;
} Table;

struct RouteIndex
{
	Table		exact;
	Table		prefix;
};

static uint64_t
fnv_step(uint64_t h, unsigned char c)
{
	return (h ^ c) * FNV_PRIME;
}

static uint64_t
fnv_hash(const char *s, size_t len)
{
	uint64_t	h = FNV_OFFSET;

	for (size_t i = 0; i < len; i++)
		h = fnv_step(h, (unsigned char) s[i]);
	return h;
}

static bool
table_init(Table *t, size_t expected)
{
	size_t		cap = 16;

	while (cap < expected * 2)
		cap <<= 1;
	t->slots = calloc(cap, sizeof(Entry));
	t->mask = cap - 1;
	t->used = 0;
	return t->slots != NULL;
}

static void
table_free(Table *t)
{
	if (t->slots == NULL)
		return;
	for (size_t i = 0; i <= t->mask; i++)
		free(t->slots[i].key);
	free(t->slots);
	t->slots = NULL;
}

static const Entry *
table_find(const Table *t, const char *key, size_t len, uint64_t hash)
{
	for (size_t i = hash & t->mask;; i = (i + 1) & t->mask)
	{
		const Entry *e = &t->slots[i];

		if (e->key == NULL)
			return NULL;
		if (e->hash == hash && e->len == len && memcmp(e->key, key, len) == 0)
			return e;
	}
}

static bool
table_grow(Table *t)
{
	Table		bigger;

	if (!table_init(&bigger, (t->mask + 1)))
		return false;
	for (size_t i = 0; i <= t->mask; i++)
	{
		Entry	   *e = &t->slots[i];
		size_t		j;

		if (e->key == NULL)
			continue;
		for (j = e->hash & bigger.mask; bigger.slots[j].key; j = (j + 1) & bigger.mask)
			;
		bigger.slots[j] = *e;
		bigger.used++;
	}
	free(t->slots);
	*t = bigger;
	return true;
}

/* Insert or, for a key already there, keep the first id. */
static bool
table_put(Table *t, const char *key, size_t len, int id)
{
	uint64_t	hash = fnv_hash(key, len);
	size_t		i;

	if (table_find(t, key, len, hash))
		return true;
	if ((t->used + 1) * 2 > t->mask + 1 && !table_grow(t))
		return false;
	for (i = hash & t->mask; t->slots[i].key; i = (i + 1) & t->mask)
		;
	t->slots[i].key = malloc(len + 1);
	if (t->slots[i].key == NULL)
		return false;
	memcpy(t->slots[i].key, key, len);
	t->slots[i].key[len] = '\0';
	t->slots[i].len = len;
	t->slots[i].hash = hash;
	t->slots[i].id = id;
	t->used++;
	return true;
}

RouteIndex *
ism_route_index_create(size_t expected_routes)
{
	RouteIndex *index = calloc(1, sizeof(RouteIndex));

	if (index == NULL)
		return NULL;
	if (!table_init(&index->exact, expected_routes) ||
		!table_init(&index->prefix, expected_routes))
	{
		ism_route_index_destroy(index);
		return NULL;
	}
	return index;
}

void
ism_route_index_destroy(RouteIndex *index)
{
	if (index == NULL)
		return;
	table_free(&index->exact);
	table_free(&index->prefix);
	free(index);
}

bool
ism_route_index_add(RouteIndex *index, const char *selector, int id)
{
	size_t		len = strlen(selector);

	if (!table_put(&index->exact, selector, len, id))
		return false;
	if (len >= 2 && selector[len - 2] == '/' && selector[len - 1] == '*')
		return table_put(&index->prefix, selector, len - 2, id);
	return true;
}

RouteLookupResult
ism_route_index_lookup(const RouteIndex *index, const char *selector,
				   int *ids, int maxids, int *nmatches)
{
	size_t		len = strlen(selector);
	uint64_t	h = FNV_OFFSET;
	const Entry *e;
	int			n = 0;

	e = table_find(&index->exact, selector, len, fnv_hash(selector, len));
	if (e)
	{
		if (maxids > 0)
			ids[0] = e->id;
		*nmatches = 1;
		return ROUTE_FOUND;
	}

	if (index->prefix.used > 0)
	{
		/* every prefix of the key, the empty one included */
		for (size_t plen = 0;; plen++)
		{
			e = table_find(&index->prefix, selector, plen, h);
			if (e)
			{
				if (n < maxids)
					ids[n] = e->id;
				n++;
			}
			if (plen == len)
				break;
			h = fnv_step(h, (unsigned char) selector[plen]);
		}
	}

	*nmatches = n;
	if (n == 0)
		return ROUTE_NOT_FOUND;
	return n == 1 ? ROUTE_FOUND : ROUTE_AMBIGUOUS;
}

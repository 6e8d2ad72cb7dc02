/*
 * backend_shim.c
 *	  The few backend functions the fuzz targets' ism_state code calls
 *	  that PostgreSQL's frontend libraries (libpgcommon, libpgport: palloc,
 *	  StringInfo, psprintf, Ryu) do not provide.  An error report at ERROR
 *	  or above aborts: for a fuzzer, that is a finding.
 */
#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>

#include "utils/builtins.h"

bool
errstart(int elevel, const char *domain)
{
	if (elevel >= ERROR)
	{
		fprintf(stderr, "ism_state fuzz: an error report (level %d)\n", elevel);
		abort();
	}
	return false;				/* lower levels are not reported */
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
}

int
errmsg_internal(const char *fmt,...)
{
	return 0;
}

int
errmsg(const char *fmt,...)
{
	return 0;
}

void
check_stack_depth(void)
{
}

int
pg_lltoa(int64 value, char *a)
{
	return snprintf(a, MAXINT8LEN + 1, INT64_FORMAT, value);
}

/*
 * palloc and friends, each chunk remembered so that shim_reset() frees
 * what one input left, as the workers' per-message memory context does
 * (the evaluator, like any backend code, leaves that to its context).
 * Defined here, they take the place of libpgcommon's plain-malloc ones.
 */
typedef struct Chunk
{
	struct Chunk *prev;
	struct Chunk *next;
	max_align_t data[FLEXIBLE_ARRAY_MEMBER];
} Chunk;

static Chunk chunks = {&chunks, &chunks};

#define CHUNK_OF(p) ((Chunk *) ((char *) (p) - offsetof(Chunk, data)))

void *
palloc_extended(Size size, int flags)
{
	Chunk	   *c = malloc(offsetof(Chunk, data) + Max(size, 1));

	if (c == NULL)
		abort();
	c->next = chunks.next;
	c->prev = &chunks;
	chunks.next->prev = c;
	chunks.next = c;
	if (flags & MCXT_ALLOC_ZERO)
		memset(c->data, 0, size);
	return c->data;
}

void *
palloc(Size size)
{
	return palloc_extended(size, 0);
}

void *
palloc0(Size size)
{
	return palloc_extended(size, MCXT_ALLOC_ZERO);
}

void
pfree(void *pointer)
{
	Chunk	   *c = CHUNK_OF(pointer);

	c->prev->next = c->next;
	c->next->prev = c->prev;
	free(c);
}

void *
repalloc(void *pointer, Size size)
{
	Chunk	   *c = CHUNK_OF(pointer);
	Chunk	   *moved = realloc(c, offsetof(Chunk, data) + Max(size, 1));

	if (moved == NULL)
		abort();
	moved->prev->next = moved;
	moved->next->prev = moved;
	return moved->data;
}

char *
pstrdup(const char *in)
{
	size_t		len = strlen(in) + 1;

	return memcpy(palloc(len), in, len);
}

char *
pnstrdup(const char *in, Size size)
{
	size_t		len = strnlen(in, size);
	char	   *out = palloc(len + 1);

	memcpy(out, in, len);
	out[len] = '\0';
	return out;
}

/* Free everything allocated since the last reset. */
void
shim_reset(void)
{
	while (chunks.next != &chunks)
		pfree(chunks.next->data);
}

/*
 * backend_shim.c
 *	  The few backend functions the fuzz targets' ism_state code calls
 *	  that PostgreSQL's frontend libraries (libpgcommon, libpgport: palloc,
 *	  StringInfo, psprintf, Ryu) do not provide.
 *
 *	  Errors work as in the backend, in little: an error report at ERROR
 *	  jumps to the innermost PG_TRY, so code that catches or cleans up
 *	  after errors (PG_CATCH, PG_FINALLY) runs as it would there.  An
 *	  ERROR with no PG_TRY around it, and anything above ERROR, aborts:
 *	  for a fuzzer, that is a finding.
 */
#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>

#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/json.h"

sigjmp_buf *PG_exception_stack = NULL;
ErrorContextCallback *error_context_stack = NULL;

/*
 * the error being reported (one at a time, as the backend's errordata);
 * room for a message quoting a whole input (fuzz.sh: -max_len=4096), such
 * as a record key of 4,000 characters: one cut short is not the message
 * its target expects
 */
static int	error_level;
static char error_message[4 * 4096];

bool
errstart(int elevel, const char *domain)
{
	if (elevel < ERROR)
		return false;			/* lower levels are not reported */
	error_level = elevel;
	error_message[0] = '\0';
	return true;
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	if (error_level > ERROR || PG_exception_stack == NULL)
	{
		fprintf(stderr, "ism_state fuzz: an error report (level %d) at %s:%d: %s\n",
				error_level, filename, lineno, error_message);
		abort();
	}
	siglongjmp(*PG_exception_stack, 1);
}

void
pg_re_throw(void)
{
	if (PG_exception_stack == NULL)
	{
		fprintf(stderr, "ism_state fuzz: an error rethrown with no PG_TRY: %s\n",
				error_message);
		abort();
	}
	siglongjmp(*PG_exception_stack, 1);
}

/* The message of the last error report, for a target that caught it. */
const char *
shim_error_message(void)
{
	return error_message;
}

int
errmsg_internal(const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	vsnprintf(error_message, sizeof(error_message), fmt, args);
	va_end(args);
	return 0;
}

int
errmsg(const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	vsnprintf(error_message, sizeof(error_message), fmt, args);
	va_end(args);
	return 0;
}

int
errcode(int sqlerrcode)
{
	return 0;
}

/* the rest of a report is formatted, as in the backend, but not kept */
static void
format_and_drop(const char *fmt, va_list args)
{
	char		text[1024];

	vsnprintf(text, sizeof(text), fmt, args);
}

int
errhint(const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	format_and_drop(fmt, args);
	va_end(args);
	return 0;
}

int
errdetail(const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	format_and_drop(fmt, args);
	va_end(args);
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

/*
 * NULL as the frontend's pfree takes it (common/fe_memutils.c: free()):
 * 18's JSON parser frees a member name it never read on a syntax error
 * (common/jsonapi.c, parse_object_field).
 */
void
pfree(void *pointer)
{
	Chunk	   *c;

	if (pointer == NULL)
		return;
	c = CHUNK_OF(pointer);
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

/*
 * Lists (backend nodes/list.c): what the code under test uses, in the
 * same representation (an array of cells that doubles as it fills), so
 * pg_list.h's inline functions and foreach work on them.
 */
static List *
new_list(NodeTag type, int min_size)
{
	int			max_size = Max(min_size, 4);
	List	   *list = palloc(offsetof(List, initial_elements) +
							  max_size * sizeof(ListCell));

	list->type = type;
	list->length = min_size;
	list->max_length = max_size;
	list->elements = list->initial_elements;
	return list;
}

static List *
new_tail_cell(List *list, NodeTag type)
{
	if (list == NIL)
		return new_list(type, 1);
	if (list->length == list->max_length)
	{
		int			max_size = list->max_length * 2;

		if (list->elements == list->initial_elements)
		{
			list->elements = palloc(max_size * sizeof(ListCell));
			memcpy(list->elements, list->initial_elements,
				   list->length * sizeof(ListCell));
		}
		else
			list->elements = repalloc(list->elements, max_size * sizeof(ListCell));
		list->max_length = max_size;
	}
	list->length++;
	return list;
}

List *
lappend(List *list, void *datum)
{
	list = new_tail_cell(list, T_List);
	llast(list) = datum;
	return list;
}

List *
list_make1_impl(NodeTag t, ListCell datum1)
{
	List	   *list = new_list(t, 1);

	list->elements[0] = datum1;
	return list;
}

/* A JSON string literal, as the backend's (utils/adt/json.c). */
void
escape_json(StringInfo buf, const char *str)
{
	appendStringInfoChar(buf, '"');
	for (const char *p = str; *p; p++)
	{
		switch (*p)
		{
			case '\b':
				appendStringInfoString(buf, "\\b");
				break;
			case '\f':
				appendStringInfoString(buf, "\\f");
				break;
			case '\n':
				appendStringInfoString(buf, "\\n");
				break;
			case '\r':
				appendStringInfoString(buf, "\\r");
				break;
			case '\t':
				appendStringInfoString(buf, "\\t");
				break;
			case '"':
				appendStringInfoString(buf, "\\\"");
				break;
			case '\\':
				appendStringInfoString(buf, "\\\\");
				break;
			default:
				if ((unsigned char) *p < ' ')
					appendStringInfo(buf, "\\u%04x", (int) *p);
				else
					appendStringInfoChar(buf, *p);
				break;
		}
	}
	appendStringInfoChar(buf, '"');
}

/* Free everything allocated since the last reset. */
void
shim_reset(void)
{
	while (chunks.next != &chunks)
		pfree(chunks.next->data);
}

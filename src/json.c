/*-------------------------------------------------------------------------
 *
 * json.c
 *	  JSON messages as sent: a parse tree that keeps every value's text,
 *	  and compact printing from it.
 *
 * What the router forwards and the writer stores is the value as it was
 * sent (issue #15): numbers digit for digit, strings byte for byte.  So
 * the tree holds no converted values at all: every node points at its
 * text in the message -- a number's literal, a string's token with its
 * escapes, a container from bracket to bracket -- and printing a value
 * copies that text, or, where it is not the value compactly (white space
 * between tokens, a name given twice), its members' texts.  Strings are
 * also decoded, for lookups and for text columns; a \u0000 is kept (and
 * flagged), never cut.
 *
 * Tokens come from PostgreSQL's own JSON lexer (common/jsonapi.h, in the
 * backend and in the frontend library the fuzz targets link), asked for
 * no de-escaping: it checks every token's syntax and leaves the text as it
 * is.  The tree is built without recursion, at most ISM_JSON_MAX_DEPTH
 * deep, its nodes and decoded strings carved from a few large chunks in
 * the current memory context (a message's, which goes with it).
 *
 * A name given twice in an object: the last value counts, at the first
 * one's place, as in Python's json.loads and Go's encoding/json (the
 * platform's two languages).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"

#include "json.h"
#include "json_number.h"

/*
 * objects with more members than this find repeated names by sorting; a
 * smaller one compares each name with those before it (at most 120 times,
 * most ending at the length): for the tables benchmark's records of 10
 * keys a quarter less parse time than sorting (bench/json_bench: 6,825
 * against 8,966 ns a message, medians of 5 pairs)
 */
#define SMALL_OBJECT		16

/* a member left out: its name comes again later in the object */
#define GONE				0x100

/* open containers kept on the C stack; deeper ones in a palloc'd array */
#define INLINE_FRAMES		32

/* the arena's first block: a power of two near four bytes per byte of text */
#define ARENA_MIN_BLOCK		256
#define ARENA_MAX_BLOCK		65536

/* Nodes and decoded strings, carved from blocks of the current context. */
typedef struct Arena
{
	char	   *next;
	Size		left;
	Size		block;			/* the next block's size */
} Arena;

typedef struct Frame
{
	IsmJson    *node;			/* an open container */
	IsmJson    *last;			/* its last member so far */
} Frame;

typedef enum Expect
{
	EXPECT_VALUE,
	EXPECT_VALUE_OR_CLOSE,		/* after '[' */
	EXPECT_NAME,
	EXPECT_NAME_OR_CLOSE,		/* after '{' */
	EXPECT_COLON,
	EXPECT_COMMA_OR_CLOSE,
	EXPECT_END
} Expect;

typedef struct Parser
{
	JsonLexContext *lex;
	const char *input;
	Arena		arena;
	Frame	   *stack;
	int			depth;
	int			stack_size;
	Frame		inline_stack[INLINE_FRAMES];
	IsmJson    *root;
	IsmJson    *name;			/* the member whose name was read, value to come */
	char	   *error;
} Parser;

static void *
arena_alloc(Arena *a, Size size)
{
	void	   *p;

	size = MAXALIGN(size);
	if (size > a->left)
	{
		if (size > a->block / 4)
			return palloc(size);	/* large: a chunk of its own */
		a->next = palloc(a->block);
		a->left = a->block;
		a->block = Min(a->block * 2, ARENA_MAX_BLOCK);
	}
	p = a->next;
	a->next += size;
	a->left -= size;
	return p;
}

/* --- errors ---------------------------------------------------------------- */

static IsmJson *
syntax_error(Parser *ps, const char *what)
{
	int			at = ps->lex->token_start ? (int) (ps->lex->token_start - ps->input) : 0;

	ps->error = what ? psprintf("not valid JSON: %s (at byte %d)", what, at) :
		psprintf("not valid JSON (at byte %d)", at);
	return NULL;
}

/* --- strings --------------------------------------------------------------- */

static int
hex_value(const char *p)
{
	int			v = 0;

	for (int i = 0; i < 4; i++)
	{
		char		c = p[i];

		v = v * 16 + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
	}
	return v;
}

/*
 * The characters of a string token (its quotes aside) decoded into out,
 * which has room for them (decoding never lengthens).  The lexer has
 * checked the escapes' syntax; what is left to refuse is a UTF-16
 * surrogate without its other half, which no UTF-8 text can hold.
 * Returns the length, -1 for a lone surrogate; *nul when it holds NUL.
 */
static int
decode_string(const char *s, int len, char *out, bool *nul)
{
	const char *end = s + len;
	char	   *o = out;

	*nul = false;
	while (s < end)
	{
		const char *backslash = memchr(s, '\\', end - s);
		int			cp;

		if (backslash == NULL)
		{
			memcpy(o, s, end - s);
			o += end - s;
			break;
		}
		memcpy(o, s, backslash - s);
		o += backslash - s;
		s = backslash + 1;
		switch (*s++)
		{
			case 'b':
				*o++ = '\b';
				continue;
			case 'f':
				*o++ = '\f';
				continue;
			case 'n':
				*o++ = '\n';
				continue;
			case 'r':
				*o++ = '\r';
				continue;
			case 't':
				*o++ = '\t';
				continue;
			case 'u':
				break;
			default:			/* \" \\ \/ */
				*o++ = s[-1];
				continue;
		}
		cp = hex_value(s);
		s += 4;
		if (cp >= 0xDC00 && cp <= 0xDFFF)
			return -1;
		if (cp >= 0xD800 && cp <= 0xDBFF)
		{
			int			low;

			if (end - s < 6 || s[0] != '\\' || s[1] != 'u')
				return -1;
			low = hex_value(s + 2);
			if (low < 0xDC00 || low > 0xDFFF)
				return -1;
			cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
			s += 6;
		}
		*nul |= cp == 0;
		unicode_to_utf8((pg_wchar) cp, (unsigned char *) o);
		o += pg_utf_mblen((unsigned char *) o);
	}
	*o = '\0';
	return o - out;
}

/* The current token, a string, decoded; false for a lone surrogate. */
static bool
read_string(Parser *ps, const char **out, int *out_len, bool *nul)
{
	const char *token = ps->lex->token_start;
	int			len = ps->lex->token_terminator - token;
	char	   *decoded = arena_alloc(&ps->arena, len);	/* quotes: room for the NUL */

	*out_len = decode_string(token + 1, len - 2, decoded, nul);
	*out = decoded;
	return *out_len >= 0;
}

/* --- repeated names ---------------------------------------------------------- */

static bool
same_name(const IsmJson *a, const IsmJson *b)
{
	return a->key_len == b->key_len && memcmp(a->key, b->key, a->key_len) == 0;
}

/* first keeps its place and takes the value of later, a name given again */
static void
take_value(IsmJson *first, IsmJson *later)
{
	first->type = later->type;
	first->flags = later->flags;
	first->text = later->text;
	first->len = later->len;
	first->str = later->str;
	first->str_len = later->str_len;
	first->child = later->child;
	first->count = later->count;
	first->order = later->order;
	later->flags |= GONE;		/* unlinked below */
}

static int
by_name_then_order(const void *a, const void *b)
{
	const IsmJson *x = *(IsmJson *const *) a;
	const IsmJson *y = *(IsmJson *const *) b;
	int			c = memcmp(x->key, y->key, Min(x->key_len, y->key_len));

	if (c != 0)
		return c;
	if (x->key_len != y->key_len)
		return x->key_len < y->key_len ? -1 : 1;
	return x->order < y->order ? -1 : 1;
}

/* Mark the members whose names come again later; true if there are any. */
static bool
mark_repeated(IsmJson *object)
{
	bool		any = false;

	if (object->count <= SMALL_OBJECT)
	{
		for (IsmJson *m = object->child; m; m = m->next)
			for (IsmJson *earlier = object->child; earlier != m; earlier = earlier->next)
				if (!(earlier->flags & GONE) && same_name(earlier, m))
				{
					take_value(earlier, m);
					any = true;
					break;
				}
	}
	else
	{
		/* sorted by name, then place: each run of one name, first to last */
		IsmJson   **members = palloc(sizeof(IsmJson *) * object->count);
		int			n = 0;

		for (IsmJson *m = object->child; m; m = m->next)
			members[n++] = m;
		qsort(members, n, sizeof(IsmJson *), by_name_then_order);
		for (int i = 0; i < n;)
		{
			int			j = i + 1;

			while (j < n && same_name(members[i], members[j]))
				j++;
			if (j - i > 1)
			{
				take_value(members[i], members[j - 1]);
				for (int k = i + 1; k < j - 1; k++)
					members[k]->flags |= GONE;
				any = true;
			}
			i = j;
		}
		pfree(members);
	}
	return any;
}

/* An object's members with every name once (see mark_repeated). */
static void
drop_repeated(IsmJson *object)
{
	IsmJson   **link = &object->child;

	if (!mark_repeated(object))
		return;
	object->count = 0;
	for (IsmJson *m = object->child; m; m = m->next)
		if (!(m->flags & GONE))
		{
			*link = m;
			link = &m->next;
			object->count++;
		}
	*link = NULL;
	object->flags |= ISM_JSON_REPRINT;
}

/* --- the tree ------------------------------------------------------------------ */

/* A container closed: its text, its names once, what is within it flagged. */
static void
close_container(Parser *ps)
{
	IsmJson    *node = ps->stack[--ps->depth].node;

	node->len = ps->lex->token_terminator - node->text;
	if (node->type == ISM_JSON_OBJECT && node->count > 1)
		drop_repeated(node);
	for (IsmJson *m = node->child; m; m = m->next)
		node->flags |= (m->flags & (ISM_JSON_NUL | ISM_JSON_REPRINT)) |
			((m->flags & ISM_JSON_KEY_NUL) ? ISM_JSON_NUL : 0);
}

/* A new value at the current token, in its container (or the root). */
static IsmJson *
add_value(Parser *ps, IsmJsonType type)
{
	IsmJson    *node;

	if (ps->name)
	{
		node = ps->name;		/* made when its name was read */
		ps->name = NULL;
	}
	else
	{
		node = arena_alloc(&ps->arena, sizeof(IsmJson));
		memset(node, 0, sizeof(IsmJson));
	}
	node->type = type;
	node->text = ps->lex->token_start;
	node->len = ps->lex->token_terminator - node->text;
	if (ps->depth == 0)
		ps->root = node;
	else
	{
		Frame	   *top = &ps->stack[ps->depth - 1];

		if (top->last)
			top->last->next = node;
		else
			top->node->child = node;
		top->last = node;
		top->node->count++;
	}
	return node;
}

/* A member's name: its node is made now, its value filled in next. */
static bool
add_name(Parser *ps)
{
	IsmJson    *node = arena_alloc(&ps->arena, sizeof(IsmJson));
	bool		nul;

	memset(node, 0, sizeof(IsmJson));
	if (!read_string(ps, &node->key, &node->key_len, &nul))
		return false;
	node->key_text = ps->lex->token_start;
	node->key_text_len = ps->lex->token_terminator - node->key_text;
	node->order = ps->stack[ps->depth - 1].node->count;
	if (nul)
		node->flags |= ISM_JSON_KEY_NUL;
	ps->name = node;
	return true;
}

static bool
open_container(Parser *ps, IsmJsonType type)
{
	IsmJson    *node;

	if (ps->depth >= ISM_JSON_MAX_DEPTH)
		return false;
	node = add_value(ps, type);
	if (ps->depth == ps->stack_size)
	{
		Frame	   *bigger = palloc(sizeof(Frame) * ps->stack_size * 2);

		memcpy(bigger, ps->stack, sizeof(Frame) * ps->stack_size);
		if (ps->stack != ps->inline_stack)
			pfree(ps->stack);
		ps->stack = bigger;
		ps->stack_size *= 2;
	}
	ps->stack[ps->depth].node = node;
	ps->stack[ps->depth].last = NULL;
	ps->depth++;
	return true;
}

static const IsmJsonType scalar_types[] = {
	[JSON_TOKEN_STRING] = ISM_JSON_STRING,
	[JSON_TOKEN_NUMBER] = ISM_JSON_NUMBER,
	[JSON_TOKEN_TRUE] = ISM_JSON_TRUE,
	[JSON_TOKEN_FALSE] = ISM_JSON_FALSE,
	[JSON_TOKEN_NULL] = ISM_JSON_NULL,
};

/* A value at the current token; what to expect after it.  Sets ps->error. */
static Expect
read_value(Parser *ps, JsonTokenType token)
{
	IsmJson    *node;
	bool		nul;

	switch (token)
	{
		case JSON_TOKEN_OBJECT_START:
		case JSON_TOKEN_ARRAY_START:
			if (!open_container(ps, token == JSON_TOKEN_OBJECT_START ?
								ISM_JSON_OBJECT : ISM_JSON_ARRAY))
				syntax_error(ps, psprintf("nested more than %d deep", ISM_JSON_MAX_DEPTH));
			return token == JSON_TOKEN_OBJECT_START ? EXPECT_NAME_OR_CLOSE : EXPECT_VALUE_OR_CLOSE;
		case JSON_TOKEN_STRING:
		case JSON_TOKEN_NUMBER:
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
		case JSON_TOKEN_NULL:
			node = add_value(ps, scalar_types[token]);
			if (token == JSON_TOKEN_STRING)
			{
				if (!read_string(ps, &node->str, &node->str_len, &nul))
					syntax_error(ps, "a lone UTF-16 surrogate");
				else if (nul)
					node->flags |= ISM_JSON_NUL;
			}
			return ps->depth > 0 ? EXPECT_COMMA_OR_CLOSE : EXPECT_END;
		default:
			syntax_error(ps, NULL);
			return EXPECT_END;
	}
}

/* The token that closes the innermost container. */
static JsonTokenType
closing_token(Parser *ps)
{
	return ps->stack[ps->depth - 1].node->type == ISM_JSON_OBJECT ?
		JSON_TOKEN_OBJECT_END : JSON_TOKEN_ARRAY_END;
}

/* One token read in the state expect; the next state.  Sets ps->error. */
static Expect
step(Parser *ps, Expect expect, JsonTokenType token)
{
	switch (expect)
	{
		case EXPECT_VALUE_OR_CLOSE:
		case EXPECT_NAME_OR_CLOSE:
			if (token == closing_token(ps))
				break;			/* an empty container */
			if (expect == EXPECT_VALUE_OR_CLOSE)
				return read_value(ps, token);
			/* FALLTHROUGH */
		case EXPECT_NAME:
			if (token != JSON_TOKEN_STRING)
				syntax_error(ps, NULL);
			else if (!add_name(ps))
				syntax_error(ps, "a lone UTF-16 surrogate");
			return EXPECT_COLON;
		case EXPECT_COLON:
			if (token != JSON_TOKEN_COLON)
				syntax_error(ps, NULL);
			return EXPECT_VALUE;
		case EXPECT_VALUE:
			return read_value(ps, token);
		case EXPECT_COMMA_OR_CLOSE:
			if (token == JSON_TOKEN_COMMA)
				return closing_token(ps) == JSON_TOKEN_OBJECT_END ? EXPECT_NAME : EXPECT_VALUE;
			if (token != closing_token(ps))
				syntax_error(ps, NULL);
			break;
		case EXPECT_END:
			if (token != JSON_TOKEN_END)
				syntax_error(ps, NULL);
			return EXPECT_END;
	}
	close_container(ps);
	return ps->depth > 0 ? EXPECT_COMMA_OR_CLOSE : EXPECT_END;
}

/*
 * PostgreSQL's lexer over text, without de-escaped strings (the tree keeps
 * the text as sent).  17 changed the call: it takes a context to fill
 * (NULL: one palloc'd for the caller) and frees it with freeJsonLexContext.
 */
static JsonLexContext *
lexer_new(const char *text, int len)
{
#if PG_VERSION_NUM >= 170000
	return makeJsonLexContextCstringLen(NULL, text, len, PG_UTF8, false);
#else
	return makeJsonLexContextCstringLen((char *) text, len, PG_UTF8, false);
#endif
}

static void
lexer_free(JsonLexContext *lex)
{
#if PG_VERSION_NUM >= 170000
	freeJsonLexContext(lex);
#else
	pfree(lex);
#endif
}

/*
 * The JSON text as a tree, in the current memory context; the tree points
 * into text, which must outlive it.  NULL with *error ("not valid JSON
 * (at byte 12)", palloc'd) when it is not one JSON value (RFC 8259), is
 * nested more than ISM_JSON_MAX_DEPTH deep or holds a lone surrogate.
 */
IsmJson *
ism_json_parse(const char *text, int len, char **error)
{
	Parser		ps;
	Expect		expect = EXPECT_VALUE;

	memset(&ps, 0, sizeof(ps));
	ps.input = text;
	ps.lex = lexer_new(text, len);
	for (ps.arena.block = ARENA_MIN_BLOCK;
		 ps.arena.block < (Size) len * 4 && ps.arena.block < ARENA_MAX_BLOCK;)
		ps.arena.block *= 2;
	ps.stack_size = INLINE_FRAMES;
	ps.stack = ps.inline_stack;

	for (;;)
	{
		JsonLexContext *lex = ps.lex;

		if (json_lex(lex) != JSON_SUCCESS)
			syntax_error(&ps, NULL);
		else
		{
			/* white space inside a container: its text is not compact */
			if (ps.depth > 0 && lex->token_start != lex->prev_token_terminator)
				ps.stack[ps.depth - 1].node->flags |= ISM_JSON_REPRINT;
			if (expect == EXPECT_END && lex->token_type == JSON_TOKEN_END)
				break;
			expect = step(&ps, expect, lex->token_type);
		}
		if (ps.error)
		{
			*error = ps.error;
			return NULL;
		}
	}
	if (ps.stack != ps.inline_stack)
		pfree(ps.stack);
	lexer_free(ps.lex);
	return ps.root;
}

/* --- reading ---------------------------------------------------------------- */

/* The member named key (exactly), NULL when there is none. */
IsmJson *
ism_json_get(const IsmJson *object, const char *key)
{
	int			len = strlen(key);
	IsmJson    *m;

	if (!ism_json_is(object, ISM_JSON_OBJECT))
		return NULL;
	ism_json_foreach(m, object)
		if (m->key_len == len && memcmp(m->key, key, len) == 0)
		return m;
	return NULL;
}

/*
 * Does name match key (ASCII) as Go's encoding/json matches a struct
 * field's name: letters in either case, and U+017F (long s) and U+212A
 * (Kelvin sign), which fold to s and k.
 */
static bool
fold_match(const char *name, int name_len, const char *key)
{
	int			i = 0;

	for (; *key; key++)
	{
		char		k = pg_ascii_tolower((unsigned char) *key);

		if (i < name_len && pg_ascii_tolower((unsigned char) name[i]) == k)
			i++;
		else if (k == 's' && i + 2 <= name_len && memcmp(name + i, "\xc5\xbf", 2) == 0)
			i += 2;
		else if (k == 'k' && i + 3 <= name_len && memcmp(name + i, "\xe2\x84\xaa", 3) == 0)
			i += 3;
		else
			return false;
	}
	return i == name_len;
}

/*
 * The member matching key as Go's encoding/json fills a struct field
 * (the writer's message and properties, as alethic-ism-state-tables reads
 * them): any case, and of several, the one whose value came last.
 */
IsmJson *
ism_json_get_fold(const IsmJson *object, const char *key)
{
	IsmJson    *found = NULL;
	IsmJson    *m;

	if (!ism_json_is(object, ISM_JSON_OBJECT))
		return NULL;
	ism_json_foreach(m, object)
		if (fold_match(m->key, m->key_len, key) && (found == NULL || m->order > found->order))
		found = m;
	return found;
}

/* A string without NUL as a C string; NULL for anything else. */
const char *
ism_json_cstring(const IsmJson *v)
{
	return ism_json_is(v, ISM_JSON_STRING) && !(v->flags & ISM_JSON_NUL) ? v->str : NULL;
}

/* A whole number (10, 1e3, 10.0) as an int, clamped to int's range. */
bool
ism_json_whole_int(const IsmJson *v, int *out)
{
	IsmNumber	n;

	return ism_json_is(v, ISM_JSON_NUMBER) && ism_number_read(v->text, v->len, &n) &&
		ism_number_whole_int(&n, out);
}

/* Python's truth of a value (NULL: absent, false). */
bool
ism_json_truthy(const IsmJson *v)
{
	IsmNumber	n;

	if (v == NULL)
		return false;
	switch (v->type)
	{
		case ISM_JSON_NULL:
		case ISM_JSON_FALSE:
			return false;
		case ISM_JSON_TRUE:
			return true;
		case ISM_JSON_NUMBER:
			return ism_number_read(v->text, v->len, &n) && !ism_number_python_zero(&n);
		case ISM_JSON_STRING:
			return v->str_len > 0;
		default:
			return v->count > 0;
	}
}

/* --- printing --------------------------------------------------------------- */

/*
 * A value's JSON text, compact: its text as sent where that is the value
 * compactly, otherwise its members' (with no white space between tokens,
 * every name once).  Every number and string is its token as sent.
 */
void
ism_json_append(StringInfo buf, const IsmJson *v)
{
	const IsmJson *m;
	bool		object;

	if (!(v->flags & ISM_JSON_REPRINT))
	{
		appendBinaryStringInfo(buf, v->text, v->len);
		return;
	}
	check_stack_depth();		/* depth is bounded by parsing; this is cheap */
	object = v->type == ISM_JSON_OBJECT;
	appendStringInfoChar(buf, object ? '{' : '[');
	ism_json_foreach(m, v)
	{
		if (m != v->child)
			appendStringInfoChar(buf, ',');
		if (object)
		{
			appendBinaryStringInfo(buf, m->key_text, m->key_text_len);
			appendStringInfoChar(buf, ':');
		}
		ism_json_append(buf, m);
	}
	appendStringInfoChar(buf, object ? '}' : ']');
}

/* A value's compact JSON text, palloc'd (see ism_json_append). */
char *
ism_json_print(const IsmJson *v)
{
	StringInfoData buf;

	initStringInfo(&buf);
	ism_json_append(&buf, v);
	return buf.data;
}

/* s as a JSON string, or null when there is none. */
void
ism_json_append_cstring_or_null(StringInfo buf, const char *s)
{
	if (s)
		ism_json_append_string(buf, s, strlen(s));
	else
		appendStringInfoString(buf, "null");
}

/* s (len bytes, any of them NUL) as a JSON string; runs of plain characters copied whole. */
void
ism_json_append_string(StringInfo buf, const char *s, int len)
{
	const unsigned char *p = (const unsigned char *) s;
	const unsigned char *end = p + len;
	const unsigned char *run = p;

	appendStringInfoChar(buf, '"');
	for (; p < end; p++)
	{
		if (*p >= 0x20 && *p != '"' && *p != '\\')
			continue;
		appendBinaryStringInfo(buf, (const char *) run, p - run);
		switch (*p)
		{
			case '"':
				appendStringInfoString(buf, "\\\"");
				break;
			case '\\':
				appendStringInfoString(buf, "\\\\");
				break;
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
			default:
				appendStringInfo(buf, "\\u%04x", *p);
		}
		run = p + 1;
	}
	appendBinaryStringInfo(buf, (const char *) run, p - run);
	appendStringInfoChar(buf, '"');
}

/* --- making --------------------------------------------------------------------- */

/* The length of s as a JSON string (see ism_json_append_string). */
static int
quoted_length(const char *s, int len)
{
	int			n = 2;

	for (int i = 0; i < len; i++)
	{
		unsigned char c = s[i];

		n += c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' ||
			c == '\r' || c == '\t' ? 2 : c < 0x20 ? 6 : 1;
	}
	return n;
}

/* s as a JSON string, in a chunk of its size (records are many). */
static char *
quoted(const char *s, int *len)
{
	StringInfoData buf;

	buf.maxlen = quoted_length(s, strlen(s)) + 1;
	buf.data = palloc(buf.maxlen);
	buf.len = 0;
	buf.cursor = 0;
	buf.data[0] = '\0';
	ism_json_append_string(&buf, s, strlen(s));
	*len = buf.len;
	return buf.data;
}

/* A string value of s (a C string), with its JSON text. */
IsmJson *
ism_json_make_string(const char *s)
{
	IsmJson    *v = palloc0(sizeof(IsmJson));

	v->type = ISM_JSON_STRING;
	v->str = pstrdup(s);
	v->str_len = strlen(s);
	v->text = quoted(s, &v->len);
	return v;
}

/* An empty object. */
IsmJson *
ism_json_make_object(void)
{
	IsmJson    *v = palloc0(sizeof(IsmJson));

	v->type = ISM_JSON_OBJECT;
	v->text = "{}";
	v->len = 2;
	return v;
}

/*
 * Give object the member key: value, in place of any it had, last: a node
 * of its own, sharing value's text and members (one value may be set in
 * many objects).  The object's text is its own no more
 * (ISM_JSON_REPRINT); the containers around it are not told, and print as
 * they were sent.
 */
void
ism_json_set(IsmJson *object, const char *key, const IsmJson *value)
{
	IsmJson   **link = &object->child;
	IsmJson    *member = palloc(sizeof(IsmJson));
	int			order = 0;

	Assert(object->type == ISM_JSON_OBJECT);
	while (*link)
	{
		IsmJson    *m = *link;

		if (m->key_len == (int) strlen(key) && memcmp(m->key, key, m->key_len) == 0)
		{
			*link = m->next;
			object->count--;
			continue;
		}
		order = Max(order, m->order + 1);
		link = &m->next;
	}
	*member = *value;
	member->key = pstrdup(key);
	member->key_len = strlen(key);
	member->key_text = quoted(key, &member->key_text_len);
	member->order = order;
	member->next = NULL;
	*link = member;
	object->count++;
	object->flags |= ISM_JSON_REPRINT | (value->flags & ISM_JSON_NUL);
}

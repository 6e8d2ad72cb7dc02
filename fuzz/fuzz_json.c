/*
 * fuzz_json.c
 *	  libFuzzer target: any bytes as a message body, through ism_state's
 *	  JSON parser (json.c), checked against PostgreSQL's own JSON parser.
 *
 *	  - What ism_state accepts, PostgreSQL accepts; what PostgreSQL accepts
 *	    and ism_state refuses is nested deeper than ISM_JSON_MAX_DEPTH or
 *	    holds a lone UTF-16 surrogate (the two refusals of its own).
 *	  - What it prints (what the router forwards, the writer stores) is
 *	    JSON, compact (no white space between tokens), printed the same
 *	    again after parsing; each of its numbers and strings is one of the
 *	    input's tokens, byte for byte (none made up, none changed).
 *	  - Where no key was given twice, the printed text is the input's
 *	    tokens, all of them, in order: the value as sent; and every string
 *	    and key decodes as PostgreSQL decodes it (where PostgreSQL can: it
 *	    refuses \u0000, which ism_state keeps).
 */
#include "postgres.h"

#include <stdlib.h>

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

#include "json.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern void shim_reset(void);

/* The input's tokens: their text and type, the strings decoded by PostgreSQL where it can. */
typedef struct Token
{
	JsonTokenType type;
	const char *text;
	int			len;
	char	   *decoded;		/* strings: PostgreSQL's decoding, or NULL */
} Token;

/* PostgreSQL's lexer over text (17 takes the context to fill: NULL, a new one) */
static JsonLexContext *
lexer(const char *text, int len, bool decode)
{
#if PG_VERSION_NUM >= 170000
	return makeJsonLexContextCstringLen(NULL, text, len, PG_UTF8, decode);
#else
	return makeJsonLexContextCstringLen((char *) text, len, PG_UTF8, decode);
#endif
}

static int
lex_all(const char *text, int len, bool decode, Token **out)
{
	JsonLexContext *lex = lexer(text, len, decode);
	Token	   *tokens = palloc(sizeof(Token) * (len + 1));
	int			n = 0;

	for (;;)
	{
		if (json_lex(lex) != JSON_SUCCESS)
			return -1;
		if (lex->token_type == JSON_TOKEN_END)
			break;
		tokens[n].type = lex->token_type;
		tokens[n].text = lex->token_start;
		tokens[n].len = lex->token_terminator - lex->token_start;
		tokens[n].decoded = decode && lex->strval ? pstrdup(lex->strval->data) : NULL;
		n++;
	}
	*out = tokens;
	return n;
}

static bool
postgres_accepts(const char *text, int len)
{
	JsonLexContext *lex = lexer(text, len, false);

	return pg_parse_json(lex, &nullSemAction) == JSON_SUCCESS;
}

/* No white space between the tokens of text. */
static bool
compact(const char *text, int len)
{
	JsonLexContext *lex = lexer(text, len, false);
	bool		first = true;

	while (json_lex(lex) == JSON_SUCCESS && lex->token_type != JSON_TOKEN_END)
	{
		if (!first && lex->token_start != lex->prev_token_terminator)
			return false;
		first = false;
	}
	return true;
}

static int
by_text(const void *a, const void *b)
{
	const Token *x = a;
	const Token *y = b;
	int			c = memcmp(x->text, y->text, Min(x->len, y->len));

	return c != 0 ? c : x->len - y->len;
}

/* Each number and string token of out is one of in's (as a multiset). */
static bool
tokens_from(Token *in, int nin, Token *out, int nout)
{
	bool	   *used = palloc0(sizeof(bool) * (nin + 1));

	qsort(in, nin, sizeof(Token), by_text);
	for (int i = 0; i < nout; i++)
	{
		Token	   *found;
		int			k;

		if (out[i].type != JSON_TOKEN_NUMBER && out[i].type != JSON_TOKEN_STRING)
			continue;
		found = bsearch(&out[i], in, nin, sizeof(Token), by_text);
		if (found == NULL)
			return false;
		/* the first unused one of equal text */
		for (k = found - in; k > 0 && by_text(&in[k - 1], &out[i]) == 0; k--)
			;
		while (k < nin && by_text(&in[k], &out[i]) == 0 && used[k])
			k++;
		if (k == nin || by_text(&in[k], &out[i]) != 0)
			return false;
		used[k] = true;
	}
	return true;
}

/* The tree's strings and keys in document order, against PostgreSQL's decoding. */
static bool
strings_as_postgres(const IsmJson *v, Token *tokens, int ntokens, int *next)
{
	const IsmJson *m;

	/* the next string token (a key or a string value) */
#define NEXT_STRING() \
	do { while (*next < ntokens && tokens[*next].type != JSON_TOKEN_STRING) (*next)++; } while (0)

	if (v->key)
	{
		NEXT_STRING();
		if (*next == ntokens || (v->key_len != (int) strlen(tokens[*next].decoded)) ||
			memcmp(v->key, tokens[*next].decoded, v->key_len) != 0)
			return false;
		(*next)++;
	}
	if (v->type == ISM_JSON_STRING)
	{
		NEXT_STRING();
		if (*next == ntokens || v->str_len != (int) strlen(tokens[*next].decoded) ||
			memcmp(v->str, tokens[*next].decoded, v->str_len) != 0 || v->str[v->str_len] != '\0')
			return false;
		(*next)++;
	}
	ism_json_foreach(m, v)
		if (!strings_as_postgres(m, tokens, ntokens, next))
		return false;
	return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *) data;
	int			len = (int) size;
	char	   *error = NULL;
	IsmJson    *root;
	bool		accepted_by_postgres;

	/* the workers check UTF-8 first (pg_verify_mbstr): so does this */
	if (pg_encoding_verifymbstr(PG_UTF8, text, len) != len)
		goto done;
	root = ism_json_parse(text, len, &error);
	accepted_by_postgres = postgres_accepts(text, len);
	if (root == NULL)
	{
		if (error == NULL || strncmp(error, "not valid JSON", 14) != 0)
			abort();			/* no reason given */
		if (accepted_by_postgres && strstr(error, "nested more than") == NULL &&
			strstr(error, "lone UTF-16 surrogate") == NULL)
			abort();			/* refused what PostgreSQL takes, for no reason of ours */
	}
	else
	{
		char	   *printed = ism_json_print(root);
		int			plen = strlen(printed);
		IsmJson    *again;
		Token	   *in_tokens;
		Token	   *out_tokens;
		int			nin;
		int			nout;

		if (!accepted_by_postgres)
			abort();			/* took what is not JSON */
		if (!postgres_accepts(printed, plen) || !compact(printed, plen))
			abort();			/* printed what is not JSON, or not compact */
		again = ism_json_parse(printed, plen, &error);
		if (again == NULL || strcmp(ism_json_print(again), printed) != 0)
			abort();			/* printing is not stable */
		nin = lex_all(text, len, false, &in_tokens);
		nout = lex_all(printed, plen, false, &out_tokens);
		if (nin < 0 || nout < 0 || nout > nin)
			abort();
		if (nout == nin)
		{
			Token	   *decoded;
			int			next = 0;

			/* nothing left out: the very tokens, in order */
			for (int i = 0; i < nin; i++)
				if (in_tokens[i].len != out_tokens[i].len ||
					memcmp(in_tokens[i].text, out_tokens[i].text, in_tokens[i].len) != 0)
					abort();
			if (lex_all(text, len, true, &decoded) == nin &&
				!strings_as_postgres(root, decoded, nin, &next))
				abort();		/* a string decoded otherwise than PostgreSQL does */
		}
		if (!tokens_from(in_tokens, nin, out_tokens, nout))
			abort();			/* a number or string that was not sent */
	}
done:
	shim_reset();				/* as a message's memory context is */
	return 0;
}

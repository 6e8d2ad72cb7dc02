/*-------------------------------------------------------------------------
 *
 * partition.c
 *	  The partition key of an outbound message (reference §5.2).
 *
 * Modes PROJECT_ID (the default), USER_ID, ROUTE_ID and EXPRESSION, named
 * in any case.  Upstream evaluates EXPRESSION as sandboxed Python; ism_state
 * evaluates a safe subset and, like upstream on any error, falls back to
 * the project id:
 *
 *   expr   := term ('+' term)*
 *   term   := 'string' | "string" | number | route_id | str '(' expr ')'
 *           | (data | context) access*
 *   access := '[' string ']' | '.get(' string [',' expr] ')'
 *
 * '+' joins two strings or adds two numbers.  A truthy result gives
 * "<project_id>.<result>", a falsy one the project id.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <math.h>

#include <cjson/cJSON.h>

#include "common/shortest_dec.h"
#include "lib/stringinfo.h"

#include "partition.h"
#include "json.h"

typedef struct Value
{
	enum
	{
		V_NULL, V_BOOL, V_NUMBER, V_STRING, V_JSON
	}			kind;
	bool		boolean;
	double		number;
	const char *text;			/* V_STRING, V_JSON */
	const cJSON *json;			/* where it came from, for further access */
} Value;

/* Expressions come from processor properties: no deeper than this. */
#define MAX_EXPRESSION_DEPTH 32

typedef struct Parser
{
	const char *p;
	const cJSON *data;
	const cJSON *context;
	const char *route_id;
	bool		failed;
	int			depth;
} Parser;

static Value parse_expr(Parser *ps);

static void
skip_space(Parser *ps)
{
	while (isspace((unsigned char) *ps->p))
		ps->p++;
}

static bool
accept(Parser *ps, const char *token)
{
	size_t		len = strlen(token);

	skip_space(ps);
	if (strncmp(ps->p, token, len) != 0)
		return false;
	ps->p += len;
	return true;
}

static Value
failure(Parser *ps)
{
	Value		v = {0};

	ps->failed = true;
	return v;
}

/* A Python-style string literal, '…' or "…", with backslash escapes. */
static bool
parse_string(Parser *ps, char **out)
{
	StringInfoData buf;
	char		quote;

	skip_space(ps);
	quote = *ps->p;
	if (quote != '\'' && quote != '"')
		return false;
	initStringInfo(&buf);
	for (ps->p++; *ps->p && *ps->p != quote; ps->p++)
	{
		if (*ps->p == '\\' && ps->p[1])
			ps->p++;
		appendStringInfoChar(&buf, *ps->p);
	}
	if (*ps->p != quote)
		return false;
	ps->p++;
	*out = buf.data;
	return true;
}

static Value
from_json(const cJSON *item)
{
	Value		v = {0};

	v.json = item;
	if (item == NULL || cJSON_IsNull(item))
		v.kind = V_NULL;
	else if (cJSON_IsBool(item))
	{
		v.kind = V_BOOL;
		v.boolean = cJSON_IsTrue(item);
	}
	else if (cJSON_IsNumber(item))
	{
		v.kind = V_NUMBER;
		v.number = item->valuedouble;
	}
	else if (cJSON_IsString(item))
	{
		v.kind = V_STRING;
		v.text = item->valuestring;
	}
	else
	{
		char	   *printed = ism_json_print(item);

		v.kind = V_JSON;
		v.text = printed ? printed : "";
	}
	return v;
}

/* Python's str() of a value, near enough. */
static char *
value_to_text(const Value *v)
{
	switch (v->kind)
	{
		case V_NULL:
			return pstrdup("None");
		case V_BOOL:
			return pstrdup(v->boolean ? "True" : "False");
		case V_NUMBER:
			/* a whole number in int64's range as one (found by fuzzing: the cast was undefined beyond it) */
			if (floor(v->number) == v->number && fabs(v->number) < 9.2e18)
				return psprintf(INT64_FORMAT, (int64) v->number);
			else
			{
				char		text[DOUBLE_SHORTEST_DECIMAL_LEN];

				double_to_shortest_decimal_buf(v->number, text);	/* as Python's repr */
				return pstrdup(text);
			}
		default:
			return pstrdup(v->text);
	}
}

static bool
truthy(const Value *v)
{
	switch (v->kind)
	{
		case V_NULL:
			return false;
		case V_BOOL:
			return v->boolean;
		case V_NUMBER:
			return v->number != 0;
		case V_STRING:
			return v->text[0] != '\0';
		case V_JSON:
			return cJSON_GetArraySize(v->json) > 0;
	}
	return false;
}

/* data[...] / data.get(...) chains on a JSON value */
static Value
parse_access(Parser *ps, Value base)
{
	for (;;)
	{
		char	   *key;

		if (accept(ps, "["))
		{
			if (!parse_string(ps, &key) || !accept(ps, "]") ||
				!cJSON_IsObject(base.json))
				return failure(ps);
			/* a missing key is a KeyError upstream */
			if (!cJSON_HasObjectItem(base.json, key))
				return failure(ps);
			base = from_json(cJSON_GetObjectItemCaseSensitive(base.json, key));
		}
		else if (accept(ps, ".get("))
		{
			Value		fallback = {0};

			if (!parse_string(ps, &key))
				return failure(ps);
			if (accept(ps, ","))
				fallback = parse_expr(ps);
			if (ps->failed || !accept(ps, ")") || !cJSON_IsObject(base.json))
				return failure(ps);
			base = cJSON_HasObjectItem(base.json, key) ?
				from_json(cJSON_GetObjectItemCaseSensitive(base.json, key)) : fallback;
		}
		else
			return base;
	}
}

static Value
parse_term(Parser *ps)
{
	Value		v = {0};
	char	   *s;

	skip_space(ps);
	if (parse_string(ps, &s))
	{
		v.kind = V_STRING;
		v.text = s;
		return v;
	}
	if (isdigit((unsigned char) *ps->p) || *ps->p == '-')
	{
		char	   *end;

		v.kind = V_NUMBER;
		v.number = strtod(ps->p, &end);
		if (end == ps->p)
			return failure(ps);
		ps->p = end;
		return v;
	}
	if (accept(ps, "str("))
	{
		v = parse_expr(ps);
		if (ps->failed || !accept(ps, ")"))
			return failure(ps);
		v.text = value_to_text(&v);
		v.kind = V_STRING;
		return v;
	}
	if (accept(ps, "route_id"))
	{
		v.kind = ps->route_id ? V_STRING : V_NULL;
		v.text = ps->route_id;
		return v;
	}
	if (accept(ps, "data"))
		return parse_access(ps, from_json(ps->data));
	if (accept(ps, "context"))
		return parse_access(ps, from_json(ps->context));
	return failure(ps);
}

static Value
parse_expr(Parser *ps)
{
	Value		left;

	if (++ps->depth > MAX_EXPRESSION_DEPTH)
		return failure(ps);
	left = parse_term(ps);

	while (!ps->failed && accept(ps, "+"))
	{
		Value		right = parse_term(ps);

		if (ps->failed)
			break;
		if (left.kind == V_STRING && right.kind == V_STRING)
			left.text = psprintf("%s%s", left.text, right.text);
		else if (left.kind == V_NUMBER && right.kind == V_NUMBER)
			left.number += right.number;
		else
			return failure(ps);
	}
	ps->depth--;
	return left;
}

/*
 * Evaluate expression; false when it is outside the subset or fails, as
 * a Python error would.
 */
static bool
evaluate(const char *expression, const cJSON *data, const cJSON *context,
		 const char *route_id, Value *result)
{
	Parser		ps = {expression, data, context, route_id, false, 0};

	*result = parse_expr(&ps);
	skip_space(&ps);
	return !ps.failed && *ps.p == '\0';
}

/*
 * A project id that may be missing, as Python's str() prints it: the
 * platform's catalog does not promise processor.project_id.
 */
static const char *
python_str(const char *project_id)
{
	return project_id ? project_id : "None";
}

/* The project id as the key itself: none (a falsy key) when it is missing. */
static char *
project_key(const char *project_id)
{
	return project_id ? pstrdup(project_id) : NULL;
}

/*
 * The partition key, NULL when there is none.  data is the first entry
 * (NULL when there is none); context the inbound context (NULL when
 * absent); project_id and route_id may be NULL.
 */
char *
ism_partition_key(const char *mode, const char *expression,
				  const char *project_id, const char *route_id,
				  const cJSON *context, const cJSON *data)
{
	if (mode == NULL || pg_strcasecmp(mode, "PROJECT_ID") == 0)
		return project_key(project_id);

	if (pg_strcasecmp(mode, "USER_ID") == 0)
	{
		Value		user;

		/* upstream: str(context.get("user_id", project_id)) on a non-empty context */
		if (!cJSON_IsObject(context) || cJSON_GetArraySize(context) == 0)
			return project_key(project_id);
		if (!cJSON_HasObjectItem(context, "user_id"))
			return pstrdup(python_str(project_id));
		user = from_json(cJSON_GetObjectItemCaseSensitive(context, "user_id"));
		return value_to_text(&user);
	}

	if (pg_strcasecmp(mode, "ROUTE_ID") == 0)
		return route_id ? pstrdup(route_id) : project_key(project_id);

	if (pg_strcasecmp(mode, "EXPRESSION") == 0 && expression && expression[0])
	{
		Value		result;

		/* upstream evaluates with "context or {}" */
		if (context == NULL || cJSON_IsNull(context))
			context = cJSON_CreateObject();
		if (!evaluate(expression, data, context, route_id, &result))
		{
			elog(DEBUG1, "ism_state: concurrencyExpression \"%s\" is outside the supported subset or failed; using the project id",
				 expression);
			return project_key(project_id);
		}
		if (truthy(&result))
			return psprintf("%s.%s", python_str(project_id), value_to_text(&result));
	}
	return project_key(project_id);
}

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
 * Numbers are what Python makes of them (json.loads, then str():
 * alethic-ism-state-router main.py, _get_partition_key, returns
 * str(context.get('user_id', ...)) and f"{project_id}.{result}"): a JSON
 * integer is a Python int, exact whatever its size (9007199254740993 stays
 * 9007199254740993; int + int is exact too); any other number is a float,
 * printed as Python's repr prints it (1.0, 1e+16, 1.5e-07).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <math.h>

#include "lib/stringinfo.h"

#include "partition.h"
#include "json_number.h"

typedef struct Value
{
	enum
	{
		V_NULL, V_BOOL, V_INT, V_FLOAT, V_STRING, V_JSON
	}			kind;
	bool		boolean;
	double		number;			/* V_FLOAT */
	const char *text;			/* V_INT (decimal, "-" for negative), V_STRING, V_JSON */
	const IsmJson *json;		/* where it came from, for further access */
} Value;

/* Expressions come from processor properties: no deeper than this. */
#define MAX_EXPRESSION_DEPTH 32

typedef struct Parser
{
	const char *p;
	const IsmJson *data;
	const IsmJson *context;
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

/* A Python int's decimal text from a JSON integer literal (no "-0"). */
static const char *
python_int_text(const IsmNumber *n, const char *literal)
{
	return n->zero ? "0" : literal;
}

/* A JSON value as the Python value json.loads makes of it; false for a string holding NUL. */
static bool
from_json(const IsmJson *item, Value *v)
{
	IsmNumber	n;

	memset(v, 0, sizeof(*v));
	v->json = item;
	if (item == NULL || item->type == ISM_JSON_NULL)
		v->kind = V_NULL;
	else if (item->type == ISM_JSON_TRUE || item->type == ISM_JSON_FALSE)
	{
		v->kind = V_BOOL;
		v->boolean = item->type == ISM_JSON_TRUE;
	}
	else if (item->type == ISM_JSON_NUMBER)
	{
		if (!ism_number_read(item->text, item->len, &n))
			return false;
		if (n.integer)
		{
			v->kind = V_INT;
			v->text = python_int_text(&n, pnstrdup(item->text, item->len));
		}
		else
		{
			v->kind = V_FLOAT;
			v->number = ism_number_to_double(&n);
		}
	}
	else if (item->type == ISM_JSON_STRING)
	{
		/* not cut at a NUL: such a key is no key (the project id is used) */
		if (item->flags & ISM_JSON_NUL)
			return false;
		v->kind = V_STRING;
		v->text = item->str;
	}
	else
	{
		v->kind = V_JSON;
		v->text = ism_json_print(item);
	}
	return true;
}

static void
append_zeros(StringInfo buf, int n)
{
	for (int i = 0; i < n; i++)
		appendStringInfoChar(buf, '0');
}

/*
 * The decimal p digits long after the one in buf ("-d.ddde+XX", as %e
 * prints it): its last digit one up, carried.
 */
static void
next_decimal_up(char *buf, int p)
{
	char	   *e = strchr(buf, 'e');
	char	   *d;
	char		sign = buf[0] == '-' ? '-' : 0;
	int			exponent = atoi(e + 1);

	for (d = e - 1; d >= buf; d--)
	{
		if (*d == '.')
			continue;
		if (*d == '-')
			break;
		if (*d != '9')
		{
			(*d)++;
			return;
		}
		*d = '0';
	}
	/* 9.99 up is 10.0: one digit more before the point, so 1.00 and the exponent up */
	snprintf(buf, 64, "%s1%s%.*se%d", sign ? "-" : "", p > 1 ? "." : "", p - 1,
			 "0000000000000000", exponent + 1);
}

/*
 * The fewest digits that read back as d, as Python's repr() finds them
 * (David Gay's shortest, which takes a decimal on the edge of d's
 * interval when d's mantissa is even; PostgreSQL's Ryu does not, and
 * prints 2.1289925910560488e+16 where Python prints
 * 2.128992591056049e+16): for p = 1, 2, ... the p-digit decimal nearest
 * d, or the one above it (a power of two's interval is narrower below),
 * the first that strtod reads back as d.  Into buf as %e prints it.
 */
static void
python_shortest(double d, char *buf)
{
	for (int p = 1; p <= 17; p++)
	{
		snprintf(buf, 64, "%.*e", p - 1, d);
		if (strtod(buf, NULL) == d)
			return;
		next_decimal_up(buf, p);
		if (strtod(buf, NULL) == d)
			return;
	}
	snprintf(buf, 64, "%.16e", d);
}

/*
 * A float as Python's repr() prints it: its shortest digits (above), in
 * fixed notation from 1e-4 up to 1e16 (with ".0" when whole), in exponent
 * notation beyond (1e+16, 1e-05).
 */
static char *
python_float_text(double d)
{
	char		shortest[64];
	char		digits[64];
	IsmNumber	n;
	StringInfoData out;
	int			point;

	if (isnan(d))
		return pstrdup("nan");
	if (isinf(d))
		return pstrdup(d < 0 ? "-inf" : "inf");
	python_shortest(d, shortest);
	if (!ism_number_read(shortest, strlen(shortest), &n))
		return pstrdup(shortest);	/* not reached: %e prints JSON numbers */
	if (n.zero)
		return pstrdup(signbit(d) ? "-0.0" : "0.0");
	ism_number_digits(&n, digits);
	point = (int) n.point;
	initStringInfo(&out);
	if (n.negative)
		appendStringInfoChar(&out, '-');
	if (point <= -4 || point > 16)
	{
		appendStringInfoChar(&out, digits[0]);
		if (n.nsig > 1)
			appendStringInfo(&out, ".%s", digits + 1);
		appendStringInfo(&out, "e%c%02d", point - 1 < 0 ? '-' : '+', abs(point - 1));
	}
	else if (point <= 0)
	{
		appendStringInfoString(&out, "0.");
		append_zeros(&out, -point);
		appendStringInfoString(&out, digits);
	}
	else if (point >= n.nsig)
	{
		appendStringInfoString(&out, digits);
		append_zeros(&out, point - n.nsig);
		appendStringInfoString(&out, ".0");
	}
	else
		appendStringInfo(&out, "%.*s.%s", point, digits, digits + point);
	return out.data;
}

/* Python's str() of a value, near enough (containers as JSON). */
static char *
value_to_text(const Value *v)
{
	switch (v->kind)
	{
		case V_NULL:
			return pstrdup("None");
		case V_BOOL:
			return pstrdup(v->boolean ? "True" : "False");
		case V_FLOAT:
			return python_float_text(v->number);
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
		case V_INT:
			return strcmp(v->text, "0") != 0;
		case V_FLOAT:
			return v->number != 0;
		case V_STRING:
			return v->text[0] != '\0';
		case V_JSON:
			return v->json->count > 0;
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

		IsmJson    *item;

		if (accept(ps, "["))
		{
			if (!parse_string(ps, &key) || !accept(ps, "]") ||
				!ism_json_is(base.json, ISM_JSON_OBJECT))
				return failure(ps);
			/* a missing key is a KeyError upstream */
			if ((item = ism_json_get(base.json, key)) == NULL || !from_json(item, &base))
				return failure(ps);
		}
		else if (accept(ps, ".get("))
		{
			Value		fallback = {0};

			if (!parse_string(ps, &key))
				return failure(ps);
			if (accept(ps, ","))
				fallback = parse_expr(ps);
			if (ps->failed || !accept(ps, ")") || !ism_json_is(base.json, ISM_JSON_OBJECT))
				return failure(ps);
			if ((item = ism_json_get(base.json, key)) == NULL)
				base = fallback;
			else if (!from_json(item, &base))
				return failure(ps);
		}
		else
			return base;
	}
}

/* A number literal, as Python reads it: an int (exact) or a float. */
static Value
parse_number(Parser *ps)
{
	const char *start = ps->p;
	const char *p = start;
	IsmNumber	n;
	Value		v = {0};

	if (*p == '-')
		p++;
	while (isdigit((unsigned char) *p) || *p == '.' || *p == 'e' || *p == 'E' ||
		   ((*p == '+' || *p == '-') && (p[-1] == 'e' || p[-1] == 'E')))
		p++;
	if (!ism_number_read(start, p - start, &n))
		return failure(ps);
	ps->p = p;
	if (n.integer)
	{
		v.kind = V_INT;
		v.text = python_int_text(&n, pnstrdup(start, p - start));
	}
	else
	{
		v.kind = V_FLOAT;
		v.number = ism_number_to_double(&n);
	}
	return v;
}

static Value
parse_term(Parser *ps)
{
	Value		v = {0};
	char	   *s;
	const IsmJson *root;

	skip_space(ps);
	if (parse_string(ps, &s))
	{
		v.kind = V_STRING;
		v.text = s;
		return v;
	}
	if (isdigit((unsigned char) *ps->p) || *ps->p == '-')
		return parse_number(ps);
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
		root = ps->data;
	else if (accept(ps, "context"))
		root = ps->context;
	else
		return failure(ps);
	if (!from_json(root, &v))
		return failure(ps);
	return parse_access(ps, v);
}

/* |a| + |b| or |a| - |b| (|a| >= |b|), digits without sign, into a new string. */
static char *
add_magnitudes(const char *a, int alen, const char *b, int blen, bool subtract)
{
	char	   *out = palloc(alen + 2);
	int			carry = 0;
	int			o = alen + 1;
	int			start;

	out[o] = '\0';
	for (int i = alen - 1, j = blen - 1; i >= 0; i--, j--)
	{
		int			d = (a[i] - '0') + (subtract ? -carry : carry);
		int			e = j >= 0 ? b[j] - '0' : 0;

		d = subtract ? d - e : d + e;
		carry = subtract ? d < 0 : d > 9;
		out[--o] = '0' + (subtract ? (d + 10) % 10 : d % 10);
	}
	out[--o] = carry && !subtract ? '1' : '0';
	for (start = o; out[start] == '0' && out[start + 1] != '\0'; start++)
		;
	return out + start;
}

/* The sum of two decimal integers ("-" for negative), exact, as a Python int. */
static char *
add_integers(const char *a, const char *b)
{
	bool		aneg = *a == '-';
	bool		bneg = *b == '-';
	const char *am = a + aneg;
	const char *bm = b + bneg;
	int			alen = strlen(am);
	int			blen = strlen(bm);
	bool		a_larger = alen != blen ? alen > blen : strcmp(am, bm) >= 0;
	char	   *sum;
	bool		negative;

	if (aneg == bneg)
	{
		sum = a_larger ? add_magnitudes(am, alen, bm, blen, false) :
			add_magnitudes(bm, blen, am, alen, false);
		negative = aneg;
	}
	else
	{
		sum = a_larger ? add_magnitudes(am, alen, bm, blen, true) :
			add_magnitudes(bm, blen, am, alen, true);
		negative = a_larger ? aneg : bneg;
	}
	return negative && strcmp(sum, "0") != 0 ? psprintf("-%s", sum) : sum;
}

/* A bool as the int it is in Python; false for what is no number. */
static bool
as_number(Value *v)
{
	if (v->kind == V_BOOL)
	{
		v->kind = V_INT;
		v->text = v->boolean ? "1" : "0";
	}
	return v->kind == V_INT || v->kind == V_FLOAT;
}

/* An int as a float, as Python's float(int) makes it (false: too large). */
static bool
int_as_float(Value *v)
{
	IsmNumber	n;

	if (v->kind == V_FLOAT)
		return true;
	if (!ism_number_read(v->text, strlen(v->text), &n))
		return false;
	v->kind = V_FLOAT;
	v->number = ism_number_to_double(&n);
	return isfinite(v->number);	/* Python: OverflowError */
}

/*
 * left + right, as Python adds them: two ints exactly (digit by digit,
 * any size), a float with anything as floats.  false when either is no
 * number.
 */
static bool
add_numbers(Value *left, Value *right)
{
	if (!as_number(left) || !as_number(right))
		return false;
	if (left->kind == V_INT && right->kind == V_INT)
	{
		left->text = add_integers(left->text, right->text);
		return true;
	}
	if (!int_as_float(left) || !int_as_float(right))
		return false;
	left->number += right->number;
	return true;
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
		else if (!add_numbers(&left, &right))
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
evaluate(const char *expression, const IsmJson *data, const IsmJson *context,
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
				  const IsmJson *context, const IsmJson *data)
{
	if (mode == NULL || pg_strcasecmp(mode, "PROJECT_ID") == 0)
		return project_key(project_id);

	if (pg_strcasecmp(mode, "USER_ID") == 0)
	{
		Value		user;

		/* upstream: str(context.get("user_id", project_id)) on a non-empty context */
		if (!ism_json_is(context, ISM_JSON_OBJECT) || context->count == 0)
			return project_key(project_id);
		if (ism_json_get(context, "user_id") == NULL)
			return pstrdup(python_str(project_id));
		if (!from_json(ism_json_get(context, "user_id"), &user))
			return project_key(project_id);
		return value_to_text(&user);
	}

	if (pg_strcasecmp(mode, "ROUTE_ID") == 0)
		return route_id ? pstrdup(route_id) : project_key(project_id);

	if (pg_strcasecmp(mode, "EXPRESSION") == 0 && expression && expression[0])
	{
		Value		result;

		/* upstream evaluates with "context or {}" */
		if (context == NULL || context->type == ISM_JSON_NULL)
			context = ism_json_make_object();
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

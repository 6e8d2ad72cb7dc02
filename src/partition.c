/*-------------------------------------------------------------------------
 *
 * partition.c
 *	  The partition key of an outbound message (alethic-ism-state-router
 *	  main.py, _get_partition_key).
 *
 * Modes as the platform's UI writes them (alethic-ism-ui,
 * src/tabs/property/processor/ProcessorBaseConfig.jsx: "project-id",
 * "user-id", "route-id", "expression") or as ismcore's ConcurrencyMode
 * names them (PROJECT_ID, ...), in any case.  Upstream evaluates EXPRESSION
 * as sandboxed Python (ismcore utils/evaluate.py, safer_evaluate);
 * ism_state evaluates a safe subset and, like upstream on any error
 * (alethic-ism-state-router main.py, _get_partition_key), falls back to
 * the project id, saying why:
 *
 *   or     := and ('or' and)*
 *   and    := not ('and' not)*
 *   not    := 'not' not | sum
 *   sum    := term ('+' term)*
 *   term   := 'string' | "string" | number | True | False | None | route_id
 *           | '(' or ')' | str '(' or ')' | (data | context) access*
 *   access := '[' string ']' | '.get(' string [',' or] ')'
 *
 * As in Python, `a or b` is a when a is truthy, else b; `a and b` is a
 * when a is falsy, else b; the operand that does not decide is parsed but
 * not evaluated (a missing key there is no error).  '+' joins two strings
 * or adds two numbers.  A truthy result gives "<project_id>.<result>", a
 * falsy one the project id.
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

/*
 * Expressions come from processor properties: no longer, nor nested
 * deeper, than this; a string they make (a partition key, a NATS subject
 * token) no longer than that.
 */
#define MAX_EXPRESSION_LENGTH	4096
#define MAX_EXPRESSION_DEPTH	32
#define MAX_STRING_LENGTH		(64 * 1024)

typedef struct Parser
{
	const char *p;
	const char *expression;
	const IsmJson *data;
	const IsmJson *context;
	const char *route_id;
	bool		failed;
	const char *why;			/* when failed: outside the subset, or the error */
	int			depth;
	int			skipping;		/* > 0: in an operand that does not decide (parsed only) */
} Parser;

static Value parse_or(Parser *ps);

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

static bool
is_name_char(char c)
{
	return isalnum((unsigned char) c) || c == '_';
}

/* A keyword or name: the word, not the start of a longer one. */
static bool
accept_word(Parser *ps, const char *word)
{
	size_t		len = strlen(word);

	skip_space(ps);
	if (strncmp(ps->p, word, len) != 0 || is_name_char(ps->p[len]))
		return false;
	ps->p += len;
	return true;
}

/* What the subset does not parse: upstream may, ism_state falls back. */
static Value
outside(Parser *ps)
{
	Value		v = {0};

	if (!ps->failed)
		ps->why = psprintf("is outside the supported subset (at offset %d)",
						   (int) (ps->p - ps->expression));
	ps->failed = true;
	return v;
}

/*
 * What Python raises while evaluating (a KeyError, a TypeError...): no
 * error in an operand that does not decide, which Python never evaluates.
 */
static Value
python_error(Parser *ps, const char *what)
{
	Value		v = {0};

	if (ps->skipping)
		return v;
	if (!ps->failed)
		ps->why = psprintf("failed: %s", what);
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

/* The name of a value's Python type, for errors. */
static const char *
python_type(const Value *v)
{
	switch (v->kind)
	{
		case V_NULL:
			return "NoneType";
		case V_BOOL:
			return "bool";
		case V_INT:
			return "int";
		case V_FLOAT:
			return "float";
		case V_STRING:
			return "str";
		case V_JSON:
			return v->json->type == ISM_JSON_ARRAY ? "list" : "dict";
	}
	return "object";
}

/* A JSON value as a Python value, for the evaluation (see from_json). */
static Value
json_value(Parser *ps, const IsmJson *item)
{
	Value		v;

	if (!from_json(item, &v))
		return python_error(ps, "a string holding \\u0000 (no subject can carry it)");
	return v;
}

/* base[key]: a KeyError or TypeError upstream unless base is a dict holding key */
static Value
subscript(Parser *ps, Value base, const char *key)
{
	IsmJson    *item;

	if (!ism_json_is(base.json, ISM_JSON_OBJECT))
		return python_error(ps, psprintf("TypeError: a key of a '%s'", python_type(&base)));
	if ((item = ism_json_get(base.json, key)) == NULL)
		return python_error(ps, psprintf("KeyError: '%s'", key));
	return json_value(ps, item);
}

/* base.get(key, fallback): an AttributeError upstream unless base is a dict */
static Value
get(Parser *ps, Value base, const char *key, Value fallback)
{
	IsmJson    *item;

	if (!ism_json_is(base.json, ISM_JSON_OBJECT))
		return python_error(ps, psprintf("AttributeError: '%s' object has no attribute 'get'",
										 python_type(&base)));
	if ((item = ism_json_get(base.json, key)) == NULL)
		return fallback;
	return json_value(ps, item);
}

/* data[...] / data.get(...) chains on a JSON value */
static Value
parse_access(Parser *ps, Value base)
{
	while (!ps->failed)
	{
		char	   *key;

		if (accept(ps, "["))
		{
			if (!parse_string(ps, &key) || !accept(ps, "]"))
				return outside(ps);
			if (!ps->skipping)
				base = subscript(ps, base, key);
		}
		else if (accept(ps, "."))
		{
			Value		fallback = {0};

			/* no other attribute */
			if (!accept_word(ps, "get") || !accept(ps, "(") || !parse_string(ps, &key))
				return outside(ps);
			/* Python evaluates the default whatever the key */
			if (accept(ps, ","))
				fallback = parse_or(ps);
			if (ps->failed || !accept(ps, ")"))
				return outside(ps);
			if (!ps->skipping)
				base = get(ps, base, key, fallback);
		}
		else
			return base;
	}
	return base;
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
		return outside(ps);
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
bool_value(bool b)
{
	Value		v = {0};

	v.kind = V_BOOL;
	v.boolean = b;
	return v;
}

/* ( or ), with the parenthesis before it taken */
static Value
parse_parenthesised(Parser *ps)
{
	Value		v = parse_or(ps);

	if (!ps->failed && !accept(ps, ")"))
		return outside(ps);
	return v;
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
		return parse_number(ps);
	if (accept(ps, "("))
		return parse_parenthesised(ps);
	if (accept_word(ps, "str") && accept(ps, "("))
	{
		v = parse_parenthesised(ps);
		v.text = value_to_text(&v);
		v.kind = V_STRING;
		return v;
	}
	if (accept_word(ps, "True"))
		return bool_value(true);
	if (accept_word(ps, "False"))
		return bool_value(false);
	if (accept_word(ps, "None"))
		return v;
	if (accept_word(ps, "route_id"))
	{
		v.kind = ps->route_id ? V_STRING : V_NULL;
		v.text = ps->route_id;
		return v;
	}
	if (accept_word(ps, "data"))
		return parse_access(ps, json_value(ps, ps->data));
	if (accept_word(ps, "context"))
		return parse_access(ps, json_value(ps, ps->context));
	return outside(ps);
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

/* left + right, as Python adds them: two strings joined, two numbers added */
static Value
add(Parser *ps, Value left, Value right)
{
	const char *left_type = python_type(&left);
	const char *right_type = python_type(&right);

	if (left.kind == V_STRING && right.kind == V_STRING)
	{
		if (strlen(left.text) + strlen(right.text) > MAX_STRING_LENGTH)
			return python_error(ps, "a string longer than ism_state makes a partition key");
		left.text = psprintf("%s%s", left.text, right.text);
		return left;
	}
	if (!add_numbers(&left, &right))
		return python_error(ps, psprintf("unsupported operand type(s) for +: '%s' and '%s' (or an int too large for a float)",
										 left_type, right_type));
	return left;
}

static Value
parse_sum(Parser *ps)
{
	Value		left = parse_term(ps);

	while (!ps->failed && accept(ps, "+"))
	{
		Value		right = parse_term(ps);

		if (!ps->failed && !ps->skipping)
			left = add(ps, left, right);
	}
	return left;
}

/* One level deeper (parentheses, str(), a default, not): beyond the limit? */
static bool
too_deep(Parser *ps)
{
	return ++ps->depth > MAX_EXPRESSION_DEPTH;
}

static Value
parse_not(Parser *ps)
{
	Value		v;

	if (!accept_word(ps, "not"))
		return parse_sum(ps);
	if (too_deep(ps))
		return outside(ps);
	v = parse_not(ps);
	ps->depth--;
	return bool_value(!truthy(&v));
}

/*
 * left `and` right (and_operator) or left `or` right: right is evaluated
 * unless left decides (falsy for and, truthy for or); the result is the
 * operand that decided.
 */
static Value
parse_operands(Parser *ps, const char *op, Value (*operand) (Parser *))
{
	bool		and_operator = strcmp(op, "and") == 0;
	Value		left = operand(ps);

	while (!ps->failed && accept_word(ps, op))
	{
		bool		decided = !ps->skipping && truthy(&left) != and_operator;
		Value		right;

		ps->skipping += decided;
		right = operand(ps);
		ps->skipping -= decided;
		if (!decided)
			left = right;
	}
	return left;
}

static Value
parse_and(Parser *ps)
{
	return parse_operands(ps, "and", parse_not);
}

static Value
parse_or(Parser *ps)
{
	Value		v;

	if (too_deep(ps))
		return outside(ps);
	v = parse_operands(ps, "or", parse_and);
	ps->depth--;
	return v;
}

/*
 * Evaluate expression; false, with why, when it is outside the subset or
 * fails, as a Python error would.
 */
static bool
evaluate(const char *expression, const IsmJson *data, const IsmJson *context,
		 const char *route_id, Value *result, const char **why)
{
	Parser		ps = {expression, expression, data, context, route_id, false, NULL, 0, 0};

	if (strlen(expression) > MAX_EXPRESSION_LENGTH)
	{
		*why = psprintf("is longer than the %d bytes ism_state evaluates", MAX_EXPRESSION_LENGTH);
		return false;
	}
	*result = parse_or(&ps);
	skip_space(&ps);
	if (!ps.failed && *ps.p != '\0')
		outside(&ps);
	*why = ps.why;
	return !ps.failed;
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

/* The mode a concurrencyMode names; false for none of ISM_PARTITION_MODES. */
bool
ism_partition_mode(const char *name, IsmPartitionMode *mode)
{
	static const struct
	{
		const char *ui;
		const char *enum_name;
		IsmPartitionMode mode;
	}			modes[] = {
		{"project-id", "PROJECT_ID", ISM_PARTITION_PROJECT_ID},
		{"user-id", "USER_ID", ISM_PARTITION_USER_ID},
		{"route-id", "ROUTE_ID", ISM_PARTITION_ROUTE_ID},
		{"expression", "EXPRESSION", ISM_PARTITION_EXPRESSION},
	};

	for (size_t i = 0; i < lengthof(modes); i++)
		if (pg_strcasecmp(name, modes[i].ui) == 0 || pg_strcasecmp(name, modes[i].enum_name) == 0)
		{
			*mode = modes[i].mode;
			return true;
		}
	return false;
}

/* upstream: str(context.get("user_id", project_id)) on a truthy context */
static char *
user_key(const char *project_id, const IsmJson *context)
{
	Value		user;

	if (!ism_json_is(context, ISM_JSON_OBJECT) || context->count == 0)
		return project_key(project_id);
	if (ism_json_get(context, "user_id") == NULL)
		return pstrdup(python_str(project_id));
	if (!from_json(ism_json_get(context, "user_id"), &user))
		return project_key(project_id);
	return value_to_text(&user);
}

/*
 * The partition key, NULL when there is none.  data is what upstream
 * evaluates as data: the first entry, or the entries themselves when
 * there is none, NULL for None; context the inbound context (NULL when
 * absent); project_id and route_id may be NULL.  *fallback is NULL, or
 * why the expression gave the project id instead.
 */
char *
ism_partition_key(IsmPartitionMode mode, const char *expression,
				  const char *project_id, const char *route_id,
				  const IsmJson *context, const IsmJson *data,
				  const char **fallback)
{
	Value		result;

	*fallback = NULL;
	switch (mode)
	{
		case ISM_PARTITION_PROJECT_ID:
			break;
		case ISM_PARTITION_USER_ID:
			return user_key(project_id, context);
		case ISM_PARTITION_ROUTE_ID:
			return route_id ? pstrdup(route_id) : project_key(project_id);
		case ISM_PARTITION_EXPRESSION:
			if (expression == NULL || expression[0] == '\0')
				break;
			/* upstream evaluates with "context or {}" */
			if (!ism_json_truthy(context))
				context = ism_json_make_object();
			if (!evaluate(expression, data, context, route_id, &result, fallback))
				break;
			if (truthy(&result))
				return psprintf("%s.%s", python_str(project_id), value_to_text(&result));
			break;
	}
	return project_key(project_id);
}

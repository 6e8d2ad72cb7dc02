/*-------------------------------------------------------------------------
 *
 * json_number.c
 *	  JSON numbers as decimal text.
 *
 * A number travels through ism_state as the literal it was sent as: the
 * router forwards it, the writer stores it, as those characters.  What
 * the code needs to know about its value -- whether bigint, double
 * precision or numeric holds it exactly, whether it is a whole number --
 * is read from its digits here, never from a double it was rounded to.
 * Only where the platform itself computes with a Python float (partition
 * keys, truthiness) is one made, as Python's float() makes it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "common/shortest_dec.h"

#include "json_number.h"

/* far beyond any exponent that matters, and safe to add digits to */
#define EXPONENT_CAP		INT64CONST(1000000000000000)

/* numeric's limits (PostgreSQL's numeric.c): digits before and after the point */
#define NUMERIC_MAX_INT_DIGITS	131072
#define NUMERIC_MAX_SCALE		16383

/* the most significant digits a double's shortest decimal has */
#define DOUBLE_MAX_DIGITS	17

/* enough digits for strtod to round any literal as the whole literal would round */
#define ROUNDING_DIGITS		800

/* The k-th digit of n's mantissa, the '.' skipped. */
static char
digit(const IsmNumber *n, int k)
{
	return n->mantissa[k < n->int_digits ? k : k + 1];
}

/* [0-9]* from *p, returning how many. */
static int
skip_digits(const char **p, const char *end)
{
	const char *start = *p;

	while (*p < end && **p >= '0' && **p <= '9')
		(*p)++;
	return *p - start;
}

/*
 * Read a JSON number literal (RFC 8259: -?(0|[1-9][0-9]*)(.[0-9]+)?
 * ([eE][+-]?[0-9]+)?), the whole of text.  false if it is not one.
 */
bool
ism_number_read(const char *text, int len, IsmNumber *n)
{
	const char *p = text;
	const char *end = text + len;
	int			ndigits;
	int			last = -1;

	memset(n, 0, sizeof(*n));
	if (p < end && *p == '-')
	{
		n->negative = true;
		p++;
	}
	n->mantissa = p;
	n->int_digits = skip_digits(&p, end);
	if (n->int_digits == 0 || (n->int_digits > 1 && *n->mantissa == '0'))
		return false;
	if (p < end && *p == '.')
	{
		p++;
		n->frac_digits = skip_digits(&p, end);
		if (n->frac_digits == 0)
			return false;
	}
	n->mantissa_len = p - n->mantissa;
	n->integer = n->frac_digits == 0 && p == end;
	if (p < end && (*p == 'e' || *p == 'E'))
	{
		bool		minus = false;

		p++;
		if (p < end && (*p == '+' || *p == '-'))
			minus = *p++ == '-';
		if (p == end || *p < '0' || *p > '9')
			return false;
		for (; p < end && *p >= '0' && *p <= '9'; p++)
			n->exponent = Min(n->exponent * 10 + (*p - '0'), EXPONENT_CAP);
		if (minus)
			n->exponent = -n->exponent;
	}
	if (p != end)
		return false;

	ndigits = n->int_digits + n->frac_digits;
	n->first = -1;
	for (int k = 0; k < ndigits; k++)
		if (digit(n, k) != '0')
		{
			if (n->first < 0)
				n->first = k;
			last = k;
		}
	n->zero = n->first < 0;
	if (n->zero)
		n->first = 0;
	else
	{
		n->nsig = last - n->first + 1;
		n->point = (n->int_digits - n->first) + n->exponent;
	}
	return true;
}

/* Do a and b say the same decimal value (zero of either sign being zero)? */
bool
ism_number_same_value(const IsmNumber *a, const IsmNumber *b)
{
	if (a->zero || b->zero)
		return a->zero && b->zero;
	if (a->negative != b->negative || a->point != b->point || a->nsig != b->nsig)
		return false;
	for (int k = 0; k < a->nsig; k++)
		if (digit(a, a->first + k) != digit(b, b->first + k))
			return false;
	return true;
}

/* An integer literal within bigint's range: what int8in reads as it is. */
bool
ism_number_fits_int64(const IsmNumber *n)
{
	const char *limit = n->negative ? "9223372036854775808" : "9223372036854775807";

	if (!n->integer)
		return false;			/* "1.0", "1e3": int8in reads neither */
	if (n->zero || n->point < 19)
		return true;
	if (n->point > 19)
		return false;
	return strncmp(n->mantissa + n->first, limit, 19) <= 0;
}

/*
 * "0.<S>e<point>", signed, into buf: the literal's value with at most
 * max_digits significant digits and, when some were left out, a 1 after
 * them, so that strtod rounds it as it would round the whole literal
 * (max_digits is past the most a tie between two doubles needs).
 */
static void
normalized_text(const IsmNumber *n, int max_digits, char *buf)
{
	char	   *o = buf;
	int			kept = Min(n->nsig, max_digits);

	if (n->negative)
		*o++ = '-';
	*o++ = '0';
	*o++ = '.';
	for (int k = 0; k < kept; k++)
		*o++ = digit(n, n->first + k);
	if (kept < n->nsig)
		*o++ = '1';
	sprintf(o, "e" INT64_FORMAT, n->point);
}

/*
 * Is the value one double precision holds exactly, as PostgreSQL reads it
 * back: the shortest decimal of the nearest double (float8out, Ryu) is the
 * same value?  0.1 is (it reads back 0.1); 9007199254740993 and
 * 3.141592653589793238 are not (they read back 9007199254740992 and
 * 3.141592653589793), nor is anything beyond its range.
 */
bool
ism_number_fits_double(const IsmNumber *n)
{
	char		buf[DOUBLE_MAX_DIGITS + 32];
	char		shortest[DOUBLE_SHORTEST_DECIMAL_LEN];
	IsmNumber	back;
	double		d;

	if (n->zero)
		return true;
	if (n->nsig > DOUBLE_MAX_DIGITS || n->point > 310 || n->point < -325)
		return false;
	normalized_text(n, DOUBLE_MAX_DIGITS, buf);
	d = strtod(buf, NULL);
	if (!isfinite(d) || d == 0.0)
		return false;
	double_to_shortest_decimal_buf(d, shortest);
	return ism_number_read(shortest, strlen(shortest), &back) &&
		ism_number_same_value(n, &back);
}

/*
 * Does numeric take the literal as it is: at most 131,072 digits before
 * the point and a scale (digits after it, as written) of at most 16,383?
 * Past those numeric_in reports an overflow.  Exponents of absurd size
 * are refused outright (numeric_in refuses them too).
 */
bool
ism_number_fits_numeric(const IsmNumber *n)
{
	if (n->exponent > 1000000 || n->exponent < -1000000)
		return false;
	if (n->frac_digits - n->exponent > NUMERIC_MAX_SCALE)
		return false;
	return n->zero || n->point <= NUMERIC_MAX_INT_DIGITS;
}

/*
 * A whole number (10, 1e3, 10.0) as an int, clamped to int's range (a
 * batch of 10^10 records is no limit at all).  false for a fraction.
 */
bool
ism_number_whole_int(const IsmNumber *n, int *out)
{
	int64		v = 0;

	if (n->zero)
	{
		*out = 0;
		return true;
	}
	if (n->point < n->nsig)
		return false;			/* digits after the point */
	if (n->point > 10)
	{
		*out = n->negative ? PG_INT32_MIN : PG_INT32_MAX;
		return true;
	}
	for (int k = 0; k < n->point; k++)
		v = v * 10 + (k < n->nsig ? digit(n, n->first + k) - '0' : 0);
	if (n->negative)
		v = -v;
	*out = (int) Max(Min(v, (int64) PG_INT32_MAX), (int64) PG_INT32_MIN);
	return true;
}

/*
 * The nearest double, as Python's float() makes it (infinity beyond the
 * range, zero below it): for the places where the platform computes with
 * the number as a float (partition keys), never for what is stored or sent.
 */
double
ism_number_to_double(const IsmNumber *n)
{
	char		buf[ROUNDING_DIGITS + 32];

	if (n->zero || n->point < -400)
		return n->negative ? -0.0 : 0.0;
	if (n->point > 400)
		return n->negative ? -HUGE_VAL : HUGE_VAL;
	normalized_text(n, ROUNDING_DIGITS, buf);
	return strtod(buf, NULL);
}

/*
 * Is the number false in Python: an int literal that is zero, a float
 * literal whose float is 0.0 (1e-400 included)?
 */
bool
ism_number_python_zero(const IsmNumber *n)
{
	if (n->zero)
		return true;
	return !n->integer && ism_number_to_double(n) == 0.0;
}

/* S, the significant digits (nsig of them, none for zero), into out, NUL-terminated. */
void
ism_number_digits(const IsmNumber *n, char *out)
{
	for (int k = 0; k < n->nsig; k++)
		out[k] = digit(n, n->first + k);
	out[n->nsig] = '\0';
}

/*-------------------------------------------------------------------------
 *
 * json.c
 *	  cJSON in a worker: allocation in memory contexts, and exact printing.
 *
 * cJSON allocates through hooks; the workers point them at palloc, so a
 * message's parse tree lives in the memory context current while it is
 * handled and goes when that context is reset -- also when an error cuts
 * the handling short.  JSON the workers send or store is printed here
 * rather than by cJSON, whose printer rounds some numbers.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include <cjson/cJSON.h>

#include "common/shortest_dec.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "json.h"

static void *
json_alloc(size_t size)
{
	return palloc(Max(size, 1));
}

static void
json_free(void *p)
{
	if (p)
		pfree(p);
}

void
ism_json_init(void)
{
	cJSON_Hooks hooks = {json_alloc, json_free};

	cJSON_InitHooks(&hooks);
}

/*
 * A number as JSON: whole numbers without an exponent (as they came, for
 * any up to 2^53, beyond which a double is not exact anyway), others in
 * the fewest digits that read back as the same double (Ryu, as float8out).
 * cJSON's own printer keeps 15 digits when the 16th or 17th falls within
 * its tolerance, which changes values such as Unix microsecond times.
 */
static void
append_number(StringInfo buf, double d)
{
	char		text[Max(MAXINT8LEN, DOUBLE_SHORTEST_DECIMAL_LEN) + 1];

	if (!isfinite(d))
		appendStringInfoString(buf, "null");	/* JSON has no such numbers */
	else if (floor(d) == d && fabs(d) < 1e18)
		appendBinaryStringInfo(buf, text, pg_lltoa((int64) d, text));
	else
		appendBinaryStringInfo(buf, text, double_to_shortest_decimal_buf(d, text));
}

/* A JSON string: runs of plain characters are copied whole. */
static void
append_string(StringInfo buf, const char *s)
{
	const unsigned char *run = (const unsigned char *) s;
	const unsigned char *p;

	appendStringInfoChar(buf, '"');
	for (p = run; *p; p++)
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

/* Compact JSON text of a cJSON tree; numbers as append_number says. */
void
ism_json_append(StringInfo buf, const cJSON *item)
{
	const cJSON *child;

	check_stack_depth();		/* parsing limits depth too; this is cheap */
	if (cJSON_IsNumber(item))
		append_number(buf, item->valuedouble);
	else if (cJSON_IsString(item))
		append_string(buf, item->valuestring);
	else if (cJSON_IsTrue(item))
		appendStringInfoString(buf, "true");
	else if (cJSON_IsFalse(item))
		appendStringInfoString(buf, "false");
	else if (cJSON_IsRaw(item))
		appendStringInfoString(buf, item->valuestring);
	else if (cJSON_IsArray(item) || cJSON_IsObject(item))
	{
		bool		object = cJSON_IsObject(item);

		appendStringInfoChar(buf, object ? '{' : '[');
		for (child = item->child; child; child = child->next)
		{
			if (child != item->child)
				appendStringInfoChar(buf, ',');
			if (object)
			{
				append_string(buf, child->string ? child->string : "");
				appendStringInfoChar(buf, ':');
			}
			ism_json_append(buf, child);
		}
		appendStringInfoChar(buf, object ? '}' : ']');
	}
	else
		appendStringInfoString(buf, "null");
}

/* Compact JSON text of a cJSON tree, palloc'd (see ism_json_append). */
char *
ism_json_print(const cJSON *item)
{
	StringInfoData buf;

	initStringInfo(&buf);
	ism_json_append(&buf, item);
	return buf.data;
}

/*
 * false when a number in the tree is beyond double precision (1e400, say):
 * cJSON reads it as infinity, which JSON cannot carry on and no column
 * takes, so such a message is refused rather than changed.
 */
bool
ism_json_all_finite(const cJSON *item)
{
	const cJSON *child;

	if (cJSON_IsNumber(item))
		return isfinite(item->valuedouble);
	for (child = item->child; child; child = child->next)
		if (!ism_json_all_finite(child))
			return false;
	return true;
}

/*
 * A JSON number that is a whole number, as an int: a value beyond int's
 * range is clamped to it (a batch of 10^10 records is no limit at all,
 * as the platform's 64-bit integers mean it).  false for anything else.
 */
bool
ism_json_whole_int(const cJSON *item, int *out)
{
	double		d;

	if (!cJSON_IsNumber(item))
		return false;
	d = item->valuedouble;
	if (!isfinite(d) || floor(d) != d)
		return false;
	*out = d >= (double) PG_INT32_MAX ? PG_INT32_MAX :
		d <= (double) PG_INT32_MIN ? PG_INT32_MIN : (int) d;
	return true;
}

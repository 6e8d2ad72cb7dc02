/*-------------------------------------------------------------------------
 *
 * processor_props.c
 *	  The processor properties the router uses, read as the platform's
 *	  pydantic model reads them.
 *
 * The Python router parses a processor's properties with ismcore's
 * ProcessorPropertiesBase (alethic-ism-state-router main.py,
 * ProcessorPropertiesBase(**(processor.properties or {}))), a pydantic v2
 * model in lax mode: maxBatchSize and maxBatchLimit are ints, which
 * pydantic also makes of true and false (1, 0), of a whole float (10.0,
 * 1e1 in JSON) and of a string holding an int (pydantic-core's str_as_int,
 * as pydantic 2.13 does it): white space around it (Unicode's, as Rust's
 * str::trim), a sign, digits with single underscores between them, and a
 * fraction of zeros ("10.00"); not "1e1", "0x10", "10.5" or "", nor more
 * than 4300 characters.  concurrencyMode is an enum, which anything else
 * fails validation of: FAILED, naming the values allowed.  Absent or null,
 * a property has its default (100, 1, PROJECT_ID, none).
 *
 * The platform's UI writes these (alethic-ism-ui,
 * src/tabs/property/processor/ProcessorBaseConfig.jsx) as numbers and as
 * "project-id", "user-id", "route-id", "expression"; the API passes on
 * whatever a client sends.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "processor_props.h"

/* rows per page and entries per message when the processor says nothing */
#define DEFAULT_MAX_BATCH_SIZE	100
#define DEFAULT_MAX_BATCH_LIMIT	1
/* pydantic-core: longer strings are no int (int_parsing_size) */
#define MAX_INT_STRING			4300

/*
 * The length of the white space character at p (0: none), as Rust's
 * char::is_whitespace has it: ASCII's, U+0085, U+00A0, U+1680,
 * U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000, in UTF-8.
 */
static int
white_space(const unsigned char *p, const unsigned char *end)
{
	if (p >= end)
		return 0;
	if ((*p >= 0x09 && *p <= 0x0d) || *p == ' ')
		return 1;
	if (end - p >= 2 && p[0] == 0xc2 && (p[1] == 0x85 || p[1] == 0xa0))
		return 2;
	if (end - p < 3)
		return 0;
	if ((p[0] == 0xe1 && p[1] == 0x9a && p[2] == 0x80) ||
		(p[0] == 0xe2 && p[1] == 0x80 &&
		 ((p[2] >= 0x80 && p[2] <= 0x8a) || p[2] == 0xa8 || p[2] == 0xa9 || p[2] == 0xaf)) ||
		(p[0] == 0xe2 && p[1] == 0x81 && p[2] == 0x9f) ||
		(p[0] == 0xe3 && p[1] == 0x80 && p[2] == 0x80))
		return 3;
	return 0;
}

static const unsigned char *
skip_white_space(const unsigned char *p, const unsigned char *end)
{
	int			n;

	while ((n = white_space(p, end)) > 0)
		p += n;
	return p;
}

/*
 * A string as pydantic reads an int from it (see above); false when it
 * reads none.  Beyond an int's range, the nearest int.
 */
static bool
int_from_string(const char *s, int len, int *out)
{
	const unsigned char *end = (const unsigned char *) s + len;
	const unsigned char *p = skip_white_space((const unsigned char *) s, end);
	const unsigned char *start = p;
	bool		negative = false;
	int64		v = 0;

	if (p < end && (*p == '+' || *p == '-'))
		negative = *p++ == '-';
	if (p == end || !isdigit(*p))
		return false;
	do
	{
		if (*p == '_')
			p++;
		v = Min(v * 10 + (*p - '0'), (int64) PG_INT32_MAX);
		p++;
	} while (p < end && (isdigit(*p) || (*p == '_' && p + 1 < end && isdigit(p[1]))));
	if (p < end && *p == '.')
	{
		if (++p == end || *p != '0')
			return false;
		while (p < end && *p == '0')
			p++;
	}
	if (p - start > MAX_INT_STRING || skip_white_space(p, end) != end)
		return false;
	*out = (int) (negative ? -v : v);
	return true;
}

/* A positive int property (see above), or the default when absent or null. */
static bool
int_property(const IsmJson *props, const char *key, int dflt, int *out,
			 const char *processor_id, char **error)
{
	IsmJson    *v = ism_json_get(props, key);
	bool		read;

	*out = dflt;
	if (v == NULL || v->type == ISM_JSON_NULL)
		return true;
	if (v->type == ISM_JSON_TRUE || v->type == ISM_JSON_FALSE)
	{
		*out = v->type == ISM_JSON_TRUE;
		read = true;
	}
	else if (v->type == ISM_JSON_STRING)
		read = int_from_string(v->str, v->str_len, out);
	else
		read = ism_json_whole_int(v, out);
	if (!read || *out < 1)
	{
		*error = psprintf("processor %s: property \"%s\" must be a positive integer, not %s",
						  processor_id, key, ism_json_print(v));
		*out = dflt;
		return false;
	}
	return true;
}

static bool
mode_property(const IsmJson *props, IsmPartitionMode *out, const char *processor_id,
			  char **error)
{
	IsmJson    *v = ism_json_get(props, "concurrencyMode");
	const char *name;

	*out = ISM_PARTITION_PROJECT_ID;
	if (v == NULL || v->type == ISM_JSON_NULL)
		return true;
	if ((name = ism_json_cstring(v)) == NULL || !ism_partition_mode(name, out))
	{
		*error = psprintf("processor %s: property \"concurrencyMode\" is %s; allowed: %s",
						  processor_id, ism_json_print(v), ISM_PARTITION_MODES);
		return false;
	}
	return true;
}

static bool
string_property(const IsmJson *props, const char *key, const char **out,
				const char *processor_id, char **error)
{
	IsmJson    *v = ism_json_get(props, key);

	*out = NULL;
	if (v == NULL || v->type == ISM_JSON_NULL)
		return true;
	if ((*out = ism_json_cstring(v)) == NULL)
	{
		*error = psprintf("processor %s: property \"%s\" must be a string", processor_id, key);
		return false;
	}
	return true;
}

/*
 * The router's properties of a processor, from its properties (NULL: none,
 * all defaults); false, with *error, on the first that is wrong.
 */
bool
ism_processor_props_read(const IsmJson *props, const char *processor_id,
						 IsmProcessorProps *out, char **error)
{
	return int_property(props, "maxBatchSize", DEFAULT_MAX_BATCH_SIZE, &out->max_batch_size,
						processor_id, error) &&
		int_property(props, "maxBatchLimit", DEFAULT_MAX_BATCH_LIMIT, &out->max_batch_limit,
					 processor_id, error) &&
		mode_property(props, &out->concurrency_mode, processor_id, error) &&
		string_property(props, "concurrencyExpression", &out->concurrency_expression,
						processor_id, error);
}

/*
 * fuzz_partition.c
 *	  libFuzzer target: the partition-expression evaluator.  The first line
 *	  of the input is a concurrencyExpression, the rest the first entry of a
 *	  message (JSON); the expression must evaluate or fall back to the
 *	  project id (then saying why), never crash or read out of bounds.  And when the entry
 *	  has an integer "n", data['n'] must give it digit for digit, as
 *	  Python's str() of the int json.loads makes (a zero: falsy, the
 *	  project id alone).
 */
#include "postgres.h"

#include <stdlib.h>

#include "json.h"
#include "json_number.h"
#include "partition.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern void shim_reset(void);

/* data['n'] of an integer n: "project.<n>", exactly */
static void
check_integer(const IsmJson *entry, const IsmJson *context)
{
	IsmJson    *n = ism_json_get(entry, "n");
	IsmNumber	number;
	char	   *key;
	char	   *expected;
	const char *fallback;

	if (!ism_json_is(n, ISM_JSON_NUMBER) || !ism_number_read(n->text, n->len, &number) ||
		!number.integer)
		return;
	expected = number.zero ? pstrdup("project") : psprintf("project.%.*s", n->len, n->text);
	key = ism_partition_key(ISM_PARTITION_EXPRESSION, "data['n']", "project", "route", context,
							entry, &fallback);
	if (strcmp(key, expected) != 0)
		abort();				/* an integer not as sent */
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *input = palloc(size + 1);
	char	   *newline;
	IsmJson    *entry = NULL;
	IsmJson    *context;
	char	   *error;
	char	   *key;
	const char *fallback;
	const char *context_text = "{\"user_id\": \"u1\", \"k\": {\"n\": [1, 2]}}";

	memcpy(input, data, size);
	input[size] = '\0';
	newline = strchr(input, '\n');
	if (newline)
	{
		*newline = '\0';
		entry = ism_json_parse(newline + 1, strlen(newline + 1), &error);
	}
	context = ism_json_parse(context_text, strlen(context_text), &error);
	key = ism_partition_key(ISM_PARTITION_EXPRESSION, input, "project", "route", context, entry,
							&fallback);
	if (key == NULL || strncmp(key, "project", 7) != 0)
		abort();				/* the key is the project id, or starts with it */
	if (fallback && strcmp(key, "project") != 0)
		abort();				/* a fallback is the project id alone */
	if (ism_json_is(entry, ISM_JSON_OBJECT))
		check_integer(entry, context);
	shim_reset();				/* as a message's memory context is */
	return 0;
}

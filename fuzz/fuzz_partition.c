/*
 * fuzz_partition.c
 *	  libFuzzer target: the partition-expression evaluator.  The first line
 *	  of the input is a concurrencyExpression, the rest the first entry of a
 *	  message (JSON); the expression must evaluate or fall back to the
 *	  project id, never crash or read out of bounds.
 */
#include "postgres.h"

#include <stdlib.h>

#include <cjson/cJSON.h>

#include "json.h"
#include "partition.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern void shim_reset(void);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool initialised = false;
	char	   *input = palloc(size + 1);
	char	   *newline;
	cJSON	   *entry;
	cJSON	   *context;
	char	   *key;

	if (!initialised)
	{
		ism_json_init();
		initialised = true;
	}
	memcpy(input, data, size);
	input[size] = '\0';
	newline = strchr(input, '\n');
	if (newline)
		*newline = '\0';
	entry = newline ? cJSON_Parse(newline + 1) : NULL;
	context = cJSON_Parse("{\"user_id\": \"u1\", \"k\": {\"n\": [1, 2]}}");
	key = ism_partition_key("EXPRESSION", input, "project", "route", context, entry);
	if (key == NULL || strncmp(key, "project", 7) != 0)
		abort();				/* the key is the project id, or starts with it */
	pfree(key);
	cJSON_Delete(context);
	cJSON_Delete(entry);
	pfree(input);
	shim_reset();				/* as a message's memory context is */
	return 0;
}

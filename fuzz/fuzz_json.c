/*
 * fuzz_json.c
 *	  libFuzzer target: any bytes as a message body.  What cJSON accepts and
 *	  ism_state passes on (all numbers finite) must print as JSON that
 *	  parses again and prints the same: the router forwards, and the writer
 *	  stores, what ism_json_print makes.
 */
#include "postgres.h"

#include <stdlib.h>

#include <cjson/cJSON.h>

#include "json.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern void shim_reset(void);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool initialised = false;
	cJSON	   *root;

	if (!initialised)
	{
		ism_json_init();
		initialised = true;
	}
	root = cJSON_ParseWithLength((const char *) data, size);
	if (root != NULL && ism_json_all_finite(root))
	{
		char	   *printed = ism_json_print(root);
		cJSON	   *again = cJSON_Parse(printed);
		char	   *reprinted;

		if (again == NULL)
			abort();			/* the printer made something that is not JSON */
		reprinted = ism_json_print(again);
		if (strcmp(printed, reprinted) != 0)
			abort();			/* printing is not stable */
		cJSON_Delete(again);
		pfree(printed);
		pfree(reprinted);
	}
	cJSON_Delete(root);
	shim_reset();				/* as a message's memory context is */
	return 0;
}

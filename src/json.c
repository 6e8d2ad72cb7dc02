/*-------------------------------------------------------------------------
 *
 * json.c
 *	  cJSON in a worker.
 *
 * cJSON allocates through hooks; the workers point them at palloc, so a
 * message's parse tree lives in the memory context current while it is
 * handled and goes when that context is reset -- also when an error cuts
 * the handling short.
 *
 *-------------------------------------------------------------------------
 */
#include "ism_state.h"

#include <cjson/cJSON.h>

#include "router.h"

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

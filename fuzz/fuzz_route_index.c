/*
 * fuzz_route_index.c
 *	  libFuzzer target: the worker's route index.  The input's lines are
 *	  selectors: all but the last are added as routes, the last is looked
 *	  up; whatever it finds must be routes that were added.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "route_index.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *input = malloc(size + 1);
	RouteIndex *index = ism_route_index_create(16);
	char	   *line = input;
	char	   *next;
	int			added = 0;
	int			ids[8];
	int			nmatches = 0;
	RouteLookupResult result;

	memcpy(input, data, size);
	input[size] = '\0';
	while ((next = strchr(line, '\n')) != NULL)
	{
		*next = '\0';
		if (ism_route_index_add(index, line, added))
			added++;
		line = next + 1;
	}
	result = ism_route_index_lookup(index, line, ids, 8, &nmatches);
	if (result == ROUTE_FOUND && (ids[0] < 0 || ids[0] >= added))
		abort();				/* a route that was never added */
	for (int i = 0; result == ROUTE_AMBIGUOUS && i < nmatches && i < 8; i++)
		if (ids[i] < 0 || ids[i] >= added)
			abort();
	ism_route_index_destroy(index);
	free(input);
	return 0;
}

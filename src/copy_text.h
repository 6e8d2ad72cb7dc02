/*-------------------------------------------------------------------------
 *
 * copy_text.h
 *	  Records (cJSON objects) as rows in COPY's text format (copy_text.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_COPY_TEXT_H
#define ISM_COPY_TEXT_H

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"

extern int	ism_column_index(List *keys, int pos, const char *key);
extern StringInfo ism_copy_text(List *keys, List *rows);

struct cJSON;
extern void ism_record_texts(List *keys, const struct cJSON *record, char **texts);

#endif							/* ISM_COPY_TEXT_H */

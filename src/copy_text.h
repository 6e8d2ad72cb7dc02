/*-------------------------------------------------------------------------
 *
 * copy_text.h
 *	  Records (JSON objects) as rows in COPY's text format (copy_text.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_COPY_TEXT_H
#define ISM_COPY_TEXT_H

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"

#include "json.h"

extern int	ism_column_index(List *keys, int pos, const char *key);
extern StringInfo ism_copy_text(List *keys, List *rows);

extern void ism_record_texts(List *keys, const IsmJson *record, char **texts);
extern char *ism_record_nul_error(const IsmJson *record, const char *replaced);

#endif							/* ISM_COPY_TEXT_H */

/*-------------------------------------------------------------------------
 *
 * writer_schema.h
 *	  The state-tables writer's tables and columns: made to fit the
 *	  records of a flush (writer_schema.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_WRITER_SCHEMA_H
#define ISM_WRITER_SCHEMA_H

#include "writer_batch.h"

extern void ism_writer_ensure_columns(Flush *f);
extern void ism_writer_forget_columns(Batch *b);

#endif							/* ISM_WRITER_SCHEMA_H */

/*-------------------------------------------------------------------------
 *
 * writer_rows.h
 *	  The state-tables writer's rows: the messages applied, recorded in
 *	  ism_state.applied, and their records written (writer_rows.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_WRITER_ROWS_H
#define ISM_WRITER_ROWS_H

#include "writer_batch.h"

extern void ism_writer_record_applied(Flush *f);
extern void ism_writer_write_rows(Flush *f);

#endif							/* ISM_WRITER_ROWS_H */

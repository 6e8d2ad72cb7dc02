/*-------------------------------------------------------------------------
 *
 * writer_flush.h
 *	  The state-tables writer's flushes: the due batches written in one
 *	  transaction, then their messages settled (writer_flush.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_WRITER_FLUSH_H
#define ISM_WRITER_FLUSH_H

#include "jetstream.h"
#include "writer_batch.h"

extern void ism_writer_flush_init(MemoryContext writer_context);
extern void ism_writer_flush_batches(List *due);
extern void ism_writer_flush_batch(Batch *b);
extern void ism_writer_settle(IsmMessage *m, IsmSettle how, int64 delay_ms);
extern void ism_writer_give_up(IsmMessage *m, const char *route_id, const char *error);

#endif							/* ISM_WRITER_FLUSH_H */

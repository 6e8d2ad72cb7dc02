/*-------------------------------------------------------------------------
 *
 * writer.h
 *	  The state-tables writer (writer.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_WRITER_H
#define ISM_WRITER_H

extern void ism_writer_init(void);
extern int	ism_writer_consume(int timeout_ms, int max_in_flight, int ack_wait_ms);
extern void ism_writer_flush(bool all);
extern long ism_writer_next_due_ms(long max_ms);
extern void ism_writer_release_pending(void);

#endif							/* ISM_WRITER_H */

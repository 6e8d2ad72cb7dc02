/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The ism_state background workers (worker.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_WORKER_H
#define ISM_WORKER_H

extern void ism_register_workers(void);
extern PGDLLEXPORT void ism_worker_main(Datum main_arg);

#endif							/* ISM_WORKER_H */

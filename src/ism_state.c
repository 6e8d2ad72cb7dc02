/*-------------------------------------------------------------------------
 *
 * ism_state.c
 *	  Module entry point: settings, shared memory and worker registration.
 *
 * ism_state runs the Alethic ISM state router and state-tables writer as
 * background workers inside PostgreSQL.  Each worker owns one NATS
 * connection, driven from its main thread only (see nats_conn.c).
 *
 * _PG_init runs in the postmaster.  It must not touch nats.c: the library
 * starts threads, and the postmaster forks every backend.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"

#include "counters.h"
#include "settings.h"
#include "stats.h"
#include "worker.h"

#ifdef PG_MODULE_MAGIC_EXT
/* 18: the library's name and version, in pg_get_loaded_modules() */
PG_MODULE_MAGIC_EXT(.name = "ism_state", .version = ISM_STATE_VERSION);
#else
PG_MODULE_MAGIC;
#endif

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
ism_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	ism_stats_request_shmem();
	ism_counters_request_shmem();
}

static void
ism_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	ism_stats_startup_shmem();
	ism_counters_startup_shmem();
}

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ism_state must be loaded via shared_preload_libraries"),
				 errhint("Add ism_state to shared_preload_libraries in postgresql.conf and restart the server.")));

	ism_define_settings();

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = ism_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = ism_shmem_startup;

	/*
	 * pg_upgrade starts the old and the new server in binary-upgrade mode:
	 * no workers then, or messages would be taken from NATS and tables made
	 * in a cluster that is being dumped, or restored and then overwritten.
	 */
	if (!IsBinaryUpgrade)
		ism_register_workers();
}

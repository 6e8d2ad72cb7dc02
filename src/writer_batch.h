/*-------------------------------------------------------------------------
 *
 * writer_batch.h
 *	  The state-tables writer's batches, one per processor: its table's
 *	  settings, the messages waiting, the columns last seen; and a Flush,
 *	  a batch being written (writer_batch.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_WRITER_BATCH_H
#define ISM_WRITER_BATCH_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

#include "column_types.h"
#include "jetstream.h"

typedef struct TableConfig
{
	char	   *table;			/* mapped name, in data_schema */
	int			batch_size;		/* <= 0: no size trigger */
	int			window_s;		/* < 0: no timer; 0: at once */
	bool		include_timestamp;
	bool		infer_types;	/* columnTypes "infer": typed new columns */
	List	   *index_columns;	/* of char *, keys */
} TableConfig;

typedef struct Pending
{
	IsmMessage	msg;
	char	   *route_id;
	List	   *records;		/* of IsmJson * (objects) */
	TimestampTz alive_at;		/* delivered, or last told "in progress" */
} Pending;

typedef struct Batch
{
	MemoryContext self;			/* the batch and all it holds */
	char	   *processor_id;
	TableConfig config;
	MemoryContext context;		/* its messages; reset by a flush */
	List	   *pending;		/* of Pending *, in arrival order */
	int			nrecords;
	int64		nbytes;			/* of the pending messages */
	Size		memory;			/* their memory (contexts), counted as queued */
	TimestampTz last_used;		/* a message last queued */
	TimestampTz config_read_at;	/* config last compared with the catalog */
	/* the table's columns as the last committed flush left them */
	MemoryContext columns_context;
	List	   *column_names;	/* of char * */
	List	   *column_types;	/* of int (IsmColumnType) */
	List	   *column_type_sql;	/* of char * */
	TimestampTz oldest;
} Batch;

/* What a flush writes, and how it went */
typedef struct Flush
{
	Batch	   *batch;
	List	   *pending;		/* the messages to write, of Pending * */
	List	   *keys;			/* of char *: every key, first seen first */
	IsmColumnType *types;		/* per key: its column's type */
	char	  **type_sql;		/* per key: its column's type in SQL */
	bool	   *apply;			/* per message: not applied before */
	char	  **errors;			/* per message, when written one by one */
	int			written;
	char	   *error;			/* why the flush failed, if it did */
	int			sqlstate;
	int			ddl;			/* DDL statements run */
	bool		widened;		/* a column's type is changed */
	int64		write_us;		/* time in write_pending */
} Flush;

/* of Batch *, in the order made */
extern List *ism_writer_batches;

extern void ism_writer_batches_init(MemoryContext context);
extern bool ism_writer_table_config(const char *processor_id, const char *props_text,
									TableConfig *c, char **error);
extern bool ism_writer_same_config(const TableConfig *a, const TableConfig *b);
extern Batch *ism_writer_find_batch(const char *processor_id);
extern Batch *ism_writer_new_batch(const char *processor_id, const TableConfig *config);
extern void ism_writer_free_batch(Batch *b);
extern void ism_writer_free_idle_batches(void);
extern void ism_writer_empty_batch(Batch *b);
extern TimestampTz ism_writer_window_end(const Batch *b);
extern bool ism_writer_batch_due(const Batch *b, bool all);
extern void ism_writer_report_pending(void);
extern int	ism_writer_pending_records(void);
extern Size ism_writer_pending_memory(void);
extern int	ism_writer_pending_messages(void);
extern List *ism_writer_records_to_apply(Flush *f);

#endif							/* ISM_WRITER_BATCH_H */

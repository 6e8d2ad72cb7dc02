/*-------------------------------------------------------------------------
 *
 * router.h
 *	  The state router: ISM router messages in, query_state messages out.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_ROUTER_H
#define ISM_ROUTER_H

#include <cjson/cJSON.h>

/* router.c */
extern void ism_router_init(bool (*stopping) (void));
extern int	ism_router_consume(int max_messages, int timeout_ms);
extern int	ism_router_replay_dead_letters(char *errbuf, size_t errlen);

/* json.c */
extern void ism_json_init(void);
struct cJSON;
struct StringInfoData;
extern char *ism_json_print(const struct cJSON *item);
extern bool ism_json_all_finite(const struct cJSON *item);
extern bool ism_json_whole_int(const struct cJSON *item, int *out);
extern void ism_json_append(struct StringInfoData *buf, const struct cJSON *item);

/* writer.c */
extern void ism_writer_init(void);
extern int	ism_writer_consume(int timeout_ms, int max_in_flight, int ack_wait_ms);
extern void ism_writer_flush(bool all);
extern long ism_writer_next_due_ms(long max_ms);
extern void ism_writer_release_pending(void);

/* lookup_cache.c */
#define ISM_LOOKUP_MAX_COLS 3
extern bool ism_lookup_get(char kind, const char *id, char **cols, int ncols);
extern void ism_lookup_put(char kind, const char *id, char **cols, int ncols);

/* partition.c */
extern char *ism_partition_key(const char *mode, const char *expression,
							   const char *project_id, const char *route_id,
							   const cJSON *context, const cJSON *data);

#endif							/* ISM_ROUTER_H */

/*-------------------------------------------------------------------------
 *
 * json.h
 *	  cJSON in a worker: allocation in memory contexts, and exact printing
 *	  (json.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_JSON_H
#define ISM_JSON_H

struct cJSON;
struct StringInfoData;

extern void ism_json_init(void);
extern char *ism_json_print(const struct cJSON *item);
extern bool ism_json_all_finite(const struct cJSON *item);
extern bool ism_json_whole_int(const struct cJSON *item, int *out);
extern void ism_json_append(struct StringInfoData *buf, const struct cJSON *item);

#endif							/* ISM_JSON_H */

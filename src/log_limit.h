/*-------------------------------------------------------------------------
 *
 * log_limit.h
 *	  Log lines that repeat, rate-limited and counted, or once (log_limit.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ISM_LOG_LIMIT_H
#define ISM_LOG_LIMIT_H

extern void ism_log_limited(int elevel, const char *key, const char *fmt,...) pg_attribute_printf(3, 4);
extern void ism_log_once(int elevel, const char *key, const char *fmt,...) pg_attribute_printf(3, 4);

#endif							/* ISM_LOG_LIMIT_H */

/*
 * bench_util.h
 *	  What the benchmark's C programs (external_consumer.c,
 *	  upstream_router.c) share: messages and exits, memory that never
 *	  fails quietly, and a growing string for statements.
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stddef.h>

#include <nats/nats.h>

/* the program's name, before every message */
extern const char *bench_program;

typedef struct Buf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} Buf;

extern void warn(const char *fmt,...) __attribute__((format(printf, 1, 2)));
extern void die(const char *fmt,...) __attribute__((format(printf, 1, 2), noreturn));
extern void nats_die(const char *what, natsStatus s, jsErrCode jerr) __attribute__((noreturn));
extern void *need(void *p);
extern char *xstrdup(const char *s);
extern void bench_connect(const char *url, natsConnection **nc, jsCtx **js);
extern void buf_add(Buf *b, const char *fmt,...) __attribute__((format(printf, 2, 3)));

#endif							/* BENCH_UTIL_H */

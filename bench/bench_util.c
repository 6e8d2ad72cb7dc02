/*
 * bench_util.c
 *	  See bench_util.h.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

static void
vreport(const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: ", bench_program);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void
warn(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vreport(fmt, ap);
	va_end(ap);
}

void
die(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vreport(fmt, ap);
	va_end(ap);
	exit(1);
}

void
nats_die(const char *what, natsStatus s, jsErrCode jerr)
{
	if (jerr)
		die("%s: %s (JetStream error %d)", what, natsStatus_GetText(s), (int) jerr);
	die("%s: %s", what, natsStatus_GetText(s));
}

void *
need(void *p)
{
	if (p == NULL)
		die("out of memory");
	return p;
}

char *
xstrdup(const char *s)
{
	return need(strdup(s));
}

/* A connection to url and its JetStream context, or the program exits. */
void
bench_connect(const char *url, natsConnection **nc, jsCtx **js)
{
	natsStatus	s;

	s = natsConnection_ConnectTo(nc, url);
	if (s != NATS_OK)
		nats_die("could not connect to NATS", s, 0);
	s = natsConnection_JetStream(js, *nc, NULL);
	if (s != NATS_OK)
		nats_die("could not open JetStream", s, 0);
}

/* printf onto the end of b */
void
buf_add(Buf *b, const char *fmt,...)
{
	va_list		ap;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		die("could not format a statement");
	if (b->len + n + 1 > b->cap)
	{
		b->cap = 2 * (b->len + n + 1);
		b->data = need(realloc(b->data, b->cap));
	}
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	b->len += n;
}

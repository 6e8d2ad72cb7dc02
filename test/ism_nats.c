/*
 * ism-nats: the small NATS client the integration tests drive NATS with.
 *
 *   ism-nats [options] pub SUBJECT DATA            core publish
 *   ism-nats [options] sub SUBJECT [COUNT]         print COUNT messages (default 1),
 *                                                  one "SUBJECT DATA" line each
 *   ism-nats [options] sub-replies SUBJECT [COUNT] the same, "SUBJECT REPLY DATA" lines
 *   ism-nats [options] req SUBJECT DATA            request, print the reply
 *   ism-nats [options] js-pub SUBJECT DATA         JetStream publish, print the ack
 *                                                  ("stream=S seq=N", " duplicate" when
 *                                                  JetStream dropped it as one)
 *   ism-nats [options] js-pub-n SUBJECT COUNT DATA COUNT JetStream publishes, pipelined;
 *                                                  in DATA "%n" becomes 1..COUNT, "%r"
 *                                                  (n-1) modulo --mod, "%t" the time
 *                                                  of publication in Unix microseconds;
 *                                                  with --rate R, R messages a second at
 *                                                  a steady pace instead of at once
 *   ism-nats [options] stream-add NAME [--workqueue] [--max-msg-size N]
 *                                  [--duplicate-window MS] SUBJECT...
 *   ism-nats [options] stream-info NAME            print key=value lines
 *   ism-nats [options] consumer-info STREAM NAME   print key=value lines
 *   ism-nats [options] take SUBJECT QUEUE ACK HOLD a service that consumed and stopped: a
 *                                                  core queue subscription (to a push
 *                                                  consumer's deliver subject); acks the
 *                                                  first ACK messages, takes HOLD more
 *                                                  without acking them, prints each
 *                                                  ("acked DATA", "held DATA") and exits
 *   ism-nats [options] take-pull STREAM CONSUMER ACK HOLD  the same from a pull consumer
 *
 * Options: -s URL (default nats://127.0.0.1:4222), -t TIMEOUT_MS (default
 * 5000), --mod M and --rate R (for js-pub-n), --msg-id ID (for js-pub),
 * --reply SUBJECT (for pub), --user U --password P, --token T, --creds FILE, --ca FILE,
 * --cert FILE --key FILE.  DATA "-" reads standard input.
 * Exit status: 0 on success, 1 on a NATS error or timeout, 2 on bad usage.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

static int64_t timeout_ms = 5000;
static long mod = 1;				/* for "%r" in js-pub-n */
static double rate = 0;				/* js-pub-n's messages a second; 0: at once */
static const char *msg_id = NULL;	/* Nats-Msg-Id for js-pub */
static const char *reply_to = NULL;	/* reply subject for pub */

static int
fail(const char *what, natsStatus s, jsErrCode jerr)
{
	fprintf(stderr, "ism-nats: %s: %s", what, natsStatus_GetText(s));
	if (jerr)
		fprintf(stderr, " (JetStream error %d)", (int) jerr);
	fprintf(stderr, "\n");
	return 1;
}

static int
usage(void)
{
	fprintf(stderr, "usage: ism-nats [-s URL] [-t MS] [--user U --password P] "
			"[--token T] [--creds F] [--ca F] [--cert F --key F] COMMAND ARGS\n"
			"commands: pub, sub, req, js-pub, stream-add, stream-info, consumer-info, take, take-pull\n");
	return 2;
}

/* DATA argument, or all of standard input for "-". */
static char *
read_data(const char *arg, int *len)
{
	size_t		cap = 4096,
				n = 0;
	char	   *buf;

	if (strcmp(arg, "-") != 0)
	{
		*len = (int) strlen(arg);
		return strdup(arg);
	}
	buf = malloc(cap);
	while (buf)
	{
		size_t		got = fread(buf + n, 1, cap - n, stdin);

		n += got;
		if (got == 0)
			break;
		if (n == cap)
			buf = realloc(buf, cap *= 2);
	}
	*len = (int) n;
	return buf;
}

/* print "[SUBJECT ][REPLY ]DATA" */
static bool with_reply = false;

static void
print_msg(natsMsg *msg, bool with_subject)
{
	if (with_subject)
		printf("%s ", natsMsg_GetSubject(msg));
	if (with_reply)
		printf("%s ", natsMsg_GetReply(msg) ? natsMsg_GetReply(msg) : "-");
	fwrite(natsMsg_GetData(msg), 1, natsMsg_GetDataLength(msg), stdout);
	fputc('\n', stdout);
	fflush(stdout);
}

static int
cmd_sub(natsConnection *nc, int argc, char **argv)
{
	natsSubscription *sub = NULL;
	int			count = argc > 1 ? atoi(argv[1]) : 1;
	natsStatus	s = natsConnection_SubscribeSync(&sub, nc, argv[0]);

	/* tell a caller waiting on stderr that the subscription is live */
	if (s == NATS_OK)
		s = natsConnection_FlushTimeout(nc, timeout_ms);
	if (s == NATS_OK)
		fprintf(stderr, "subscribed\n");
	for (int i = 0; s == NATS_OK && i < count; i++)
	{
		natsMsg    *msg = NULL;

		s = natsSubscription_NextMsg(&msg, sub, timeout_ms);
		if (s == NATS_OK)
			print_msg(msg, true);
		natsMsg_Destroy(msg);
	}
	natsSubscription_Destroy(sub);
	return s == NATS_OK ? 0 : fail("sub", s, 0);
}

static int
cmd_stream_add(jsCtx *js, int argc, char **argv)
{
	jsStreamConfig cfg;
	jsStreamInfo *si = NULL;
	jsErrCode	jerr = 0;
	const char **subjects = calloc(argc, sizeof(char *));
	int			n = 0;
	natsStatus	s;

	jsStreamConfig_Init(&cfg);
	cfg.Name = argv[0];
	for (int i = 1; i < argc; i++)
	{
		if (strcmp(argv[i], "--workqueue") == 0)
			cfg.Retention = js_WorkQueuePolicy;
		else if (strcmp(argv[i], "--max-msg-size") == 0 && i + 1 < argc)
			cfg.MaxMsgSize = atoi(argv[++i]);
		else if (strcmp(argv[i], "--duplicate-window") == 0 && i + 1 < argc)
			cfg.Duplicates = atoll(argv[++i]) * 1000000;
		else
			subjects[n++] = argv[i];
	}
	cfg.Subjects = subjects;
	cfg.SubjectsLen = n;
	s = js_AddStream(&si, js, &cfg, NULL, &jerr);
	jsStreamInfo_Destroy(si);
	free(subjects);
	return s == NATS_OK ? 0 : fail("stream-add", s, jerr);
}

static int
cmd_stream_info(jsCtx *js, const char *name)
{
	jsStreamInfo *si = NULL;
	jsErrCode	jerr = 0;
	natsStatus	s = js_GetStreamInfo(&si, js, name, NULL, &jerr);

	if (s != NATS_OK)
		return fail("stream-info", s, jerr);
	printf("name=%s\n", si->Config->Name);
	printf("subjects=");
	for (int i = 0; i < si->Config->SubjectsLen; i++)
		printf("%s%s", i ? "," : "", si->Config->Subjects[i]);
	printf("\nretention=%s\n",
		   si->Config->Retention == js_WorkQueuePolicy ? "workqueue" :
		   si->Config->Retention == js_InterestPolicy ? "interest" : "limits");
	printf("storage=%s\n", si->Config->Storage == js_FileStorage ? "file" : "memory");
	printf("replicas=%lld\n", (long long) si->Config->Replicas);
	printf("messages=%llu\n", (unsigned long long) si->State.Msgs);
	printf("first_seq=%llu\n", (unsigned long long) si->State.FirstSeq);
	printf("last_seq=%llu\n", (unsigned long long) si->State.LastSeq);
	printf("consumers=%lld\n", (long long) si->State.Consumers);
	/* the leader's view of its replicas (what "nats stream report" shows) */
	if (si->Cluster)
	{
		printf("leader=%s\n", si->Cluster->Leader ? si->Cluster->Leader : "");
		for (int i = 0; i < si->Cluster->ReplicasLen; i++)
		{
			jsPeerInfo *p = si->Cluster->Replicas[i];

			printf("replica.%s=%s,%s,lag %llu\n", p->Name,
				   p->Current ? "current" : "behind",
				   p->Offline ? "offline" : "online", (unsigned long long) p->Lag);
		}
	}
	jsStreamInfo_Destroy(si);
	return 0;
}

static int
cmd_consumer_info(jsCtx *js, const char *stream, const char *name)
{
	jsConsumerInfo *ci = NULL;
	jsErrCode	jerr = 0;
	natsStatus	s = js_GetConsumerInfo(&ci, js, stream, name, NULL, &jerr);

	if (s != NATS_OK)
		return fail("consumer-info", s, jerr);
	printf("name=%s\n", ci->Name);
	printf("filter=%s\n", ci->Config->FilterSubject ? ci->Config->FilterSubject : "");
	printf("deliver_subject=%s\n", ci->Config->DeliverSubject ? ci->Config->DeliverSubject : "");
	printf("deliver_group=%s\n", ci->Config->DeliverGroup ? ci->Config->DeliverGroup : "");
	printf("push_bound=%s\n", ci->PushBound ? "true" : "false");
	printf("ack_wait_ms=%lld\n", (long long) (ci->Config->AckWait / 1000000));
	printf("max_ack_pending=%lld\n", (long long) ci->Config->MaxAckPending);
	printf("delivered=%llu\n", (unsigned long long) ci->Delivered.Stream);
	printf("ack_floor=%llu\n", (unsigned long long) ci->AckFloor.Stream);
	printf("ack_floor_last_active=%.6f\n", (double) ci->AckFloor.Last / 1e9);
	printf("num_pending=%llu\n", (unsigned long long) ci->NumPending);
	printf("num_ack_pending=%lld\n", (long long) ci->NumAckPending);
	printf("num_redelivered=%lld\n", (long long) ci->NumRedelivered);
	printf("num_waiting=%lld\n", (long long) ci->NumWaiting);
	jsConsumerInfo_Destroy(ci);
	return 0;
}

/*
 * Take ACK + HOLD messages from sub, waiting at most the timeout for each;
 * ack the first ACK of them.  A core subscription's message is acked as
 * nats.go's Msg.Ack does, with "+ACK" published to its reply subject.
 * What is held is never acked: the process exits as a killed service would.
 */
static int
take(natsConnection *nc, natsSubscription *sub, bool pull, int ack, int hold)
{
	natsStatus	s = NATS_OK;

	for (int i = 0; s == NATS_OK && i < ack + hold; i++)
	{
		natsMsgList list = {0};
		natsMsg    *msg = NULL;

		if (pull)
		{
			s = natsSubscription_Fetch(&list, sub, 1, timeout_ms, NULL);
			if (s == NATS_OK)
			{
				msg = list.Msgs[0];
				list.Msgs[0] = NULL;
			}
			natsMsgList_Destroy(&list);
		}
		else
			s = natsSubscription_NextMsg(&msg, sub, timeout_ms);
		if (s != NATS_OK)
			break;
		if (i < ack)
			s = pull ? natsMsg_Ack(msg, NULL) :
				natsConnection_PublishString(nc, natsMsg_GetReply(msg), "+ACK");
		printf("%s ", i < ack ? "acked" : "held");
		print_msg(msg, false);
		natsMsg_Destroy(msg);
	}
	if (s == NATS_OK)
		s = natsConnection_FlushTimeout(nc, timeout_ms);
	return s == NATS_OK ? 0 : fail("take", s, 0);
}

static int
cmd_take(natsConnection *nc, int argc, char **argv)
{
	natsSubscription *sub = NULL;
	natsStatus	s = natsConnection_QueueSubscribeSync(&sub, nc, argv[0], argv[1]);
	int			rc;

	if (s != NATS_OK)
		return fail("take", s, 0);
	rc = take(nc, sub, false, atoi(argv[2]), atoi(argv[3]));
	natsSubscription_Destroy(sub);
	return rc;
}

static int
cmd_take_pull(natsConnection *nc, jsCtx *js, int argc, char **argv)
{
	natsSubscription *sub = NULL;
	jsSubOptions so;
	jsErrCode	jerr = 0;
	natsStatus	s;
	int			rc;

	jsSubOptions_Init(&so);
	so.Stream = argv[0];
	so.Consumer = argv[1];
	s = js_PullSubscribe(&sub, js, NULL, argv[1], NULL, &so, &jerr);
	if (s != NATS_OK)
		return fail("take-pull", s, jerr);
	rc = take(nc, sub, true, atoi(argv[2]), atoi(argv[3]));
	natsSubscription_Destroy(sub);
	return rc;
}

/*
 * DATA with its placeholders filled in for the i-th message (from 0):
 * "%n" its number from 1, "%r" i modulo the --mod option, "%t" the time
 * of publication in Unix microseconds.
 */
static int
expand(char *buf, size_t cap, const char *data, long i)
{
	size_t		n = 0;
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	for (const char *p = data; *p && n + 32 < cap; p++)
	{
		if (p[0] == '%' && (p[1] == 'n' || p[1] == 'r' || p[1] == 't'))
		{
			long long	v = p[1] == 'n' ? i + 1 : p[1] == 'r' ? i % mod :
				(long long) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;

			n += snprintf(buf + n, cap - n, "%lld", v);
			p++;
		}
		else
			buf[n++] = *p;
	}
	return (int) n;
}

/*
 * With --rate, sleep until the i-th message (from 0) is due, i / rate
 * seconds after start: a steady offered load, as a service's clients make
 * it, rather than a burst.  Due times are absolute, so a late wake-up
 * does not slow the pace that follows.
 */
static void
pace(const struct timespec *start, long i)
{
	long long	ns;
	struct timespec due;

	if (rate <= 0)
		return;
	ns = start->tv_nsec + (long long) ((double) i * 1e9 / rate);
	due.tv_sec = start->tv_sec + ns / 1000000000;
	due.tv_nsec = ns % 1000000000;
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL) == EINTR)
		;
}

/* COUNT messages of DATA (see expand), up to 4096 awaiting their PubAck at a time. */
static int
cmd_js_pub_n(jsCtx *js, const char *subject, long count, const char *arg)
{
	int			len;
	char	   *data = read_data(arg, &len);
	size_t		cap = (size_t) len * 4 + 64;	/* each 2-byte mark becomes at most 20 */
	char	   *buf = malloc(cap);
	jsPubOptions po;
	natsStatus	s = NATS_OK;
	struct timespec start;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (long i = 0; s == NATS_OK && i < count; i++)
	{
		pace(&start, i);
		s = js_PublishAsync(js, subject, buf, expand(buf, cap, data, i), NULL);
	}
	free(buf);
	jsPubOptions_Init(&po);
	po.MaxWait = timeout_ms;
	if (s == NATS_OK)
		s = js_PublishAsyncComplete(js, &po);
	free(data);
	return s == NATS_OK ? 0 : fail("js-pub-n", s, 0);
}

static int
run_command(natsConnection *nc, const char *cmd, int argc, char **argv)
{
	jsCtx	   *js = NULL;
	natsStatus	s;
	int			rc;

	if (strcmp(cmd, "sub") == 0 && argc >= 1)
		return cmd_sub(nc, argc, argv);
	if (strcmp(cmd, "sub-replies") == 0 && argc >= 1)
	{
		with_reply = true;
		return cmd_sub(nc, argc, argv);
	}

	if (strcmp(cmd, "take") == 0 && argc == 4)
		return cmd_take(nc, argc, argv);

	if ((strcmp(cmd, "pub") == 0 || strcmp(cmd, "req") == 0) && argc == 2)
	{
		int			len;
		char	   *data = read_data(argv[1], &len);
		natsMsg    *reply = NULL;

		if (cmd[0] == 'p')
		{
			s = reply_to ?
				natsConnection_PublishRequest(nc, argv[0], reply_to, data, len) :
				natsConnection_Publish(nc, argv[0], data, len);
			if (s == NATS_OK)
				s = natsConnection_FlushTimeout(nc, timeout_ms);
		}
		else
		{
			s = natsConnection_Request(&reply, nc, argv[0], data, len, timeout_ms);
			if (s == NATS_OK)
				print_msg(reply, false);
			natsMsg_Destroy(reply);
		}
		free(data);
		return s == NATS_OK ? 0 : fail(cmd, s, 0);
	}

	{
		jsOptions	jo;

		jsOptions_Init(&jo);
		jo.PublishAsync.MaxPending = 4096;
		jo.PublishAsync.StallWait = timeout_ms;
		s = natsConnection_JetStream(&js, nc, &jo);
	}
	if (s != NATS_OK)
		return fail("jetstream", s, 0);

	if (strcmp(cmd, "js-pub") == 0 && argc == 2)
	{
		int			len;
		char	   *data = read_data(argv[1], &len);
		jsPubAck   *ack = NULL;
		jsPubOptions po;
		jsErrCode	jerr = 0;

		jsPubOptions_Init(&po);
		po.MsgId = msg_id;
		s = js_Publish(&ack, js, argv[0], data, len, &po, &jerr);
		if (s == NATS_OK)
			printf("stream=%s seq=%llu%s\n", ack->Stream,
				   (unsigned long long) ack->Sequence, ack->Duplicate ? " duplicate" : "");
		jsPubAck_Destroy(ack);
		free(data);
		rc = s == NATS_OK ? 0 : fail("js-pub", s, jerr);
	}
	else if (strcmp(cmd, "js-pub-n") == 0 && argc == 3)
		rc = cmd_js_pub_n(js, argv[0], atol(argv[1]), argv[2]);
	else if (strcmp(cmd, "stream-add") == 0 && argc >= 2)
		rc = cmd_stream_add(js, argc, argv);
	else if (strcmp(cmd, "stream-info") == 0 && argc == 1)
		rc = cmd_stream_info(js, argv[0]);
	else if (strcmp(cmd, "consumer-info") == 0 && argc == 2)
		rc = cmd_consumer_info(js, argv[0], argv[1]);
	else if (strcmp(cmd, "take-pull") == 0 && argc == 4)
		rc = cmd_take_pull(nc, js, argc, argv);
	else
		rc = usage();

	jsCtx_Destroy(js);
	return rc;
}

int
main(int argc, char **argv)
{
	natsOptions *opts = NULL;
	natsConnection *nc = NULL;
	const char *url = "nats://127.0.0.1:4222";
	const char *user = NULL,
			   *password = NULL,
			   *cert = NULL,
			   *key = NULL;
	natsStatus	s;
	int			i,
				rc;

	if (nats_Open(-1) != NATS_OK || natsOptions_Create(&opts) != NATS_OK)
		return 1;

	for (i = 1; i < argc - 1 && argv[i][0] == '-'; i += 2)
	{
		const char *opt = argv[i],
				   *val = argv[i + 1];

		s = NATS_OK;
		if (strcmp(opt, "-s") == 0)
			url = val;
		else if (strcmp(opt, "-t") == 0)
			timeout_ms = atoll(val);
		else if (strcmp(opt, "--mod") == 0)
			mod = atol(val) > 0 ? atol(val) : 1;
		else if (strcmp(opt, "--rate") == 0)
			rate = atof(val);
		else if (strcmp(opt, "--msg-id") == 0)
			msg_id = val;
		else if (strcmp(opt, "--reply") == 0)
			reply_to = val;
		else if (strcmp(opt, "--user") == 0)
			user = val;
		else if (strcmp(opt, "--password") == 0)
			password = val;
		else if (strcmp(opt, "--token") == 0)
			s = natsOptions_SetToken(opts, val);
		else if (strcmp(opt, "--creds") == 0)
			s = natsOptions_SetUserCredentialsFromFiles(opts, val, NULL);
		else if (strcmp(opt, "--ca") == 0)
			s = natsOptions_LoadCATrustedCertificates(opts, val);
		else if (strcmp(opt, "--cert") == 0)
			cert = val;
		else if (strcmp(opt, "--key") == 0)
			key = val;
		else
			return usage();
		if (s != NATS_OK)
			return fail(opt, s, 0);
	}
	if (i >= argc)
		return usage();

	s = natsOptions_SetURL(opts, url);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(opts, timeout_ms);
	if (s == NATS_OK && user)
		s = natsOptions_SetUserInfo(opts, user, password);
	if (s == NATS_OK && cert)
		s = natsOptions_LoadCertificatesChain(opts, cert, key);
	if (s == NATS_OK)
		s = natsOptions_SetName(opts, "ism-nats");
	if (s == NATS_OK)
		s = natsConnection_Connect(&nc, opts);
	if (s != NATS_OK)
		return fail("connect", s, 0);

	rc = run_command(nc, argv[i], argc - i - 1, argv + i + 1);

	natsConnection_Destroy(nc);
	natsOptions_Destroy(opts);
	nats_Close();
	return rc;
}

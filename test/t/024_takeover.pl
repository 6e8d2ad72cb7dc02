# Taking over a running deployment: the platform's services stop, ism_state
# starts with the same routing file (the Helm chart's, rendered), and every
# message waiting on their consumers is processed once, with no operator
# step.  The streams and consumers are made exactly as the platform's
# client libraries make them, by sending the JetStream API requests they
# send:
#   - the state-tables writer's route, by the Go service (alethic-ism-core-go
#     pkg/routing/nats/nats_route.go, nats.go v1.42.0): a stream of the
#     subject, and js.QueueSubscribe's durable push consumer, durable and
#     deliver group the queue;
#   - the state router's inbound route, by the Python router (alethic-ism-core
#     ismcore/messaging/nats_message_route.py, nats.py): a work-queue stream
#     of [subject, subject.>] and the durable pull consumer "<name>_sub_1".
# Each service consumed part of its messages before it stopped: some acked
# (done: never again), some held unacked (they come back after the ack
# wait), the rest never delivered.
use strict;
use warnings;

use IsmTest;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

my $nats = IsmTest::Nats->new('takeover')->start;
my $url = $nats->url;
my $routing = helm_routing_file('takeover', $url);
my $r1 = '8d2f6a1b-4c7e-4b93-a5d0-1e9f3c6b7a28:7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52';
my $r2 = 'e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10';
my $table = '3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10_answers';

# A JetStream API request with the body a client library sends; dies on an
# error reply.
sub api
{
	my ($subject, $body) = @_;
	my ($rc, $out, $err) = nats_client($url, 'req', "\$JS.API.$subject", $body);
	die "$subject: $err" if $rc;
	my $reply = decode_json($out);
	die "$subject: $out" if $reply->{error};
	return $reply;
}

# nats-server 2.10.27 (Debian trixie's) skips messages on a consumer with
# two filter subjects: a pull of one, with three messages waiting, times out
# and the consumer counts all three delivered (2.9 ignores filter_subjects,
# 2.15 delivers).  The Python router's consumer has two filter subjects, so
# on such a server it loses messages itself, before any takeover.
sub multi_filter_consumer_skips
{
	api('STREAM.CREATE.probe', '{"name":"probe","subjects":["probe","probe.>"],"retention":"workqueue"}');
	api('CONSUMER.DURABLE.CREATE.probe.p', '{"stream_name":"probe","config":{"durable_name":"p",'
		  . '"deliver_policy":"all","ack_policy":"explicit","filter_subjects":["probe","probe.>"]}}');
	my ($rc, undef, $err) = nats_client($url, 'js-pub-n', 'probe', 3, '{}');
	die "js-pub-n: $err" if $rc;
	($rc) = nats_client($url, 'take-pull', 'probe', 'p', 1, 0);
	api('STREAM.DELETE.probe', '');
	return $rc != 0;
}
plan skip_all => 'this nats-server skips messages on a consumer with two filter subjects '
  . '(the Python router\'s): nothing to take over'
  if multi_filter_consumer_skips();

sub info_of
{
	my ($what, @args) = @_;
	my ($rc, $out, $err) = nats_client($url, $what, @args);
	die "$what @args: $err" if $rc;
	return { map { split /=/, $_, 2 } split /\n/, $out };
}

# --- the state-tables writer's route, as the Go service left it ----------------
my ($ws, $wq, $wsubj) = ('processor_transformer_state_tables',
	'processor_transformer_state_tables', 'processor.transformer.state.tables');

# nats_route.go Connect: no stream of that name, so js.AddStream(&StreamConfig{
# Name, Subjects: [subject]}); nats.go marshals the whole StreamConfig
# (jsm.go: the fields without omitempty), zero values meaning the server's
# defaults: limits retention, file storage.
api("STREAM.CREATE.$ws",
	qq({"name":"$ws","subjects":["$wsubj"],"retention":"limits","max_consumers":0,)
	  . qq("max_msgs":0,"max_bytes":0,"discard":"old","max_age":0,"max_msgs_per_subject":0,)
	  . qq("storage":"file","num_replicas":0}));

# nats_route.go subscribePush: the route has a queue and no mode, and the
# chart sets neither ack_wait nor max_ack_pending, so js.QueueSubscribe(
# subject, queue, cb) with no options.  nats.go js.go subscribe(): no
# durable given, so the queue is the durable; no such consumer, so it
# creates one with a new inbox (nc.NewInbox(): "_INBOX." and a NUID) as
# deliver subject, the subject as filter and the queue as deliver group,
# deliver all, explicit ack, instant replay; jsm.go upsertConsumer sends it
# to CONSUMER.CREATE.<stream>.<durable>.<filter> (nats-server 2.9 and later).
my $deliver = '_INBOX.' . join '', map { ('0' .. '9', 'A' .. 'Z', 'a' .. 'z')[ rand 62 ] } 1 .. 22;
api("CONSUMER.CREATE.$ws.$wq.$wsubj",
	qq({"stream_name":"$ws","config":{"durable_name":"$wq","deliver_policy":"all",)
	  . qq("ack_policy":"explicit","filter_subject":"$wsubj","replay_policy":"instant",)
	  . qq("deliver_subject":"$deliver","deliver_group":"$wq","num_replicas":0}}));

# --- the state router's inbound route, as the Python router left it -------------
my ($rs, $rsubj) = ('processor_state_router', 'processor.state.router');
my $rdurable = "${rs}_sub_1";

# nats_message_route.py create_stream: no stream of that name, so
# add_stream(StreamConfig(name, subjects=[subject, subject.>], storage=FILE,
# retention=WORK_QUEUE)); nats.py sends StreamConfig.as_dict(): the fields
# that are not None, durations in nanoseconds.
api("STREAM.CREATE.$rs",
	qq({"name":"$rs","subjects":["$rsubj","$rsubj.>"],"retention":"workqueue",)
	  . qq("discard":"old","discard_new_per_subject":false,"max_age":0,)
	  . qq("max_msgs_per_subject":-1,"max_msg_size":-1,"storage":"file","no_ack":false,)
	  . qq("duplicate_window":0,"sealed":false,"deny_delete":false,"deny_purge":false,)
	  . qq("allow_rollup_hdrs":false}));

# nats_message_route.py subscribe_pull_jetstream: add_consumer(stream=name,
# ConsumerConfig(durable_name="<name>_sub_1", ack_wait=the route's (the
# provider's default, 90 s: the chart sets none), deliver_policy=ALL,
# ack_policy=EXPLICIT, max_ack_pending=1000, flow_control=False,
# filter_subjects=[subject, subject.>])), then pull_subscribe_bind.  nats.py
# js/manager.py add_consumer: a durable and no name, so
# CONSUMER.DURABLE.CREATE.<stream>.<durable>, with ConsumerConfig.as_dict()
# (None left out; ack_wait, idle_heartbeat, inactive_threshold in
# nanoseconds, 0 for None).  nats-server 2.9 knows no filter_subjects (2.10
# does) and drops it: the consumer gets the whole stream, which is what the
# two filters cover.
api("CONSUMER.DURABLE.CREATE.$rs.$rdurable",
	qq({"stream_name":"$rs","config":{"durable_name":"$rdurable","deliver_policy":"all",)
	  . qq("ack_policy":"explicit","ack_wait":90000000000,)
	  . qq("filter_subjects":["$rsubj","$rsubj.>"],"replay_policy":"instant",)
	  . qq("max_ack_pending":1000,"flow_control":false,"idle_heartbeat":0,)
	  . qq("inactive_threshold":0}}));

# --- traffic, and services that stopped part way -------------------------------
my ($nw, $nr) = (40, 20);
my ($rc, undef, $err) = nats_client($url, 'js-pub-n', $wsubj, $nw,
	qq({"type":"query_state","route_id":"$r2","query_state":[{"n":%n}]}));
die "js-pub-n: $err" if $rc;
($rc, undef, $err) = nats_client($url, 'js-pub-n', $rsubj, $nr,
	qq({"type":"query_state_entry","route_id":"$r1","query_state":[{"question":"q%n"}]}));
die "js-pub-n: $err" if $rc;

# The Go service, in its deliver group: acked 10, was processing 5 when it was
# killed.  The server pushed it all it had (up to max_ack_pending), so the
# other 25 sat unacked in its client too: all 30 come back after the ack wait.
my ($out);
($rc, $out, $err) = nats_client($url, 'take', $deliver, $wq, 10, 5);
die "take: $err" if $rc;
is(() = $out =~ /^acked /mg, 10, 'the Go service acked 10 writer messages');

# The Python router fetches one at a time (batch_size 1): acked 5, held 3;
# 12 were never delivered.
($rc, $out, $err) = nats_client($url, 'take-pull', $rs, $rdurable, 5, 3);
die "take-pull: $err" if $rc;
is(() = $out =~ /^acked /mg, 5, 'the Python router acked 5 of its messages');

# --- ism_state starts with the same routing file --------------------------------
my $node = new_ism_node('takeover', $url, "ism_state.routing_file = '$routing'\n");
$node->start;
# the catalog first: the workers start consuming as the extension appears
$node->safe_psql('postgres', slurp_file('test/data/catalog.sql'));
$node->safe_psql('postgres', 'CREATE EXTENSION ism_state');
ok($node->poll_query_until('postgres', 'SELECT count(*) = 16 FROM ism_state.route'),
	"the chart's routing file loaded: 16 routes");

$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type LIKE 'ism_state %'")
  or die 'no workers';
wait_for_workers($node, "state = 'running' AND nats_state = 'connected'")
  or die 'the workers did not connect';

# Held messages come back once the ack wait (90 s) since their delivery has
# passed: the test waits for them.
ok($node->poll_query_until('postgres', "SELECT count(*) = " . ($nw - 10) . " FROM \"$table\""),
	'the writer wrote the 30 waiting records');
is($node->safe_psql('postgres',
		"SELECT count(DISTINCT n) || ' ' || min(n::int) || '-' || max(n::int) FROM \"$table\""),
	'30 11-40', 'each once, and none of the 10 the Go service had acked');

like(slurp_file($node->logfile),
	qr/consuming route "data\/transformers\/mixer\/state-tables-1.0": stream "$ws", push consumer "$wq", deliver group "$wq"\n/,
	"the writer bound to the Go service's push consumer, in its deliver group");
like(slurp_file($node->logfile),
	qr/consuming route "processor\/state\/router": stream "$rs", pull consumer "$rdurable"\n/,
	"the router bound to the Python router's pull consumer");
unlike(slurp_file($node->logfile), qr/cannot pull subscribe|could not consume/,
	'no subscription failed');

# The router forwarded each waiting query_state_entry to the openai processor:
# read them back through a consumer of that stream.
my $openai = 'processor_models_openai';
$node->poll_query_until('postgres',
	"SELECT sum(acked) = " . ($nr - 5) . " FROM ism_state.pg_stat_ism_routes"
	  . " WHERE selector = 'processor/state/router'")
  or die 'the router did not take all';
api("CONSUMER.DURABLE.CREATE.$openai.check",
	qq({"stream_name":"$openai","config":{"durable_name":"check","deliver_policy":"all","ack_policy":"explicit"}}));
($rc, $out, $err) = nats_client($url, 'take-pull', $openai, 'check', $nr, 0);
my @questions = sort { $a <=> $b } map { decode_json($_)->{query_state}[0]{question} =~ s/^q//r }
  $out =~ /^acked (.*)$/mg;
is("@questions", join(' ', 6 .. 20),
	'the router forwarded the 15 waiting messages, each once, none of the 5 acked before');

# Nothing is left, and no consumer was added or changed.
for ([ $ws, $wq ], [ $rs, $rdurable ])
{
	my ($stream, $consumer) = @$_;
	$node->poll_query_until('postgres', 'SELECT true') or die;
	my $ci = info_of('consumer-info', $stream, $consumer);
	is("$ci->{num_pending} $ci->{num_ack_pending}", '0 0', "$consumer: nothing pending");
	is(info_of('stream-info', $stream)->{consumers}, 1, "$stream: still its one consumer");
}
my $ci = info_of('consumer-info', $ws, $wq);
is("$ci->{deliver_subject} $ci->{deliver_group} $ci->{filter}", "$deliver $wq $wsubj",
	'the push consumer keeps its deliver subject, group and filter');

is($node->safe_psql('postgres', 'SELECT count(*) FROM ism_state.dead_letter'), '0',
	'no dead letters');
is($node->safe_psql('postgres',
		"SELECT string_agg(selector || ' ' || received || ' ' || acked, ', ' ORDER BY selector)"
		  . " FROM ism_state.pg_stat_ism_routes WHERE selector IN"
		  . " ('processor/state/router', 'data/transformers/mixer/state-tables-1.0')"),
	'data/transformers/mixer/state-tables-1.0 30 30, processor/state/router 15 15',
	'each waiting message received once and acked once');

$node->stop;
done_testing();

# Routing files the platform loads, load: the Helm chart's (rendered) and the
# state router's own examples.  What the platform trips over only where a
# route is used fails there, visibly (the worker's last_error, the route's
# row in pg_stat_ism_routes, a FAILED status naming the cause), while the
# other routes run: overlapping wildcards, a stream name or a durable name
# NATS refuses.  And the other ways a route is consumed: a push consumer
# made here as core-go makes one (and made again when it vanishes), pull
# (mode: pull), an unknown mode (push), core NATS (no JetStream).
use strict;
use warnings;

use Cwd ();
use IsmTest;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

my $nats = IsmTest::Nats->new('platform')->start;
my $url = $nats->url;
my $helm = helm_routing_file('platform', $url);
my $writer_route = 'data/transformers/mixer/state-tables-1.0';
my ($ws, $wq, $wsubj) = ('processor_transformer_state_tables',
	'processor_transformer_state_tables', 'processor.transformer.state.tables');
my $r2 = 'e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10';
my $openai = '7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52';
my $table = '3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10_answers';

my $node = new_ism_node('platform', $url, "ism_state.routing_file = '$helm'\n");
$node->start;
$node->safe_psql('postgres', slurp_file('test/data/catalog.sql'));
$node->safe_psql('postgres', 'CREATE EXTENSION ism_state');
$node->poll_query_until('postgres', 'SELECT count(*) = 16 FROM ism_state.route')
  or die 'the routing file was not loaded';
my $pids = worker_pids($node);

sub load_file
{
	my ($path, $replace) = @_;
	my ($rc, $out, $err) = $node->psql('postgres',
		"SELECT ism_state.load_routes_file('$path'" . ($replace ? ', true' : '') . ')');
	die "load $path: $err" if $rc;
	return ($out, $err);
}

sub info_of
{
	my ($what, @args) = @_;
	my ($rc, $out, $err) = nats_client($url, $what, @args);
	return undef if $rc;
	return { map { split /=/, $_, 2 } split /\n/, $out };
}

sub send_to
{
	my ($subject, $body, @options) = @_;
	$body = encode_json($body) if ref $body;
	my ($rc, undef, $err) = nats_client($url, @options,
		(grep { $_ eq '--reply' } @options) || $subject !~ /^processor\./ ? 'pub' : 'js-pub',
		$subject, $body);
	die "publish to $subject: $err" if $rc;
}

sub records
{
	my ($phase, @n) = @_;
	return { type => 'query_state', route_id => $r2,
		query_state => [ map { { phase => $phase, n => $_ } } @n ] };
}

sub rows_of
{
	my ($phase) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(n, ',' ORDER BY n::int) FROM \"$table\" WHERE phase = '$phase'");
}

sub wait_rows
{
	my ($phase, $expected) = @_;
	$node->poll_query_until('postgres',
		"SELECT coalesce(string_agg(n, ',' ORDER BY n::int), '') = '$expected'"
		  . " FROM \"$table\" WHERE phase = '$phase'")
	  or diag("rows of $phase: " . (rows_of($phase) // ''));
	return rows_of($phase);
}

sub delete_consumer
{
	my ($name) = @_;
	my ($rc, $out, $err) = nats_client($url, 'req', "\$JS.API.CONSUMER.DELETE.$ws.$name", '');
	die "delete $name: $err$out" if $rc || $out !~ /"success":true/;
}

# A reload also loads the routing file again (upsert): wait for that before
# changing the routes.
sub set_max_deliveries
{
	my ($value) = @_;
	my $offset = -s $node->logfile;
	$node->safe_psql('postgres', "ALTER SYSTEM SET ism_state.max_deliveries = $value");
	$node->reload;
	$node->wait_for_log(qr/router: loaded 16 routes from/, $offset) or die 'no reload';
}

sub update_writer_route
{
	my ($set) = @_;
	$node->safe_psql('postgres', "UPDATE ism_state.route SET $set WHERE selector = '$writer_route'");
}

sub worker_error
{
	my ($role) = @_;
	return $node->safe_psql('postgres',
		"SELECT last_error FROM ism_state.pg_stat_ism_worker WHERE role = '$role'");
}

sub route_error
{
	my ($selector) = @_;
	return $node->safe_psql('postgres',
		"SELECT last_error FROM ism_state.pg_stat_ism_routes WHERE selector = '$selector'");
}

# --- the platform's routing files load as they are -----------------------------
my ($out, $err) = load_file($helm);
is($out, '16', "the Helm chart's routing file loads: 16 routes");
is($err, '', 'without a warning');
is($node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE mode = 'push') || ' '"
		  . " || (SELECT subject || ' ' || jetstream_enabled FROM ism_state.route"
		  . "     WHERE selector = 'processor/state')"
		  . " || ' ' || count(*) FILTER (WHERE url = '$url') FROM ism_state.route"),
	'16 processor.state.{state_id} false 16',
	'no mode is push; the core NATS route keeps its subject; every URL rendered');

($out, $err) = load_file(Cwd::abs_path('test/data/platform/state-router-routing_nats.yaml'));
is($out, '7', "the state router's NATS example loads: 7 routes");
like($err,
	qr/WARNING:  NATS refuses the stream name of 5 routes: "image\/models\/openai\/dall-e-3" \(stream "image\.models\.openai\.dall-e-3"\); .*"data\/transformers\/mixer\/state-coalescer-1\.0"/,
	'its dotted stream names are named in a warning');

($out, $err) = load_file(Cwd::abs_path('test/data/platform/state-router-routing.yaml'));
is($out, '0', "the state router's Pulsar-era routing.yaml loads, with no routes");
like($err, qr/no "messageConfig.routes": no routes loaded\nDETAIL:  "messageConfig" has "root_route", "topic_routes"\./,
	'and a warning naming what it has instead');

# back to the chart's routes alone
($out) = load_file($helm, 1);
is($node->safe_psql('postgres', 'SELECT count(*) FROM ism_state.route'), '16', 'replaced');

# --- push: the consumer core-go would make, made here ----------------------------
$node->wait_for_log(qr/writer 1: consuming route "\Q$writer_route\E": stream "$ws", push consumer "$wq", deliver group "$wq"\n/)
  or die 'the writer is not consuming';
my $ci = info_of('consumer-info', $ws, $wq);
like("$ci->{deliver_subject} $ci->{deliver_group} $ci->{filter}", qr/^_INBOX\.\S+ $wq $wsubj$/,
	'no consumer: one is made as js.QueueSubscribe makes it (a new inbox, the queue as deliver group)');
is($ci->{push_bound}, 'true', 'and bound');
send_to($wsubj, records('push', 1 .. 3));
is(wait_rows('push', '1,2,3'), '1,2,3', 'records through the push consumer are written');

# nats.go deletes a consumer its subscribe made when that subscription ends:
# a Go service stopping after ism_state bound to it takes it away
my $offset = -s $node->logfile;
my $rc;
delete_consumer($wq);
$node->wait_for_log(qr/consumer "$wq" of stream "$ws" is gone; making it again/, $offset)
  or die 'the writer did not notice';
$node->wait_for_log(qr/consuming route "\Q$writer_route\E": stream "$ws", push consumer "$wq"/, $offset);
send_to($wsubj, records('again', 1, 2));
is(wait_rows('again', '1,2'), '1,2', 'the writer made it again and goes on');

# --- overlapping wildcards: loaded with a warning, the lookup FAILED naming them --------
sleep 1;	# the last flush's COMPLETED is out
my $mon = start_collecting($url, 'processor.monitor', 1, 20);
(undef, undef, $err) = $node->psql('postgres',
	"SELECT ism_state.add_route('language/models/*', 'language.models')");
like($err, qr/WARNING:  wildcard routes overlap: .*"language\/models\/\*" and "language\/models\/openai\/\*"/,
	'an overlapping wildcard route is added, with a warning naming the pair');
sleep 1;	# the router sees a change once its fetch (at most 500 ms) returns
send_to('processor.state.router',
	{ type => 'query_processor_entry', processor_id => $openai, query_state => [ { q => 1 } ] });
my $status = finish_collecting($mon)->[0][1];
is($status->{status}, 'FAILED', 'a lookup both match is FAILED');
like($status->{exception},
	qr/matches several wildcard routes: .*"language\/models\/\*".*"language\/models\/openai\/\*"/,
	'naming the candidates');
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM ism_state.dead_letter WHERE error LIKE '%\"language/models/*\"%'")
  or die 'no dead letter';
pass('and dead-lettered');
$node->safe_psql('postgres', "SELECT ism_state.remove_route('language/models/*')");
sleep 1;

# --- a stream name NATS refuses: only that route fails, visibly ---------------------
$offset = -s $node->logfile;
update_writer_route(q{name = 'processor.transformer.state.tables'});
$node->wait_for_log(qr/could not consume route "\Q$writer_route\E"/, $offset)
  or die 'no failure';
like(worker_error('writer'),
	qr/^could not consume route "\Q$writer_route\E": .*processor\.transformer\.state\.tables/,
	"the writer's last_error names the route and the stream");
like(route_error($writer_route), qr/^could not consume route/, 'and so does the route\'s row');

# the router goes on: forwards to other routes, FAILED for this one
my $fwd = start_collecting($url, 'processor.models.openai', 1, 20);
$mon = start_collecting($url, 'processor.monitor', 2, 20);
send_to('processor.state.router',
	{ type => 'query_processor_entry', processor_id => $openai, query_state => [ { q => 2 } ] });
is(finish_collecting($fwd)->[0][1]{query_state}[0]{q}, 2, 'the router forwards to the other routes');
send_to('processor.state.router', { type => 'query_state_entry', route_id => $r2,
		query_state => [ { phase => 'refused', n => 1 } ] });
my ($failed) = grep { $_->[1]{status} eq 'FAILED' } @{ finish_collecting($mon) };
like($failed->[1]{exception},
	qr/route "\Q$writer_route\E" has a stream name NATS refuses: "processor\.transformer\.state\.tables"/,
	'and a forward to that route is FAILED at once, naming it');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM ism_state.dead_letter WHERE error LIKE '%has a stream name NATS refuses%'"),
	'1', 'one dead letter for it');

update_writer_route("name = '$ws'");
$node->wait_for_log(qr/consuming route "\Q$writer_route\E": stream "$ws"/, $offset);
pass('the route put right is consumed again');

# --- a dotted queue: a durable name NATS refuses for JetStream ----------------------
$offset = -s $node->logfile;
update_writer_route(q{queue = 'state.tables.workers'});
$node->wait_for_log(qr/could not consume route "\Q$writer_route\E": .*state\.tables\.workers/, $offset)
  or die 'no failure';
like(worker_error('writer'), qr/state\.tables\.workers/,
	'a dotted queue on a JetStream route: its consumer fails, named');

# --- forwards never acknowledged: retried, then a dead letter (not a silent loss) ---------
# a processor whose stream takes no message as large as a forward
set_max_deliveries(2);
$node->safe_psql('postgres', qq{
	INSERT INTO processor_provider (id) VALUES ('code/executor/small');
	INSERT INTO processor (id, provider_id, project_id, status)
	VALUES ('small', 'code/executor/small', '5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03', 'CREATED');
	SELECT ism_state.add_route('code/executor/small', 'small.subject', 'small_stream');
});
($rc) = nats_client($url, 'stream-add', 'small_stream', '--max-msg-size', 10, 'small.subject');
is($rc, 0, 'a stream that refuses the forward');
sleep 1;
send_to('processor.state.router',
	{ type => 'query_processor_entry', processor_id => 'small', query_state => [ { q => 4 } ] });
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM ism_state.dead_letter WHERE error LIKE 'gave up after 2 deliveries: %'")
  or die 'no dead letter';
pass('a forward the stream refuses: retried, then a dead letter after max_deliveries');
set_max_deliveries('DEFAULT');

# --- pull, still: an existing consumer is taken as it is; a new one is pull -------------
$offset = -s $node->logfile;
update_writer_route("queue = '$wq', mode = 'pull'");
$node->wait_for_log(qr/push consumer "$wq", deliver group "$wq" \(as it is; the route says pull\)/, $offset)
  or die 'not consumed';
pass('mode pull, the consumer the queue names is push: consumed as it is');
# a work-queue stream (made here) takes one consumer per subject: the old
# one goes once the writer has left it
update_writer_route(q{queue = 'tables_pull'});
delete_consumer($wq);
$node->wait_for_log(qr/stream "$ws", pull consumer "tables_pull"\n/, $offset) or die 'no pull consumer';
$ci = info_of('consumer-info', $ws, 'tables_pull');
is("$ci->{deliver_subject}|$ci->{filter}", "|$wsubj", 'a new one is pull, filtered on the subject');
send_to($wsubj, records('pull', 1, 2));
is(wait_rows('pull', '1,2'), '1,2', 'records through the pull consumer are written');

# --- an unknown mode is push ---------------------------------------------------------
update_writer_route(q{queue = 'tables_sideways', mode = 'sideways'});
delete_consumer('tables_pull');
$node->wait_for_log(qr/push consumer "tables_sideways", deliver group "tables_sideways"\n/, $offset)
  or die 'no push consumer';
pass('an unknown mode is consumed as push, as core-go does');

# --- core NATS: no queue, no JetStream (core-go); at most once ----------------------
update_writer_route(q{queue = NULL, mode = 'push', subject = 'tables.core'});
$node->wait_for_log(
	qr/consuming route "\Q$writer_route\E": core NATS subject "tables.core", queue group "$ws"\n/,
	$offset) or die 'no core subscription';
pass('a route without a queue is a core NATS subscription, in a queue group');
send_to('tables.core', records('core', 1, 2));
# a reply subject is no ack subject of a stream's (nats-server refuses a
# client's "$JS.ACK." reply subject; the writer would not read one either)
send_to('tables.core', records('core', 3), '--reply', 'some.reply');
is(wait_rows('core', '1,2,3'), '1,2,3', 'core NATS messages are written');

# --- the router's route through core NATS, in a dotted queue group --------------------
$offset = -s $node->logfile;
$node->safe_psql('postgres',
	"UPDATE ism_state.route SET jetstream_enabled = false, queue = 'state.router.workers',"
	  . " subject = 'router.core' WHERE selector = 'processor/state/router'");
$node->wait_for_log(
	qr/router: consuming route "processor\/state\/router": core NATS subject "router.core", queue group "state.router.workers"\n/,
	$offset) or die 'no core subscription';
pass('jetstream_enabled false (ismcore): the router subscribes with core NATS, a dotted queue group');
$fwd = start_collecting($url, 'processor.models.openai', 1, 20);
send_to('router.core',
	{ type => 'query_processor_entry', processor_id => $openai, query_state => [ { q => 3 } ] });
is(finish_collecting($fwd)->[0][1]{query_state}[0]{q}, 3, 'and routes what comes');

# a dead letter of a core NATS route is replayed through core NATS
send_to('router.core',
	{ type => 'query_processor_entry', processor_id => 'later', query_state => [ { q => 5 } ] });
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM ism_state.dead_letter WHERE stream = '' AND subject = 'router.core'")
  or die 'no dead letter';
$node->safe_psql('postgres', "INSERT INTO processor (id, provider_id, project_id, status)"
	  . " VALUES ('later', 'language/models/openai/gpt-4o', '5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03', 'CREATED')");
$fwd = start_collecting($url, 'processor.models.openai', 1, 20);
$node->safe_psql('postgres', "SELECT ism_state.replay_dead_letter(id) FROM ism_state.dead_letter"
	  . " WHERE subject = 'router.core'");
is(finish_collecting($fwd)->[0][1]{query_state}[0]{q}, 5,
	'a core NATS dead letter, replayed once its cause is fixed, is routed');
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM ism_state.dead_letter WHERE subject = 'router.core'"),
	'and its row goes (published as it came, with core NATS: no PubAck to wait for)');

is_deeply(worker_pids($node), $pids, 'no worker restarted');
$node->stop;
done_testing();

# The state router against a real nats-server: each inbound type's
# published messages compared field by field with what the Python router
# sends (alethic-ism-state-router main.py), replay paging and chunking, and every kind of bad
# message (FAILED status, dead-letter row, the worker going on).
use strict;
use warnings;

use File::Copy;
use IsmTest;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes;

my $project = '5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03';
my $openai = '7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52';
my $tables = '3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10';
my $questions = '8d2f6a1b-4c7e-4b93-a5d0-1e9f3c6b7a28';
my $answers = 'e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16';
my $r1 = "$questions:$openai";
my $r2 = "$answers:$tables";

# 12 MB messages must reach the router, to be refused there
my $nats = IsmTest::Nats->new('router', conf => 'max_payload: 16MB')->start;
my $routing = "${PostgreSQL::Test::Utils::tmp_check}/routing.yaml";
copy('test/data/routing.yaml', $routing) or die $!;
my $node = new_ism_node('router', $nats->url,
	"ism_state.routing_file = '$routing'\nism_state.writer_workers = 0\n");	# the router alone
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION ism_state');
$node->safe_psql('postgres', slurp_file('test/data/catalog.sql'));
wait_for_workers($node, "state = 'running' AND nats_state = 'connected'");
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'ism_state router'")
  or die;
# the router consumes once its subscription is made
sleep 1;

my $url = $nats->url;
my $json = JSON::PP->new->canonical;

sub publish_inbound
{
	my ($body) = @_;
	my ($rc, $out, $err) = nats_client($url, 'js-pub', 'processor.state.router', \$body);
	die "js-pub failed: $err" if $rc;
}

# publish one inbound message; collect $count messages on $subject
sub route
{
	my ($body, $subject, $count) = @_;
	my $c = start_collecting($url, $subject, $count, 15);
	publish_inbound(ref $body ? $json->encode($body) : $body);
	return finish_collecting($c);
}

# Processor rows are cached for a second: a change applies within 2 s.
sub props { set_properties($node, @_); }

# --- query_state_entry --------------------------------------------------------
my $entries = [ { question => 'q1', score => 0.5, meta => { k => 1 }, x => undef },
	{ question => 'q2', flagged => JSON::PP::true } ];
my $mon = start_collecting($url, 'processor.monitor', 1, 15);
my $got = route({ type => 'query_state_entry', route_id => $r2,
		input_route_id => $r1, query_state => $entries },
	'data.transformers.state-tables', 1);
is(scalar @$got, 1, 'query_state_entry: one message');
my ($subject, $msg) = @{ $got->[0] };
is($subject, 'data.transformers.state-tables', 'on the plain route subject');
is_deeply([ sort keys %$msg ],
	[ sort qw(type input_route_id context route_id processor_id query_state) ],
	'with exactly the envelope keys');
is($msg->{type}, 'query_state', 'type query_state');
is($msg->{input_route_id}, $r1, 'input_route_id passed through');
is_deeply($msg->{context}, {}, 'context {} when absent');
is($msg->{route_id}, $r2, 'route_id is the inbound one');
is($msg->{processor_id}, $tables, 'processor_id from processor_state');
is_deeply($msg->{query_state}, $entries, 'entries unchanged');
my $status = finish_collecting($mon)->[0][1];
is_deeply($status, { type => 'processor_state', route_id => $r2, status => 'ROUTED',
		exception => undef, data => undef }, 'ROUTED on the monitor route');

# a single object is wrapped in a list; a truthy context passes through
$got = route({ type => 'query_state_entry', route_id => $r2,
		context => { user_id => 'u1' }, query_state => { a => 1 } },
	'data.transformers.state-tables', 1);
is_deeply($got->[0][1]{query_state}, [ { a => 1 } ], 'an object becomes a list of one');
is_deeply($got->[0][1]{context}, { user_id => 'u1' }, 'context passed through');
is($got->[0][1]{input_route_id}, undef, 'input_route_id null when absent');

# --- query_processor_entry -----------------------------------------------------
$mon = start_collecting($url, 'processor.monitor', 1, 3);
$got = route({ type => 'query_processor_entry', processor_id => $openai,
		input_route_id => 'ignored', query_state => [ { owner_id => 'o' } ] },
	'language.models.openai.>', 1);
($subject, $msg) = @{ $got->[0] };
is($subject, "language.models.openai.low.$project",
	'priority route: low by default, project id as partition key');
is_deeply([ sort keys %$msg ],
	[ sort qw(type input_route_id context processor_id query_state) ],
	'no route_id key');
is($msg->{input_route_id}, undef, 'input_route_id is null');
is($msg->{processor_id}, $openai, 'processor_id');
is(scalar @{ finish_collecting($mon) }, 0, 'no ROUTED without a route_id');

# --- subjects: priority and partition modes (ismcore get_publish_subject, main.py _get_partition_key) ---
my $entry_r1 = sub {
	my (%extra) = @_;
	return route({ type => 'query_state_entry', route_id => $r1,
			query_state => [ { model => 'gpt-4o' } ], %extra },
		'language.models.openai.>', 1)->[0][0];
};
is($entry_r1->(priority => 'high'), "language.models.openai.high.$project", 'priority high');
props($openai, { concurrencyMode => 'USER_ID' });
is($entry_r1->(context => { user_id => 'u7' }), 'language.models.openai.low.u7',
	'USER_ID mode: the context user');
is($entry_r1->(), "language.models.openai.low.$project", 'USER_ID without a context: the project');
props($openai, { concurrencyMode => 'ROUTE_ID' });
like($entry_r1->(), qr/^language\.models\.openai\.low\.\Q$questions\E:/, 'ROUTE_ID mode');
props($openai, { concurrencyMode => 'EXPRESSION', concurrencyExpression => "data['model']" });
is($entry_r1->(), "language.models.openai.low.$project.gpt-4o", 'EXPRESSION: data[...]');
props($openai, { concurrencyMode => 'expression',
		concurrencyExpression => "context.get('team', 'none') + '-' + str(data.get('n', 3))" });
is($entry_r1->(), "language.models.openai.low.$project.none-3",
	'EXPRESSION: get with defaults, +, str(), mode in any case');
props($openai, { concurrencyMode => 'EXPRESSION', concurrencyExpression => "__import__('os')" });
is($entry_r1->(), "language.models.openai.low.$project", 'outside the subset: the project id');
props($openai, { concurrencyMode => 'EXPRESSION',
		concurrencyExpression => ('str(' x 100000) . "'x'" . (')' x 100000) });
is($entry_r1->(), "language.models.openai.low.$project",
	'a hostile, deeply nested expression: the project id, no crash');

# --- query_state_route: the example state -----------------------------------------
props($openai, { maxBatchSize => 100, maxBatchLimit => 1 });
$got = route({ type => 'query_state_route', route_id => $r1 }, 'language.models.openai.>', 2);
is(scalar @$got, 2, 'replay: one message per row with maxBatchLimit 1');
($subject, $msg) = @{ $got->[0] };
is($subject, "language.models.openai.low.$project", 'on the partitioned subject');
is_deeply([ sort keys %$msg ], [ sort qw(type input_route_id context route_id query_state) ],
	'no processor_id key on a replay');
my @rows = map { $_->[1]{query_state}[0] } @$got;
like($rows[0]{run_id}, qr/^[0-9a-f]{8}$/, 'run_id: 8 hex characters');
like($rows[0]{run_created_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$/,
	'run_created_at: ISO 8601 with microseconds, UTC');
is($rows[1]{run_id}, $rows[0]{run_id}, 'one run stamp for the whole replay');
delete @$_{qw(run_id run_created_at)} for @rows;
is_deeply(\@rows, [ { question => 'What is 2+2?', animal => 'cat', meta => { k => 1 } },
		{ question => 'Hi', animal => undef, meta => undef } ],
	'every column, json as JSON, missing cells null');

# --- a 10,000-row state, maxBatchSize 100, maxBatchLimit 7 -----------------------
$node->safe_psql('postgres', q{
INSERT INTO state (id, project_id, count) VALUES ('big', '5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03', 10000);
INSERT INTO processor_state (id, processor_id, state_id, direction)
VALUES ('big:7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52', '7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52', 'big', 'INPUT');
INSERT INTO state_column (state_id, name, data_type) VALUES ('big', 'i', 'str'), ('big', 'doc', 'json');
INSERT INTO state_column_data (column_id, data_index, data_value, data_json_value)
SELECT c.id, g, CASE WHEN c.name = 'i' THEN g::text END,
       CASE WHEN c.name = 'doc' AND g % 10 <> 0 THEN jsonb_build_object('n', g) END
  FROM state_column c, generate_series(0, 9999) g WHERE c.state_id = 'big';
});
props($openai, { maxBatchSize => 100, maxBatchLimit => 7 });
$got = route({ type => 'query_state_route', route_id => "big:$openai" },
	'language.models.openai.>', 1500);
is(scalar @$got, 1500, '10,000 rows: 100 pages of 15 messages');
my @sizes = map { scalar @{ $_->[1]{query_state} } } @$got;
is_deeply(\@sizes, [ map { ((7) x 14, 2) } 1 .. 100 ],
	'14 messages of 7 entries and one of 2 per page');
my @seen = map { $_->{i} } map { @{ $_->[1]{query_state} } } @$got;
is_deeply(\@seen, [ map { "$_" } 0 .. 9999 ], 'every row once, in order');
is(scalar(grep { !defined $_->{doc} } map { @{ $_->[1]{query_state} } } @$got), 1000,
	'sparse cells are null');

# --- the empty state -------------------------------------------------------------
$node->safe_psql('postgres', "UPDATE state SET count = 0 WHERE id = '$questions'");
$got = route({ type => 'query_state_route', route_id => $r1 }, 'language.models.openai.>', 1);
is_deeply($got->[0][1]{query_state}, [], 'an empty state: one message with no entries');
$node->safe_psql('postgres', "UPDATE state SET count = 2 WHERE id = '$questions'");

# --- bad messages: FAILED, a dead letter, and the next good one routed -------------
$node->safe_psql('postgres', "SELECT ism_state.add_route('language/models/*', 'language.models')");
$node->safe_psql('postgres',
	"INSERT INTO processor_provider (id) VALUES ('vision/none'); "
	  . "INSERT INTO processor (id, provider_id, project_id, status) "
	  . "VALUES ('p-noroute', 'vision/none', '$project', 'CREATED')");
my $pid = worker_pids($node)->{router};
# body, the error, how many statuses (ROUTED too when it names a route)
my @bad = (
	[ '{"route_id": "x"}', qr/^message has no "type"$/, 2 ],
	[ '{"type": "query_state_sideways"}', qr/^unknown message type "query_state_sideways"$/, 1 ],
	[ '{"type": "query_state_entry", "query_state": []}', qr/without "route_id"/, 1 ],
	[ '{"type": "query_processor_entry", "query_state": []}', qr/without "processor_id"/, 1 ],
	[ qq({"type": "query_state_entry", "route_id": "$r2"}), qr/without "query_state"/, 2 ],
	[ '{"type": "query_state_route", "route_id": "no-such-route"}',
		qr/processor state \(route\) no-such-route not found/, 2 ],
	[ '{"type": "query_processor_entry", "processor_id": "p-noroute", "query_state": []}',
		qr/no route for provider_id "vision\/none"/, 1 ],
	[ qq({"type": "query_processor_entry", "processor_id": "$openai", "query_state": []}),
		qr/matches several wildcard routes/, 1 ],
	[ '{"type": "query_state_entry", ', qr/not valid JSON/, 1 ],
	[ "{\"type\": \"query_state_entry\", \"route_id\": \"\xff\xfe\"}", qr/not valid UTF-8/, 1 ],
	[ '{"type": "x", "pad": "' . ('x' x (12 * 1024 * 1024)) . '"}',
		qr/more than ism_state.max_message_bytes/, 1 ]);
for my $case (@bad)
{
	my ($body, $why, $nstatus) = @$case;
	my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM ism_state.dead_letter');
	$mon = start_collecting($url, 'processor.monitor', $nstatus, 10);
	publish_inbound($body);
	$node->poll_query_until('postgres',
		"SELECT count(*) > $before FROM ism_state.dead_letter") or die "no dead letter";
	my @statuses = map { $_->[1] } @{ finish_collecting($mon) };
	my ($failed) = grep { $_->{status} eq 'FAILED' } @statuses;
	my $label = substr($body, 0, 60);
	ok($failed && $failed->{exception} =~ $why, "FAILED status: $label")
	  or diag explain \@statuses;
	my $row = $node->safe_psql('postgres',
		'SELECT error, length(payload) FROM ism_state.dead_letter ORDER BY id DESC LIMIT 1');
	my ($error, $length) = split /\|/, $row;
	like($error, $why, 'and its dead letter');
	is($length, length($body), 'holding the whole message');
}
is(worker_pids($node)->{router}, $pid, 'the router never restarted');
$node->safe_psql('postgres', "SELECT ism_state.remove_route('language/models/*')");
sleep 1;
$got = route({ type => 'query_processor_entry', processor_id => $openai, query_state => [] },
	'language.models.openai.>', 1);
is(scalar @$got, 1, 'and the next good message is routed');

# --- a dead letter replayed once its cause is fixed -----------------------------
my $dead = $node->safe_psql('postgres',
	"SELECT id FROM ism_state.dead_letter WHERE error LIKE 'no route for provider_id%'");
$node->safe_psql('postgres', "SELECT ism_state.add_route('vision/none', 'vision.none')");
my $vision = start_collecting($url, 'vision.none', 1, 10);
is($node->safe_psql('postgres', "SELECT ism_state.replay_dead_letter($dead)"), 't',
	'replay_dead_letter marks the row');
$got = finish_collecting($vision);
is($got->[0][1]{processor_id}, 'p-noroute', 'the replayed message is routed now');
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM ism_state.dead_letter WHERE id = $dead")
  or die 'replayed dead letter not deleted';
pass('and its dead letter is gone');
is($node->safe_psql('postgres', 'SELECT ism_state.replay_dead_letter(-1)'), 'f',
	'replaying a missing row says so');

# nats.c made more threads for requests and publish acks: none takes a signal
my $router_pid = worker_pids($node)->{router};
my $masks = thread_signal_masks($router_pid);
my $pg_signals = (1 << 0) | (1 << 9) | (1 << 14);
my @open = grep { $_ != $router_pid && (hex($masks->{$_}) & $pg_signals) != $pg_signals }
  keys %$masks;
is(scalar @open, 0, 'after routing, every nats.c thread still blocks SIGHUP, SIGUSR1, SIGTERM');

my (undef, $info) = nats_client($url, 'consumer-info', 'processor_state_router',
	'processor_state_router_sub_1');
like($info, qr/^num_ack_pending=0$/m, 'every inbound message was settled');
like($info, qr/^num_redelivered=0$/m, 'none needed a redelivery');

$node->stop('fast');
done_testing();

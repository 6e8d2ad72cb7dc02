# The statistics views against known traffic: router messages good and
# bad, records written into two tables, a poison record; the exact counters
# in pg_stat_ism_routes and pg_stat_ism_tables, the worker view's in_flight;
# then the resets; a repeated error logged once and counted.  Then the
# views read in a tight loop while the workers are under load: no read
# waits for them.  Last, the wait event of a worker waiting for NATS
# (named IsmNatsServer from 17).
use strict;
use warnings;

use IsmTest;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $tables = '3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10';
my $other = '0c9e4a2b-7d15-4f36-8b2e-5a1d3c7f9e42';
my $r1 = '8d2f6a1b-4c7e-4b93-a5d0-1e9f3c6b7a28:7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52';
my $r2 = "e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:$tables";
my $r3 = "e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:$other";
my $router_route = 'processor/state/router';
my $writer_route = 'data/transformers/mixer/state-tables-1.0';
my $writer_subject = 'data.transformers.state-tables';

my ($nats, $node) = start_example_stack('stats');
my $url = $nats->url;
add_tables_processor($node, $other, '{"tableName": "other", "batchSize": 1, "includeTimestamp": false}');
$node->safe_psql('postgres', q{UPDATE processor SET properties =
	'{"tableName": "answers", "batchSize": 1, "includeTimestamp": false}'}
	  . " WHERE id = '$tables'");
Time::HiRes::sleep(1.2);	# the processor row is cached for a second
$node->safe_psql('postgres', 'SELECT ism_state.pg_stat_ism_reset()');

my $json = JSON::PP->new->canonical;
my $answers = "${tables}_answers";
my $other_table = "${other}_other";

sub publish
{
	my ($subject, $body) = @_;
	my ($rc, $out, $err) = nats_client($url, 'js-pub', $subject, \$body);
	die "js-pub: $err" if $rc;
	return length $body;
}

sub count_rows
{
	my ($table, $n) = @_;
	$node->poll_query_until('postgres', "SELECT count(*) = $n FROM \"$table\"")
	  or die "$table: not $n rows";
}

sub route_stats
{
	my ($selector, $columns) = @_;
	return $node->safe_psql('postgres',
		"SELECT $columns FROM ism_state.pg_stat_ism_routes WHERE selector = '$selector'");
}

sub table_stats
{
	my ($table, $columns) = @_;
	return $node->safe_psql('postgres',
		"SELECT $columns FROM ism_state.pg_stat_ism_tables WHERE table_name = '$table'");
}

# --- known traffic -------------------------------------------------------------------
# 5 query_state_entry messages of 2 records, routed to the state-tables
# route and written (one flush each); 3 bad router messages
my $bytes_in = 0;
for my $i (1 .. 5)
{
	$bytes_in += publish('processor.state.router', $json->encode({
		type => 'query_state_entry', route_id => $r2,
		query_state => [ { n => $i, k => 'a' }, { n => $i, k => 'b' } ] }));
	count_rows($answers, 2 * $i);
}
$bytes_in += publish('processor.state.router', $_)
  for ('not json', '{"type": "query_state_entry"}', qq({"type": "bogus", "route_id": "$r2"}));
# 2 messages of 3 records straight to the writer, into the other table
for my $i (1 .. 2)
{
	publish($writer_subject, $json->encode({ route_id => $r3,
		query_state => [ map { { n => $_ } } 1 .. 3 ] }));
	count_rows($other_table, 3 * $i);
}
# a poison record for the answers table (more columns than a table can
# have) and a message that is not JSON
publish($writer_subject, $json->encode({ route_id => $r2,
	query_state => [ { map { ("k$_" => 'v') } 1 .. 1700 } ] }));
publish($writer_subject, '{"route_id": ');
$node->poll_query_until('postgres',
	"SELECT count(*) = 5 FROM ism_state.dead_letter") or die 'dead letters';
$node->poll_query_until('postgres',
	"SELECT terminated = 2 FROM ism_state.pg_stat_ism_routes WHERE selector = '$writer_route'")
  or die 'writer counters';

is(route_stats($router_route,
		'received, routed, acked, nacked, terminated, failed, redeliveries, bytes_in'),
	"8|5|5|0|3|3|0|$bytes_in",
	'router route: 8 received, 5 routed and acked, 3 failed and terminated, bytes in');
like(route_stats($router_route, 'last_error'), qr/query_state|type|JSON|route/i,
	'router route: the last error');
is(route_stats($writer_route,
		'published, received, routed, acked, nacked, terminated, failed, redeliveries'),
	'5|9|7|7|0|2|2|0',
	'state-tables route: 5 published by the router, 9 received, 7 written, 2 failed');
ok(route_stats($writer_route, 'bytes_out > 0 AND bytes_in > bytes_out'),
	'state-tables route: bytes out (the router\'s) and in (the writer\'s)');
ok(route_stats('processor/monitor', 'published >= 7'),
	'monitor route: the statuses published');
is(table_stats($answers,
		'worker, records, batches, ddl_changes, dead_letters, failed_flushes, pending_records, pending_bytes'),
	'1|10|5|1|1|1|0|0',
	'answers table: 10 records in 5 batches, 1 DDL, 1 dead letter after 1 failed flush');
like(table_stats($answers, 'last_error'), qr/at most 1600 columns/, 'answers table: the last error');
ok(table_stats($answers,
		'flush_time_total > 0 AND flush_time_max <= flush_time_total AND last_flush_at > now() - interval \'1 minute\''),
	'answers table: flush times and the last flush');
is(table_stats($other_table, 'records, batches, ddl_changes, dead_letters, last_error IS NULL'),
	'6|2|1|0|t', 'other table: 6 records in 2 batches');
is($node->safe_psql('postgres',
		"SELECT string_agg(role || ':' || in_flight, ',' ORDER BY worker) FROM ism_state.pg_stat_ism_worker"),
	'router:0,writer:0', 'nothing in flight once all is settled');
is($node->safe_psql('postgres',
		'SELECT count(*) FILTER (WHERE w.activity = a.query) || \'/\' || count(*)'
		  . ' FROM ism_state.pg_stat_ism_worker w JOIN pg_stat_activity a USING (pid)'),
	'2/2', 'the view\'s activity is what pg_stat_activity shows');

# pending records show while a batch waits
$node->safe_psql('postgres', "UPDATE processor SET properties = "
	  . "'{\"tableName\": \"other\", \"batchSize\": 100, \"batchWindowTTL\": 30}' WHERE id = '$other'");
sleep 2;
my $waiting = $json->encode({ route_id => $r3, query_state => [ { n => 'w1' }, { n => 'w2' } ] });
publish($writer_subject, $waiting);
$node->poll_query_until('postgres',
	"SELECT pending_records = 2 FROM ism_state.pg_stat_ism_tables WHERE table_name = '$other_table'")
  or die 'no pending records';
is(table_stats($other_table, "pending_bytes, oldest_pending_age < interval '30 s'"),
	length($waiting) . '|t', 'a waiting batch: its records, bytes and age');
is($node->safe_psql('postgres',
		"SELECT in_flight FROM ism_state.pg_stat_ism_worker WHERE role = 'writer'"),
	'1', 'the waiting message is in flight');

# --- resets ------------------------------------------------------------------------------
is($node->safe_psql('postgres', "SELECT ism_state.pg_stat_ism_reset_table('$answers')"),
	't', 'reset one table');
is(table_stats($answers, 'records, batches, dead_letters, last_error IS NULL, stats_reset > now() - interval \'1 minute\''),
	'0|0|0|t|t', 'its counters are zero, stats_reset is now');
is(table_stats($other_table, 'records'), '6', 'the other table keeps its counters');
is($node->safe_psql('postgres', "SELECT ism_state.pg_stat_ism_reset_route('$router_route')"),
	't', 'reset one route');
is(route_stats($router_route, 'received + routed + acked + terminated + failed + bytes_in'),
	'0', 'its counters are zero');
is(route_stats($writer_route, 'received'), '10', 'the other routes keep theirs');
is($node->safe_psql('postgres', "SELECT ism_state.pg_stat_ism_reset_route('no/such/route')"),
	'f', 'resetting an unknown route says so');
$node->safe_psql('postgres', 'SELECT ism_state.pg_stat_ism_reset()');
is($node->safe_psql('postgres',
		'SELECT sum(received + routed + published + acked + nacked + terminated + failed'
		  . ' + bytes_in + bytes_out + redeliveries) FROM ism_state.pg_stat_ism_routes'),
	'0', 'reset all: every route counter is zero');
is($node->safe_psql('postgres',
		'SELECT sum(records + batches + ddl_changes + dead_letters + failed_flushes)'
		  . ' || \'|\' || sum(pending_records) FROM ism_state.pg_stat_ism_tables'),
	'0|2', 'every table counter is zero; what is pending still shows');

# --- an error that repeats is logged once, then counted ---------------------------------------
my $offset = -s $node->logfile;
publish('processor.state.router', '[1, 2]') for 1 .. 20;
$node->poll_query_until('postgres',
	"SELECT failed = 20 FROM ism_state.pg_stat_ism_routes WHERE selector = '$router_route'")
  or die 'the twenty were not counted';
my @lines = (slurp_file($node->logfile, $offset) =~ /WARNING: .*failed: message is not a JSON object/g);
is(scalar @lines, 1, 'twenty identical errors in a row: one log line, twenty in the counters');
sleep 10;
publish('processor.state.router', '[1, 2]');
$node->poll_query_until('postgres',
	"SELECT failed = 21 FROM ism_state.pg_stat_ism_routes WHERE selector = '$router_route'")
  or die 'the last one was not counted';
like(slurp_file($node->logfile, $offset), qr/DETAIL: +19 more like it were left out of the log/,
	'ten seconds later the next one is logged, with how many were left out');

# --- reading the views under load never waits for the workers --------------------------------
$node->safe_psql('postgres', "UPDATE processor SET properties = "
	  . "'{\"tableName\": \"load\", \"batchSize\": 100, \"batchWindowTTL\": 1}' WHERE id = '$tables'");
sleep 2;
my $body = $json->encode({ route_id => $r2, query_state => [ map { { n => '%n', j => $_ } } 1 .. 10 ] });
my ($pub_out, $pub_err) = ('', '');
my $publisher = IPC::Run::start(
	[ 'test/ism-nats', '-s', $url, '-t', '60000', 'js-pub-n', $writer_subject, '5000', $body ],
	'<', \undef, '>', \$pub_out, '2>', \$pub_err);
my $worst = $node->safe_psql('postgres', q{
	DO $$
	DECLARE
		t0 timestamptz;
		worst interval := '0';
	BEGIN
		FOR i IN 1 .. 3000 LOOP
			t0 := clock_timestamp();
			PERFORM * FROM ism_state.pg_stat_ism_routes;
			PERFORM * FROM ism_state.pg_stat_ism_tables;
			PERFORM * FROM ism_state.pg_stat_ism_worker;
			worst := greatest(worst, clock_timestamp() - t0);
		END LOOP;
		PERFORM set_config('ism.worst', extract(epoch FROM worst)::text, false);
	END $$;
	SELECT current_setting('ism.worst')::float8 * 1000});
$publisher->finish;
count_rows("${tables}_load", 50000);
cmp_ok($worst, '<', 100, "3,000 reads of the three views during a 50,000-record load: the slowest took ${worst} ms");
is(table_stats("${tables}_load", 'records'), '50000', 'and the counters kept up: 50,000 records');

# --- waiting for the NATS server: a wait event of its own from 17 --------------------------------
# Idle, each worker spends most of its time in a fetch from the server.
my $v17 = $node->safe_psql('postgres', 'SHOW server_version_num') >= 170000;
my $event = $v17 ? 'IsmNatsServer' : 'Extension';
for my $worker ('router', 'writer')
{
	ok($node->poll_query_until('postgres',
			"SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'ism_state $worker' "
			  . "AND wait_event_type = 'Extension' AND wait_event = '$event'"),
		"the $worker waiting for NATS shows in pg_stat_activity as Extension: $event");
}
SKIP:
{
	skip 'custom wait events (and pg_wait_events) are new in 17', 1 unless $v17;
	is($node->safe_psql('postgres',
			"SELECT type || ': ' || name FROM pg_wait_events WHERE name LIKE 'Ism%'"),
		'Extension: IsmNatsServer', 'pg_wait_events lists it');
}

$node->stop('fast');
done_testing();

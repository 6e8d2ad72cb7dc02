# The state-tables writer against a real nats-server: the upstream table
# name, a column per key (added as new keys come), values as documented,
# size- and time-triggered flushes, COMPLETED per route per flush, hostile
# keys and table names, exactly-once on redelivery, bad messages dead-
# lettered, and a flush at shutdown.
use strict;
use warnings;

use IsmTest;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $tables = '3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10';
my $r2 = "e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:$tables";
my $subject = 'data.transformers.state-tables';

my ($nats, $node) = start_example_stack('writer');
my $url = $nats->url;
my $routing = "${PostgreSQL::Test::Utils::tmp_check}/routing-writer.yaml";
my $json = JSON::PP->new->canonical;

sub props { set_properties($node, $tables, @_); }

sub send_records
{
	my ($body) = @_;
	$body = $json->encode($body) if ref $body;
	my ($rc, $out, $err) = nats_client($url, 'js-pub', $subject, \$body);
	die "js-pub: $err" if $rc;
	return $out =~ /seq=(\d+)/ ? $1 : undef;
}

# a table name as a quoted identifier
sub qi { my ($name) = @_; return '"' . ($name =~ s/"/""/gr) . '"'; }

sub rows
{
	my ($table, $columns, $order) = @_;
	return $node->safe_psql('postgres',
		"SELECT $columns FROM " . qi($table) . " ORDER BY $order");
}

sub wait_rows
{
	my ($table, $n) = @_;
	# an error (no table yet) counts as not yet
	return $node->poll_query_until('postgres', "SELECT count(*) = $n FROM " . qi($table));
}

# --- the example message, a size-triggered flush ---------------------------------
props({ tableName => 'answers', batchSize => 3, batchWindowTTL => 60, includeTimestamp => JSON::PP::true });
my $mon = start_collecting($url, 'processor.monitor', 1, 15);
send_records(slurp_file('test/data/messages/query_state_to_tables.json'));
my $table = "${tables}_answers";
wait_rows($table, 3) or die 'no rows';
pass('the example message: 3 rows in the upstream-named table');
is($node->safe_psql('postgres',
		"SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute "
		  . "WHERE attrelid = '\"$table\"'::regclass AND attnum > 0"),
	'question,response,model,score,tokens,cached,meta,reviewer,_timestamp,flagged',
	'a column per key of the whole batch, first seen first (flagged only in the third record)');
is(rows($table, "score, tokens, cached, meta, coalesce(reviewer, '<null>'), coalesce(flagged, '<null>')", 'question'),
	join("\n",
		'0.99|3|true|{"finish_reason":"stop","latency_ms":430}|<null>|<null>',
		'0.81|23|false|{"finish_reason":"stop","latency_ms":1267}|a.khan|true',
		'0.92|14|false|{"finish_reason":"stop","latency_ms":812}|<null>|<null>'),
	'numbers and booleans as JSON text, objects as compact JSON, null as NULL');
like($node->safe_psql('postgres', "SELECT min(_timestamp) FROM \"$table\""),
	qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, '_timestamp in RFC 3339, UTC, seconds');
is_deeply(finish_collecting($mon)->[0][1],
	{ type => 'models', route_id => $r2, status => 'COMPLETED', data => undef },
	'COMPLETED for the route, in the upstream shape');

# --- a time-triggered flush, a new key -------------------------------------------
props({ tableName => 'answers', batchSize => 100, batchWindowTTL => 2, includeTimestamp => JSON::PP::false });
my $sent = time;
send_records({ type => 'query_state', route_id => $r2,
		query_state => [ { question => 'late', new_key => 'n' } ] });
wait_rows($table, 4) or die 'time flush';
my $took = time - $sent;
cmp_ok($took, '<', 2 + 1 + 1.5, "flushed by the timer after ${took}s (batchWindowTTL 2)");
is($node->safe_psql('postgres',
		"SELECT new_key || '|' || coalesce(_timestamp, '<null>') FROM \"$table\" WHERE question = 'late'"),
	'n|<null>', 'a new key adds a column; no _timestamp when it is off');
is($node->safe_psql('postgres', "SELECT count(*) FROM \"$table\" WHERE new_key IS NULL"),
	'3', 'the earlier rows have NULL there');

# --- hostile keys and table name -------------------------------------------------
my $evil_table = 'x"; DROP TABLE processor; --' . ('y' x 200);
props({ tableName => $evil_table, batchSize => 1 });
my @keys = ('a"b', '?', '@id', 'ünïcødé', 'x; DROP TABLE state; --', 'k' x 200, '');
# the file's bytes are UTF-8 and go to SQL as they are; in JSON the
# non-ASCII key is written as \u escapes, which the writer decodes to UTF-8
my $body = $json->encode({ route_id => $r2,
		query_state => [ { map { ($_ eq 'ünïcødé' ? 'UNICODE_KEY' : $_) => "v" } @keys } ] });
$body =~ s/UNICODE_KEY/\\u00fcn\\u00efc\\u00f8d\\u00e9/;
send_records($body);
my $mapped = $node->safe_psql('postgres',
	"SELECT ism_state.table_name('$tables', \$t\$$evil_table\$t\$)");
wait_rows($mapped, 1) or die 'hostile table';
pass('a hostile tableName makes one table, named as table_name() says');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_class WHERE relname IN ('processor', 'state')"),
	'2', 'and drops nothing');
my $key_array = 'ARRAY[' . join(', ', map { "\$k\$${_}\$k\$" } @keys, '_timestamp') . ']';
my $attrs = "SELECT attname FROM pg_attribute WHERE attnum > 0 AND attrelid = "
  . "(SELECT oid FROM pg_class WHERE relname = \$t\$$mapped\$t\$)";
is($node->safe_psql('postgres',
		"SELECT (SELECT count(*) FROM ($attrs) a) || ',' || "
		  . "(SELECT count(*) FROM unnest($key_array) k "
		  . " WHERE ism_state.column_name(k) IN ($attrs))"),
	scalar(@keys) + 1 . ',' . (scalar(@keys) + 1),
	'hostile keys: exactly the named columns, one per key');

# --- exactly once: a message already applied is acked, not written again ----------
props({ tableName => 'answers', batchSize => 1 });
my (undef, $info) = nats_client($url, 'stream-info', 'data_transformers_state_tables');
my ($last) = $info =~ /^last_seq=(\d+)$/m;
$node->safe_psql('postgres',
	"INSERT INTO ism_state.applied VALUES ('data_transformers_state_tables', " . ($last + 1) . ")");
send_records({ route_id => $r2, query_state => [ { question => 'duplicate' } ] });
send_records({ route_id => $r2, query_state => [ { question => 'after' } ] });
wait_rows($table, 5) or die 'after';
is($node->safe_psql('postgres', "SELECT count(*) FROM \"$table\" WHERE question = 'duplicate'"),
	'0', 'a message recorded as applied is not written twice');
$node->poll_query_until('postgres', 'SELECT true') or die;
(undef, $info) = nats_client($url, 'consumer-info', 'data_transformers_state_tables',
	'state_tables_workers');
like($info, qr/^num_ack_pending=0$/m, 'and is acknowledged');

# --- bad messages: FAILED, dead letter, the writer goes on -------------------------
my $pid = worker_pids($node)->{writer};
for my $case ([ '{"route_id": ', qr/not valid JSON/ ],
	[ '{"query_state": []}', qr/without a "route_id"/ ],
	[ qq({"route_id": "$r2", "query_state": [1, 2]}), qr/every record .* must be an object/ ],
	[ '{"route_id": "nowhere", "query_state": []}', qr/route\) nowhere not found/ ])
{
	my ($body, $why) = @$case;
	my $before = $node->safe_psql('postgres',
		"SELECT count(*) FROM ism_state.dead_letter WHERE worker = 'writer'");
	$mon = start_collecting($url, 'processor.monitor', 1, 10);
	send_records($body);
	$node->poll_query_until('postgres',
		"SELECT count(*) > $before FROM ism_state.dead_letter WHERE worker = 'writer'")
	  or die 'no dead letter';
	my $status = finish_collecting($mon)->[0][1];
	ok($status->{status} eq 'FAILED' && $status->{exception} =~ $why,
		"FAILED and a dead letter: $body");
}
props({ tableName => 42 });
send_records({ route_id => $r2, query_state => [ { question => 'bad props' } ] });
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM ism_state.dead_letter WHERE error LIKE '%\"tableName\" must be a string%'")
  or die 'bad properties';
pass('bad processor properties: a dead letter naming the property');
is(worker_pids($node)->{writer}, $pid, 'the writer never restarted');

# --- a poison record among 10,000 good ones ---------------------------------------
props({ tableName => 'poison', batchSize => 500, batchWindowTTL => 1, includeTimestamp => JSON::PP::false });
my $good = $json->encode({ route_id => $r2, query_state => [ { n => 'x' } ] });
# more columns than a table can have (1,600)
my $poison = $json->encode({ route_id => $r2,
		query_state => [ { map { ("k$_" => 'v') } 1 .. 1700 } ] });
my $dead_before = $node->safe_psql('postgres', 'SELECT count(*) FROM ism_state.dead_letter');
$mon = start_collecting($url, 'processor.monitor', 10000, 5);
my ($rc, $out, $err) = nats_client($url, '-t', '60000', 'js-pub-n', $subject, 5000, $good);
is($rc, 0, '5,000 good messages') or diag $err;
send_records($poison);
($rc, $out, $err) = nats_client($url, '-t', '60000', 'js-pub-n', $subject, 5000, $good);
is($rc, 0, 'the poison, then 5,000 more');
wait_rows("${tables}_poison", 10000) or die 'good rows';
pass('all 10,000 good records are written');
$node->poll_query_until('postgres',
	"SELECT count(*) = $dead_before + 1 FROM ism_state.dead_letter")
  or die 'no dead letter';
like($node->safe_psql('postgres',
		'SELECT error FROM ism_state.dead_letter ORDER BY id DESC LIMIT 1'),
	qr/tables can have at most 1600 columns/, 'the poison is one dead letter, with its error');
my @failed = grep { $_->[1]{status} eq 'FAILED' } @{ finish_collecting($mon) };
is(scalar @failed, 1, 'and one FAILED status');
is($node->safe_psql('postgres', "SELECT count(*), count(DISTINCT ctid) FROM \"${tables}_poison\""),
	'10000|10000', 'no duplicates');
is(worker_pids($node)->{writer}, $pid, 'the writer is still the same process');

# --- the subscription goes while records wait: they are let go, not lost -------------
props({ tableName => 'answers', batchSize => 1000, batchWindowTTL => 3600 });
send_records({ route_id => $r2, query_state => [ { question => 'while dropped' } ] });
sleep 1;
$node->safe_psql('postgres', "SELECT ism_state.remove_route('data/transformers/mixer/state-tables-1.0')");
sleep 1;
is(worker_pids($node)->{writer}, $pid, 'removing the route with records pending: no crash');
$node->safe_psql('postgres', "SELECT ism_state.load_routes_file('$routing')");
$node->safe_psql('postgres',
	"UPDATE ism_state.route SET ack_wait = 2 WHERE selector = 'data/transformers/mixer/state-tables-1.0'");
props({ tableName => 'answers', batchSize => 1 });
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM \"$table\" WHERE question = 'while dropped'")
  or die 'the released message did not come back';
pass('the message comes back once the route is there again, and is written once');

# --- ism_state.applied forgets after ism_state.applied_retention ---------------------
ok($node->safe_psql('postgres', 'SELECT count(*) FROM ism_state.applied') > 10000,
	'every written message is remembered');
$node->safe_psql('postgres', "ALTER SYSTEM SET ism_state.applied_retention = '2s'");
$node->reload;
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM ism_state.applied WHERE applied_at < now() - interval '10 s'")
  or die 'applied not pruned';
pass('and forgotten after the retention');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET ism_state.applied_retention');
$node->reload;

# --- pending records are flushed at shutdown ----------------------------------------
props({ tableName => 'answers', batchSize => 1000, batchWindowTTL => 3600 });
send_records({ route_id => $r2, query_state => [ { question => 'at shutdown' } ] });
sleep 1;
is($node->safe_psql('postgres', "SELECT count(*) FROM \"$table\" WHERE question = 'at shutdown'"),
	'0', 'a record waits in its batch');
$node->stop('fast');
$node->start;
is($node->safe_psql('postgres', "SELECT count(*) FROM \"$table\" WHERE question = 'at shutdown'"),
	'1', 'and is written when the server stops');
(undef, $info) = nats_client($url, 'consumer-info', 'data_transformers_state_tables',
	'state_tables_workers');
like($info, qr/^num_pending=0$/m, 'nothing left in the stream');

$node->stop('fast');
done_testing();

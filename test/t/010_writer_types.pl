# The writer's column types and limits: "columnTypes": "infer" types new
# columns from their values and widens them when later values do not fit
# (exactly: see test/t/020_exact_values.pl for numbers beyond bigint and
# double precision);
# a typed table is written as it is in the default mode (a value it cannot
# take is dead-lettered alone); a table locked by someone else does not
# stall the writes into the others; a batch is flushed when it reaches
# ism_state.writer_batch_max_records, whatever batchSize says.
use strict;
use warnings;

use IsmTest;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $tables = '3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10';
my $other = '0c9e4a2b-7d15-4f36-8b2e-5a1d3c7f9e42';
my $r2 = "e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:$tables";
my $r3 = "e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:$other";	# add_tables_processor's
my $subject = 'data.transformers.state-tables';

my ($nats, $node) = start_example_stack('types');
my $url = $nats->url;
# a second state-tables processor, with its own table
add_tables_processor($node, $other, '{"tableName": "other", "batchSize": 1, "includeTimestamp": false}');
my $json = JSON::PP->new->canonical;
my $table = "${tables}_typed";

sub props { set_properties($node, $tables, @_); }

sub send_records
{
	my ($route, @records) = @_;
	my $body = $json->encode({ route_id => $route, query_state => \@records });
	my ($rc, $out, $err) = nats_client($url, 'js-pub', $subject, \$body);
	die "js-pub: $err" if $rc;
}

sub column_types
{
	my ($name) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)"
		  . " FROM pg_attribute WHERE attrelid = '\"$name\"'::regclass AND attnum > 0");
}

sub wait_count
{
	my ($name, $where, $n) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) = $n FROM \"$name\" WHERE $where");
}

# --- inferred types ------------------------------------------------------------------
props({ tableName => 'typed', batchSize => 2, batchWindowTTL => 60,
		includeTimestamp => JSON::PP::true, columnTypes => 'infer' });
send_records($r2,
	{ i => 1, f => 1.5, b => JSON::PP::true, o => { x => [ 1, 2 ] }, s => 'str', big => 1000000000000000, n => undef },
	{ i => -2, f => 2, b => JSON::PP::false, o => [1], s => '3', big => 3 });
wait_count($table, 'true', 2) or die 'no typed rows';
is(column_types($table),
	'b boolean, big bigint, f double precision, i bigint, n text, o jsonb, s text, '
	  . '_timestamp timestamp with time zone',
	'infer: bigint, double, boolean, jsonb, text, timestamptz; text for a column of nulls');
is($node->safe_psql('postgres',
		"SELECT i + 1, f * 2, NOT b, o -> 0, s, big, n IS NULL, _timestamp > now() - interval '1 minute'"
		  . " FROM \"$table\" ORDER BY i"),
	"-1|4|t|1|3|3|t|t\n2|3|f||str|1000000000000000|t|t",
	'infer: the values are typed (arithmetic, jsonb operators, a recent timestamp)');

send_records($r2,
	{ i => 'seven', f => 7, b => 3, big => 2.5, o => { y => 1 } },
	{ i => 8, s => JSON::PP::true });
wait_count($table, 'true', 4) or die 'no widened rows';
is(column_types($table),
	'b text, big numeric, f double precision, i text, n text, o jsonb, s text, '
	  . '_timestamp timestamp with time zone',
	'a value that does not fit widens: bigint to numeric for a fraction (its integers stay exact), to text otherwise');
is($node->safe_psql('postgres', "SELECT string_agg(i || ':' || coalesce(b, '-') || ':' || coalesce(s, '-')"
		  . " || ':' || coalesce(big::text, '-'), ',' ORDER BY f NULLS LAST) FROM \"$table\""),
	'1:true:str:1000000000000000,-2:false:3:3,seven:3:-:2.5,8:-:true:-',
	'the rows written before keep their values in the wider columns');

# --- the default mode writes a typed table as it is ------------------------------------
props({ tableName => 'typed', batchSize => 2, batchWindowTTL => 60, includeTimestamp => JSON::PP::false });
my $dead_before = $node->safe_psql('postgres', 'SELECT count(*) FROM ism_state.dead_letter');
my $mon = start_collecting($url, 'processor.monitor', 3, 15);
send_records($r2, { f => 9.25, o => { z => 1 }, s => 'text mode' });
send_records($r2, { f => 'not a number', s => 'bad' });
wait_count($table, "s = 'text mode'", 1) or die 'text mode row';
is($node->safe_psql('postgres', "SELECT f + 0.75, o ->> 'z' FROM \"$table\" WHERE s = 'text mode'"),
	'10|1', 'a typed column takes its values in text mode');
is(column_types($table) =~ /f double precision/ ? 1 : 0, 1, 'and keeps its type');
$node->poll_query_until('postgres',
	"SELECT count(*) = $dead_before + 1 FROM ism_state.dead_letter") or die 'no dead letter';
like($node->safe_psql('postgres', 'SELECT error FROM ism_state.dead_letter ORDER BY id DESC LIMIT 1'),
	qr/invalid input syntax for type double precision/,
	'a value the column cannot take: a dead letter with the error');
my @statuses = map { $_->[1]{status} } @{ finish_collecting($mon) };
is(join(',', sort @statuses), 'COMPLETED,FAILED', 'one FAILED, and COMPLETED for the rest');
is($node->safe_psql('postgres', "SELECT count(*) FROM \"$table\" WHERE s = 'bad'"), '0',
	'nothing of the bad record is written');

# --- numbers keep their digits ---------------------------------------------------------
props({ tableName => 'exact', batchSize => 1, includeTimestamp => JSON::PP::false });
my $exact = qq({"route_id":"$r2","query_state":[{"t":1795491863854637,"x":0.1,)
  . qq("y":1.0000000000000002,"o":{"t":1795491863854637,"e":1.5e300}}]});
nats_client($url, 'js-pub', $subject, \$exact);
wait_count("${tables}_exact", 'true', 1) or die 'no exact row';
is($node->safe_psql('postgres', "SELECT t || ' ' || x || ' ' || y || ' ' || o FROM \"${tables}_exact\""),
	'1795491863854637 0.1 1.0000000000000002 {"t":1795491863854637,"e":1.5e300}',
	'numbers keep every digit, also inside objects, as sent (cJSON\'s printer would round them)');

# --- a locked table does not stall the others -------------------------------------------
props({ tableName => 'typed', batchSize => 1, includeTimestamp => JSON::PP::false });
my $locker = $node->background_psql('postgres');
$locker->query_safe("BEGIN; LOCK TABLE \"$table\" IN ACCESS EXCLUSIVE MODE");
send_records($r2, { s => 'while locked' });
my $sent = time;
send_records($r3, { s => 'other table' });
wait_count("${other}_other", "s = 'other table'", 1) or die 'other table stalled';
my $took = time - $sent;
cmp_ok($took, '<', 10, "another table is written while one is locked (${took}s)");
sleep 2;
ok($node->log_contains(qr/will be retried: canceling statement due to lock timeout/),
	'the locked table\'s batch waits for a retry (lock timeout)');
$locker->query_safe('COMMIT');
$locker->quit;
wait_count($table, "s = 'while locked'", 1) or die 'locked table never written';
pass('once the lock goes, the waiting record is written, once');

# --- a batch is flushed at ism_state.writer_batch_max_records -----------------------------
$node->append_conf('postgresql.conf', "ism_state.writer_batch_max_records = 50\n");
$node->reload;
props({ tableName => 'capped', batchSize => 100000, batchWindowTTL => 3600, includeTimestamp => JSON::PP::false });
send_records($r2, map { { n => $_ } } 1 .. 30) for 1 .. 2;
wait_count("${tables}_capped", 'true', 60) or die 'the capped batch was not flushed';
pass('batchSize 100,000 and an hour\'s window, but 60 records flush at writer_batch_max_records 50');

# --- the writer knows its tables' columns; a column dropped behind its back -------------
my $dead = $node->safe_psql('postgres', 'SELECT count(*) FROM ism_state.dead_letter');
send_records($r3, { s => 'before the drop', extra => 'e1' });
wait_count("${other}_other", "s = 'before the drop'", 1) or die 'no row before the drop';
$node->safe_psql('postgres', "ALTER TABLE \"${other}_other\" DROP COLUMN extra");
send_records($r3, { s => 'after the drop', extra => 'e2' });
wait_count("${other}_other", "s = 'after the drop' AND extra = 'e2'", 1)
  or die 'the dropped column was not added again';
pass('a column dropped by someone else is added again at the next flush');
is($node->safe_psql('postgres', 'SELECT count(*) FROM ism_state.dead_letter'), $dead,
	'and nothing is dead-lettered for it');

# --- a batch that waits longer than ack_wait: no redelivery, written once ----------------
$node->safe_psql('postgres',
	"UPDATE ism_state.route SET ack_wait = 2 WHERE selector = 'data/transformers/mixer/state-tables-1.0'");
props({ tableName => 'patient', batchSize => 1000, batchWindowTTL => 7, includeTimestamp => JSON::PP::false });
send_records($r2, { n => 'waits 7 s' });
wait_count("${tables}_patient", 'true', 1) or die 'the patient batch was not flushed';
sleep 3;
is($node->safe_psql('postgres', "SELECT count(*) FROM \"${tables}_patient\""), '1',
	'a record that waited 7 s with ack_wait 2 s is written once');
my (undef, $info) = nats_client($url, 'consumer-info', 'data_transformers_state_tables',
	'state_tables_workers');
like($info, qr/^num_redelivered=0$/m, 'and was never redelivered (reported in progress)');

$node->stop('fast');
done_testing();

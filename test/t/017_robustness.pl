# Regression tests for the defects a code review of 2cdf663 found (issue
# #14): each section names its item.  Two of them took the whole cluster
# down (a segfault in a worker restarts every backend), so the test also
# checks, at the end, that the postmaster never restarted.
use strict;
use warnings;

use IsmTest;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

my $project = '5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03';
my $openai = '7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52';
my $tables = '3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10';
my $r1 = "8d2f6a1b-4c7e-4b93-a5d0-1e9f3c6b7a28:$openai";
my $r2 = "e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:$tables";
my $writer_subject = 'data.transformers.state-tables';
my $json = JSON::PP->new->canonical;

my ($nats, $node) = start_example_stack('robust', "max_prepared_transactions = 2\n");
my $url = $nats->url;
my $started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');

sub props { set_properties($node, $tables, @_); }

sub send_records
{
	my ($route, @records) = @_;
	my $body = $json->encode({ route_id => $route, query_state => \@records });
	my ($rc, $out, $err) = nats_client($url, 'js-pub', $writer_subject, \$body);
	die "js-pub: $err" if $rc;
}

sub route_message
{
	my ($message) = @_;
	my $body = $json->encode($message);
	my ($rc, $out, $err) = nats_client($url, 'js-pub', 'processor.state.router', \$body);
	die "js-pub: $err" if $rc;
}

sub rows_of
{
	my ($table, $what) = @_;
	return $node->safe_psql('postgres', "SELECT $what FROM \"${tables}_$table\"");
}

sub wait_rows
{
	my ($table, $n) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) = $n FROM \"${tables}_$table\"");
}

sub dead_letters_like
{
	my ($pattern) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM ism_state.dead_letter WHERE error ~ '$pattern'");
}

sub writer_pid { return worker_pids($node)->{writer}; }

sub set_setting
{
	my ($setting) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET $setting");
	$node->reload;
	sleep 1;
}

# --- 15: every extern symbol is ism_'s ------------------------------------------------
my $library = $node->config_data('--pkglibdir') . '/ism_state.so';
my @foreign = grep { !/^(ism_|pg_finfo_ism_|_PG_init$|Pg_magic_func$)/ }
  map { (split ' ')[-1] } split /\n/, `nm -D --defined-only $library`;
is(join(',', @foreign), '', '(15) the library exports only ism_ symbols (and PostgreSQL\'s entry points)');

# --- 8: a redelivery that builds other pages has them all delivered ----------------------
# The openai stream takes no message over 2,000 bytes: of the replay's two
# pages the second is refused, and the request comes back until it fits.
# Meanwhile the state changes, so the redelivery's first page differs from
# the one stored: it must not be dropped as a duplicate of it.
my ($rc, $out, $err) = nats_client($url, 'stream-add', 'language_models_openai',
	'--max-msg-size', '2000', 'language.models.openai', 'language.models.openai.>');
is($rc, 0, 'the openai stream, with a message size limit') or diag $err;
set_properties($node, $openai, { maxBatchSize => 1, maxBatchLimit => 1 });
my $questions = "column_id = (SELECT id FROM state_column"
  . " WHERE state_id = '8d2f6a1b-4c7e-4b93-a5d0-1e9f3c6b7a28' AND name = 'question')";
$node->safe_psql('postgres',
	"UPDATE state_column_data SET data_value = repeat('x', 3000) WHERE $questions AND data_index = 1");
my $log_offset = -s $node->logfile;
route_message({ type => 'query_state_route', route_id => $r1 });
$node->wait_for_log(qr/will be retried/, $log_offset);
$node->safe_psql('postgres',
	"UPDATE state_column_data SET data_value = CASE data_index WHEN 0 THEN 'changed question' ELSE 'short' END"
	  . " WHERE $questions");
my $stored = sub {
	my (undef, $info) = nats_client($url, 'stream-info', 'language_models_openai');
	return $info =~ /^messages=(\d+)$/m ? $1 : -1;
};
my $deadline = time + 60;
sleep 1 while $stored->() < 3 && time < $deadline;
is($stored->(), 3, '(8) the first page as first built, then the changed first page and the second page');
set_properties($node, $openai, { maxBatchSize => 100, maxBatchLimit => 1 });

# --- 8: a redelivery that routes the same page to another subject has it once ------------
# (found by the randomized test) Between the two deliveries the processor's
# concurrencyMode changes, so the first page goes to another partition
# subject of the same stream, with the same content: JetStream must drop it.
$node->safe_psql('postgres',
	"UPDATE state_column_data SET data_value = CASE data_index WHEN 0 THEN 'same question' ELSE repeat('y', 3000) END"
	  . " WHERE $questions");
my $before = $stored->();
set_properties($node, $openai, { maxBatchSize => 1, maxBatchLimit => 1 });
$log_offset = -s $node->logfile;
route_message({ type => 'query_state_route', route_id => $r1 });
$node->wait_for_log(qr/will be retried/, $log_offset);
set_properties($node, $openai, { maxBatchSize => 1, maxBatchLimit => 1, concurrencyMode => 'ROUTE_ID' });
$node->safe_psql('postgres', "UPDATE state_column_data SET data_value = 'short too' WHERE $questions AND data_index = 1");
$deadline = time + 60;
sleep 1 while $stored->() < $before + 2 && time < $deadline;
sleep 2;
is($stored->() - $before, 2, '(8) the first page once, though sent again to another partition subject, then the second');
set_properties($node, $openai, { maxBatchSize => 100, maxBatchLimit => 1 });

# --- 9: a route change cannot be prepared ------------------------------------------------
($rc, $out, $err) = $node->psql('postgres',
	"BEGIN; SELECT ism_state.add_route('prepared/route', 'prepared.subject', 'prepared');"
	  . " PREPARE TRANSACTION 'route change';");
like($err, qr/cannot PREPARE a transaction that has changed ism_state routes/,
	'(9) PREPARE TRANSACTION of a route change is refused, as PostgreSQL refuses it after NOTIFY');
is($node->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'), '0', 'nothing was prepared');
is($node->safe_psql('postgres', "SELECT count(*) FROM ism_state.route WHERE selector = 'prepared/route'"),
	'0', 'and the change was rolled back');
($rc, $out, $err) = $node->psql('postgres',
	"BEGIN; CREATE TABLE prepared_ok (x int); PREPARE TRANSACTION 'other'; COMMIT PREPARED 'other';");
is($rc, 0, 'a transaction that changed no route prepares as ever') or diag $err;

# --- 1: columnTypes "infer" into a table with types the writer does not make ------------
$node->safe_psql('postgres', qq{CREATE TABLE "${tables}_typed" (i integer, n numeric(10,2),
	v varchar(5), ts timestamp, d date, u uuid, a int[])});
props({ tableName => 'typed', batchSize => 1, includeTimestamp => JSON::PP::false, columnTypes => 'infer' });
send_records($r2, { i => 5, n => 3.14159, v => 'abc', ts => '2026-01-02 03:04:05', d => '2026-01-02',
	u => '6f1c0b9e-7d10-4b8e-9a55-2f1c0b9e7d10', a => '{1,2}', extra => 7 });
wait_rows('typed', 1) or die 'no typed row';
is(rows_of('typed', "i + 1, n, v, ts, d, u, a[2], extra + 1"),
	'6|3.14|abc|2026-01-02 03:04:05|2026-01-02|6f1c0b9e-7d10-4b8e-9a55-2f1c0b9e7d10|2|8',
	'(1) infer writes into integer, numeric(p,s), varchar(n), timestamp, date, uuid, array columns as they are');
send_records($r2, { v => 'too long for five' });
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM ism_state.dead_letter WHERE error LIKE '%value too long for type character varying(5)%'")
  or die 'no dead letter for the long value';
pass('(1) a value its column cannot take is dead-lettered, never cut');

# --- 11: huge numbers in properties ------------------------------------------------------
props({ tableName => 'patient', batchSize => 3, batchWindowTTL => 2147483647, includeTimestamp => JSON::PP::false });
send_records($r2, { n => 1 });
sleep 3;
is($node->safe_psql('postgres', "SELECT to_regclass('\"${tables}_patient\"') IS NULL"), 't',
	'(11) batchWindowTTL 2147483647 s: a lone record waits (no overflow to "due now")');
send_records($r2, { n => 2 }, { n => 3 });
wait_rows('patient', 3) or die 'batchSize did not flush';
pass('(11) and batchSize 3 flushes it with the next two');

my $mon = start_collecting($url, 'processor.monitor', 2, 10);
my $fwd = start_collecting($url, 'language.models.openai.>', 1, 10);
set_properties($node, $openai, { maxBatchSize => 1e10, maxBatchLimit => 1e300 });
route_message({ type => 'query_state_entry', route_id => $r1, query_state => [ { question => 'huge' } ] });
my $got = finish_collecting($fwd);
is(scalar @$got, 1, '(11) maxBatchSize 1e10 and maxBatchLimit 1e300: forwarded, not FAILED');
my @statuses = map { $_->[1]{status} } @{ finish_collecting($mon) };
ok(!grep({ $_ eq 'FAILED' } @statuses), '(11) no FAILED status') or diag explain \@statuses;

# --- 2: a processor without a project on a concurrent route -------------------------------
$node->safe_psql('postgres', 'ALTER TABLE processor ALTER COLUMN project_id DROP NOT NULL');
$node->safe_psql('postgres', "UPDATE processor SET project_id = NULL WHERE id = '$openai'");
set_properties($node, $openai, { maxBatchSize => 100, maxBatchLimit => 1 });
$fwd = start_collecting($url, 'language.models.openai.>', 2, 10);
route_message({ type => 'query_state_entry', route_id => $r1, query_state => [ { question => 'no project' } ] });
set_properties($node, $openai, { concurrencyMode => 'EXPRESSION', concurrencyExpression => "'x'" });
route_message({ type => 'query_state_entry', route_id => $r1, query_state => [ { question => 'no project' } ] });
$got = finish_collecting($fwd);
is(join(',', map { $_->[0] } @$got), 'language.models.openai.low,language.models.openai.low.None.x',
	'(2) project_id NULL: no partition key, and "None" where Python prints it');
$node->safe_psql('postgres', "UPDATE processor SET project_id = '$project' WHERE id = '$openai'");
set_properties($node, $openai, { maxBatchSize => 100, maxBatchLimit => 1 });

# --- 4: an operator's stream keeps all its subjects --------------------------------------
($rc, $out, $err) = nats_client($url, 'stream-add', 'ops_stream', map { "ops.s$_" } 1 .. 70);
is($rc, 0, 'a stream with 70 subjects') or diag $err;
$node->safe_psql('postgres', qq{
	SELECT ism_state.add_route('test/ops', 'ops.target', 'ops_stream');
	INSERT INTO processor_provider (id) VALUES ('test/ops');
	INSERT INTO processor (id, provider_id, project_id, status)
	VALUES ('0f0f0f0f-0000-4000-8000-000000000004', 'test/ops', '$project', 'CREATED');
	INSERT INTO processor_state (id, processor_id, state_id, direction)
	VALUES ('ops-route', '0f0f0f0f-0000-4000-8000-000000000004', 'e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16', 'INPUT');
});
sleep 1;
route_message({ type => 'query_state_entry', route_id => 'ops-route', query_state => [ { k => 1 } ] });
my $subjects = sub {
	my (undef, $info) = nats_client($url, 'stream-info', 'ops_stream');
	my ($list) = $info =~ /^subjects=(.*)$/m;
	return [ split /,/, $list // '' ];
};
$deadline = time + 30;
sleep 1 while @{ $subjects->() } < 72 && time < $deadline;
my @have = @{ $subjects->() };
is(scalar @have, 72, '(4) the route\'s two subjects are added to a stream of 70');
is(scalar(grep { /^ops\.s\d+$/ } @have), 70, '(4) and all 70 of the operator\'s stay');

# --- 10: a message with no JetStream metadata is written, not taken for "already applied" -----
props({ tableName => 'inbox', batchSize => 1, includeTimestamp => JSON::PP::false });
# the writer's push consumer says where it delivers: published there
# directly, a message reaches the writer with no JetStream metadata (so do
# answers published to a pull consumer's request inbox)
(undef, $out) = nats_client($url, 'consumer-info', 'data_transformers_state_tables',
	'state_tables_workers');
my ($inbox) = $out =~ /^deliver_subject=(\S+)$/m;
ok(defined $inbox, 'the deliver subject of the writer\'s push consumer') or diag $out;
for my $n (1, 2)
{
	my $body = $json->encode({ route_id => $r2, query_state => [ { n => "injected $n" } ] });
	nats_client($url, 'pub', $inbox, $body);
	usleep(300_000);
}
wait_rows('inbox', 2) or diag 'the injected messages were not both written';
is(rows_of('inbox', "string_agg(n, ',' ORDER BY n)"), 'injected 1,injected 2',
	'(10) two messages from no stream are both written (no sequence 0 taken for applied)');
is($node->safe_psql('postgres', "SELECT count(*) FROM ism_state.applied WHERE stream = ''"), '0',
	'(10) and nothing is recorded as applied for them');

# --- 12: memory: a property change frees the old batch; small messages are small ---------
props({ tableName => 'memory', batchSize => 1, includeTimestamp => JSON::PP::false });
for my $k (1 .. 4)
{
	props({ tableName => "memory$k", batchSize => 1, includeTimestamp => JSON::PP::false });
	send_records($r2, { k => $k });
	wait_rows("memory$k", 1) or die "no row in memory$k";
}
$log_offset = -s $node->logfile;
$node->safe_psql('postgres', 'SELECT pg_log_backend_memory_contexts(' . writer_pid() . ')');
$node->wait_for_log(qr/Grand total/, $log_offset);
my $contexts = substr(slurp_file($node->logfile), $log_offset);
my $batches = () = $contexts =~ /ism_state writer batch:/g;
is($batches, 1, '(12) after four property changes the writer holds one batch, not five');
my $column_caches = () = $contexts =~ /ism_state writer columns:/g;
is($column_caches, 1, '(12) and one column cache: the replaced batches took theirs with them');

set_setting("ism_state.writer_batch_max_memory = '512kB'");
props({ tableName => 'small', batchSize => 100000, batchWindowTTL => 3600, includeTimestamp => JSON::PP::false });
($rc, $out, $err) = nats_client($url, 'js-pub-n', $writer_subject, 90,
	qq({"route_id":"$r2","query_state":[{"n":%n}]}));
is($rc, 0, '90 small messages') or diag $err;
sleep 4;
is($node->safe_psql('postgres', "SELECT to_regclass('\"${tables}_small\"') IS NULL"), 't',
	'(12) 90 small messages stay well under writer_batch_max_kb 512kB (no 8 kB context each)');
props({ tableName => 'small2', batchSize => 1, includeTimestamp => JSON::PP::false });
send_records($r2, { n => 0 });
wait_rows('small', 90) or die 'the small batch was not flushed';
pass('(12) and are written when their batch is flushed');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET ism_state.writer_batch_max_memory');

# --- 3: pg_cancel_backend() cancels what the worker does, and the worker stays -----------
my $pid = writer_pid();
for (1 .. 5)
{
	$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
	usleep(200_000);
}
sleep 2;
is(writer_pid(), $pid, '(3) an idle writer cancelled five times is still the same process');
set_setting("ism_state.writer_lock_timeout = 0");
props({ tableName => 'cancel', batchSize => 1, includeTimestamp => JSON::PP::false });
send_records($r2, { n => 'first' });
wait_rows('cancel', 1) or die 'no cancel row';
my $locker = $node->background_psql('postgres');
$locker->query_safe(qq{BEGIN; LOCK TABLE "${tables}_cancel" IN ACCESS EXCLUSIVE MODE});
send_records($r2, { n => 'while locked' });
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE pid = $pid AND wait_event_type = 'Lock'")
  or die 'the writer did not wait for the lock';
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
sleep 1;
$locker->query_safe('COMMIT');
$locker->quit;
wait_rows('cancel', 2) or die 'the cancelled flush was not retried';
is(writer_pid(), $pid, '(3) a flush cancelled while it waits for a lock is retried by the same writer');
is(rows_of('cancel', "count(*) FILTER (WHERE n = 'while locked')"), '1', '(3) and written once');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET ism_state.writer_lock_timeout');

# (found by the randomized test) A cancel that comes while the writer logs
# outside a transaction: every ereport, a WARNING too, checks for
# interrupts, and made the cancel an ERROR that ended the worker.  Each of
# these messages names another route, so each is logged.
$pid = writer_pid();
($rc, $out, $err) = nats_client($url, 'js-pub-n', $writer_subject, 400,
	'{"route_id":"no-such-route-%n","query_state":[]}');
is($rc, 0, '400 messages for routes that do not exist') or diag $err;
my $cancels = IPC::Run::start([ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-c',
	"SELECT pg_cancel_backend($pid), pg_sleep(0.01) FROM generate_series(1, 300)" ],
	'>', \my $cancel_out, '2>', \my $cancel_err);
$node->poll_query_until('postgres',
	"SELECT count(*) >= 400 FROM ism_state.dead_letter WHERE error LIKE 'processor state (route) no-such-route-% not found'")
  or diag 'not every message was dead-lettered';
$cancels->finish;
is(writer_pid(), $pid, '(3) a writer cancelled 300 times while it logs its dead letters is still the same process');

# --- 5: ism_state.max_deliveries holds for the writer too --------------------------------
set_setting('ism_state.max_deliveries = 2');
props({ tableName => 'locked', batchSize => 1, includeTimestamp => JSON::PP::false });
send_records($r2, { n => 'before' });
wait_rows('locked', 1) or die 'no locked row';
$locker = $node->background_psql('postgres');
$locker->query_safe(qq{BEGIN; LOCK TABLE "${tables}_locked" IN ACCESS EXCLUSIVE MODE});
send_records($r2, { n => 'waits' });
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM ism_state.dead_letter WHERE error LIKE 'gave up after 2 deliveries: %lock timeout%'")
  or diag 'no dead letter after max_deliveries';
is(dead_letters_like('^gave up after 2 deliveries: .*lock timeout'), '1',
	'(5) a record for a table locked for long is dead-lettered after max_deliveries, saying why');
$locker->query_safe('COMMIT');
$locker->quit;
sleep 2;
is(rows_of('locked', "count(*) FILTER (WHERE n = 'waits')"), '0', '(5) and not written as well');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET ism_state.max_deliveries');
$node->reload;

# --- 6: a passing error in the one-by-one pass is retried, not dead-lettered -------------
$node->safe_psql('postgres', qq{
	CREATE TABLE passing_error (code text);
	INSERT INTO passing_error VALUES ('deadlock_detected');
	CREATE TABLE "${tables}_flaky" (n text);
	CREATE FUNCTION flaky() RETURNS trigger LANGUAGE plpgsql AS \$\$
	DECLARE c text;
	BEGIN
		IF NEW.n = 'bad' THEN
			RAISE EXCEPTION 'a bad record' USING ERRCODE = 'check_violation';
		END IF;
		SELECT code INTO c FROM passing_error;
		IF NEW.n = 'passing' AND c IS NOT NULL THEN
			RAISE EXCEPTION 'a passing error' USING ERRCODE = c;
		END IF;
		RETURN NEW;
	END \$\$;
	CREATE TRIGGER flaky BEFORE INSERT ON "${tables}_flaky" FOR EACH ROW EXECUTE FUNCTION flaky();
});
props({ tableName => 'flaky', batchSize => 3, batchWindowTTL => 60, includeTimestamp => JSON::PP::false });
$log_offset = -s $node->logfile;
send_records($r2, { n => $_ }) for qw(good bad passing);
$node->wait_for_log(qr/will be retried: a passing error/, $log_offset);
sleep 2;
is(dead_letters_like('a passing error'), '0',
	'(6) a deadlock in the one-by-one pass dead-letters nothing: the batch is retried');
$node->safe_psql('postgres', 'DELETE FROM passing_error');
wait_rows('flaky', 2) or die 'the good records were not written';
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM ism_state.dead_letter WHERE error = 'a bad record'") or die 'no bad letter';
is(rows_of('flaky', "string_agg(n, ',' ORDER BY n)"), 'good,passing',
	'(6) once it passes, the good records are written once and the bad one dead-lettered');

# --- a copy of a written message, stored again, is not written again (found by the randomized test) ---
# JetStream drops a second publication of a Nats-Msg-Id within the
# stream's duplicate window, but after a restart it remembers only the ids
# of the messages it still holds: a work-queue stream no longer holds the
# ones consumed, so a retry (the router's, after its ack was lost in the
# restart) is stored again.  The writer skips it as JetStream would have.
props({ tableName => 'msgid', batchSize => 1, includeTimestamp => JSON::PP::false });
sub send_with_id
{
	my ($id, $n) = @_;
	my $body = $json->encode({ route_id => $r2, query_state => [ { n => $n } ] });
	my ($rc, $out, $err) = nats_client($url, '--msg-id', $id, 'js-pub', $writer_subject, \$body);
	die "js-pub: $err" if $rc;
	return $out;
}
my $msgid_stream = 'data_transformers_state_tables';
my $log_at = -s $node->logfile;
send_with_id('ism:test:restart', 'restart');
wait_rows('msgid', 1) or die 'no msgid row';
like(send_with_id('ism:test:restart', 'restart'), qr/ duplicate$/m,
	'JetStream drops a copy while it remembers its Msg-Id');
$nats->stop('TERM');
$nats->start;
my $copy = send_with_id('ism:test:restart', 'restart');
note "after the restart, the copy: $copy";
send_with_id('ism:test:after', 'after');
$node->poll_query_until('postgres', qq{SELECT count(*) > 0 FROM "${tables}_msgid" WHERE n = 'after'})
  or diag 'the message after the copy was not written';
sleep 1;
is(rows_of('msgid', "string_agg(n, ',' ORDER BY n)"), 'after,restart',
	'a copy JetStream stored again after its restart is not written again'
	  . ($copy =~ /duplicate/ ? ' (this server remembered the id: dropped the copy itself)' : ''));

# Made here as a forgetful JetStream would leave them: an id written a
# moment ago, and one written an hour ago (beyond the 2-minute window).
$node->safe_psql('postgres', qq{INSERT INTO ism_state.applied_msg_id (stream, msg_id, stream_seq, stored_at)
	VALUES ('$msgid_stream', 'ism:test:recent', 1, now()),
	       ('$msgid_stream', 'ism:test:old', 2, now() - interval '1 hour')});
send_with_id('ism:test:recent', 'recent');
my ($old_seq) = send_with_id('ism:test:old', 'old') =~ /seq=(\d+)/;
$node->poll_query_until('postgres', qq{SELECT count(*) > 0 FROM "${tables}_msgid" WHERE n = 'old'})
  or diag 'the message with the old id was not written';
sleep 1;
is(rows_of('msgid', "string_agg(n, ',' ORDER BY n)"), 'after,old,restart',
	'a Msg-Id written within the window is skipped, one written before it is a new message');
is($node->safe_psql('postgres', "SELECT stream_seq FROM ism_state.applied_msg_id WHERE msg_id = 'ism:test:old'"),
	$old_seq, 'the Msg-Id now names the new message');
ok($node->log_contains(qr/ism_state writer: \d+ of \d+ messages were copies of messages already handled/, $log_at),
	'the skipped copies are logged');
send_with_id('L' x 3000, 'long id');
$node->poll_query_until('postgres', qq{SELECT count(*) > 0 FROM "${tables}_msgid" WHERE n = 'long id'})
  or diag 'the message with a long Msg-Id was not written';
is($node->safe_psql('postgres', "SELECT count(*) FROM ism_state.applied_msg_id WHERE msg_id ~ '^sha256:[0-9a-f]{64}\$'"),
	'1', 'a Msg-Id too long for an index is recorded by its SHA-256, and its message written');

# --- a batch waiting for a long window takes new properties (found by the randomized test) ---
# The processor sends nothing more: the batch must not wait for its old
# window (40 days) to see that the properties changed.
props({ tableName => 'longwait', batchSize => 1000, batchWindowTTL => 3456000,
	includeTimestamp => JSON::PP::false });
send_records($r2, { n => 'waiting' });
$node->poll_query_until('postgres', qq{SELECT pending_records > 0 FROM ism_state.pg_stat_ism_tables
	WHERE table_name = '${tables}_longwait'}) or diag 'the record was not queued';
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_tables WHERE tablename = '${tables}_longwait'"),
	'0', 'the record waits for its window');
props({ tableName => 'longwait', batchSize => 1, includeTimestamp => JSON::PP::false });
my $flushed = 0;
for (1 .. 50)
{
	last if $flushed = $node->safe_psql('postgres',
		"SELECT to_regclass('\"${tables}_longwait\"') IS NOT NULL") eq 't'
	  && rows_of('longwait', 'count(*)') eq '1';
	sleep 0.2;
}
ok($flushed, 'after the properties change to batchSize 1, the waiting record is written within seconds');

# --- 7: default_transaction_read_only holds the writes back, dead-letters nothing ---------
props({ tableName => 'readonly', batchSize => 1, includeTimestamp => JSON::PP::false });
$node->safe_psql('postgres', qq{CREATE TABLE "${tables}_readonly" (n text)});
my $dead_before = $node->safe_psql('postgres', 'SELECT count(*) FROM ism_state.dead_letter');
set_setting('default_transaction_read_only = on');
$mon = start_collecting($url, 'processor.monitor', 1, 6);
$log_offset = -s $node->logfile;
send_records($r2, { n => 'read only' });
$node->wait_for_log(qr/will be retried: cannot execute .* in a read-only transaction/, $log_offset);
@statuses = map { $_->[1]{status} } @{ finish_collecting($mon) };
is(join(',', @statuses), '', '(7) no FAILED status while the database is read-only');
# a message from no stream has no row to record in ism_state.applied: its
# flush goes straight to the COPY, which must be refused as well
nats_client($url, 'pub', $inbox,
	$json->encode({ route_id => $r2, query_state => [ { n => 'from no stream, read only' } ] }));
my $copy_refused;
for (1 .. 50)
{
	$copy_refused = $node->log_contains(qr/cannot execute COPY FROM in a read-only transaction/, $log_offset);
	last if $copy_refused
	  || rows_of('readonly', "count(*) FILTER (WHERE n = 'from no stream, read only')") ne '0';
	usleep(200_000);
}
ok($copy_refused, '(7) the COPY of a message from no stream is refused while the database is read-only');
is(rows_of('readonly', "count(*) FILTER (WHERE n = 'from no stream, read only')"), '0',
	'(7) and it is not written');
$node->safe_psql('postgres', 'SET default_transaction_read_only = off; ALTER SYSTEM RESET default_transaction_read_only');
$node->reload;
wait_rows('readonly', 1) or die 'not written after read-only';
is($node->safe_psql('postgres', 'SELECT count(*) FROM ism_state.dead_letter'), $dead_before,
	'(7) and once writable again, written, with no dead letter');

# --- 7: row-level security applies to the writer's role ----------------------------------
($rc, $out, $err) = $node->psql('postgres', slurp_file('scripts/worker-role.sql'),
	extra_params => [ '-v', 'role=ism_worker', '-v', 'catalog_schema=public',
		'-v', 'data_schema=ism_data' ]);
is($rc, 0, 'the least-privilege role') or diag $err;
$node->safe_psql('postgres', qq{
	CREATE TABLE ism_data."${tables}_guarded" (n text, v text);
	ALTER TABLE ism_data."${tables}_guarded" ENABLE ROW LEVEL SECURITY;
	CREATE POLICY only_allowed ON ism_data."${tables}_guarded" TO ism_worker
		USING (true) WITH CHECK (v <> 'forbidden');
	GRANT SELECT, INSERT ON ism_data."${tables}_guarded" TO ism_worker;
});
is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started,
	'the postmaster never restarted before the role change');
$node->append_conf('postgresql.conf', "ism_state.role = 'ism_worker'\nism_state.data_schema = 'ism_data'\n");
$node->restart;
wait_for_workers($node, "state = 'running' AND nats_state = 'connected'") or die 'no workers';
sleep 1;
$started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
props({ tableName => 'guarded', batchSize => 2, includeTimestamp => JSON::PP::false });
send_records($r2, { n => '1', v => 'allowed' });
send_records($r2, { n => '2', v => 'forbidden' });
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM ism_state.dead_letter WHERE error LIKE '%row-level security%'")
  or diag 'no dead letter for the forbidden row';
is($node->safe_psql('postgres', qq{SELECT string_agg(v, ',') FROM ism_data."${tables}_guarded"}), 'allowed',
	'(7) the writer, not the table\'s owner, writes only what the policy allows');
is(dead_letters_like('new row violates row-level security policy'), '1',
	'(7) and the row the policy refuses is dead-lettered, saying why');

# --- a dead letter is recorded once per message (found by 016_random_e2e) ---------------
# A dead letter whose term is lost comes back: it must find its row.  The
# row is made here, as the first delivery would have left it.
my (undef, $info) = nats_client($url, 'stream-info', 'data_transformers_state_tables');
my ($next) = $info =~ /^last_seq=(\d+)$/m;
$next++;
$node->safe_psql('postgres', qq{INSERT INTO ism_state.dead_letter
	(worker, subject, stream, stream_seq, deliveries, payload, error)
	VALUES ('writer', '$writer_subject', 'data_transformers_state_tables', $next, 1, '\\x7b7d',
	        'recorded by the first delivery')});
($rc, $out) = nats_client($url, 'js-pub', $writer_subject, '{"route_id": "no-such-route"}');
like($out, qr/seq=$next$/m, 'the message has the sequence of the recorded dead letter');
$node->wait_for_log(qr/processor state \(route\) no-such-route not found/, 0);
sleep 1;
is($node->safe_psql('postgres',
		"SELECT count(*) FROM ism_state.dead_letter WHERE stream_seq = $next AND worker = 'writer'"),
	'1', 'a message dead-lettered before is not dead-lettered again');

# --- a message written by another delivery is not also a dead letter (found by the randomized test) ---
# A message held in one writer's batch came again to the other writer (its
# ack wait ran out while the first was blocked), which gave up on it (the
# properties had changed); the first then wrote it.  Whichever commits
# first decides: the row in ism_state.applied is made here, as the first
# writer's commit would have left it.
(undef, $info) = nats_client($url, 'stream-info', 'data_transformers_state_tables');
($next) = $info =~ /^last_seq=(\d+)$/m;
$next++;
$node->safe_psql('postgres', qq{INSERT INTO ism_state.applied (stream, stream_seq)
	VALUES ('data_transformers_state_tables', $next)});
$log_offset = -s $node->logfile;
($rc, $out) = nats_client($url, 'js-pub', $writer_subject, '{"route_id": "no-such-route-either"}');
like($out, qr/seq=$next$/m, 'the message has the sequence recorded as applied');
$node->wait_for_log(qr/processor state \(route\) no-such-route-either not found/, $log_offset);
sleep 1;
is($node->safe_psql('postgres',
		"SELECT count(*) FROM ism_state.dead_letter WHERE stream_seq = $next AND worker = 'writer'"),
	'0', 'a message another delivery wrote first is not dead-lettered as well');

# --- a copy of a dead letter, stored again under its Msg-Id, is not a second one (found by the randomized test) ---
$node->safe_psql('postgres', qq{INSERT INTO ism_state.applied_msg_id (stream, msg_id, stream_seq, stored_at)
	VALUES ('data_transformers_state_tables', 'ism:test:dead-copy', 1, now())});
$log_offset = -s $node->logfile;
($rc, $out) = nats_client($url, '--msg-id', 'ism:test:dead-copy', 'js-pub', $writer_subject,
	'{"route_id": "no-such-route-copied"}');
my ($copy_seq) = $out =~ /seq=(\d+)/;
$node->wait_for_log(qr/processor state \(route\) no-such-route-copied not found/, $log_offset);
sleep 1;
is($node->safe_psql('postgres',
		"SELECT count(*) FROM ism_state.dead_letter WHERE stream_seq = $copy_seq AND worker = 'writer'"),
	'0', 'a copy of a message already dead-lettered, stored again under its Msg-Id, is not dead-lettered again');

# --- the cluster never went down ----------------------------------------------------------
is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started,
	'the postmaster never restarted');
ok(!$node->log_contains(qr/terminated by signal|was terminated|server process .* exited with exit code 2/),
	'no backend crashed');
wait_for_workers($node, "state = 'running'") or diag 'workers not running';
pass('the workers run');

$node->stop('fast');
done_testing();

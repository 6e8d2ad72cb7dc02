# Failover on PostgreSQL's own replication: a primary and a streaming
# standby, 100,000 records for the writer and a 30,000-row router replay
# under way, the primary's postmaster killed with -9, the standby promoted;
# the workers, which do not run on the standby, start on promotion and
# finish there, on the same durable consumers.
#
# Every record must be in the promoted server's table exactly once with
# synchronous replication, and with asynchronous replication plus
# ism_state.ack_after = replicated; each of these once with the kill left
# to chance and once while a commit waits for the standby (its walsender
# stopped with SIGSTOP until the writer shows waiting_for_standby).  With
# asynchronous replication and ack_after = commit, what is lost is
# measured and reported, not asserted (README, "High availability").
#
# First, a writer pulling at full speed while its acks wait for a standby
# (no crash, every record once); then, with no standby at all: ack_after =
# replicated holds the acks, keeps the messages alive and says so; a reload
# to commit lets them go.
#
# The figures of each run (records, rows when the primary died, lost,
# duplicated, seconds to resume) are printed as "failover figures".
# ISM_FAILOVER_SCENARIOS picks scenarios by name (comma-separated;
# pull_load and no_standby are the first two parts).
use strict;
use warnings;

use IsmTest;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $project = '5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03';
my $tables = '3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10';
my $r2 = "e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:$tables";
my $table = "${tables}_failover";
my $n_writer = 100_000;
my $n_replay = 30_000;
my $expected = $n_writer + $n_replay;

# short ack_waits: what the dead primary held comes back within seconds
my $routing = "${PostgreSQL::Test::Utils::tmp_check}/routing-failover.yaml";
my $yaml = slurp_file('test/data/routing.yaml');
$yaml =~ s/ack_wait: 60 /ack_wait: 5 / or die 'no writer ack_wait to shorten';
$yaml =~ s/ack_wait: 90 /ack_wait: 5 / or die 'no router ack_wait to shorten';
$yaml =~ s/(state-tables-1\.0.*?max_ack_pending: )100 /${1}1000 /s
  or die 'no max_ack_pending to raise';
open my $fh, '>', $routing or die $!;
print $fh $yaml;
close $fh;

my @scenarios = (
	{ name => 'sync', sync => 1, ack_after => 'commit' },
	{ name => 'sync_walsender_stopped', sync => 1, ack_after => 'commit', stop => 1 },
	{ name => 'async_replicated', ack_after => 'replicated' },
	{ name => 'async_replicated_walsender_stopped', ack_after => 'replicated', stop => 1 },
	{ name => 'async_commit', ack_after => 'commit', measure_only => 1 },
	{ name => 'async_commit_walsender_stopped', ack_after => 'commit', measure_only => 1,
	  stop => 1 });
if ($ENV{ISM_FAILOVER_SCENARIOS})
{
	my %want = map { $_ => 1 } split /,/, $ENV{ISM_FAILOVER_SCENARIOS};
	@scenarios = grep { $want{ $_->{name} } } @scenarios;
}

sub count_rows
{
	my ($node) = @_;
	my ($rc, $out) = $node->psql('postgres',
		"SELECT count(*), count(DISTINCT m) FROM \"$table\"");
	return (0, 0) if $rc != 0;
	return split /\|/, $out;
}

sub consumer_drained
{
	my ($url, $stream, $durable) = @_;
	my ($rc, $out) = nats_client($url, 'consumer-info', $stream, $durable);
	return 0 if $rc != 0;
	my %c = map { split /=/, $_, 2 } split /\n/, $out;
	return ($c{num_pending} // 1) == 0 && ($c{num_ack_pending} // 1) == 0;
}

# A primary (with the replay's state) and its streaming standby.
sub start_pair
{
	my ($s, $nats) = @_;
	my $primary = new_ism_node("primary_$s->{name}", $nats->url, qq{
ism_state.routing_file = '@{[ $s->{routing} // $routing ]}'
restart_after_crash = off
} . ($s->{ack_after} eq 'commit' ? '' : "ism_state.ack_after = '$s->{ack_after}'\n")
		  . ($s->{conf} // ''),
		allows_streaming => 1);
	$primary->start;
	$primary->safe_psql('postgres', 'CREATE EXTENSION ism_state');
	$primary->safe_psql('postgres', slurp_file('test/data/catalog.sql'));
	set_properties($primary, $tables,
		{ tableName => 'failover', batchSize => 1000, batchWindowTTL => 1,
		  includeTimestamp => JSON::PP::false, maxBatchSize => 1000, maxBatchLimit => 1 });
	$primary->safe_psql('postgres', qq{
INSERT INTO state (id, project_id, count) VALUES ('big', '$project', $n_replay);
INSERT INTO processor_state (id, processor_id, state_id, direction)
VALUES ('big:$tables', '$tables', 'big', 'INPUT');
INSERT INTO state_column (state_id, name, data_type) VALUES ('big', 'm', 'str');
INSERT INTO state_column_data (column_id, data_index, data_value)
SELECT c.id, g, 'p' || g FROM state_column c, generate_series(0, $n_replay - 1) g
 WHERE c.state_id = 'big';
});
	wait_for_workers($primary, "state = 'running' AND nats_state = 'connected'")
	  or die 'the primary\'s workers did not connect';
	$primary->backup('b');
	my $standby = PostgreSQL::Test::Cluster->new("standby_$s->{name}");
	$standby->init_from_backup($primary, 'b', has_streaming => 1);
	# promoted, it is alone: it waits for no standby of its own
	$standby->append_conf('postgresql.conf', "synchronous_standby_names = ''\n");
	$standby->start;
	$primary->wait_for_catchup($standby);
	if ($s->{sync})
	{
		$primary->safe_psql('postgres', "ALTER SYSTEM SET synchronous_standby_names = '*'");
		$primary->reload;
		$primary->poll_query_until('postgres',
			"SELECT sync_state = 'sync' FROM pg_stat_replication")
		  or die 'the standby did not become synchronous';
	}
	return ($primary, $standby);
}

# Every process the postmaster started, to be gone once the test is done.
sub children_of
{
	my ($pid) = @_;
	my $out = `ps -o pid= --ppid $pid`;
	return grep { /^\d+$/ } map { s/\s+//gr } split /\n/, $out;
}

sub wait_until
{
	my ($seconds, $cond) = @_;
	my $deadline = time + $seconds;
	while (time < $deadline)
	{
		return 1 if $cond->();
		usleep(100_000);
	}
	return 0;
}

sub run_scenario
{
	my ($s) = @_;
	my $name = $s->{name};
	my $nats = IsmTest::Nats->new("fo_$name")->start;
	my ($primary, $standby) = start_pair($s, $nats);

	is($standby->safe_psql('postgres',
			"SELECT string_agg(DISTINCT state, ',') FROM ism_state.pg_stat_ism_worker"),
		'standby', "$name: the standby's workers are shown as standby, not running");
	is($standby->safe_psql('postgres',
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'ism_state %'"),
		'0', "$name: and none runs there");

	my $start = time;
	my ($rc, undef, $err) = nats_client($nats->url, 'js-pub', 'processor.state.router',
		qq({"type": "query_state_route", "route_id": "big:$tables"}));
	is($rc, 0, "$name: replay of a $n_replay-row state asked") or diag $err;
	my $publisher = IPC::Run::start(
		[ ($ENV{TESTDIR} // '.') . '/test/ism-nats', '-s', $nats->url, '-t', '120000',
		  'js-pub-n', 'data.transformers.state-tables', $n_writer,
		  qq({"route_id": "$r2", "query_state": [{"m": "w%n"}]}) ],
		'<', \undef, '>', \my $pub_out, '2>', \my $pub_err);
	ok(wait_until(60, sub {
			my ($rc, $out) = $primary->psql('postgres',
				"SELECT count(*) FILTER (WHERE m LIKE 'p%') > 0"
				  . " AND count(*) FILTER (WHERE m LIKE 'w%') > 0 AND count(*) >= 10000"
				  . " FROM \"$table\"");
			$rc == 0 && $out eq 't' }),
		"$name: the primary writes the records and the replay's");

	my @postgres_pids = children_of($primary->{_pid});
	if ($s->{stop})
	{
		my $walsender = $primary->safe_psql('postgres', 'SELECT pid FROM pg_stat_replication');
		kill 'STOP', $walsender;
		# nothing waits for the standby here: two seconds of commits it does not get
		sleep 2 if !$s->{sync} && $s->{ack_after} eq 'commit';
		# (a commit waiting on SyncRep is what a writer that let its commits
		# wait for the standby would show)
		ok(!$s->{sync} && $s->{ack_after} eq 'commit' || wait_until(30, sub {
					$primary->safe_psql('postgres',
						"SELECT (SELECT count(*) FROM ism_state.pg_stat_ism_worker"
						  . "        WHERE role = 'writer' AND state = 'waiting_for_standby')"
						  . "     + (SELECT count(*) FROM pg_stat_activity"
						  . "         WHERE backend_type LIKE 'ism_state writer%' AND wait_event = 'SyncRep')"
						  . "     > 0") eq 't' }),
			"$name: walsender stopped; the writer's acks wait for the standby");
	}
	my @worker_pids = values %{ worker_pids($primary) };
	my ($rows_at_kill) = count_rows($primary);
	my $replayed_at_kill = $primary->safe_psql('postgres',
		"SELECT count(*) FROM \"$table\" WHERE m LIKE 'p%'");
	my $killed_at = time - $start;
	$primary->kill9;

	# the old primary's workers exit at its death, acknowledging nothing more
	ok(wait_until(30, sub { !grep { kill 0, $_ } @worker_pids }),
		"$name: the dead primary's " . scalar(@worker_pids) . " workers exited");

	$standby->promote;
	my $promoted_at = time;
	my ($rows_at_promotion) = count_rows($standby);
	ok(wait_for_workers($standby, "state IN ('running', 'waiting_for_standby')"),
		"$name: the workers start on promotion");

	if ($s->{ack_after} eq 'replicated')
	{
		# alone, the new primary acks nothing until a standby of its own holds the WAL
		ok(wait_until(30, sub {
					$standby->safe_psql('postgres',
						"SELECT count(*) > 0 FROM ism_state.pg_stat_ism_worker"
						  . " WHERE state = 'waiting_for_standby'") eq 't' }),
			"$name: with no standby, the promoted server's acks wait (waiting_for_standby)");
		$standby->backup('b2');
		my $second = PostgreSQL::Test::Cluster->new("second_$name");
		$second->init_from_backup($standby, 'b2', has_streaming => 1);
		$second->start;
		$s->{second} = $second;
	}

	my $resumed = wait_until(120, sub { (count_rows($standby))[0] > $rows_at_promotion });
	my $resume_s = time - $promoted_at;
	ok($resumed, "$name: the promoted server writes");
	$publisher->finish;
	is($?, 0, "$name: all $n_writer records published") or diag $pub_err;

	my $done = sub {
		consumer_drained($nats->url, 'data_transformers_state_tables', 'state_tables_workers')
		  && consumer_drained($nats->url, 'processor_state_router', 'processor_state_router_sub_1');
	};
	if ($s->{measure_only})
	{
		ok(wait_until(240, $done), "$name: both consumers drained");
		sleep 2;
	}
	else
	{
		ok(wait_until(240, sub { (count_rows($standby))[1] >= $expected }),
			"$name: every record arrived");
		ok(wait_until(60, $done), "$name: both consumers drained");
	}
	my ($rows, $distinct) = count_rows($standby);
	my $lost = $expected - $distinct;
	my $duplicated = $rows - $distinct;
	my $figures = sprintf('failover figures: %s: %d records, primary killed at %.1f s with %d rows '
		  . '(%d of the replay\'s), %d lost, %d duplicated, resumed %.1f s after promotion',
		$name, $expected, $killed_at, $rows_at_kill, $replayed_at_kill, $lost, $duplicated,
		$resume_s);
	diag($figures);
	if ($s->{measure_only})
	{
		pass("$name: $lost lost (measured, not asserted)");
	}
	else
	{
		is($lost, 0, "$name: none lost");
	}
	is($duplicated, 0, "$name: none twice");

	# leave nothing of the dead primary running (a stopped walsender stays)
	for my $pid (@postgres_pids)
	{
		kill 'CONT', $pid;
		kill 'KILL', $pid;
	}
	$s->{second}->stop('immediate') if $s->{second};
	$standby->stop('immediate');
	$nats->stop;
}

# With ack_after = replicated and no standby at all, the writer writes and
# holds the acks: what it has in flight reaches the consumer's
# max_ack_pending (20 here) and it fetches no more (asking past it, the
# first version of the gate crashed the worker inside nats.c, taking the
# cluster down); JetStream hears the messages are in progress (none comes
# again though ack_wait passes three times over); the worker says what it
# waits for; and a reload to commit lets them all go, nothing written twice.
sub no_standby
{
	my $nats = IsmTest::Nats->new('fo_alone')->start;
	my $alone_routing = "${PostgreSQL::Test::Utils::tmp_check}/routing-alone.yaml";
	(my $short = $yaml) =~ s/ack_wait: 5 /ack_wait: 2 / or die 'no ack_wait to shorten';
	$short =~ s/^(\s+)# no mode: push, as on the platform.*$/${1}mode: pull/m
	  or die 'no writer mode line to set';
	$short =~ s/(state-tables-1\.0.*?max_ack_pending: )1000 /${1}20 /s
	  or die 'no max_ack_pending to lower';
	open my $fh, '>', $alone_routing or die $!;
	print $fh $short;
	close $fh;
	my $node = new_ism_node('alone', $nats->url, qq{
ism_state.routing_file = '$alone_routing'
ism_state.ack_after = replicated
});
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION ism_state');
	$node->safe_psql('postgres', slurp_file('test/data/catalog.sql'));
	set_properties($node, $tables,
		{ tableName => 'failover', batchSize => 10, batchWindowTTL => 1,
		  includeTimestamp => JSON::PP::false });
	wait_for_workers($node, "state = 'running' AND nats_state = 'connected'")
	  or die 'no workers';
	my $writer = worker_pids($node)->{writer};
	my ($rc, undef, $err) = nats_client($nats->url, 'js-pub-n', 'data.transformers.state-tables',
		50, qq({"route_id": "$r2", "query_state": [{"m": "a%n"}]}));
	is($rc, 0, 'no standby: 50 records published') or diag $err;
	ok(wait_until(30, sub { (count_rows($node))[1] == 20 }),
		'no standby: the 20 max_ack_pending lets through are written');
	ok(wait_until(30, sub {
				$node->safe_psql('postgres', "SELECT state || ': ' || activity"
					  . " FROM ism_state.pg_stat_ism_worker WHERE role = 'writer'")
				  eq 'waiting_for_standby: 20 acknowledgements wait for a standby'
				  . ' (ism_state.ack_after = replicated)' }),
		'no standby: the writer is waiting_for_standby, and says for what');
	sleep 7;
	my ($rc2, $out) = nats_client($nats->url, 'consumer-info', 'data_transformers_state_tables',
		'state_tables_workers');
	my %c = map { split /=/, $_, 2 } split /\n/, $out;
	is($c{num_ack_pending}, 20, 'no standby: none acknowledged after 3.5 ack_waits');
	is($c{num_redelivered}, 0, 'no standby: none delivered again (in progress every half ack_wait)');
	is((count_rows($node))[1], 20, 'no standby: and nothing more fetched');
	ok(wait_until(15, sub {
				count_log_matches($node,
					qr/20 messages written but not acknowledged for \d+ s: waiting for a standby/) }),
		'no standby: a WARNING says so, after 10 s');

	$node->safe_psql('postgres', "ALTER SYSTEM SET ism_state.ack_after = 'commit'");
	$node->reload;
	ok(wait_until(30, sub {
				consumer_drained($nats->url, 'data_transformers_state_tables', 'state_tables_workers') }),
		'no standby: ack_after = commit (a reload) lets them go');
	is(join(',', count_rows($node)), '50,50', 'no standby: each of the 50 records once');
	is($node->safe_psql('postgres',
			"SELECT state FROM ism_state.pg_stat_ism_worker WHERE role = 'writer'"),
		'running', 'no standby: the writer is running again');
	is(worker_pids($node)->{writer}, $writer, 'no standby: the same writer throughout');
	is(count_log_matches($node, qr/terminated by signal/), 0, 'no standby: no worker crashed');
	$node->stop;
	$nats->stop;
}

# A writer pulling 20,000 messages of 10 records at full speed while its
# acks wait for a standby (fsync on), after its table was dropped under
# it: every record once, and the worker never restarts.  The benchmark's
# replicated cases (bench/run.sh ha) crashed the first version of the gate
# every time in such a load: it fetched past max_ack_pending, messages came
# after their fetch had ended, and nats.c before 3.9 overflowed its array
# taking them (see fetch_pull_locked); this test did not catch that here.
sub replicated_pull_load
{
	my $nats = IsmTest::Nats->new('fo_load')->start;
	my $pull_routing = "${PostgreSQL::Test::Utils::tmp_check}/routing-pull.yaml";
	(my $pull = $yaml) =~ s/^(\s+)# no mode: push, as on the platform.*$/${1}mode: pull/m
	  or die 'no writer mode line to set';
	open my $fh, '>', $pull_routing or die $!;
	print $fh $pull;
	close $fh;
	# fsync on (the test clusters have it off), on the standby too: its
	# flushes take the time they take in production, and the acks wait
	my $s = { name => 'pull_load', ack_after => 'replicated', routing => $pull_routing,
		conf => "fsync = on\n" };
	my ($primary, $standby) = start_pair($s, $nats);
	set_properties($primary, $tables,
		{ tableName => 'failover', batchSize => 10, batchWindowTTL => 5,
		  includeTimestamp => JSON::PP::false });
	my $writer = worker_pids($primary)->{writer};
	my $records = join ',', map { qq({"m": "l%n-$_"}) } 1 .. 10;
	# a first round, then its table dropped: the writer's next flush finds
	# its columns gone and writes message by message, slowly (as in the
	# benchmark, which drops its tables between cases)
	my ($rc, undef, $err) = nats_client($nats->url, '-t', '120000', 'js-pub-n',
		'data.transformers.state-tables', 1000, qq({"route_id": "$r2", "query_state": [$records]}));
	ok(wait_until(60, sub {
				consumer_drained($nats->url, 'data_transformers_state_tables', 'state_tables_workers') }),
		'pull load: a first round written');
	$primary->safe_psql('postgres', qq{DROP TABLE "$table"; CHECKPOINT});
	($rc, undef, $err) = nats_client($nats->url, '-t', '120000', 'js-pub-n',
		'data.transformers.state-tables', 20_000, qq({"route_id": "$r2", "query_state": [$records]}));
	is($rc, 0, 'pull load: 20,000 messages of 10 records published') or diag $err;
	ok(wait_until(180, sub {
				consumer_drained($nats->url, 'data_transformers_state_tables', 'state_tables_workers') }),
		'pull load: every message acknowledged, each after a standby had it');
	my ($rows, $distinct) = count_rows($primary);
	is($distinct, 200_000, 'pull load: every record of the second round written');
	is($rows, $distinct, 'pull load: none twice');
	is(worker_pids($primary)->{writer}, $writer, 'pull load: the same writer throughout');
	is(count_log_matches($primary, qr/terminated by signal/), 0, 'pull load: no worker crashed');
	$standby->stop('immediate');
	$primary->stop('immediate');
	$nats->stop;
}

replicated_pull_load()
  if !$ENV{ISM_FAILOVER_SCENARIOS} || $ENV{ISM_FAILOVER_SCENARIOS} =~ /\bpull_load\b/;
no_standby() if !$ENV{ISM_FAILOVER_SCENARIOS} || $ENV{ISM_FAILOVER_SCENARIOS} =~ /\bno_standby\b/;
run_scenario($_) for @scenarios;
done_testing();

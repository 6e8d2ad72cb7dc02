# The cluster around the worker: a killed worker is restarted and the
# cluster comes back; DROP DATABASE and DROP EXTENSION never wait on it;
# a terminated worker comes back; a reload moves it to another server.
use strict;
use warnings;

use IsmTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $nats = IsmTest::Nats->new('one')->start;
# PostgreSQL::Test::Cluster turns restart_after_crash off; production has it on.
my $node = new_ism_node('lifecycle', $nats->url, "restart_after_crash = on\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION ism_state');

my $connected = "state = 'running' AND nats_state = 'connected'";
wait_for_workers($node, $connected) or die "workers did not connect";

# --- kill -9: the postmaster restarts everything, the worker comes back ----
my $old = worker_pids($node);
kill 'KILL', $old->{router};
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM ism_state.pg_stat_ism_worker "
	  . "WHERE $connected AND pid NOT IN ($old->{router}, $old->{writer})")
  or die "workers did not come back after kill -9";
pass('after kill -9 of the router, both workers run and connect again');
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'the cluster accepts queries');
ok(count_log_matches($node, qr/ism_state router.*was terminated by signal 9/),
	'the postmaster saw the crash');

# --- DROP DATABASE of another database does not wait on the worker ---------
$node->safe_psql('postgres', 'CREATE DATABASE scratch');
my $took = elapsed_of(sub { $node->safe_psql('postgres', 'DROP DATABASE scratch') });
cmp_ok($took, '<', 5, "DROP DATABASE returns promptly (${took}s)");

# --- DROP EXTENSION does not hang; the worker waits for it again ------------
my $before = worker_pids($node);
$took = elapsed_of(sub { $node->safe_psql('postgres', 'DROP EXTENSION ism_state') });
cmp_ok($took, '<', 5, "DROP EXTENSION returns promptly (${took}s)");
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM pg_stat_activity "
	  . "WHERE backend_type LIKE 'ism_state %' "
	  . "AND query = 'waiting for CREATE EXTENSION ism_state'")
  or die "workers did not go back to waiting";
pass('workers go back to waiting for the extension');
is_deeply(worker_pids($node), $before, 'without restarting');
my $names;
for (1 .. 50)
{
	$names = $nats->client_names;
	last unless @$names;
	select(undef, undef, undef, 0.1);
}
is_deeply($names, [], 'and close their NATS connections meanwhile');

$node->safe_psql('postgres', 'CREATE EXTENSION ism_state');
wait_for_workers($node, $connected) or die "workers did not resume";
pass('CREATE EXTENSION again: the workers connect again');

# --- pg_terminate_backend: restarted after bgw_restart_time -----------------
$before = worker_pids($node);
$node->safe_psql('postgres', "SELECT pg_terminate_backend($before->{writer})");
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM ism_state.pg_stat_ism_worker "
	  . "WHERE role = 'writer' AND $connected AND pid <> $before->{writer}")
  or die "terminated writer was not restarted";
pass('a terminated worker is restarted');
is(worker_pids($node)->{router}, $before->{router}, 'the router was not touched');

# --- SIGHUP: new settings, new connection -----------------------------------
my $other = IsmTest::Nats->new('two')->start;
$node->safe_psql('postgres',
	"ALTER SYSTEM SET ism_state.nats_url = '" . $other->url . "'");
$node->reload;
wait_for_workers($node, "$connected AND nats_server = '" . $other->url . "'")
  or die "workers did not move to the new server";
pass('after a reload the workers connect to the new nats_url');
is_deeply(
	$other->client_names,
	[ 'ism_state router [postgres]', 'ism_state writer 1 [postgres]' ],
	'the new server sees them');
ok(count_log_matches($node, qr/router: NATS settings changed, reconnecting/),
	'the change is logged');

$node->stop('fast');
done_testing();

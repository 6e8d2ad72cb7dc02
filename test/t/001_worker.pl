# The worker's life with NATS: waits for the extension, connects when
# nats-server appears after PostgreSQL, reconnects after nats-server dies,
# shows each state in pg_stat_ism_worker, keeps nats.c threads away from
# signals, and stops fast.
use strict;
use warnings;

use IsmTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $nats = IsmTest::Nats->new('main');
my $node = new_ism_node('worker', $nats->url);
$node->start;

# --- before CREATE EXTENSION: running, visible, waiting quietly ----------
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM pg_stat_activity "
	  . "WHERE backend_type IN ('ism_state router', 'ism_state writer') "
	  . "AND query = 'waiting for CREATE EXTENSION ism_state'")
  or die "workers did not show up in pg_stat_activity";
pass('router and writer appear in pg_stat_activity, waiting for the extension');

my $pids = worker_pids($node);
sleep 3;
is_deeply(worker_pids($node), $pids, 'no restart while the extension is missing');
is(count_log_matches($node, qr/router: extension "ism_state" is not installed/),
	1, 'the router logs the missing extension once');
is(count_log_matches($node, qr/writer 1: extension "ism_state" is not installed/),
	1, 'the writer logs the missing extension once');

# --- 18 shows the library's name and version (PG_MODULE_MAGIC_EXT) ---------
SKIP:
{
	skip 'pg_get_loaded_modules() is new in 18', 1
	  if $node->safe_psql('postgres', 'SHOW server_version_num') < 180000;
	is($node->safe_psql('postgres',
			"SELECT module_name || ' ' || version FROM pg_get_loaded_modules() "
			  . "WHERE file_name = 'ism_state.so'"),
		'ism_state ' . ((slurp_file('ism_state.control') =~ /^default_version = '([^']+)'/m)[0]),
		'the loaded library names itself and its version');
}

# --- NATS down when PostgreSQL starts: keep trying ------------------------
$node->safe_psql('postgres', 'CREATE EXTENSION ism_state');
wait_for_workers($node,
	"state = 'connecting' AND nats_state = 'disconnected' "
	  . "AND last_error LIKE 'could not connect to NATS at "
	  . $nats->url . "%'")
  or die "workers did not report the missing NATS server";
pass('health view shows connecting while nats-server is down');
is(count_log_matches($node, qr/router: could not connect to NATS/), 1,
	'a failing connection is logged once, not once per attempt');

# --- nats-server appears ---------------------------------------------------
$nats->start;
wait_for_workers($node,
	"state = 'running' AND nats_state = 'connected' AND nats_server = '"
	  . $nats->url . "' AND connected_since IS NOT NULL AND reconnects = 0")
  or die "workers did not connect";
pass('workers connect once nats-server starts');
is_deeply(
	$nats->client_names,
	[ 'ism_state router [postgres]', 'ism_state writer 1 [postgres]' ],
	'nats-server sees one named connection per worker');

# --- nats.c threads never take PostgreSQL's signals, and none blocks SIGQUIT -----
# SigBlk bit n-1 stands for signal n: SIGHUP 1, SIGINT 2, SIGQUIT 3, SIGUSR1 10,
# SIGTERM 15.  SIGQUIT (immediate shutdown) must reach the process at once,
# whichever thread takes it (issue #14, item 13).
my $pg_signals = (1 << 0) | (1 << 1) | (1 << 9) | (1 << 14);
my $sigquit = 1 << 2;
for my $role (sort keys %$pids)
{
	my $masks = thread_signal_masks(worker_pids($node)->{$role});
	my $main = worker_pids($node)->{$role};
	my @threads = grep { $_ != $main } keys %$masks;
	ok(@threads >= 2, "$role runs nats.c threads");
	my @open = grep { (hex($masks->{$_}) & $pg_signals) != $pg_signals } @threads;
	is(scalar @open, 0, "$role: every nats.c thread blocks SIGHUP, SIGINT, SIGUSR1, SIGTERM");
	is(hex($masks->{$main}) & $pg_signals, 0,
		"$role: the main thread takes them");
	my @quit_blocked = grep { hex($masks->{$_}) & $sigquit } keys %$masks;
	is(scalar @quit_blocked, 0, "$role: no thread blocks SIGQUIT");
}

# --- the test client works against this server ----------------------------
my ($rc, $out, $err) =
  nats_client($nats->url, 'stream-add', 'smoke', 'smoke.a');
is($rc, 0, 'ism-nats creates a stream') or diag $err;
($rc, $out) = nats_client($nats->url, 'js-pub', 'smoke.a', '{"k":1}');
like($out, qr/^stream=smoke seq=1$/m, 'ism-nats publishes through JetStream');
($rc, $out) = nats_client($nats->url, 'stream-info', 'smoke');
like($out, qr/^messages=1$/m, 'ism-nats reads stream info');

# --- nats-server dies and comes back ---------------------------------------
$nats->stop('KILL');
wait_for_workers($node,
	"state = 'running' AND nats_state = 'reconnecting' "
	  . "AND connected_since IS NULL AND last_error LIKE 'lost connection to NATS%'")
  or die "workers did not notice the lost server";
pass('health view shows reconnecting after nats-server is killed');

$nats->start;
wait_for_workers($node,
	"state = 'running' AND nats_state = 'connected' AND reconnects = 1")
  or die "workers did not reconnect";
pass('workers reconnect when nats-server is back, and count it');
ok(count_log_matches($node, qr/router: reconnected to NATS at/) == 1,
	'the reconnection is logged once');

# --- fast shutdown within 5 s ----------------------------------------------
my $took = elapsed_of(sub { $node->stop('fast') });
cmp_ok($took, '<', 5, "pg_ctl stop -m fast takes under 5 s (took ${took}s)");
is(count_log_matches($node, qr/ism_state (router|writer 1) stopped/), 2,
	'both workers log a clean stop');

done_testing();

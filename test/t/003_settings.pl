# Bad settings give clear errors and no crash loop; credentials work and
# never reach the log.
use strict;
use warnings;

use IsmTest;
use PostgreSQL::Test::Utils;
use Test::More;

# --- loaded without shared_preload_libraries --------------------------------
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->start;
my ($rc, $out, $err) = $plain->psql('postgres', "LOAD 'ism_state'");
isnt($rc, 0, 'LOAD without shared_preload_libraries fails');
like($err, qr/ism_state must be loaded via shared_preload_libraries/,
	'with a clear error');
like($err, qr/HINT:  Add ism_state to shared_preload_libraries/, 'and a hint');
($rc, $out, $err) = $plain->psql('postgres', 'CREATE EXTENSION ism_state');
like($err, qr/must be loaded via shared_preload_libraries/,
	'CREATE EXTENSION says the same');
$plain->stop('fast');

# --- an invalid URL and a missing routing file ------------------------------
my $nats = IsmTest::Nats->new('auth',
	conf => 'authorization { users: [ {user: alice, password: s3cret-pass}, '
	  . '{user: bob, password: url-pass} ] }')->start;

# log_statement off: the ALTER SYSTEMs below carry passwords, and the log
# is checked for them at the end.
my $node = new_ism_node('settings', 'foo://127.0.0.1:' . $nats->port, qq{
ism_state.routing_file = '/nonexistent/routing.yaml'
log_statement = none
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION ism_state');

wait_for_workers($node, "state = 'config_error'")
  or die "workers did not report the bad URL";
like(
	$node->safe_psql('postgres',
		"SELECT last_error FROM ism_state.pg_stat_ism_worker WHERE role = 'writer'"),
	qr/^invalid ism_state.nats_url: unsupported scheme "foo" \(use nats:\/\/ or tls:\/\/\)$/,
	'the view names the bad URL');
ok(count_log_matches($node,
		qr/WARNING:  ism_state router: invalid ism_state.nats_url: unsupported scheme "foo"/),
	'so does the log');
ok(count_log_matches($node,
		qr/WARNING:  ism_state router: could not load ism_state.routing_file: could not open routing file "\/nonexistent\/routing.yaml": No such file or directory/),
	'a missing routing file is reported');
my $pids = worker_pids($node);
sleep 2;
is_deeply(worker_pids($node), $pids, 'bad settings do not crash the workers');
$node->safe_psql('postgres', "ALTER SYSTEM SET ism_state.routing_file = ''");

my @bad_urls = (
	[ 'nats://', 'has no host' ],
	[ 'nats://host:0', 'port out of range in "nats://host:0"' ],
	[ 'nats://host:99999', 'port out of range in "nats://host:99999"' ],
	[ 'nats://host:12x', 'invalid port in "nats://host:12x"' ],
	[ 'nats://ho st:4222', 'contains white space' ],
	[ 'nats://a:4222,,nats://b:4222', 'empty entry in server list' ],
	[ 'http://a:4222', 'unsupported scheme "http"' ],
	[ join(',', map { "nats://h$_" } 1 .. 33), 'more than 32 servers' ]);
for my $case (@bad_urls)
{
	my ($bad, $why) = @$case;
	$node->safe_psql('postgres', "ALTER SYSTEM SET ism_state.nats_url = '$bad'");
	$node->reload;
	wait_for_workers($node,
		"state = 'config_error' AND last_error LIKE '%$why%'")
	  or die "no error for $bad";
	pass('rejected ' . substr($bad, 0, 40) . ": $why");
}

# --- user and password: wrong, then right (from a file) --------------------
$node->safe_psql('postgres', "ALTER SYSTEM SET ism_state.nats_url = '"
	  . $nats->url . "'");
$node->safe_psql('postgres', "ALTER SYSTEM SET ism_state.nats_user = 'alice'");
$node->safe_psql('postgres',
	"ALTER SYSTEM SET ism_state.nats_password = 'wrong-pass'");
$node->reload;
wait_for_workers($node,
	"state = 'connecting' AND last_error LIKE '%Authorization Violation%'")
  or die "wrong password not reported";
pass('a wrong password shows as an authorization error');
$pids = worker_pids($node);

my $secret_file = $node->basedir . '/nats_password';
$node->safe_psql('postgres',
	"ALTER SYSTEM SET ism_state.nats_password = 'file:$secret_file.missing'");
$node->reload;
wait_for_workers($node,
	"state = 'connecting' AND last_error LIKE "
	  . "'%could not open ism_state.nats_password file \"$secret_file.missing\": No such file%'")
  or die "missing secret file not reported";
pass('a missing secret file is reported');

append_to_file($secret_file, "s3cret-pass\n");
$node->safe_psql('postgres',
	"ALTER SYSTEM SET ism_state.nats_password = 'file:$secret_file'");
$node->reload;
wait_for_workers($node, "state = 'running' AND nats_state = 'connected'")
  or die "right password did not connect";
pass('the right password, read from a file, connects');
is_deeply(worker_pids($node), $pids, 'without a restart');

# --- a password in the URL is masked wherever ism_state shows it ------------
$node->safe_psql('postgres', 'ALTER SYSTEM RESET ism_state.nats_user');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET ism_state.nats_password');
$node->safe_psql('postgres', "ALTER SYSTEM SET ism_state.nats_url = "
	  . "'nats://bob:url-pass\@127.0.0.1:" . $nats->port . "'");
$node->reload;
wait_for_workers($node,
	"state = 'running' AND nats_server = 'nats://bob:***\@127.0.0.1:"
	  . $nats->port . "'")
  or die "URL with credentials did not connect";
pass('credentials in the URL work and the view masks them');
is($node->safe_psql('postgres', 'SHOW ism_state.nats_url'),
	'nats://bob:***@127.0.0.1:' . $nats->port, 'SHOW masks them');

$node->stop('fast');

# The postmaster itself logs each setting a reload changes, value and all
# (PostgreSQL's behaviour, hence the file: form); nothing else may.
my $log = slurp_file($node->logfile);
unlike($log, qr/s3cret-pass/, 'a secret from a file never reaches the log');
$log =~ s/^.*parameter "ism_state\.\w+" changed to .*$//mg;
unlike($log, qr/wrong-pass|url-pass/, 'ism_state never logs a secret');

done_testing();

# Least privilege: without ism_state.role the workers warn that they run as
# the bootstrap superuser; with the role scripts/worker-role.sql makes,
# they connect as it and do all their work (routes seeded, messages routed,
# records written into tables the role owns, dead letters, pruning), and
# the role can do nothing else.
use strict;
use warnings;

use IsmTest;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

my $tables = '3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10';
my $r2 = "e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:$tables";

my ($nats, $node) = start_example_stack('privilege');
my $url = $nats->url;
ok($node->log_contains(qr/WARNING:  ism_state router connects as the bootstrap superuser/),
	'without ism_state.role: a WARNING at start');

# the documented setup (applied pruned quickly, to see the role do it)
my ($rc, $out, $err) = $node->psql('postgres', slurp_file('scripts/worker-role.sql'),
	extra_params => [ '-v', 'role=ism_worker', '-v', 'catalog_schema=public',
		'-v', 'data_schema=ism_data' ]);
is($rc, 0, 'scripts/worker-role.sql runs') or diag $err;
$node->append_conf('postgresql.conf', "ism_state.role = 'ism_worker'\n"
	  . "ism_state.data_schema = 'ism_data'\nism_state.applied_retention = '2s'\n");
# a table the role has no business with
$node->safe_psql('postgres', 'CREATE TABLE secret (x int); INSERT INTO secret VALUES (42)');
# the routes are seeded again at start, by the role
$node->safe_psql('postgres', "DELETE FROM ism_state.route WHERE selector = 'processor/monitor'");
$node->restart;
wait_for_workers($node, "state = 'running' AND nats_state = 'connected'") or die 'no workers';
$node->poll_query_until('postgres', 'SELECT count(*) = 7 FROM ism_state.route')
  or die 'routes not seeded';
pass('the role seeds the route table from the routing file');
is($node->safe_psql('postgres',
		"SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity WHERE backend_type LIKE 'ism_state %'"),
	'ism_worker', 'the workers connect as ism_state.role');
is($node->safe_psql('postgres',
		"SELECT rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls FROM pg_roles WHERE rolname = 'ism_worker'"),
	'f', 'a role with no attribute but LOGIN');
# 17 lets a background worker connect as a role without LOGIN
# (BGWORKER_BYPASS_ROLELOGINCHECK): nobody can log in as the workers' role
my $v17 = $node->safe_psql('postgres', 'SHOW server_version_num') >= 170000;
is($node->safe_psql('postgres', "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'ism_worker'"),
	$v17 ? 'f' : 't', $v17 ? 'on 17 and later not even LOGIN' : 'LOGIN, which 15 requires');
SKIP:
{
	skip 'a background worker needs a role with LOGIN below 17', 1 unless $v17;
	($rc, $out, $err) = $node->psql('postgres', 'SELECT 1', connstr => $node->connstr('postgres') . ' user=ism_worker');
	like($err, qr/role "ism_worker" is not permitted to log in/, 'nobody can log in as it');
}
sleep 1;

# route a message: the router reads the catalog, publishes, the writer
# creates its table in ism_data and writes
my $body = JSON::PP->new->canonical->encode({ type => 'query_state_entry', route_id => $r2,
	query_state => [ { question => 'least', n => 1 }, { question => 'privilege', n => 2 } ] });
($rc, $out, $err) = nats_client($url, 'js-pub', 'processor.state.router', \$body);
is($rc, 0, 'an entry message published') or diag $err;
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM ism_data.\"${tables}_answers\"") or die 'no rows';
pass('routed by the router and written by the writer, as ism_worker');
is($node->safe_psql('postgres',
		"SELECT tableowner FROM pg_tables WHERE schemaname = 'ism_data'"),
	'ism_worker', 'the table is the role\'s');
ok($node->safe_psql('postgres', 'SELECT count(*) > 0 FROM ism_state.applied'),
	'the writer records what it applied');
$node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM ism_state.applied')
  or die 'applied not pruned';
pass('and prunes it after ism_state.applied_retention');

# a bad message: a dead letter, written by the role
($rc, $out, $err) = nats_client($url, 'js-pub', 'processor.state.router', \'not json');
$node->poll_query_until('postgres', 'SELECT count(*) = 1 FROM ism_state.dead_letter')
  or die 'no dead letter';
pass('a bad message is dead-lettered by the role');
my $id = $node->safe_psql('postgres', 'SELECT id FROM ism_state.dead_letter');
$node->safe_psql('postgres', "SELECT ism_state.replay_dead_letter($id)");
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 AND min(id) > $id FROM ism_state.dead_letter") or die 'no replay';
pass('a replay asked for by an administrator is done by the role (replayed, failed again)');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM ism_state.pg_stat_ism_worker WHERE last_error LIKE '%permission denied%'"),
	'0', 'no permission errors in the workers');
ok(!$node->log_contains(qr/(ERROR|WARNING|FATAL): +permission denied/), 'nor in the log');

# and nothing more
($rc, $out, $err) = $node->psql('postgres', 'SET ROLE ism_worker; SELECT * FROM secret');
like($err, qr/permission denied for table secret/, 'the role cannot read other tables');
($rc, $out, $err) = $node->psql('postgres',
	"SET ROLE ism_worker; SELECT ism_state.add_route('x/y', 'x', 'x.y', NULL, '{}')");
like($err, qr/permission denied for function add_route/, 'nor manage routes through the SQL API');
($rc, $out, $err) = $node->psql('postgres', 'SET ROLE ism_worker; CREATE TABLE public.t (x int)');
like($err, qr/permission denied for schema public/, 'nor create tables outside its schema');

$node->stop('fast');
done_testing();

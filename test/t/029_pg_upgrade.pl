# PostgreSQL to a new major with pg_upgrade (issue #16): a PostgreSQL 15
# cluster holding ism_state data (routes, written tables, a dead letter,
# the writer's record of what it applied) is upgraded to this
# installation's major while messages wait in JetStream for its stopped
# workers; after the upgrade the workers resume on the same durable
# consumers and every message is in its table exactly once.  pg_upgrade
# runs the servers in binary-upgrade mode, where the workers must not start.
#
# Needs the old installation in this filesystem: ISM_OLD_PG, its
# lib/postgresql/<major> directory with ism_state installed
# (scripts/stage-old-pg.sh; scripts/test.sh --pg 17 and --pg 18 stage
# bookworm's PostgreSQL 15 in the chroot and set it).
use strict;
use warnings;

use File::Path qw(make_path);
use IsmTest;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

plan skip_all => 'no older PostgreSQL installation to upgrade from (ISM_OLD_PG: '
  . 'scripts/test.sh --pg 17 or --pg 18 stage bookworm\'s 15)'
  unless $ENV{ISM_OLD_PG};

my $tables = '3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10';
my $r2 = "e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:$tables";
my $answers = "${tables}_answers";
my $json = JSON::PP->new->canonical;

my $nats = IsmTest::Nats->new('upgrade')->start;
my $routing = "${PostgreSQL::Test::Utils::tmp_check}/routing-upgrade.yaml";
File::Copy::copy('test/data/routing.yaml', $routing) or die "copy: $!";
my $conf = "ism_state.routing_file = '$routing'\n";

sub publish_entries
{
	my (@n) = @_;
	for my $n (@n)
	{
		my ($rc, $out, $err) = nats_client($nats->url, 'js-pub', 'processor.state.router',
			\$json->encode({ type => 'query_state_entry', route_id => $r2,
					query_state => [ { n => $n, k => 'a' }, { n => $n, k => 'b' } ] }));
		die "js-pub: $err" if $rc;
	}
}

sub router_consumer
{
	my (undef, $info) = nats_client($nats->url, 'consumer-info', 'processor_state_router',
		'processor_state_router_sub_1');
	return $info;
}

# --- the old cluster, holding data ------------------------------------------------
my $old = new_ism_node('old', $nats->url, $conf, install_path => $ENV{ISM_OLD_PG});
$old->start;
my $old_version = $old->safe_psql('postgres', 'SHOW server_version_num');
my $new_major = `pg_config --version` =~ /PostgreSQL (\d+)/ ? $1 : die 'no pg_config';
cmp_ok(int($old_version / 10000), '<', $new_major,
	"the old cluster runs PostgreSQL $old_version, older than $new_major");
$old->safe_psql('postgres', 'CREATE EXTENSION ism_state');
$old->safe_psql('postgres', slurp_file('test/data/catalog.sql'));
wait_for_workers($old, "state = 'running' AND nats_state = 'connected'")
  or die 'the old workers did not connect';
$old->poll_query_until('postgres', 'SELECT count(*) = 7 FROM ism_state.route')
  or die 'no routes';
sleep 1;
publish_entries(1 .. 5);
nats_client($nats->url, 'js-pub', 'processor.state.router', \'not json');
$old->poll_query_until('postgres', "SELECT count(*) = 10 FROM \"$answers\"")
  or die 'the old cluster did not write 10 rows';
$old->poll_query_until('postgres', 'SELECT count(*) = 1 FROM ism_state.dead_letter')
  or die 'no dead letter';
my $ext_version = $old->safe_psql('postgres',
	"SELECT extversion FROM pg_extension WHERE extname = 'ism_state'");
my $applied = $old->safe_psql('postgres', 'SELECT count(*) FROM ism_state.applied');
cmp_ok($applied, '>', 0, 'the writer recorded what it applied');
$old->stop('fast');

# --- messages wait in JetStream while the cluster is upgraded ------------------------
publish_entries(6 .. 10);
like(router_consumer(), qr/^num_pending=5$/m, 'five messages wait on the router\'s durable consumer');

my $new = new_ism_node('new', $nats->url, $conf,
	# 18's initdb turns data checksums on, which 15's cluster has not
	extra => $new_major >= 18 ? ['--no-data-checksums'] : []);
my $bindir = $new->config_data('--bindir');
# with the old installation's environment: its libraries on LD_LIBRARY_PATH
$old->command_ok(
	[ "$bindir/pg_upgrade", '--no-sync', '--retain',
		'-d', $old->data_dir, '-D', $new->data_dir,
		'-b', $old->config_data('--bindir'), '-B', $bindir,
		'-s', $new->host, '-p', $old->port, '-P', $new->port ],
	"pg_upgrade from $old_version to $new_major");
my @server_logs = glob($new->data_dir . '/pg_upgrade_output.d/*/log/pg_upgrade_server.log');
is(scalar @server_logs, 1, 'pg_upgrade kept its servers\' log');
my $during = slurp_file($server_logs[0]);
unlike($during, qr/ism_state (router|writer \d+) started/,
	'no worker ran while pg_upgrade ran the servers (binary-upgrade mode)');
like(router_consumer(), qr/^num_pending=5$/m, 'the five messages still wait after pg_upgrade');

# --- the new cluster: the same data, and the workers resume --------------------------
$new->start;
is($new->safe_psql('postgres', 'SHOW server_version_num') >= $new_major * 10000, 1,
	"the cluster runs PostgreSQL $new_major");
is($new->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'ism_state'"),
	$ext_version, "ism_state $ext_version carried over");
is($new->safe_psql('postgres', 'SELECT count(*) FROM ism_state.route'), '7', 'the routes');
is($new->safe_psql('postgres', 'SELECT count(*) FROM ism_state.dead_letter'), '1', 'the dead letter');
wait_for_workers($new, "state = 'running' AND nats_state = 'connected'")
  or die 'the new workers did not connect';
pass('the workers run and connect on the new major');
$new->poll_query_until('postgres', "SELECT count(*) >= 20 FROM \"$answers\"")
  or die 'the waiting messages were not written';
sleep 2;	# anything doubled would show by now
is($new->safe_psql('postgres',
		"SELECT count(*) || ' ' || count(DISTINCT (n, k)) || ' ' || count(DISTINCT n) FROM \"$answers\""),
	'20 20 10', 'every message written exactly once: the five before and the five waiting');
like(router_consumer(), qr/^num_pending=0$/m, 'the durable consumer is drained');
like(router_consumer(), qr/^num_ack_pending=0$/m, 'and everything acked');

# and new traffic flows
publish_entries(11);
$new->poll_query_until('postgres', "SELECT count(*) = 22 FROM \"$answers\"")
  or die 'new traffic not written';
pass('new messages are routed and written');
ok(!$new->log_contains(qr/(ERROR|FATAL|PANIC): |TRAP/),
	'no error in the new cluster\'s log') or diag slurp_file($new->logfile);

$new->stop('fast');
done_testing();

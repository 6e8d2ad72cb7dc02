# The container image, without a container engine: docker/build.sh stages
# an installable extension, then PostgreSQL runs the way the image's
# entrypoint runs it (the image's settings file, the catalog and ism_state
# init scripts, a restart) and the workers connect and load the routes; the
# health check and the exporter's queries work against it; the manifests
# are consistent, and the consistency check catches a broken one.
use strict;
use warnings;

use File::Copy;
use File::Path qw(make_path);
use IsmTest;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

my $tmp = $PostgreSQL::Test::Utils::tmp_check;

# --- the image's build script -----------------------------------------------
my $stage = "$tmp/image-stage";
my ($out, $err) = ('', '');
my $ok = IPC::Run::run([ 'docker/build.sh', '--destdir', $stage ],
	'>', \$out, '2>', \$err);
ok($ok, 'docker/build.sh succeeds') or diag $err;
my $pkglib = `pg_config --pkglibdir`;
my $share = `pg_config --sharedir`;
chomp($pkglib, $share);
ok(-f "$stage$pkglib/ism_state.so", 'it stages the library');
ok(-f "$stage$share/extension/ism_state.control", 'the control file');
ok(-f "$stage$share/extension/ism_state--0.1.sql", 'the SQL script');
ok(scalar(glob("$stage/usr/lib/*/libnats.so.*")), 'and the nats.c runtime library');
is(slurp_file("$stage$share/extension/ism_state--0.1.sql"),
	slurp_file('sql/ism_state--0.1.sql'), 'the staged script is the source one');

# --- PostgreSQL as the image's entrypoint runs it ----------------------------
my $nats = IsmTest::Nats->new('image')->start;
my $confdir = "$tmp/image-conf.d";
make_path($confdir);
copy('docker/conf.d/ism_state.conf', "$confdir/00-ism_state.conf") or die $!;
# What a pod mounts: here the routing file and NATS are this test's, as
# /etc is not writable and the "nats" service does not resolve.
my $routing = "$tmp/image-routing.yaml";
copy('test/data/routing.yaml', $routing) or die $!;
append_to_file("$confdir/10-site.conf",
	"ism_state.nats_url = '" . $nats->url . "'\n"
	  . "ism_state.routing_file = '$routing'\n");

my $node = PostgreSQL::Test::Cluster->new('image');
$node->init;
# the Dockerfile appends this line to the sample postgresql.conf
$node->append_conf('postgresql.conf', "include_dir = '$confdir'\n");
$node->start;

# the entrypoint creates POSTGRES_DB, then runs /docker-entrypoint-initdb.d
$node->safe_psql('postgres', 'CREATE DATABASE ism');
my %env = (
	PGHOST => $node->host,
	PGPORT => $node->port,
	POSTGRES_DB => 'ism',
	POSTGRES_USER => $ENV{USER} // getpwuid($<),
	ISM_STATE_ROUTING_FILE => $routing);
sub run_script
{
	my ($cmd) = @_;
	my ($o, $e) = ('', '');
	local @ENV{ keys %env } = values %env;
	my $r = IPC::Run::run($cmd, '>', \$o, '2>', \$e);
	return ($r, $o, $e);
}
my ($r, $o, $e) = run_script(
	[ 'psql', '-v', 'ON_ERROR_STOP=1', '-X', '-q', '-d', 'ism', '-f', 'test/data/catalog.sql' ]);
ok($r, 'the example catalog loads (05-catalog.sql in compose)') or diag $e;
($r, $o, $e) = run_script([ 'docker/initdb.d/10-ism_state.sh' ]);
ok($r, 'the init script succeeds') or diag $e;
like($o, qr/routes_loaded\s*\n-+\n\s*7\n/, 'and loads the seven example routes');

# the entrypoint restarts the server after initialisation
$node->restart;
is($node->safe_psql('ism', 'SHOW ism_state.database'), 'ism',
	'the workers now use POSTGRES_DB');
wait_for_workers($node, "state = 'running' AND nats_state = 'connected' "
	  . "AND database = 'ism'", 'ism')
  or die 'workers did not connect';
pass('the workers run in POSTGRES_DB and are connected to NATS');
is($node->safe_psql('ism', 'SELECT count(*) FROM ism_state.route'), '7',
	'with the routes loaded');

# --- the health check and the exporter's queries ------------------------------
($r) = run_script([ 'docker/healthcheck.sh' ]);
ok($r, 'the health check passes while connected');

my ($rc, $json) = ('', '');
IPC::Run::run([ 'python3', 'test/check_manifests.py' ], '>', \$json, '2>', \$err);
is($?, 0, 'the manifests are consistent') or diag $err;
my $manifests = decode_json($json);
my $queries = $manifests->{queries};
ok(@$queries >= 3, 'probe and exporter queries found');
for my $q (@$queries)
{
	my ($qrc, $qout, $qerr) = $node->psql('ism', $q);
	is($qrc, 0, 'query runs: ' . (split /\n/, $q)[0]) or diag $qerr;
}

# --- the CloudNativePG Cluster's bootstrap and exporter queries ---------------
# Its bootstrap runs, as the superuser in the workers' database, after
# CREATE EXTENSION (made here by the init script); its exporter runs the
# queries as a pg_monitor member (cnpg_metrics_exporter), in a read-only
# transaction with search_path pinned.
my $cnpg = $manifests->{cnpg};
ok(@{ $cnpg->{bootstrap_sql} } > 0, "the Cluster's bootstrap SQL found");
for my $sql (@{ $cnpg->{bootstrap_sql} })
{
	my ($qrc, $qout, $qerr) = $node->psql('ism', $sql);
	is($qrc, 0, "the Cluster's bootstrap runs: $sql") or diag $qerr;
}
$node->safe_psql('ism',
	'CREATE ROLE cnpg_metrics_exporter LOGIN; GRANT pg_monitor TO cnpg_metrics_exporter');
ok(exists $cnpg->{queries}{ism_state_health}, "the Cluster's exporter has the health query");
for my $name (sort keys %{ $cnpg->{queries} })
{
	my ($qrc, $qout, $qerr) = $node->psql('ism',
		'BEGIN READ ONLY; SET LOCAL search_path = pg_catalog, public, pg_temp; '
		  . "SET LOCAL ROLE cnpg_metrics_exporter; $cnpg->{queries}{$name}; COMMIT");
	is($qrc, 0, "the Cluster's exporter query $name runs as pg_monitor") or diag $qerr;
	is($qout, 't', 'and says the workers are healthy') if $name eq 'ism_state_health';
}

$nats->stop('KILL');
wait_for_workers($node, "nats_state <> 'connected'", 'ism');
($r) = run_script([ 'docker/healthcheck.sh' ]);
ok(!$r, 'the health check fails while NATS is away');

# --- the consistency check can fail -------------------------------------------
my $broken = "$tmp/broken-repo";
make_path("$broken/test");
IPC::Run::run([ 'cp', '-r', 'docker', 'k8s', 'scripts', $broken ]) or die 'cp failed';
my $manifest = slurp_file("$broken/k8s/base/postgres.yaml");
$manifest =~ s{mountPath: /etc/ism_state$}{mountPath: /etc/ism}m;
$manifest =~ s{key: password\n(\s+path: nats-password)}{key: passwd\n$1};
# the volume where images before 18 keep their data, PGDATA left as it is
$manifest =~ s{mountPath: /var/lib/postgresql$}{mountPath: /var/lib/postgresql/data}m;
open my $fh, '>', "$broken/k8s/base/postgres.yaml" or die $!;
print $fh $manifest;
close $fh;
IPC::Run::run([ 'python3', 'test/check_manifests.py', $broken ], '>', \$json, '2>', \$err);
isnt($?, 0, 'a broken manifest fails the check');
like($err, qr/routing_file .* is not where ism-state-routing is mounted/,
	'naming the routing mount');
like($err, qr/Secret ism-state-nats has no key passwd/, 'and the missing Secret key');
like($err, qr{PGDATA /var/lib/postgresql/\d+/docker is not in its data volume},
	'and PGDATA outside the data volume');

# the CloudNativePG Cluster, broken in a copy of its own
my $broken_cluster = "$tmp/broken-cluster-repo";
make_path("$broken_cluster/test");
IPC::Run::run([ 'cp', '-r', 'docker', 'k8s', 'scripts', $broken_cluster ]) or die 'cp failed';
my $cluster = slurp_file("$broken_cluster/k8s/production/cluster.yaml");
$cluster =~ s{path: ism_state/routing.yaml}{path: routing.yaml} or die;
$cluster =~ s{^  instances: \d+$}{  instances: 1}m or die;
$cluster =~ s{dataDurability: required}{dataDurability: preferred} or die;
$cluster =~ s{ism_state.stream_replicas: "3"}{ism_state.stream_replicas: "1"} or die;
open $fh, '>', "$broken_cluster/k8s/production/cluster.yaml" or die $!;
print $fh $cluster;
close $fh;
IPC::Run::run([ 'python3', 'test/check_manifests.py', $broken_cluster ], '>', \$json, '2>', \$err);
isnt($?, 0, 'a broken Cluster fails the check');
like($err, qr/Cluster's ism_state.routing_file .* is not where ism-state-routing is projected/,
	'naming the routing file');
like($err, qr/Cluster has 1 instance/, 'the missing standbys');
like($err, qr/lets commits go on without a standby/, 'the durability given up');
like($err, qr/Cluster's ism_state.stream_replicas is 1, the StatefulSet's 3/,
	'and the setting that differs');

$node->stop('fast');
done_testing();

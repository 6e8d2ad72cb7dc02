# Faults during a 100,000-record run into one table: kill -9 of the writer,
# kill -9 of the postmaster, a nats-server restart.  Afterwards every record
# is in its table exactly once (count and content).
use strict;
use warnings;

use File::Copy;
use IsmTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $records = 100000;
my $tables = '3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10';
my $r2 = "e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:$tables";
my $table = "${tables}_faults";

my $nats = IsmTest::Nats->new('faults')->start;
my $url = $nats->url;

# a short ack_wait, so messages a killed writer held come back soon
my $routing = "${PostgreSQL::Test::Utils::tmp_check}/routing.yaml";
my $yaml = slurp_file('test/data/routing.yaml');
$yaml =~ s/ack_wait: 60 /ack_wait: 3 / or die 'no ack_wait to shorten';
open my $fh, '>', $routing or die $!;
print $fh $yaml;
close $fh;

my $node = new_ism_node('faults', $url, qq{
ism_state.routing_file = '$routing'
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION ism_state');
$node->safe_psql('postgres', slurp_file('test/data/catalog.sql'));
$node->safe_psql('postgres',
	"UPDATE processor SET properties = '{\"tableName\": \"faults\", \"batchSize\": 500, "
	  . "\"batchWindowTTL\": 1, \"includeTimestamp\": false}' WHERE id = '$tables'");
wait_for_workers($node, "state = 'running' AND nats_state = 'connected'");
sleep 2;

# records written so far; 0 while the server is down or recovering
sub written
{
	my $n = eval {
		my ($rc, $out) = $node->psql('postgres', "SELECT count(*) FROM \"$table\"");
		$rc == 0 ? $out : 0;
	};
	return $n // 0;
}

sub wait_written
{
	my ($what, $n, $seconds) = @_;
	my $start = time;
	while (time - $start < $seconds)
	{
		return 1 if written() >= $n;
		usleep(100_000);
	}
	die "timed out waiting for $what (" . written() . " written)";
}

my ($rc, $out, $err) = nats_client($url, '-t', '120000', 'js-pub-n',
	'data.transformers.state-tables', $records,
	qq({"route_id": "$r2", "query_state": [{"m": "%n"}]}));
is($rc, 0, "$records messages published") or diag $err;

wait_written('a first part', 10000, 120);
my $at = written();
kill 'KILL', worker_pids($node)->{writer};
pass("writer killed with -9 after $at records");

wait_written('progress after the crash', 40000, 180);
$at = written();
$node->kill9;
pass("postmaster killed with -9 after $at records");
sleep 2;
$node->start;

wait_written('progress after the postmaster', 60000, 180);
$at = written();
$nats->stop('KILL');
pass("nats-server killed after $at records");
sleep 1;
$nats->start;

wait_written('every record', $records, 300);
is($node->safe_psql('postgres', "SELECT count(*), count(DISTINCT m) FROM \"$table\""),
	"$records|$records", 'every record exactly once');
is($node->safe_psql('postgres',
		"SELECT min(m::int) || '-' || max(m::int) FROM \"$table\""),
	"1-$records", 'and each one of them');
is($node->safe_psql('postgres', 'SELECT count(*) FROM ism_state.dead_letter'), '0',
	'nothing dead-lettered');

$node->stop('fast');
done_testing();

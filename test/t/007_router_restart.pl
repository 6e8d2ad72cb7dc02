# nats-server dies in the middle of a 50,000-row replay and comes back:
# the replay completes, every row is delivered, and the republished part is
# deduplicated by JetStream (the outbound Nats-Msg-Ids are stable), so the
# processor's stream ends up with exactly one message per row.
use strict;
use warnings;

use File::Copy;
use IsmTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

# large enough that the replay is still running when the server is killed
my $rows = 50000;
my $nats = IsmTest::Nats->new('restart')->start;
my $url = $nats->url;

# a short ack_wait, so the interrupted request comes back quickly
my $routing = "${PostgreSQL::Test::Utils::tmp_check}/routing.yaml";
my $yaml = slurp_file('test/data/routing.yaml');
$yaml =~ s/(subject: processor\.state\.router.*\n.*\n\s+ack_wait:) 90/$1 5/
  or die 'could not set ack_wait';
open my $fh, '>', $routing or die $!;
print $fh $yaml;
close $fh;

my $node = new_ism_node('restart', $url, qq{
ism_state.routing_file = '$routing'
ism_state.publish_timeout = '2s'
ism_state.writer_workers = 0
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION ism_state');
$node->safe_psql('postgres', slurp_file('test/data/catalog.sql'));
$node->safe_psql('postgres', qq{
UPDATE processor SET properties = '{"maxBatchSize": 100, "maxBatchLimit": 1}'
 WHERE id = '7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52';
INSERT INTO state (id, project_id, count) VALUES ('big', '5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03', $rows);
INSERT INTO processor_state (id, processor_id, state_id, direction)
VALUES ('big:p', '7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52', 'big', 'INPUT');
INSERT INTO state_column (state_id, name) VALUES ('big', 'i');
INSERT INTO state_column_data (column_id, data_index, data_value)
SELECT c.id, g, g::text FROM state_column c, generate_series(0, $rows - 1) g
 WHERE c.state_id = 'big';
});
wait_for_workers($node, "state = 'running' AND nats_state = 'connected'");

sub wait_until
{
	my ($what, $seconds, $cond) = @_;
	my $start = time;
	while (time - $start < $seconds)
	{
		return 1 if $cond->();
		usleep(50_000);
	}
	die "timed out waiting for $what";
}

sub stream_messages
{
	my ($rc, $info) = nats_client($url, 'stream-info', 'language_models_openai');
	return $rc == 0 && $info =~ /^messages=(\d+)$/m ? $1 : -1;
}

wait_until('the router consumer', 30, sub {
	(nats_client($url, 'consumer-info', 'processor_state_router',
		'processor_state_router_sub_1'))[0] == 0 });
# the processor's stream exists once the router published to it
my ($rc) = nats_client($url, 'js-pub', 'processor.state.router',
	'{"type": "query_processor_entry", "processor_id": "7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52", "query_state": []}');
wait_until('the first message', 30, sub { stream_messages() == 1 });

($rc) = nats_client($url, 'js-pub', 'processor.state.router',
	'{"type": "query_state_route", "route_id": "big:p"}');
is($rc, 0, 'replay requested');
wait_until('part of the replay', 60, sub { stream_messages() > 100 });
$nats->stop('KILL');
pass("nats-server killed in the middle of the replay");
sleep 1;
$nats->start;
pass('nats-server restarted');

ok(stream_messages() <= $rows, 'the replay had not finished when the server died');
wait_until('the whole replay', 180, sub { stream_messages() == $rows + 1 });
pass('the replay completes: every row is in the stream');
sleep 3;
is(stream_messages(), $rows + 1, 'exactly once each: the republished part was deduplicated');

wait_until('the request acked', 60, sub {
	my (undef, $info) = nats_client($url, 'consumer-info', 'processor_state_router',
		'processor_state_router_sub_1');
	$info =~ /^num_ack_pending=0$/m && $info =~ /^num_pending=0$/m;
});
pass('the replay request is acknowledged in the end');
is($node->safe_psql('postgres', 'SELECT count(*) FROM ism_state.dead_letter'), '0',
	'nothing was dead-lettered');
ok(count_log_matches($node, qr/router: .*will be retried/) >= 1
	  || count_log_matches($node, qr/router: lost connection to NATS/) >= 1
	  || count_log_matches($node, qr/router: reconnected to NATS/) >= 1,
	'the interruption was noticed');

$node->stop('fast');
done_testing();

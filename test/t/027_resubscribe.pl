# A worker that subscribes again (its route changed) loses nothing to the
# ack wait: what the old subscription had received and not yet handed out
# is given back or handled, so every message is done well within the
# consumer's ack wait (60 s here; each check allows 15 s).
#   - the writer on its push consumer (the platform's, deliver group the
#     queue): messages the server delivered while the writer was busy
#     (held by a table lock), then a route change;
#   - the writer's pending batch when its route changes;
#   - the router on its pull consumer, and on a core NATS subject (where
#     nothing would ever deliver a dropped message again).
# Each worker is held by a lock on a table it needs while the messages
# come and the route changes, so that they wait in the NATS client's queue
# of the old subscription.
use strict;
use warnings;

use IsmTest;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $tables = '3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10';
my $answers = 'e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16';
my $r2 = "$answers:$tables";
my $writer_route = 'data/transformers/mixer/state-tables-1.0';
my $router_route = 'processor/state/router';

# writer_lock_timeout 0: a flush waits for a table lock as long as it is held
my ($nats, $node) = start_example_stack('resubscribe', "ism_state.writer_lock_timeout = 0\n");
my $url = $nats->url;
my $json = JSON::PP->new->canonical;
my %pid = %{ worker_pids($node) };

$node->safe_psql('postgres', qq{
	UPDATE ism_state.route SET ack_wait = 60 WHERE selector IN ('$writer_route', '$router_route')});
sleep 1;

sub count_rows
{
	my ($table, $condition) = @_;
	my $n = $node->safe_psql('postgres', qq{
		SELECT CASE WHEN to_regclass('"$table"') IS NULL THEN 0 END});
	return 0 if $n eq '0';
	return $node->safe_psql('postgres', qq{SELECT count(*) FROM "$table" WHERE $condition});
}

# seconds until $n rows of tag $tag are in $table, or undef after $limit
sub seconds_until_rows
{
	my ($table, $tag, $n, $limit) = @_;
	my $start = time;
	while (time - $start < $limit)
	{
		return time - $start if count_rows($table, "tag = '$tag'") >= $n;
		usleep(100_000);
	}
	return undef;
}

# wait until worker $pid waits for a lock
sub wait_lock_wait
{
	my ($pid) = @_;
	$node->poll_query_until('postgres', qq{
		SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $pid})
	  or die "worker $pid never waited for the lock";
}

# records of tag $tag numbered $from .. $to, straight to the writer
sub to_writer
{
	my ($tag, $from, $to) = @_;
	for my $i ($from .. $to)
	{
		my $body = $json->encode({ type => 'query_state', route_id => $r2,
				query_state => [ { tag => $tag, n => $i } ] });
		my ($rc, $out, $err) = nats_client($url, 'js-pub', 'data.transformers.state-tables', \$body);
		die "js-pub: $err" if $rc;
	}
}

# query_state_entry messages of tag $tag to the router, through JetStream
# or core NATS ('pub'); the router forwards each to the writer
sub to_router
{
	my ($how, $tag, $from, $to) = @_;
	for my $i ($from .. $to)
	{
		my $body = $json->encode({ type => 'query_state_entry', route_id => $r2,
				query_state => [ { tag => $tag, n => $i } ] });
		my ($rc, $out, $err) = nats_client($url, $how, 'processor.state.router', \$body);
		die "$how: $err" if $rc;
	}
}

# on a failure, what would tell where messages went: the numbers of tag
# $tag missing from the table (of 1 .. $n), and both consumers' state
sub explain_missing
{
	my ($tag, $n) = @_;
	my $missing = $node->safe_psql('postgres', qq{
		SELECT string_agg(g::text, ' ') FROM generate_series(1, $n) g
		 WHERE NOT EXISTS (SELECT FROM "${tables}_resub" WHERE tag = '$tag' AND n::int = g)});
	diag("$tag: missing $missing");
	for my $c (['processor_state_router', 'processor_state_router_sub_1'],
		['data_transformers_state_tables', 'state_tables_workers'])
	{
		my (undef, $info) = nats_client($url, 'consumer-info', @$c);
		diag("consumer $c->[1]: " . join(' ', split /\n/, $info // ''));
	}
}

sub resubscribes
{
	my ($who) = @_;
	return count_log_matches($node,
		qr/ism_state $who: stopped consuming route "[^"]+" \(route changed\)/);
}

# --- the writer's push consumer: delivered while it was busy -----------------------
set_properties($node, $tables, { tableName => 'resub', batchSize => 1, includeTimestamp => JSON::PP::false });
to_writer('warm', 1, 1);
defined seconds_until_rows("${tables}_resub", 'warm', 1, 15) or die 'the writer wrote nothing';
ok($node->log_contains(qr/ism_state writer 1: consuming route "[^"]+": stream "[^"]+", push consumer "state_tables_workers", deliver group "state_tables_workers"$/m),
	'the writer consumes its push consumer in its deliver group');

my $locker = $node->background_psql('postgres');
$locker->query_safe(qq{BEGIN; LOCK TABLE "${tables}_resub" IN ACCESS EXCLUSIVE MODE});
to_writer('push', 1, 1);
wait_lock_wait($pid{writer});
to_writer('push', 2, 40);	# delivered to the busy writer's subscription
my $before = resubscribes('writer 1');
$node->safe_psql('postgres',
	"UPDATE ism_state.route SET max_ack_pending = 200 WHERE selector = '$writer_route'");
sleep 1;
$locker->query_safe('COMMIT');
my $took = seconds_until_rows("${tables}_resub", 'push', 40, 15);
ok(defined $took, 'push: all 40 messages written within 15 s of a resubscribe (ack wait 60 s)'
	  . (defined $took ? sprintf(' (%.1f s)', $took) : ''));
cmp_ok(resubscribes('writer 1'), '>', $before, 'push: the writer did subscribe again');
is(count_rows("${tables}_resub", "tag = 'push'"), 40, 'push: each written once');

# --- the writer's pending batch when its route changes ---------------------------
set_properties($node, $tables, { tableName => 'resub', batchSize => 1000, batchWindowTTL => 5,
		includeTimestamp => JSON::PP::false });
to_writer('batch', 1, 10);
usleep(300_000);	# in the batch, its window not over
$node->safe_psql('postgres',
	"UPDATE ism_state.route SET max_ack_pending = 300 WHERE selector = '$writer_route'");
$took = seconds_until_rows("${tables}_resub", 'batch', 10, 15);
ok(defined $took, 'a pending batch: written within 15 s of a resubscribe (window 5 s, ack wait 60 s)'
	  . (defined $took ? sprintf(' (%.1f s)', $took) : ''));
is(count_rows("${tables}_resub", "tag = 'batch'"), 10, 'a pending batch: each written once')
  or explain_missing('batch', 10);
set_properties($node, $tables, { tableName => 'resub', batchSize => 1, includeTimestamp => JSON::PP::false });

# --- the router on its pull consumer, and on a core NATS subject ------------------
# the router's lookups of processor_state are cached for a second: after 2 s
# its next message reads the table, and waits for the lock
sub router_case
{
	my ($tag, $how, $change) = @_;
	sleep 2;
	$locker->query_safe('BEGIN; LOCK TABLE processor_state IN ACCESS EXCLUSIVE MODE');
	to_router($how, $tag, 1, 1);
	wait_lock_wait($pid{router});
	to_router($how, $tag, 2, 30);
	my $before = resubscribes('router');
	$node->safe_psql('postgres', "UPDATE ism_state.route SET $change WHERE selector = '$router_route'");
	sleep 1;
	$locker->query_safe('COMMIT');
	my $took = seconds_until_rows("${tables}_resub", $tag, 30, 15);
	ok(defined $took, "router, $tag: all 30 messages forwarded and written within 15 s of a resubscribe"
		  . (defined $took ? sprintf(' (%.1f s)', $took) : ''));
	cmp_ok(resubscribes('router'), '>', $before, "router, $tag: it did subscribe again");
	is(count_rows("${tables}_resub", "tag = '$tag'"), 30, "router, $tag: each written once")
	  or explain_missing($tag, 30);
}
router_case('pull', 'js-pub', 'ack_wait = 61');

# core NATS: a message dropped there is lost for good
$node->safe_psql('postgres',
	"UPDATE ism_state.route SET jetstream_enabled = false WHERE selector = '$router_route'");
my $deadline = time + 15;
usleep(100_000) until $node->log_contains(qr/ism_state router: consuming route "[^"]+": core NATS subject/)
  || time > $deadline;
$node->log_contains(qr/ism_state router: consuming route "[^"]+": core NATS subject/)
  or die 'the router did not move to core NATS';
to_router('pub', 'core warm', 1, 1);
defined seconds_until_rows("${tables}_resub", 'core warm', 1, 15) or die 'nothing through core NATS';
router_case('core', 'pub', "queue = 'router_core_group'");
$locker->quit;

is($node->safe_psql('postgres', 'SELECT count(*) FROM ism_state.dead_letter'), '0', 'no dead letters');
done_testing();

# The router's own route as a concurrent priority route
# (concurrent_enabled and concurrent_priority_enabled), consumed by the
# nats-server's version, learnt at connect:
#
# - a server that delivers every message on consumers with several filter
#   subjects (2.10.0 to 2.10.25, 2.11.12 or a later 2.11, 2.12.4 or later;
#   ISM_NATS_SERVER=...): as ismcore consumes it
#   (alethic-ism-core, ismcore/messaging/nats_message_route_concurrent.py),
#   through the pull consumers "<name>_high_1" (subject.high,
#   subject.high.>) and "<name>_low_1" (subject, subject.low,
#   subject.low.>); every message on those subjects routed once; a subject
#   of the stream neither filters on left alone; and the high consumer's
#   messages not held back by the low one's backlog (ismcore consumes the
#   two in parallel, each with its own workers; it promises no order).
# - 2.9, and the servers that skip messages on such consumers (2.10.26 to
#   2.11.11, 2.12.0 to 2.12.3: nats-io/nats-server#6824, #7713; Debian
#   trixie's 2.10.27 among them): as a plain route, through "<name>_sub_1",
#   said once in the log.
use strict;
use warnings;

use IsmTest;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $tables = '3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10';
my $r2 = "e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:$tables";
my $stream = 'processor_state_router';
my $base = 'processor.state.router';
my $out_subject = 'data.transformers.state-tables';
my $version = join '.', @{ IsmTest::Nats->version };
# the rule of src/worker.c server_serves_filters()
sub serves_filters
{
	my ($ma, $mi, $up) = @{ IsmTest::Nats->version };
	my $v = sprintf '%03d%03d%03d', $ma, $mi, $up;
	return ($v ge '002010000' && $v lt '002010026')
	  || ($v ge '002011012' && $v lt '002012000')
	  || $v ge '002012004';
}
my $priority = serves_filters();

my $nats = IsmTest::Nats->new('prio')->start;
my $url = $nats->url;
my $routing = "${PostgreSQL::Test::Utils::tmp_check}/routing-priority.yaml";
my $yaml = slurp_file('test/data/routing.yaml');
$yaml =~ s/^(\s+)concurrent_enabled: false .*plain route.*$/$1concurrent_enabled: true\n$1concurrent_priority_enabled: true/m
  or die 'no plain router route to make a priority one';
open my $fh, '>', $routing or die $!;
print $fh $yaml;
close $fh;

my $node = new_ism_node('priority', $url,
	"ism_state.routing_file = '$routing'\nism_state.writer_workers = 0\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION ism_state');
$node->safe_psql('postgres', slurp_file('test/data/catalog.sql'));
wait_for_workers($node, "state = 'running' AND nats_state = 'connected'");

sub wait_log
{
	my ($regex, $seconds) = @_;
	my $deadline = time + $seconds;
	while (time < $deadline)
	{
		return 1 if count_log_matches($node, $regex) > 0;
		usleep(200_000);
	}
	return 0;
}

# a JetStream API request's answer, decoded
sub js_api
{
	my ($subject) = @_;
	my ($rc, $out, $err) = nats_client($url, 'req', $subject, '');
	die "$subject: $err" if $rc;
	return decode_json($out);
}

# publish $n query_state_entry messages to $subject, marked "$mark.<i>"
sub publish
{
	my ($subject, $n, $mark) = @_;
	my ($rc, $out, $err) = nats_client($url, '-t', '60000', 'js-pub-n', $subject, $n,
		qq({"type": "query_state_entry", "route_id": "$r2", "query_state": [{"m": "$mark.%n"}]}));
	die "js-pub-n $subject: $err" if $rc;
}

# the marks routed, in the order published
sub marks
{
	my ($c) = @_;
	return map { $_->[1]{query_state}[0]{m} } @{ finish_collecting($c) };
}

sub each_once
{
	my ($what, $got, @want) = @_;
	my %n;
	$n{$_}++ for @$got;
	is(scalar @$got, scalar @want, "$what: " . scalar(@want) . ' messages routed');
	is(join(',', grep { ($n{$_} // 0) != 1 } @want), '', "$what: each once");
}

sub drained
{
	my ($durable) = @_;
	my $deadline = time + 20;
	while (time < $deadline)
	{
		my ($rc, $out) = nats_client($url, 'consumer-info', $stream, $durable);
		my %c = map { split /=/, $_, 2 } split /\n/, $out;
		return 1 if $rc == 0 && $c{num_pending} == 0 && $c{num_ack_pending} == 0;
		usleep(200_000);
	}
	return 0;
}

my @subjects = ($base, "$base.low", "$base.low.p1", "$base.high", "$base.high.p1");
my @want = map { my $s = $_; map { "$s.$_" } 1 .. 40 } @subjects;

if (!$priority)
{
	ok(wait_log(qr/consuming route "processor\/state\/router": stream "$stream", pull consumer "${stream}_sub_1"/, 30),
		"nats-server $version: the priority route consumed through ${stream}_sub_1");
	my $c = start_collecting($url, $out_subject, scalar @want, 60);
	publish($_, 40, $_) for @subjects;
	each_once('a plain route', [ marks($c) ], @want);
	ok(drained("${stream}_sub_1"), 'its consumer has nothing left');
	# a reload and a reconnect later, still said once
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	$nats->stop;
	$nats->start;
	wait_for_workers($node, "state = 'running' AND nats_state = 'connected'");
	sleep 2;
	is(count_log_matches($node,
			qr/route "processor\/state\/router" is a concurrent priority route, consumed as a plain one \(consumer "${stream}_sub_1"\): its two consumers need a nats-server that delivers every message on consumers with several filter subjects/),
		1, 'said once in the log, and why');
	$node->stop('fast');
	done_testing();
	exit;
}

# ---- nats-server 2.10 or newer ------------------------------------------
ok(wait_log(qr/consuming route "processor\/state\/router": stream "$stream", priority pull consumers "${stream}_high_1" \(\Q$base\E\.high, \Q$base\E\.high\.>\) before "${stream}_low_1" \(\Q$base\E, \Q$base\E\.low, \Q$base\E\.low\.>\)/, 30),
	"nats-server $version: the priority route consumed through its high and low consumers");
is(count_log_matches($node, qr/consumed as a plain one/), 0, 'not as a plain route');

my %filters = (high => [ "$base.high", "$base.high.>" ],
	low => [ $base, "$base.low", "$base.low.>" ]);
for my $level (qw(high low))
{
	my $info = js_api("\$JS.API.CONSUMER.INFO.$stream.${stream}_${level}_1");
	my $cfg = $info->{config} // {};
	is_deeply($cfg->{filter_subjects}, $filters{$level}, "${stream}_${level}_1: ismcore's filter subjects");
	is_deeply([ @$cfg{qw(durable_name deliver_policy ack_policy ack_wait max_ack_pending)},
			defined $cfg->{deliver_subject} ? 'push' : 'pull' ],
		[ "${stream}_${level}_1", 'all', 'explicit', 90 * 1e9, 1000, 'pull' ],
		"${stream}_${level}_1: pull, deliver all, explicit ack, the route's ack_wait");
}
is(js_api("\$JS.API.CONSUMER.INFO.$stream.${stream}_sub_1")->{error}{err_code}, 10014,
	'no plain consumer');

# every message on the five subjects once; one on another subject of the
# stream is for neither consumer
my $c = start_collecting($url, $out_subject, scalar @want, 60);
publish($_, 40, $_) for @subjects;
publish("$base.other", 1, 'other');
each_once('the five subjects', [ marks($c) ], @want);
ok(drained("${stream}_high_1") && drained("${stream}_low_1"), 'both consumers have nothing left');
is(js_api("\$JS.API.STREAM.INFO.$stream")->{state}{messages}, 1,
	"the message on $base.other stays in the stream, as with ismcore's filters");

# a low backlog of 1,000, then 10 high: the high ones are not behind it
$node->stop('fast');
publish("$base.low.p1", 1000, 'backlog');
publish("$base.high.p1", 10, 'urgent');
$c = start_collecting($url, $out_subject, 1010, 120);
$node->start;
my @order = marks($c);
each_once('backlog and urgent', \@order, (map { "backlog.$_" } 1 .. 1000),
	(map { "urgent.$_" } 1 .. 10));
my @at = grep { $order[$_] =~ /^urgent/ } 0 .. $#order;
ok(@at == 10 && $at[-1] < 100,
	'the 10 high messages, published after 1,000 low ones, routed among the first 100 (at '
	  . join(',', @at) . ')');

is($node->safe_psql('postgres', 'SELECT count(*) FROM ism_state.dead_letter'), '0',
	'nothing dead-lettered');
$node->stop('fast');
done_testing();

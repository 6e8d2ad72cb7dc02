# Scale-out: two PostgreSQL instances with ism_state share the writers'
# durable consumer on a 3-node nats-server cluster with R3 streams, and
# claim messages in a key-value bucket (ism_state.claims_bucket).
#
# Part 1, the case claims exist for: instance A commits a batch but its
# acks never reach the server (A's link to NATS, a proxy, is frozen, then
# cut).  The messages go to B, which must leave them to A; A, back, acks
# them.  Without claims B would write them a second time.  A fetch of A's
# under way as the link freezes can leave claims that reached the bucket
# unanswered (A logs "a claim had no answer"): those messages are A's too,
# left by B, and written by A once it is back.
#
# Part 2: 30,000 messages split between both instances while A's
# postmaster is killed with -9 and a nats-server is killed and restarted
# (one that does not lead the claims bucket: README, "Growing past one
# machine").
#
# Part 3, on nats-server 2.10 or newer (ISM_NATS_SERVER; skipped on 2.9,
# which stalls there): 20,000 more messages while the nats-server leading
# the claims bucket's stream is killed; the rows keep coming.
#
# After each part, every record is in exactly one instance's table, once.
use strict;
use warnings;

use IsmTest;
use HTTP::Tiny;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $tables = '3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10';
my $r2 = "e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:$tables";
my $table = "${tables}_scale";
my $stream = 'data_transformers_state_tables';
my $durable = 'state_tables_workers';

my @nats = IsmTest::Nats->cluster('so', 3);
$_->start for @nats;
my $leader = $nats[0]->wait_for_jetstream_leader(60);
pass("3-node JetStream cluster up, meta leader $leader");
my $all_urls = join ',', map { $_->url } @nats;
my $b_urls = join ',', map { $_->url } @nats[ 1, 2 ];
my $link = IsmTest::Proxy->new($nats[0]->port)->start;

# a short ack_wait, so that what an instance held comes back soon
my $routing = "${PostgreSQL::Test::Utils::tmp_check}/routing.yaml";
my $yaml = slurp_file('test/data/routing.yaml');
$yaml =~ s/ack_wait: 60 /ack_wait: 3 / or die 'no ack_wait to shorten';
# Pull, so that A, its link frozen, takes nothing more.  A push consumer's
# client may already hold messages that A then claims through the frozen
# link: a claim that reaches the bucket unanswered holds its message for A
# until A is back (or claims_ttl), which part 1's "B writes the rest while
# A is away" does not allow for (README, "Growing past one machine").
$yaml =~ s/^(\s+)# no mode: push, as on the platform.*$/${1}mode: pull/m
  or die 'no writer mode line to set';
# room for a batch an instance holds for its whole window
$yaml =~ s/(state-tables-1\.0.*?max_ack_pending: )100 /${1}1000 /s
  or die 'no max_ack_pending to raise';
open my $fh, '>', $routing or die $!;
print $fh $yaml;
close $fh;

sub start_instance
{
	my ($name, $url, $window) = @_;
	my $node = new_ism_node($name, $url, qq{
ism_state.routing_file = '$routing'
ism_state.stream_replicas = 3
ism_state.claims_bucket = 'ism_claims'
ism_state.instance_name = '$name'
ism_state.publish_timeout = '2s'
restart_after_crash = on
});
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION ism_state');
	$node->safe_psql('postgres', slurp_file('test/data/catalog.sql'));
	set_window($node, $window);
	wait_for_workers($node, "state = 'running' AND nats_state = 'connected'")
	  or die "$name did not connect";
	return $node;
}

sub set_window
{
	my ($node, $window) = @_;
	set_properties($node, $tables,
		{ tableName => 'scale', batchSize => 100000, batchWindowTTL => $window,
		  includeTimestamp => JSON::PP::false });
}

my $pga = start_instance('instance_a', $link->url, 4);
my $pgb = start_instance('instance_b', $b_urls, 1);
sleep 2;

# m => number of rows, over both instances; and each instance's count
sub rows
{
	my %seen;
	my @counts;
	for my $node ($pga, $pgb)
	{
		my ($rc, $out) = $node->psql('postgres', "SELECT m FROM \"$table\"");
		$out = '' if $rc != 0;
		my @m = grep { length } split /\n/, $out;
		$seen{$_}++ for @m;
		push @counts, scalar @m;
	}
	return (\%seen, @counts);
}

# $n rows over both instances within $seconds; $n may be a sub that says
# how many are due now
sub wait_rows
{
	my ($what, $n, $seconds) = @_;
	my $deadline = time + $seconds;
	while (time < $deadline)
	{
		my ($seen) = rows();
		return if keys %$seen >= (ref $n ? $n->() : $n);
		usleep(200_000);
	}
	die "timed out waiting for $what";
}

# Part 1's records B left to A (claimed by A: B logs the message's stream
# sequence, which is the record's number) that A has not written: claims A
# made as its link froze, whose answers never came back.
sub claimed_by_a_unwritten
{
	my %a_rows = map { $_ => 1 } split /\n/,
	  $pga->safe_psql('postgres', qq{SELECT m FROM "$table" WHERE m LIKE 'a%'});
	my %left = map { ("a$_" => 1) }
	  slurp_file($pgb->logfile) =~ /message \Q$stream\E:(\d+) is claimed by another instance; left to it/g;
	return grep { !$a_rows{$_} } sort keys %left;
}

sub consumer_state
{
	my ($url) = @_;
	my ($rc, $out, $err) = nats_client($url, 'consumer-info', $stream, $durable);
	return {} if $rc != 0;
	return { map { split /=/, $_, 2 } split /\n/, $out };
}

# The claims bucket's stream as its leader reports it (STREAM.INFO, which
# the leader answers): leader, and per replica "current|behind,online|offline,
# lag N".  A follower's own view (/jsz on it) does not know how far the other
# follower is (nats-server raft.go, Peers), so only the leader's is asked.
sub claims_info
{
	my ($url) = @_;
	($url) = map { $_->url } grep { $_->{handle} } @nats unless $url;
	my ($rc, $out) = nats_client($url, 'stream-info', 'KV_ism_claims');
	return {} if $rc != 0;
	return { map { split /=/, $_, 2 } split /\n/, $out };
}

# The leader of the claims bucket's stream as $server knows it (/jsz: the
# server's own raft state, answered at once even with no leader)
sub claims_leader_seen_by
{
	my ($server) = @_;
	my $res = HTTP::Tiny->new(timeout => 2)
	  ->get("http://127.0.0.1:$server->{http_port}/jsz?streams=1");
	return '' unless $res->{success};
	my ($kv) = grep { $_->{name} eq 'KV_ism_claims' }
	  map { @{ $_->{stream_detail} // [] } }
	  @{ decode_json($res->{content})->{account_details} // [] };
	return $kv->{cluster}{leader} // '';
}

# the server leading the claims bucket's stream (asked for 30 s: the API
# can be slow to answer under load)
sub claims_leader
{
	my ($url) = @_;
	my $deadline = time + 30;
	while (time < $deadline)
	{
		my $leader = claims_info($url)->{leader};
		return $leader if $leader;
		usleep(500_000);
	}
	die 'the claims bucket has no leader';
}

# Wait until both other replicas of the bucket are online, current and
# with no lag (stream catch-up included), as the leader sees them; returns
# how long that took, or undef after $seconds.
sub wait_claims_current
{
	my ($seconds) = @_;
	my $start = time;
	while (time < $start + $seconds)
	{
		my $info = claims_info();
		my @replicas = grep { /^replica\./ } keys %$info;
		return time - $start
		  if @replicas == 2
		  && !grep { $info->{$_} ne 'current,online,lag 0' } @replicas;
		usleep(500_000);
	}
	return undef;
}

sub wait_drained
{
	my ($url, $seconds) = @_;
	my $deadline = time + $seconds;
	while (time < $deadline)
	{
		my $c = consumer_state($url);
		return 1
		  if defined $c->{num_pending}
		  && $c->{num_pending} == 0
		  && $c->{num_ack_pending} == 0;
		usleep(300_000);
	}
	return 0;
}

# records $prefix1 .. $prefix$n each in one instance's table, once; but
# those of @$owed (not written yet: A's)
sub check_exact
{
	my ($what, $prefix, $n, $owed) = @_;
	my %owed = map { $_ => 1 } @{ $owed // [] };
	my ($seen, $na, $nb) = rows();
	my @mine = grep { /^$prefix/ } keys %$seen;
	my @twice = grep { $seen->{$_} > 1 } keys %$seen;
	my $due = $n - keys %owed;
	is(scalar @mine, $due, "$what: all $due records arrived");
	is(scalar @twice, 0, "$what: none twice (A has $na rows, B $nb)");
	is(join(',', grep { !$seen->{"$prefix$_"} && !$owed{"$prefix$_"} } 1 .. $n), '',
		"$what: each one of them");
	return ($na, $nb);
}

# ---- part 1: A commits, its acks are lost --------------------------------
my $n1 = 2000;
my ($rc, $out, $err) = nats_client($nats[1]->url, '-t', '60000', 'js-pub-n',
	'data.transformers.state-tables', $n1,
	qq({"route_id": "$r2", "query_state": [{"m": "a%n"}]}));
is($rc, 0, "part 1: $n1 messages published") or diag $err;

# as soon as A holds messages in its 4 s batch window, freeze its server
my $deadline = time + 30;
usleep(20_000)
  until time > $deadline
  || $pga->safe_psql('postgres',
	"SELECT coalesce(sum(pending_records), 0) > 0 FROM ism_state.pg_stat_ism_tables") eq 't';
$link->pause;
pass('A holds messages; its link to NATS is frozen');

# A's window ends: it commits, and its acks wait in a frozen socket
my $a_rows;
$deadline = time + 30;
while (time < $deadline)
{
	my ($rc, $out) = $pga->psql('postgres', "SELECT count(*) FROM \"$table\"");
	$a_rows = $rc == 0 ? $out : 0;
	last if $a_rows > 0;
	usleep(100_000);
}
ok($a_rows > 0, "A committed $a_rows records");
sleep 1;
$link->stop;
pass('A\'s link cut: its acks are lost');

# B gets A's messages once their ack_wait is over, and must leave them
wait_rows('B to write its share', sub { $n1 - claimed_by_a_unwritten() }, 60);
sleep 8;
my $c = consumer_state($nats[1]->url);
ok($c->{num_redelivered} > 0,
	"A's messages were delivered again ($c->{num_redelivered} redelivered)");
ok($c->{num_ack_pending} > 0, "and are not acked ($c->{num_ack_pending} pending)");
my @a_owes = claimed_by_a_unwritten();
note('claims A made as its link froze, unanswered: ' . (join(' ', @a_owes) || 'none'));
my ($na_away) = check_exact('part 1, A away', 'a', $n1, \@a_owes);
ok(count_log_matches($pgb, qr/is claimed by another instance; left to it/) > 0,
	'B logged that it left them to their owner');

# A's link comes back: A gets them, finds them written, acks them
$link->start;
ok(wait_drained($nats[1]->url, 120), 'part 1: the consumer has nothing left');
my ($na, $nb) = check_exact('part 1', 'a', $n1);
is($na, $na_away + @a_owes, 'A wrote nothing more than what it had claimed unanswered (' . @a_owes . ')');

# ---- part 2: both instances, a postmaster and a nats-server killed -------
my $n2 = 30000;
$pga->append_conf('postgresql.conf', "ism_state.nats_url = '$all_urls'\n");
$pga->restart;
set_window($pga, 1);
wait_for_workers($pga, "state = 'running' AND nats_state = 'connected'")
  or die 'A did not reconnect';
my ($a_before, $b_before) = ($na, $nb);

($rc, $out, $err) = nats_client($nats[1]->url, '-t', '120000', 'js-pub-n',
	'data.transformers.state-tables', $n2,
	qq({"route_id": "$r2", "query_state": [{"m": "b%n"}]}));
is($rc, 0, "part 2: $n2 messages published") or diag $err;

wait_rows('a first part', $n1 + 6000, 120);
$pga->kill9;
pass('A\'s postmaster killed with -9');
sleep 2;
$pga->start;

wait_rows('progress after A came back', $n1 + 15000, 180);
my ($victim) = grep { $_->{name} ne claims_leader() } @nats;
$victim->stop('KILL');
pass("a nats-server killed ($victim->{name})");

wait_rows('progress without it', $n1 + 22000, 180);
$victim->start;

wait_rows('every record', $n1 + $n2, 300);
ok(wait_drained($nats[1]->url, 120), 'part 2: the consumer has nothing left');
check_exact('part 1, at the end', 'a', $n1);
($na, $nb) = check_exact('part 2', 'b', $n2);
ok($na - $a_before > 0 && $nb - $b_before > 0,
	'the work was split: A wrote ' . ($na - $a_before) . ', B ' . ($nb - $b_before));
for my $node ($pga, $pgb)
{
	is($node->safe_psql('postgres', 'SELECT count(*) FROM ism_state.dead_letter'), '0',
		$node->name . ': nothing dead-lettered');
}

# ---- part 3: the claims bucket's leader killed ---------------------------
SKIP:
{
	my $version = join '.', @{ IsmTest::Nats->version };
	skip "part 3: nats-server $version stalls when the claims bucket's leader dies"
	  . ' (README, "Growing past one machine"); run it on 2.10 or newer with'
	  . ' ISM_NATS_SERVER=/path/to/nats-server', 15
	  unless IsmTest::Nats->at_least(2, 10);

	my $n3 = 20000;
	my $before = $n1 + $n2;
	# part 2 restarted a node: losing the leader now, before that node has
	# caught up, would leave the bucket without a quorum
	my $caught_up = wait_claims_current(180);
	ok(defined $caught_up,
		sprintf('part 3 (nats-server %s): every replica of the claims bucket is current (%s)',
			$version, defined $caught_up ? sprintf('after %.1f s', $caught_up) : 'not in 180 s'));

	($rc, $out, $err) = nats_client($nats[1]->url, '-t', '120000', 'js-pub-n',
		'data.transformers.state-tables', $n3,
		qq({"route_id": "$r2", "query_state": [{"m": "c%n"}]}));
	is($rc, 0, "part 3: $n3 messages published") or diag $err;
	wait_rows('part 3 under way', $before + 3000, 120);

	# kill the leader while claims are in flight, and watch the rows come
	my $name = claims_leader();
	my ($killed) = grep { $_->{name} eq $name } @nats;
	my ($witness) = grep { $_->{name} ne $name } @nats;
	$killed->stop('KILL');
	my $killed_at = time;
	pass("part 3: the claims bucket's leader killed ($name)");

	# rows over time; when the survivors elected a new leader
	my ($last, $last_at, $longest) = (0, time, 0);
	my ($new_leader, $elected_at) = ('none', undef);
	while (time < $killed_at + 120)
	{
		my ($seen) = rows();
		my $n = keys %$seen;
		if ($n > $last)
		{
			($last, $last_at) = ($n, time);
		}
		$longest = time - $last_at if time - $last_at > $longest;
		if (!defined $elected_at)
		{
			my $leader = claims_leader_seen_by($witness);
			($new_leader, $elected_at) = ($leader, time)
			  if $leader ne '' && $leader ne $name;
		}
		last if $n >= $before + $n3 && defined $elected_at;
		usleep(200_000);
	}
	my $election = defined $elected_at ? $elected_at - $killed_at : -1;
	diag(sprintf('part 3: new leader %s %.1f s after the kill; longest gap %.1f s',
			$new_leader, $election, $longest));
	is($last, $before + $n3,
		sprintf('part 3: every record written %.0f s after the kill (new leader %s)',
			$last_at - $killed_at, $new_leader));
	# Once a new leader is elected, a message whose claim went unanswered
	# is back within the nak delay (1 s), claimed within publish_timeout
	# (2 s) and written within the batch window (1 s): with 2 s for this
	# loop's polling, 6 s.  The gap starts at the kill, before the election;
	# twice the election time leaves room for its variance.  A stall (the
	# new leader leaving claims unanswered: 30 s and more) is over that.
	my $bound = 2 * $election + 6;
	ok($election >= 0 && $longest < $bound,
		sprintf('part 3: rows kept coming (at most %.1f s without a new one; bound %.1f s)',
			$longest, $bound));

	$killed->start;
	ok(wait_drained($witness->url, 120), 'part 3: the consumer has nothing left');
	check_exact('part 3', 'c', $n3);
	check_exact('part 1, after part 3', 'a', $n1);
	check_exact('part 2, after part 3', 'b', $n2);
}

$pga->stop('fast');
$pgb->stop('fast');
done_testing();

# Routes in the running workers: seeded from ism_state.routing_file, followed
# within a second of a commit, turned into JetStream subscriptions on
# nats-server and dropped again; a reload re-seeds and keeps SQL routes.
use strict;
use warnings;

use File::Copy;
use IsmTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $nats = IsmTest::Nats->new('routes')->start;
my $routing_file = "${PostgreSQL::Test::Utils::tmp_check}/routing.yaml";
copy('test/data/routing.yaml', $routing_file) or die "copy: $!";

my $node = new_ism_node('routes', $nats->url,
	"ism_state.routing_file = '$routing_file'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION ism_state');

# --- seeded from the file at start ------------------------------------------
$node->poll_query_until('postgres', 'SELECT count(*) = 7 FROM ism_state.route')
  or die 'routes were not seeded';
pass('the router seeds the route table from ism_state.routing_file');
ok(count_log_matches($node, qr/router: loaded 7 routes from/), 'and says so');

my $router = 'ism_state router [postgres]';
my $writer = 'ism_state writer 1 [postgres]';

# --- each worker consumes its route through a durable pull consumer ---------
sub wait_until
{
	my ($what, $cond) = @_;
	my $start = time;
	while (time - $start < 30)
	{
		return time - $start if $cond->();
		usleep(20_000);
	}
	die "timed out waiting for $what";
}

wait_until('the router consumer',
	sub { (nats_client($nats->url, 'consumer-info', 'processor_state_router',
				'processor_state_router_sub_1'))[0] == 0 });
my (undef, $info) = nats_client($nats->url, 'stream-info', 'processor_state_router');
like($info, qr/^subjects=processor\.state\.router,processor\.state\.router\.>$/m,
	'the router stream has the upstream subjects');
like($info, qr/^retention=workqueue$/m, 'and work-queue retention');
(undef, $info) = nats_client($nats->url, 'consumer-info', 'processor_state_router',
	'processor_state_router_sub_1');
like($info, qr/^ack_wait_ms=90000$/m, 'the router consumer has the route ack_wait');
like($info, qr/^max_ack_pending=1000$/m, 'and max_ack_pending 1000 as upstream');

wait_until('the writer consumer',
	sub { (nats_client($nats->url, 'consumer-info',
				'data_transformers_state_tables', 'state_tables_workers'))[0] == 0 });
(undef, $info) = nats_client($nats->url, 'consumer-info',
	'data_transformers_state_tables', 'state_tables_workers');
like($info, qr/^filter=data\.transformers\.state-tables$/m,
	'the writer consumer (core-go durable name) filters on its subject');
like($info, qr/^max_ack_pending=100$/m, 'and takes max_ack_pending from the route');

# --- pg_dump dumps the route table (extension configuration table) --------
my ($dump) = run_command([ 'pg_dump', '--data-only', '-d', $node->connstr('postgres') ]);
like($dump, qr/^COPY ism_state\.route .* FROM stdin;\n(.*\n){7}\\\.$/m,
	'pg_dump dumps the seven routes');

# --- a removed route's subscription goes within a second -------------------
sub subs_of { my ($name) = @_; return $nats->subscriptions->{$name} // [] }

wait_until('two subscriptions on the router connection',
	sub { @{ subs_of($router) } == 2 });
# the route's pull subscription and the connection's request inbox (both
# wildcards from nats.c 3.10 on: which is which shows when the route goes)
my @router_subs = @{ subs_of($router) };
my @writer_subs = @{ subs_of($writer) };

$node->safe_psql('postgres',
	"SELECT ism_state.remove_route('processor/state/router')");
my $took = wait_until('the subscription to go', sub { @{ subs_of($router) } == 1 });
my ($request_inbox) = @{ subs_of($router) };
ok((grep { $_ eq $request_inbox } @router_subs),
	'the connection keeps its request inbox, the route\'s subscription goes');
cmp_ok($took, '<', 1, "the removed route's subscription is gone in ${took}s");
(my $rc) = nats_client($nats->url, 'consumer-info', 'processor_state_router',
	'processor_state_router_sub_1');
is($rc, 0, 'the durable consumer stays on the server');
is_deeply(subs_of($writer), \@writer_subs, 'the writer is not disturbed');

# --- an added route becomes a live subscription within a second ------------
$node->safe_psql('postgres',
	"SELECT ism_state.add_route('processor/state/router', 'router.two', "
	  . "options => '{\"ack_wait\": 30}')");
$took = wait_until('a new subscription', sub { @{ subs_of($router) } == 2 });
cmp_ok($took, '<', 1, "the added route is a live subscription in ${took}s");
(undef, $info) = nats_client($nats->url, 'consumer-info', 'router_two',
	'router_two_sub_1');
like($info, qr/^ack_wait_ms=30000$/m, 'on a new stream and consumer');

# --- changing the route moves the subscription -------------------------------
$node->safe_psql('postgres',
	"UPDATE ism_state.route SET ack_wait = 40 WHERE selector = 'processor/state/router'");
wait_until('the consumer update', sub {
	my (undef, $i) = nats_client($nats->url, 'consumer-info', 'router_two',
		'router_two_sub_1');
	$i =~ /^ack_wait_ms=40000$/m;
});
pass('a changed ack_wait reaches the consumer');

# --- a reload re-seeds from the file and keeps routes added with SQL ---------
$node->safe_psql('postgres', "SELECT ism_state.add_route('custom/x', 'custom.x')");
my $yaml = slurp_file($routing_file);
$yaml =~ s/ack_wait: 120 /ack_wait: 125 /g;
open my $fh, '>', $routing_file or die $!;
print $fh $yaml;
close $fh;
$node->reload;
$node->poll_query_until('postgres',
	"SELECT ack_wait = 125 FROM ism_state.route WHERE selector = 'language/models/openai/*'")
  or die 'reload did not re-seed';
pass('a reload loads the changed file');
is($node->safe_psql('postgres',
		"SELECT string_agg(selector || '=' || subject, ',' ORDER BY selector) "
		  . "FROM ism_state.route WHERE selector IN ('custom/x', 'processor/state/router')"),
	'custom/x=custom.x,processor/state/router=processor.state.router',
	'the file updates its routes and keeps those added with SQL');

# --- a bad file on reload: a warning, the table as it was --------------------
my $digest_sql = "SELECT md5(string_agg(selector || ack_wait, ',' ORDER BY selector)) "
  . "FROM ism_state.route";
my $digest = $node->safe_psql('postgres', $digest_sql);
open $fh, '>', $routing_file or die $!;
print $fh "messageConfig:\n  routes:\n    - {selector: x, name: \"\", subject: x, url: u}\n";
close $fh;
my $offset = -s $node->logfile;
$node->reload;
$node->wait_for_log(
	qr/router: could not load ism_state.routing_file: invalid routing YAML at line 3, column 27: route entry 1 \("x"\), key "name"/,
	$offset);
pass('a bad routing file is reported with line, column and key');
is($node->safe_psql('postgres', $digest_sql), $digest, 'and changes nothing');
like($node->safe_psql('postgres',
		"SELECT last_error FROM ism_state.pg_stat_ism_worker WHERE role = 'router'"),
	qr/^could not load ism_state.routing_file: invalid routing YAML/,
	'the health view shows it');

$node->stop('fast');
done_testing();

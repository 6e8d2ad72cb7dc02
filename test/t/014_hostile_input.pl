# A corpus of more than 200 hostile messages, to the router and to the
# writer: malformed and truncated JSON, invalid UTF-8, NUL bytes, deep
# nesting, 10 MB payloads, 5,000 keys, duplicate keys (the last one wrong),
# records holding \u0000 (which the writer cannot store and does not cut),
# wrong types in every field of every message type, keys
# and names crafted for SQL injection where they must fail, properties of
# the wrong type.  Each must give exactly one dead-letter row and one
# FAILED (counted in pg_stat_ism_routes), crash nothing, create no table;
# sent three times, the workers' memory must not grow with the third pass.
use strict;
use warnings;

use IsmTest;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

my $tables = '3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10';
my $openai = '7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52';
my $r1 = "8d2f6a1b-4c7e-4b93-a5d0-1e9f3c6b7a28:$openai";
my $r2 = "e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:$tables";
my $router_subject = 'processor.state.router';
my $writer_subject = 'data.transformers.state-tables';

my ($nats, $node) = start_example_stack('hostile', '', 'max_payload: 16MB');
my $url = $nats->url;
my $json = JSON::PP->new->canonical;

# processors whose properties are of the wrong type, each with its route
my @bad_properties = (
	'{"tableName": 1}', '{"tableName": ["t"]}', '{"tableName": {"a": 1}}', '{"tableName": true}',
	'{"batchSize": "10"}', '{"batchSize": 1.5}', '{"batchSize": []}', '{"batchSize": true}',
	'{"batchWindowTTL": -1}', '{"batchWindowTTL": "15"}', '{"batchWindowTTL": 0.5}',
	'{"includeTimestamp": "yes"}', '{"includeTimestamp": 1}', '{"includeTimestamp": {}}',
	'{"indexColumns": "a"}', '{"indexColumns": [1]}', '{"indexColumns": {"a": 1}}',
	'{"indexColumns": [null]}', '{"columnTypes": "bogus"}', '{"columnTypes": 1}',
	'[1, 2]', '"a string"', '42');
my @bad_routes;
for my $i (0 .. $#bad_properties)
{
	push @bad_routes, add_tables_processor($node, "bad-props-$i", $bad_properties[$i]);
}
$node->safe_psql('postgres', "UPDATE processor SET properties = "
	  . "'{\"tableName\": \"answers\", \"batchSize\": 1}' WHERE id = '$tables'");

# --- the corpus: [subject, body, why] -------------------------------------------------
my @corpus;
sub bad { push @corpus, [@_]; }

my $entry = $json->encode({ type => 'query_state_entry', route_id => $r2,
	query_state => [ { question => 'q', n => 1 } ] });
my $records = $json->encode({ route_id => $r2, query_state => [ { question => 'q', n => 1 } ] });

for my $target ([ $router_subject, $entry ], [ $writer_subject, $records ])
{
	my ($subject, $good) = @$target;
	# malformed and truncated JSON
	bad($subject, substr($good, 0, $_), "truncated at $_") for (1, 2, 5, 10, 20, 30, 40,
		length($good) - 20, length($good) - 2, length($good) - 1);
	bad($subject, $_, 'malformed')
	  for ('{', '}', '[', ']', '{"a":}', '{"a" 1}', "{'a': 1}", '{"a": 1,}', '[1,]',
		'nul', 'tru', 'fals', '"unterminated', '{"a": "\\x"}', '{"a": 01}', '{"a": .5}',
		'{"a": +1}', '{"a": 1e}', '{"a": NaN}', '{"a": Infinity}', '{"a": [1 2]}',
		'{"a": {"b": 1}', "{\"a\": \"tab\there\"}", '{"a": "\\ud800"}', ' ', '');
	# not an object
	bad($subject, $_, 'not an object') for ('[]', '[1, 2]', '"text"', '42', 'true', 'null');
	# invalid UTF-8 and NUL bytes
	bad($subject, $_, 'invalid UTF-8')
	  for ("{\"a\": \"\xff\"}", "{\"a\": \"\xc0\xaf\"}", "{\"a\": \"\xed\xa0\x80\"}",
		"{\"a\": \"\xe2\x82\"}", "{\"\xfe\": 1}", "\xef\xbb", substr($good, 0, -1) . "\x80}");
	bad($subject, $_, 'NUL byte')
	  for ("{\"a\": \"x\0y\"}", "\0", "$good\0", "{\"a\0\": 1}");
	# nesting deeper than any parser here takes
	bad($subject, ('[' x $_) . (']' x $_), "nesting $_") for (1001, 5000, 100000);
	bad($subject, ('{"a":' x 2000) . '1' . ('}' x 2000), 'nested objects');
	# larger than ism_state.max_message_bytes (8 MB)
	bad($subject, '{"pad": "' . ('x' x (10 * 1024 * 1024)) . '"}', '10 MB');
}

# the router: every field of every message type, wrong
my @wrong = (1, 1.5, JSON::PP::true, [], { a => 1 });
for my $w (@wrong, undef)
{
	bad($router_subject, $json->encode({ type => $w, route_id => $r2, query_state => [] }), 'type');
}
bad($router_subject, $json->encode({ type => $_, route_id => $r2 }), 'unknown type')
  for ('', 'query_state', 'QUERY_STATE_ENTRY', "query_state_entry'; DROP TABLE processor; --",
	'x' x 1000);
for my $type ('query_state_entry', 'query_state_route')
{
	bad($router_subject, $json->encode({ type => $type, route_id => $_, query_state => [] }),
		"$type route_id") for (@wrong, undef);
	bad($router_subject, $json->encode({ type => $type }), "$type without route_id");
	bad($router_subject, $json->encode({ type => $type, route_id => $_ }), "$type unknown route")
	  for ('no-such-route', "x'; DROP TABLE processor_state; --", '', '%', "$r2 ");
}
# (a query_state of any type is valid: upstream wraps what is not a list)
bad($router_subject, $json->encode({ type => 'query_processor_entry', processor_id => $openai,
		priority => $_, query_state => [] }), 'priority') for ('urgent', 1, JSON::PP::true, [1]);
bad($router_subject, $json->encode({ type => 'query_state_entry', route_id => $r2 }),
	'without query_state');
bad($router_subject, $json->encode({ type => 'query_processor_entry', processor_id => $_,
		query_state => [] }), 'processor_id') for (@wrong, undef);
bad($router_subject, $json->encode({ type => 'query_processor_entry', processor_id => $_,
		query_state => [] }), 'unknown processor')
  for ('no-such-processor', "x' OR '1'='1", '');
# duplicate keys: the last one counts (as in Python and Go), and it is wrong
bad($router_subject, qq({"type": "query_state_entry", "route_id": "$r2", "query_state": [], "type": 7}),
	'duplicate type, last wrong');

# the writer: every field wrong, records that are not records, bad properties
bad($writer_subject, $json->encode({ route_id => $_, query_state => [ { a => 1 } ] }), 'route_id')
  for (@wrong, undef);
bad($writer_subject, $json->encode({ query_state => [ { a => 1 } ] }), 'no route_id');
bad($writer_subject, $json->encode({ route_id => $_, query_state => [ { a => 1 } ] }), 'unknown route')
  for ('no-such-route', "x'); DROP TABLE processor; --", '', $r1 . 'x');
bad($writer_subject, $json->encode({ route_id => $r2, query_state => $_ }), 'query_state')
  for (1, 'x', JSON::PP::true, { a => 1 });
bad($writer_subject, $json->encode({ route_id => $r2, query_state => $_ }), 'records')
  for ([1], ['x'], [ [1] ], [JSON::PP::true], [ { a => 1 }, 2 ]);
bad($writer_subject, qq({"route_id": "$r2", "query_state": [{"a": 1}], "ROUTE_ID": 5}),
	'duplicate route_id (in any case, as Go reads it), last wrong');
# a \u0000 to store: text cannot hold NUL, and the record is not cut
bad($writer_subject, qq({"route_id": "$r2", "query_state": [{"question": "a\\u0000b"}]}),
	'NUL in a string');
bad($writer_subject, qq({"route_id": "$r2", "query_state": [{"a\\u0000b": "x"}]}), 'NUL in a key');
bad($writer_subject, qq({"route_id": "$r2", "query_state": [{"question": "x"}, {"q": "\\u0000"}]}),
	'NUL in a second record');
bad($writer_subject, $json->encode({ route_id => $_, query_state => [ { a => 1 } ] }), 'bad properties')
  for @bad_routes;
# more columns than a table can have
bad($writer_subject, $json->encode({ route_id => $r2,
	query_state => [ { map { ("k$_" => $_) } 1 .. 5000 } ] }), '5,000 keys');
bad($writer_subject, $json->encode({ route_id => $r2,
	query_state => [ { map { ("k$_" => $_) } 1 .. 1601 } ] }), '1,601 keys');

my $n_router = grep { $_->[0] eq $router_subject } @corpus;
my $n_writer = grep { $_->[0] eq $writer_subject } @corpus;
cmp_ok(scalar @corpus, '>=', 200, 'a corpus of ' . scalar(@corpus)
	  . " hostile messages ($n_router to the router, $n_writer to the writer)");

# --- send it, twice --------------------------------------------------------------------
my $pids = worker_pids($node);
my $tables_before = $node->safe_psql('postgres',
	"SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relkind = 'r'");

sub private_memory_kb
{
	my ($pid) = @_;
	return (slurp_file("/proc/$pid/status") =~ /RssAnon:\s+(\d+)/)[0];
}

sub send_corpus
{
	my ($pass) = @_;
	for my $m (@corpus)
	{
		my ($subject, $body, $why) = @$m;
		my ($rc, $out, $err) = nats_client($url, '-t', '20000', 'js-pub', $subject, \$body);
		die "publishing '$why' failed: $err" if $rc;
	}
	my $n = $pass * scalar @corpus;
	$node->poll_query_until('postgres', "SELECT count(*) >= $n FROM ism_state.dead_letter")
	  or die 'not every message was dead-lettered: '
	  . $node->safe_psql('postgres', 'SELECT count(*) FROM ism_state.dead_letter');
	sleep 2;	# anything more would show now
}

my %memory;
for my $pass (1, 2, 3)
{
	send_corpus($pass);
	is($node->safe_psql('postgres', 'SELECT count(*) FROM ism_state.dead_letter'),
		$pass * scalar @corpus, "pass $pass: exactly one dead-letter row per message");
	is($node->safe_psql('postgres',
			"SELECT string_agg(selector || '=' || failed, ',' ORDER BY selector) FROM ism_state.pg_stat_ism_routes"
			  . " WHERE failed > 0"),
		"data/transformers/mixer/state-tables-1.0=" . ($pass * $n_writer)
		  . ",processor/state/router=" . ($pass * $n_router),
		"pass $pass: one FAILED per message, on the route it came in on");
	$memory{$pass} = { map { ($_ => private_memory_kb($pids->{$_})) } keys %$pids };
}
is($node->safe_psql('postgres',
		"SELECT count(*) FROM ism_state.dead_letter WHERE error IS NULL OR error = ''"),
	'0', 'every dead letter says why');
note 'errors seen: ' . $node->safe_psql('postgres',
	"SELECT string_agg(DISTINCT regexp_replace(error, '[0-9]+', 'N', 'g'), ' | ') FROM ism_state.dead_letter");
is_deeply(worker_pids($node), $pids, 'no worker crashed or restarted');
is($node->safe_psql('postgres',
		"SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relkind = 'r'"),
	$tables_before, 'no table was created, dropped or renamed');
is($node->safe_psql('postgres', 'SELECT count(*) FROM processor'), 2 + @bad_properties,
	'the catalog is intact');
# the first passes warm caches up (nats.c's buffers and the allocator's
# arenas keep what 10 MB messages needed); a leak would go on growing
for my $role (sort keys %$pids)
{
	my $growth = $memory{3}{$role} - $memory{2}{$role};
	cmp_ok($growth, '<', 4096,
		"$role: private memory after the third pass within 4 MB of the second "
		  . "($memory{1}{$role} kB, $memory{2}{$role} kB, $memory{3}{$role} kB)");
}

# and the workers still work
my ($rc, $out, $err) = nats_client($url, 'js-pub', $router_subject, \$entry);
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM \"${tables}_answers\"")
  or die 'a good message after the corpus was not written';
pass('a good message after the corpus is routed and written');

$node->stop('fast');
done_testing();

# Processor properties and message fields as the platform writes them
# (issue #15, item 3): concurrencyMode in the UI's spelling
# (alethic-ism-ui, src/tabs/property/processor/ProcessorBaseConfig.jsx)
# and as the enum's names, an unknown mode FAILED naming the allowed ones;
# the UI's placeholder expression and the rest of the `or`/`and`/`not`
# subset, an expression outside it falling back to the project id with one
# WARNING per processor; a falsy priority as "low"; a query_state that is
# null or a scalar wrapped in a list; maxBatchSize/maxBatchLimit given as
# numeric strings coerced as the router's pydantic model does.
use strict;
use warnings;

use IsmTest;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes;

my $project = '5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03';
my $openai = '7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52';
my $questions = '8d2f6a1b-4c7e-4b93-a5d0-1e9f3c6b7a28';
my $r1 = "$questions:$openai";	# to the openai processor, a priority route
my $router_subject = 'processor.state.router';
my $openai_subjects = 'language.models.openai.>';
my $low = 'language.models.openai.low';

my ($nats, $node) = start_example_stack('props');
my $url = $nats->url;
my $json = JSON::PP->new->canonical;

sub publish
{
	my ($body) = @_;
	my ($rc, $out, $err) = nats_client($url, 'js-pub', $router_subject, \$body);
	die "js-pub failed: $err" if $rc;
}

# The raw [subject, body] of the $count messages the router publishes for
# the inbound messages @bodies.
sub route_raw
{
	my ($count, @bodies) = @_;
	my $c = start_collecting($url, $openai_subjects, $count, 15);
	publish($_) for @bodies;
	$c->{handle}->finish;
	return [ map { [ split / /, $_, 2 ] } split /\n/, $c->{out} ];
}

# The subject of the message a query_state_entry through r1 is sent on.
sub subject_of
{
	my (%fields) = @_;
	my $got = route_raw(1, $json->encode({ type => 'query_state_entry', route_id => $r1,
				query_state => [ { model => 'gpt-4o' } ], %fields }));
	return $got->[0][0] // 'nothing';
}

# A message that must fail: FAILED on the monitor route and a dead letter,
# both matching $why.
sub fails
{
	my ($body, $why, $label) = @_;
	my $dead = $node->safe_psql('postgres', 'SELECT coalesce(max(id), 0) FROM ism_state.dead_letter');
	my $mon = start_collecting($url, 'processor.monitor', 2, 10);
	publish($body);
	# (not poll_query_until: a message routed instead is a failed test, not a 3-minute wait)
	for (1 .. 50)
	{
		last if $node->safe_psql('postgres', "SELECT count(*) FROM ism_state.dead_letter WHERE id > $dead");
		Time::HiRes::sleep(0.2);
	}
	my ($failed) = grep { $_->{status} eq 'FAILED' } map { $_->[1] } @{ finish_collecting($mon) };
	like($failed ? $failed->{exception} : 'no FAILED status', $why, "$label: FAILED");
	like($node->safe_psql('postgres',
			"SELECT coalesce(max(error), 'no dead letter') FROM ism_state.dead_letter WHERE id > $dead"),
		$why, "$label: and its dead letter");
}

sub props { set_properties($node, $openai, @_); }

# --- concurrencyMode: the UI's values and the enum's names ----------------------------
my %expected = (
	'project' => "$low.$project",
	'user' => "$low.u7",
	'route' => "$low.$r1",
	'expression' => "$low.$project.gpt-4o");
for my $mode ([ 'project-id', 'PROJECT_ID' ], [ 'user-id', 'USER_ID' ],
	[ 'route-id', 'ROUTE_ID' ], [ 'expression', 'EXPRESSION' ])
{
	my ($kind) = $mode->[0] =~ /^(\w+)/;
	for my $spelling (@$mode)
	{
		props({ concurrencyMode => $spelling, concurrencyExpression => "data['model']" });
		is(subject_of(context => { user_id => 'u7' }), $expected{$kind},
			"concurrencyMode \"$spelling\"");
	}
}

my $allowed = qr/"project-id", "user-id", "route-id", "expression" \(or PROJECT_ID, USER_ID, ROUTE_ID, EXPRESSION\)/;
my $entry = $json->encode({ type => 'query_state_entry', route_id => $r1,
		query_state => [ { model => 'gpt-4o' } ] });
props({ concurrencyMode => 'session-id' });
fails($entry, qr/processor \Q$openai\E: property "concurrencyMode" is "session-id"; allowed: $allowed/,
	'an unknown concurrencyMode');
props({ concurrencyMode => 2 });
fails($entry, qr/property "concurrencyMode" is 2; allowed: $allowed/, 'a concurrencyMode not a string');

# --- the UI's placeholder expression, and `or`, `and`, `not` ------------------------------
props({ concurrencyMode => 'expression',
		concurrencyExpression => "data.get('user_id') or context.get('session_id')" });
my $placeholder = sub {
	my ($entry, $context) = @_;
	my $got = route_raw(1, $json->encode({ type => 'query_state_entry', route_id => $r1,
				query_state => [$entry], context => $context }));
	return $got->[0][0] // 'nothing';
};
is($placeholder->({ user_id => 'u1' }, { session_id => 's9' }), "$low.$project.u1",
	'the placeholder: the entry\'s user_id first');
is($placeholder->({ user_id => '' }, { session_id => 's9' }), "$low.$project.s9",
	'the placeholder: the session when the user_id is falsy');
is($placeholder->({}, undef), "$low.$project",
	'the placeholder: neither, no context: the project id');
is($placeholder->({ user_id => 0 }, { session_id => 0 }), "$low.$project",
	'the placeholder: `or` gives its last operand, falsy: the project id');

my @subset = (
	[ "data.get('user_id') and context['session_id']", { user_id => 'u1' }, { session_id => 's9' },
		"$project.s9", '`and` gives its second operand when the first is truthy' ],
	[ "data.get('user_id') and context['session_id']", { user_id => '' }, {},
		$project, '`and` does not evaluate its second operand when the first is falsy (no KeyError)' ],
	[ "data['team'] or data['no_such_key']", { team => 't1' }, {},
		"$project.t1", '`or` does not evaluate its second operand when the first is truthy' ],
	[ "data.get('a') or data.get('b') and 'both'", { b => 1 }, {},
		"$project.both", '`and` binds tighter than `or`' ],
	[ "(data.get('a') or data.get('b')) and 'both'", { b => 1 }, {},
		"$project.both", 'parentheses' ],
	[ "str(not data.get('a')) + '-' + str(data.get('a') is None)", {}, {},
		$project, 'outside the subset (`is`): the project id' ],
	[ "str(not data.get('a')) + '-' + str(not not data['n'])", { n => 2 }, {},
		"$project.True-True", '`not`, True as Python prints it' ],
	[ "data.get('n', None) or False or 'x' + str(route_id == 1)", {}, {},
		$project, 'outside the subset (`==`): the project id' ],
	[ "data.get('n', None) or False or str(None)", {}, {},
		"$project.None", 'None and False as literals' ],
	[ "data.get('user_id') or context.get('session_id') or hashit(route_id)", {}, {},
		$project, 'outside the subset (a function the sandbox has): the project id' ],
);
for my $case (@subset)
{
	my ($expression, $entry, $context, $key, $label) = @$case;
	props({ concurrencyMode => 'EXPRESSION', concurrencyExpression => $expression });
	is($placeholder->($entry, $context), "$low.$key", $label);
}

# an expression that falls back: one WARNING for the processor, not one per message
my $warning = qr/WARNING:  ism_state router: processor \Q$openai\E: concurrencyExpression ".*hashit.*" (is outside|failed)/;
is(count_log_matches($node, $warning), 1, 'one WARNING for the processor\'s fallback');
route_raw(3, ($entry) x 3);
is(count_log_matches($node, $warning), 1, 'and none for the next messages');
props({ concurrencyMode => 'EXPRESSION', concurrencyExpression => "data['no_such_key']" });
is(subject_of(), "$low.$project", 'a KeyError: the project id');
route_raw(2, ($entry) x 2);
is(count_log_matches($node,
		qr/WARNING:  ism_state router: processor \Q$openai\E: concurrencyExpression "data\['no_such_key'\]" failed/),
	1, 'another expression: its own WARNING, once');

# --- priority: a falsy one is "low" ----------------------------------------------------------
props({});
is(subject_of(priority => ''), "$low.$project", 'priority "": low');
is(subject_of(priority => 0), "$low.$project", 'priority 0: low');
is(subject_of(priority => JSON::PP::false), "$low.$project", 'priority false: low');
is(subject_of(priority => undef), "$low.$project", 'priority null: low');
is(subject_of(priority => 'high'), "language.models.openai.high.$project", 'priority "high"');
fails($json->encode({ type => 'query_state_entry', route_id => $r1, priority => 'urgent',
			query_state => [] }),
	qr/"priority" must be "high" or "low"/, 'priority "urgent"');
fails($json->encode({ type => 'query_state_entry', route_id => $r1, priority => 1,
			query_state => [] }),
	qr/"priority" must be "high" or "low"/, 'priority 1 (truthy, not a string)');

# --- query_state null or a scalar: wrapped in a list ----------------------------------------------
my $envelope = qq({"type":"query_state","input_route_id":null,"context":{},"route_id":"$r1",)
  . qq("processor_id":"$openai","query_state":);
for my $qs ('null', '5', '"s"', 'true', '1.50')
{
	my $got = route_raw(1,
		qq({"type":"query_state_entry","route_id":"$r1","query_state":$qs}));
	is($got->[0][1] // 'nothing', "$envelope\[$qs\]}", "query_state $qs: forwarded as [$qs]");
}
my $got = route_raw(1,
	qq({"type":"query_processor_entry","processor_id":"$openai","query_state":null}));
like($got->[0][1] // 'nothing', qr/"query_state":\[null\]\}$/, 'query_processor_entry too');
props({ concurrencyMode => 'expression', concurrencyExpression => 'str(data)' });
$got = route_raw(2, qq({"type":"query_state_entry","route_id":"$r1","query_state":7}),
	qq({"type":"query_state_entry","route_id":"$r1","query_state":[]}));
is_deeply([ sort map { $_->[0] } @$got ], [ sort "$low.$project.7", "$low.$project.[]" ],
	'the expression\'s data: the scalar, or the empty list itself (upstream)');

# --- maxBatchSize and maxBatchLimit as numeric strings -------------------------------------------
my $replay = $json->encode({ type => 'query_state_route', route_id => $r1 });
my @batching = (
	[ ' 2 ', '2.0', [2], 'strings " 2 " and "2.0": one page, one message of 2' ],
	[ '1', '+1', [ 1, 1 ], 'strings "1" and "+1": two messages of 1' ],
	[ "\t2\n", '0_2', [2], 'white space and an underscore as Python reads them' ],
	[ 2, JSON::PP::true, [ 1, 1 ], 'true as 1 (pydantic\'s lax int)' ],
);
for my $case (@batching)
{
	my ($size, $limit, $sizes, $label) = @$case;
	props({ maxBatchSize => $size, maxBatchLimit => $limit });
	$got = route_raw(scalar @$sizes, $replay);
	is_deeply([ map { scalar @{ decode_json($_->[1])->{query_state} } } @$got ], $sizes, $label);
}
for my $bad ([ '1e1', qr/property "maxBatchSize" must be a positive integer, not "1e1"/ ],
	[ '2.5', qr/property "maxBatchSize" must be a positive integer, not "2.5"/ ],
	[ '0', qr/property "maxBatchSize" must be a positive integer, not "0"/ ],
	[ '', qr/property "maxBatchSize" must be a positive integer, not ""/ ])
{
	props({ maxBatchSize => $bad->[0] });
	fails($replay, $bad->[1], "maxBatchSize \"$bad->[0]\"");
}

$node->stop('fast');
done_testing();

# Exact values end to end (issue #15): what the router forwards and what
# the writer stores is the value as it was sent.  Numbers digit for digit
# (integers of any size, 1.0 as 1.0, exponents as written), strings byte
# for byte (a \u0000 forwarded as it came), the last of a repeated key;
# partition keys of numbers as the Python router prints them; a record
# that would need a \u0000 stored is a dead letter naming its key; with
# "columnTypes": "infer" nothing is stored rounded (numeric beyond bigint
# and double precision, widened exactly); replays send json columns as
# jsonb prints them.  Compared as the raw bytes published and the stored
# text.  Then a randomized run: generated JSON documents (deep nesting,
# numbers in every notation and size, every escape, unicode, white space,
# repeated keys) through the router, each forwarded the same value as sent
# (numbers compared as decimal text), and byte for byte where it was
# compact with no repeated key.
use strict;
use warnings;
no warnings 'recursion';	# documents 600 deep

use Encode qw(encode_utf8);
use IsmTest;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Scalar::Util qw(blessed);
use B;
use Test::More;

my $project = '5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03';
my $openai = '7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52';
my $tables = '3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10';
my $questions = '8d2f6a1b-4c7e-4b93-a5d0-1e9f3c6b7a28';
my $answers = 'e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16';
my $r1 = "$questions:$openai";	# to the openai processor, through the router
my $r2 = "$answers:$tables";	# to the state-tables processor
my $router_subject = 'processor.state.router';
my $writer_subject = 'data.transformers.state-tables';
my $openai_subjects = 'language.models.openai.>';

# the random parts' seed (python3's numbers, the generated documents)
my $seed = $ENV{ISM_EXACT_SEED} // int(rand(1_000_000));
diag "randomized exact values: ISM_EXACT_SEED=$seed";

my ($nats, $node) = start_example_stack('exact');
my $url = $nats->url;

# The issue's record: every value in it changed on its way before.
my $issue = '{"id":9007199254740993,"score":1.0,"big":12345678901234567890,'
  . '"m":1000000000000000000,"t":"a\u0000b"}';

sub publish
{
	my ($subject, $body) = @_;
	my ($rc, $out, $err) = nats_client($url, 'js-pub', $subject, \$body);
	die "js-pub failed: $err" if $rc;
}

# Publish inbound messages to the router; the raw [subject, body] of the
# $count messages it publishes on $subject.
sub route_raw
{
	my ($count, $subject, @bodies) = @_;
	my $c = start_collecting($url, $subject, $count, 30);
	publish($router_subject, $_) for @bodies;
	$c->{handle}->finish;
	return [ map { [ split / /, $_, 2 ] } split /\n/, $c->{out} ];
}

sub psql { return $node->safe_psql('postgres', @_); }

# --- the router forwards what was sent, byte for byte ------------------------------
my $envelope = qq({"type":"query_state","input_route_id":null,"context":{},"route_id":"$r1",)
  . qq("processor_id":"$openai","query_state":);
my @cases = (
	[ 'the issue\'s record', "[$issue]" ],
	[ 'numbers in every notation',
		'[{"a":-0,"b":1E+2,"c":1e-7,"d":0.10,"e":1e400,"f":-123456789012345678901234567890.5e-3,'
		  . '"g":[1.0,[2.50,{"h":1e0,"i":5e-324,"j":1.7976931348623157e308}]],"k":100.000}]' ],
	[ 'strings with every escape, \u0000 and unicode',
		qq([{"s":"\\u00e9\\ud83d\\ude00 \\/ \\" \\\\ \\b\\f\\n\\r\\t\\u0000","r":"\x{e9}\x{1F600}"}]) ],
	[ 'an object sent as the entry', '{"n":1.0,"deep":[[[[[[1e-400]]]]]]}', '[{"n":1.0,"deep":[[[[[[1e-400]]]]]]}]' ],
);
for my $case (@cases)
{
	my ($what, $qs, $want) = @$case;
	my $got = route_raw(1, $openai_subjects,
		encode_utf8(qq({"type":"query_state_entry","route_id":"$r1","query_state":$qs})));
	is($got->[0][1], encode_utf8($envelope . ($want // $qs) . '}'), "router: $what, forwarded byte for byte");
}

my $got = route_raw(1, $openai_subjects,
	qq({"type":"query_state_entry","route_id":"$r1","input_route_id":{"n":12345678901234567890},)
	  . qq("context":{"user":1.50,"big":-98765432109876543210},"query_state":[]}));
is($got->[0][1],
	qq({"type":"query_state","input_route_id":{"n":12345678901234567890},)
	  . qq("context":{"user":1.50,"big":-98765432109876543210},"route_id":"$r1",)
	  . qq("processor_id":"$openai","query_state":[]}),
	'router: context and input_route_id as sent');

$got = route_raw(1, $openai_subjects,
	qq({ "type" : 7, "type":"query_state_entry", "route_id":"$r1",\n)
	  . qq( "query_state":[ {"a" : 1, "b":{"x":1.0,"x":2.50} ,"a":3}, 1e400 ] }));
is($got->[0][1], $envelope . '[{"a":3,"b":{"x":2.50}},1e400]}',
	'router: of a key given twice the last counts, at the first one\'s place (Python\'s json), '
	  . 'white space left out, values as sent');

# --- partition keys of numbers: as the Python router prints them (str()) ------------
set_properties($node, $openai, { concurrencyMode => 'USER_ID' });
my @user_ids = (
	[ '9007199254740993', '9007199254740993' ], [ '12345678901234567890', '12345678901234567890' ],
	[ '-0', '0' ], [ '1.0', '1.0' ], [ '2.50', '2.5' ], [ '1e16', '1e+16' ], [ '1E15', '1000000000000000.0' ],
	[ '1e-5', '1e-05' ], [ '0.0001', '0.0001' ], [ '-1.5e300', '-1.5e+300' ]);
$got = route_raw(scalar @user_ids, $openai_subjects,
	map { qq({"type":"query_state_entry","route_id":"$r1","context":{"user_id":$_->[0]},"query_state":[]}) }
	  @user_ids);
is_deeply([ map { $_->[0] } @$got ], [ map { "language.models.openai.low.$_->[1]" } @user_ids ],
	'USER_ID: integers of any size exactly, floats as Python\'s repr');

# and as Python itself prints them: random literals, each key from python3
my $python = `python3 -c '
import json, random, struct
random.seed($seed)
for i in range(150):
    r = random.random()
    if r < 0.3:
        lit = repr(struct.unpack("d", struct.pack("Q", random.getrandbits(63)))[0])
    elif r < 0.4:
        lit = repr(2.0 ** random.randint(-1074, 1023))
    else:
        lit = random.choice(["", "-"]) + str(random.randint(1, 10 ** random.randint(1, 30)))
        if random.random() < 0.6:
            lit += "." + str(random.randint(0, 10 ** random.randint(1, 20)))
        if random.random() < 0.5:
            lit += random.choice("eE") + random.choice(["", "+", "-"]) + str(random.randint(0, 330))
    if lit in ("nan", "inf", "-inf"):
        continue
    print(lit, str(json.loads(lit)))
'`;
die 'python3 failed' if $?;
my @python = map { [ split / / ] } split /\n/, $python;
$got = route_raw(scalar @python, $openai_subjects,
	map { qq({"type":"query_state_entry","route_id":"$r1","context":{"user_id":$_->[0]},"query_state":[]}) }
	  @python);
my @differ = grep { $got->[$_][0] ne "language.models.openai.low.$python[$_][1]" } 0 .. $#python;
is(scalar @differ, 0, scalar(@python) . ' random numbers as USER_ID: each key as python3 prints it')
  or diag join "\n", map { "$python[$_][0]: python3 $python[$_][1], here $got->[$_][0]" } @differ[ 0 .. ($#differ < 9 ? $#differ : 9) ];

set_properties($node, $openai, { concurrencyMode => 'EXPRESSION', concurrencyExpression => "data['n'] + 1" });
my @sums = ([ '9007199254740993', "$project.9007199254740994" ],
	[ '12345678901234567890', "$project.12345678901234567891" ], [ '-1', $project ],
	[ '-100000000000000000000', "$project.-99999999999999999999" ], [ '0.5', "$project.1.5" ]);
$got = route_raw(scalar @sums, $openai_subjects,
	map { qq({"type":"query_state_entry","route_id":"$r1","query_state":[{"n":$_->[0]}]}) } @sums);
is_deeply([ map { $_->[0] } @$got ], [ map { "language.models.openai.low.$_->[1]" } @sums ],
	'EXPRESSION: int + int exact at any size (a zero is falsy), float + int a float');
set_properties($node, $openai, {});

# --- the writer stores what was sent -------------------------------------------------
set_properties($node, $tables, { tableName => 'exact', batchSize => 1, includeTimestamp => JSON::PP::false });
my $exact = "${tables}_exact";
(my $issue_without_nul = $issue) =~ s/,"t":"a\\u0000b"//;
publish($writer_subject, encode_utf8(qq({"route_id":"$r2","query_state":[)
	  . substr($issue_without_nul, 0, -1)
	  . qq(,"e":1.5E+300,"z":-0,"inf":1e400,"o":{"n":[1.0,1e400],"s":"\\u0000"},"s":"\\u00e9\x{1F600}"}]})));
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM \"$exact\"") or die 'no exact row';
is(psql(qq{SELECT concat_ws('|', id, score, big, m, e, z, inf, o, s) FROM "$exact"}),
	encode_utf8('9007199254740993|1.0|12345678901234567890|1000000000000000000|1.5E+300|-0|1e400|'
		  . qq({"n":[1.0,1e400],"s":"\\u0000"}|\x{e9}\x{1F600})),
	'text columns: numbers as sent, a nested \u0000 as its JSON escape, strings decoded');

my $dead = psql('SELECT count(*) FROM ism_state.dead_letter');
publish($writer_subject, qq({"route_id":"$r2","query_state":[$issue]}));
$node->poll_query_until('postgres', "SELECT count(*) = $dead + 1 FROM ism_state.dead_letter")
  or die 'no dead letter';
like(psql('SELECT error FROM ism_state.dead_letter ORDER BY id DESC LIMIT 1'),
	qr/^record key "t": its string holds \\u0000, which PostgreSQL text cannot hold$/,
	'a \u0000 that text would have to hold: a dead letter naming the key');
publish($writer_subject, qq({"route_id":"$r2","query_state":[{"id":1},{"k\\u0000":1}]}));
$node->poll_query_until('postgres', "SELECT count(*) = $dead + 2 FROM ism_state.dead_letter")
  or die 'no dead letter';
like(psql('SELECT error FROM ism_state.dead_letter ORDER BY id DESC LIMIT 1'),
	qr/^record key "k\\u0000" holds \\u0000, which no column name can hold$/,
	'and in a key; the message\'s other records are not written either');

publish($writer_subject, qq({"route_id":5,"route_id":"$r2","query_state":[{"id":"dup","score":1,"score":2}]}));
publish($writer_subject, qq({"route_id":"nowhere","ROUTE_ID":"$r2","query_state":[{"id":"fold"}]}));
$node->poll_query_until('postgres', "SELECT count(*) = 3 FROM \"$exact\"") or die 'no duplicate-key rows';
is(psql(qq{SELECT string_agg(id || '=' || coalesce(score, '-'), ',' ORDER BY id) FROM "$exact" WHERE id IN ('dup', 'fold')}),
	'dup=2,fold=-', 'keys given twice: the last counts (route_id in any case, as Go reads it)');

# a \u0000 in a _timestamp the writer replaces is never stored: no dead letter
set_properties($node, $tables, { tableName => 'exact', batchSize => 1, includeTimestamp => JSON::PP::true });
publish($writer_subject, qq({"route_id":"$r2","query_state":[{"id":"stamped","_timestamp":"a\\u0000b"}]}));
$node->poll_query_until('postgres', "SELECT count(*) = 4 FROM \"$exact\"") or die 'no stamped row';
is(psql(qq{SELECT _timestamp ~ '^\\d{4}-' FROM "$exact" WHERE id = 'stamped'}), 't',
	'a _timestamp holding \u0000 is replaced by the writer\'s, as upstream');
is(psql("SELECT count(*) FROM ism_state.dead_letter"), $dead + 2, 'and nothing else is dead-lettered');

# --- infer: never rounded ------------------------------------------------------------
set_properties($node, $tables, { tableName => 'inferred', batchSize => 1, includeTimestamp => JSON::PP::false,
		columnTypes => 'infer' });
my $inferred = "${tables}_inferred";
publish($writer_subject, qq({"route_id":"$r2","query_state":[{"r":1,"i":9007199254740993,)
	  . qq("n":12345678901234567890,"f":3.141592653589793238,"d":0.12345678901234568,"x":1.0,"e":1e400,)
	  . qq("o":{"a":1e400,"b":1.0},"p":{"s":"a\\u0000b"}}]}));
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM \"$inferred\"") or die 'no inferred row';

sub column_types
{
	my ($table) = @_;
	return psql("SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)"
		  . " FROM pg_attribute WHERE attrelid = '\"$table\"'::regclass AND attnum > 0");
}
is(column_types($inferred),
	'r bigint, i bigint, n numeric, f numeric, d double precision, x double precision, e numeric, o jsonb, p text',
	'infer: beyond bigint and beyond what a double reads back, numeric; never double precision for them');
is(psql(qq{SELECT concat_ws('|', i, n, f, d, x, e = 1e400, o ->> 'b', p) FROM "$inferred"}),
	'9007199254740993|12345678901234567890|3.141592653589793238|0.12345678901234568|1|t|1.0|{"s":"a\u0000b"}',
	'infer: every value exact (an object holding \u0000, which jsonb refuses, as text)');

# widened through text: exact even when extra_float_digits would round a double
psql('ALTER SYSTEM SET extra_float_digits = 0');
$node->reload;
publish($writer_subject, qq({"route_id":"$r2","query_state":[{"r":2,"i":9223372036854775808,)
	  . qq("d":3.14159265358979323846,"x":2,"o":{"s":"\\u0000"}}]}));
$node->poll_query_until('postgres', "SELECT count(*) = 2 FROM \"$inferred\"") or die 'no widened row';
is(column_types($inferred),
	'r bigint, i numeric, n numeric, f numeric, d numeric, x double precision, e numeric, o text, p text',
	'a value that does not fit widens: bigint and double precision to numeric, jsonb to text');
is(psql(qq{SELECT string_agg(concat_ws('|', i, d, x), ',' ORDER BY r) FROM "$inferred"}),
	'9007199254740993|0.12345678901234568|1,9223372036854775808|3.14159265358979323846|2',
	'the values written before keep every digit in the wider column (not 0.123456789012346)');
psql('ALTER SYSTEM RESET extra_float_digits');
$node->reload;

# a jsonb column made beforehand cannot take \u0000 either: named, not cut
psql(qq{CREATE TABLE "${tables}_premade" (j jsonb, s text)});
set_properties($node, $tables, { tableName => 'premade', batchSize => 1, includeTimestamp => JSON::PP::false });
$dead = psql('SELECT count(*) FROM ism_state.dead_letter');
publish($writer_subject, qq({"route_id":"$r2","query_state":[{"j":{"k":"a\\u0000b"},"s":"x"}]}));
$node->poll_query_until('postgres', "SELECT count(*) = $dead + 1 FROM ism_state.dead_letter")
  or die 'no dead letter';
like(psql('SELECT error FROM ism_state.dead_letter ORDER BY id DESC LIMIT 1'),
	qr/^record key "j": its value holds \\u0000, which its jsonb column cannot hold$/,
	'a jsonb column made beforehand: a dead letter naming the key');

# --- replays send json columns as jsonb prints them ------------------------------------
psql(q{
INSERT INTO state (id, project_id, count) VALUES ('exact', '5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03', 1);
INSERT INTO processor_state (id, processor_id, state_id, direction)
VALUES ('exact:7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52', '7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52', 'exact', 'INPUT');
INSERT INTO state_column (state_id, name, data_type) VALUES ('exact', 'i', 'str'), ('exact', 'doc', 'json');
INSERT INTO state_column_data (column_id, data_index, data_value, data_json_value)
SELECT id, 0, CASE name WHEN 'i' THEN '9007199254740993' END,
       CASE name WHEN 'doc' THEN '{"n": 1.0, "big": 12345678901234567890, "e": 1e3, "f": 0.10, "s": "é"}'::jsonb END
  FROM state_column WHERE state_id = 'exact';
});
my $doc = psql("SELECT data_json_value::text FROM state_column_data d JOIN state_column c ON c.id = d.column_id"
	  . " WHERE c.state_id = 'exact' AND c.name = 'doc'");
$got = route_raw(1, $openai_subjects, qq({"type":"query_state_route","route_id":"exact:$openai"}));
like($got->[0][1], qr/"query_state":\[\{"i":"9007199254740993","doc":\Q$doc\E,"run_id":"[0-9a-f]{8}",/,
	"a replay: a json column as jsonb prints it ($doc), a text column as its string");

# --- randomized: generated documents through the router --------------------------------
srand($seed);

sub pick { return $_[ int rand @_ ]; }
sub chance { return rand() < $_[0]; }
sub digits { my ($n, $lead) = @_; return join '', ($lead ? 1 + int rand 9 : int rand 10), map { int rand 10 } 2 .. $n; }

# a number literal in any notation and of any size
sub random_number
{
	my $r = rand;
	return pick('0', '-0', '9007199254740993', '1.0', '1e400', '-1e-400', '5e-324', '100.000', '0.1',
		'2.2250738585072014e-308', '1.7976931348623157e308', '-9223372036854775809', '1E+2', '1e007')
	  if $r < 0.2;
	my $int = chance(0.2) ? '0' : digits(1 + int rand(chance(0.3) ? 60 : 19), 1);
	my $text = (chance(0.3) ? '-' : '') . $int;
	$text .= '.' . digits(1 + int rand 30) if chance(0.5);
	$text .= pick('e', 'E') . pick('', '+', '-') . digits(1 + int rand 4) if chance(0.4);
	return $text;
}

# a string token: plain characters, every escape, \u0000, escaped and raw unicode
sub random_string
{
	my $out = '"';
	for (1 .. int rand 12)
	{
		my $r = rand;
		if ($r < 0.4) { $out .= pick('a', 'Z', '0', ' ', '~', "'", '{', ':', ','); }
		elsif ($r < 0.55) { $out .= pick('\"', '\\\\', '\/', '\b', '\f', '\n', '\r', '\t'); }
		elsif ($r < 0.6) { $out .= '\u0000'; }
		elsif ($r < 0.75)
		{
			my $c = 1 + int rand 0xFFFF;
			$c = 0xE000 if $c >= 0xD800 && $c <= 0xDFFF;
			$out .= sprintf(chance(0.5) ? '\u%04x' : '\u%04X', $c);
		}
		elsif ($r < 0.85)
		{
			my $v = int rand 0x100000;
			$out .= sprintf('\u%04x\u%04x', 0xD800 + ($v >> 10), 0xDC00 + ($v & 0x3FF));
		}
		else { $out .= encode_utf8(pick("\x{e9}", "\x{4e2d}", "\x{1F600}", "\x{10FFFF}", "\x{7f}")); }
	}
	return "$out\"";
}

# white space between tokens, now and then; $plain tells whether there was none
my $plain;
sub ws { return '' unless chance(0.03); $plain = 0; return pick(' ', "\n", "\t", "\r\n  "); }

sub random_value
{
	my ($depth) = @_;
	my $r = rand;
	return deep_value(2 + int rand 600) if $depth == 0 && chance(0.03);
	return pick('null', 'true', 'false') if $r < 0.1;
	return random_number() if $r < 0.45;
	return random_string() if $r < 0.65 || $depth > 6;
	my @members = map { random_value($depth + 1) } 1 .. int rand 5;
	return '[' . ws() . join(',' . ws(), @members) . ws() . ']' if $r < 0.8;
	# names made distinct (a repeated one would make the text not the value), but for one on purpose
	my @keys = map { '"k' . $_ . substr(random_string(), 1) } 0 .. $#members;
	if (@keys > 1 && chance(0.1)) { $keys[-1] = $keys[0]; $plain = 0; }	# a key twice
	return '{' . ws() . join(',', map { $keys[$_] . ws() . ':' . ws() . $members[$_] } 0 .. $#keys) . ws() . '}';
}

sub deep_value
{
	my ($depth) = @_;
	my $v = random_number();
	$v = chance(0.5) ? "[$v]" : "{\"k\":$v}" for 1 .. $depth;
	return $v;
}

# a decoded value as text in which numbers are decimal text: sign, digits, exponent
sub decimal
{
	my ($text) = @_;
	my ($sign, $int, $frac, $exp) = $text =~ /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([-+]?\d+))?$/
	  or die "not a number: $text";
	my $digits = $int . ($frac // '');
	$exp = ($exp // 0) - length($frac // '');
	$digits =~ s/^0+//;
	return '0' if $digits eq '';
	$exp += length($1) if $digits =~ s/(0+)$//;
	return "$sign${digits}e$exp";
}

sub canonical
{
	my ($v) = @_;
	return 'null' unless defined $v;
	return $v ? 'true' : 'false' if JSON::PP::is_bool($v);
	return '[' . join(',', map { canonical($_) } @$v) . ']' if ref $v eq 'ARRAY';
	return '{' . join(',', map { JSON::PP->new->encode([$_]) . ':' . canonical($v->{$_}) } sort keys %$v) . '}'
	  if ref $v eq 'HASH';
	return 'n' . decimal(blessed($v) ? $v->bstr : "$v") if blessed($v) || !(B::svref_2object(\$v)->FLAGS & B::SVf_POK);
	return JSON::PP->new->encode([$v]);
}

my $decoder = JSON::PP->new->allow_bignum->allow_nonref->max_depth(5000);
my $n_docs = 250;
my (@sent, @plain);
for my $i (0 .. $n_docs - 1)
{
	$plain = 1;
	my $doc = random_value(0);
	push @sent, $doc;
	push @plain, $plain;
}
$got = route_raw($n_docs, $openai_subjects,
	map { qq({"type":"query_state_entry","route_id":"$r1","query_state":[{"n":$_,"v":$sent[$_]}]}) }
	  0 .. $n_docs - 1);
is(scalar @$got, $n_docs, "randomized: the router forwarded all $n_docs documents");
my ($same, $bytes, $plain_count) = (0, 0, 0);
@differ = ();
for my $m (@$got)
{
	my $entry = $decoder->decode($m->[1])->{query_state}[0];
	my $i = $entry->{n};
	my $sent = $decoder->decode($sent[$i]);
	if (canonical($entry->{v}) eq canonical($sent)) { $same++; }
	else { push @differ, "document $i: sent $sent[$i], forwarded " . substr($m->[1], 0, 500); }
	next unless $plain[$i];
	$plain_count++;
	$bytes++ if index($m->[1], qq("query_state":[{"n":$i,"v":$sent[$i]}]}), 0) >= 0;
}
is($same, $n_docs, 'randomized: every document forwarded as the same value (numbers as decimal text)')
  or diag join "\n", @differ[ 0 .. ($#differ < 4 ? $#differ : 4) ];
is($bytes, $plain_count, "randomized: the $plain_count compact ones without a repeated key byte for byte");

$node->stop('fast');
done_testing();

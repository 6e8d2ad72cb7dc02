# The suite runs it twice (test/t/018_random_fixed_seed.pl with a fixed
# seed, test/t/019_random_new_seed.pl with a new one), 60 s each; a longer
# run, or a replay of a seed, by hand:
#   ISM_RANDOM_SEED=3 ISM_RANDOM_SECONDS=1200 \
#     make installcheck REGRESS= PROVE_TESTS=test/random/random_e2e.pl
# A seeded, randomized end-to-end test of the state-tables writer (and of the
# router where it is cheap), against a live cluster and nats-server.
#
#   ISM_RANDOM_SEED     seed for every random choice (default 20261130)
#   ISM_RANDOM_SECONDS  how long rounds are generated (default 60)
#   ISM_RANDOM_EXCLUDE  comma-separated scenarios to leave out (see
#                       %scenario), e.g. "nats_restart,big_numbers", to look
#                       past a failure already known
#
# The same seed and exclusions give the same rounds (messages, properties,
# interference), in the same order; only how many rounds fit in
# ISM_RANDOM_SECONDS, and how the workers interleave with them, depend on
# the machine.  Each round's actions are written to the regress log.
#
# Setup: the workers run as the least-privilege role (scripts/worker-role.sql)
# with ism_state.data_schema = ism_data and two writers.  Tables made before
# the writer writes into them hold every built-in type family (integer,
# bigint, numeric(p,s), varchar(n), char(n), timestamp, timestamptz, date,
# json, jsonb, uuid, int[], text[], an enum, a domain with a CHECK, NOT NULL,
# defaults, a generated column), two with row-level security (one owned by
# the workers' role and FORCE'd, one owned by another role), and a
# partitioned one, and "exact" (bigint, numeric) whose processor's
# properties never change; other processors make their tables themselves
# (text and infer).  The catalog has NULLs where the platform allows them (properties,
# provider_id, project_id, processor_state.processor_id).
#
# Each round: maybe new (valid or invalid) properties for a processor, a few
# messages (to the writer directly, or through the router) of random
# records, maybe one interference: a LOCK TABLE held for a few rounds,
# pg_cancel_backend() or pg_terminate_backend() of a worker, a nats-server
# restart.  Every record carries a unique "rid" and a string "s".
#
# Invariants checked once everything has drained:
#   1. the postmaster never restarted (no backend crash);
#   2. every message is either wholly in one table, each record once, with
#      its "s" unchanged, or in ism_state.dead_letter once with a reason -
#      never both, never neither; messages that cannot be written (bad
#      records, a \u0000 to store, unknown routes) are dead letters,
#      messages to "exact" are written, with every digit of their numbers;
#      no dead letter of a message that was not sent;
#   3. no dead letter's reason is a passing one (lock timeout, cancel, ...);
#   4. the workers run at the end;
#   5. pg_cancel_backend() does not end a worker;
#   6. no row breaks a row-level security policy of its table;
#   7. the router forwarded each message it did not dead-letter (counted in
#      the target stream for the processors that are not state tables).
use strict;
use warnings;

use Encode qw(encode_utf8);
use IsmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

# What note and diag show goes out as UTF-8 bytes: PostgreSQL 17's test
# modules make every Perl warning fatal, "Wide character in print" of a
# random string among them.
{
	no warnings 'redefine';
	my ($note, $diag) = (\&note, \&diag);
	my $bytes = sub { map { defined && /[^\x00-\xff]/ ? encode_utf8($_) : $_ } @_ };
	*note = sub { $note->($bytes->(@_)) };
	*diag = sub { $diag->($bytes->(@_)) };
}

my $seed = $ENV{ISM_RANDOM_SEED} // 20261130;
my $seconds = $ENV{ISM_RANDOM_SECONDS} // 60;
my %excluded = map { ($_ => 1) } grep { length } split /\s*,\s*/, $ENV{ISM_RANDOM_EXCLUDE} // '';
srand($seed);
my $replay = "ISM_RANDOM_SEED=$seed ISM_RANDOM_SECONDS=$seconds"
  . (%excluded ? ' ISM_RANDOM_EXCLUDE=' . join(',', sort keys %excluded) : '');
diag "random end-to-end test: $replay";

# scenarios that can be left out:
#   infer_premade        "columnTypes": "infer" for the processors of the premade tables
#   router_null_project  the router to a processor with a NULL project_id on a concurrent route
#   cancel, terminate    pg_cancel_backend(), pg_terminate_backend() of a worker
#   nats_restart         nats-server stopped (TERM or KILL) and started again
#   lock                 LOCK TABLE (data tables, applied, dead_letter, processor)
#   bad_properties       properties of the wrong type or range (dead letters)
#   huge_properties      2147483647, 2147484 s, nulls, 0 in batchSize / batchWindowTTL
#   router               messages through the router
#   big_numbers          "exact" values beyond 2^53 and 17 significant digits
my %scenario = map { ($_ => !$excluded{$_}) } qw(
  infer_premade router_null_project cancel terminate nats_restart lock
  bad_properties huge_properties router big_numbers);
exists $scenario{$_} or die "ISM_RANDOM_EXCLUDE: no scenario \"$_\"" for keys %excluded;

my $answers = 'e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16';	# a state of the example project
my $project = '5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03';
my $tables_provider = 'data/transformers/mixer/state-tables-1.0';
my $openai_provider = 'language/models/openai/gpt-4o';
my $writer_subject = 'data.transformers.state-tables';
my $writer_stream = 'data_transformers_state_tables';
my $router_subject = 'processor.state.router';
my $router_stream = 'processor_state_router';
my $openai_stream = 'language_models_openai';
my $passing = 'lock timeout|deadlock|serializ|canceling statement|user request|read-only transaction'
  . '|connection|timed out|timeout|terminating';

# === the stack =====================================================================

my $nats = IsmTest::Nats->new('rnd')->start;
my $url = $nats->url;

# a short ack_wait, so what a terminated worker held comes back soon
my $routing = "${PostgreSQL::Test::Utils::tmp_check}/routing-rnd.yaml";
my $yaml = slurp_file('test/data/routing.yaml');
$yaml =~ s/ack_wait: 60 /ack_wait: 10 / or die 'no ack_wait to shorten';
open my $fh, '>', $routing or die $!;
print $fh $yaml;
close $fh;

# UTF-8, whatever the locale the test runs in
my $node = PostgreSQL::Test::Cluster->new('rnd');
$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ism_state'
ism_state.nats_url = '$url'
ism_state.nats_reconnect_wait = '500ms'
ism_state.nats_connect_timeout = '1s'
ism_state.routing_file = '$routing'
ism_state.writer_workers = 2
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION ism_state');
$node->safe_psql('postgres', slurp_file('test/data/catalog.sql'));
my ($rc, $out, $err) = $node->psql('postgres', slurp_file('scripts/worker-role.sql'),
	extra_params => [ '-v', 'role=ism_worker', '-v', 'catalog_schema=public',
		'-v', 'data_schema=ism_data' ]);
die "worker-role.sql: $err" if $rc;
$node->append_conf('postgresql.conf',
	"ism_state.role = 'ism_worker'\nism_state.data_schema = 'ism_data'\n");

# NULLs the platform's schema allows; the test catalog is stricter
$node->safe_psql('postgres', q{
	ALTER TABLE processor ALTER project_id DROP NOT NULL;
	ALTER TABLE processor_state DROP CONSTRAINT processor_state_pkey;
	ALTER TABLE processor_state ALTER processor_id DROP NOT NULL;
	CREATE ROLE rnd_owner NOLOGIN;
});

# --- processors --------------------------------------------------------------------
# kind: premade (a table made here), free (the writer makes it), fixed
# (properties never change), openai (router only); route: processor_state.id
my @processors;
my %processor;

sub add_processor
{
	my (%p) = @_;
	$p{route} //= "$answers:$p{id}";
	my $q = sub { defined $_[0] ? "'" . ($_[0] =~ s/'/''/gr) . "'" : 'NULL' };
	my $provider = exists $p{provider} ? $p{provider} : $tables_provider;
	my $proj = exists $p{project} ? $p{project} : $project;
	$node->safe_psql('postgres', "INSERT INTO processor (id, provider_id, project_id, status, properties) "
		  . "VALUES ('$p{id}', " . $q->($provider) . ', ' . $q->($proj) . ", 'CREATED', "
		  . $q->($p{properties}) . ");
		INSERT INTO processor_state (id, processor_id, state_id, direction, status)
		VALUES ('$p{route}', '$p{id}', '$answers', 'INPUT', 'CREATED')");
	push @processors, \%p;
	$processor{ $p{id} } = \%p;
	return \%p;
}

# a data table's name, as the writer makes it
sub table_of
{
	my ($id, $name) = @_;
	return $node->safe_psql('postgres',
		"SELECT format('ism_data.%I', ism_state.table_name('$id', \$t\$$name\$t\$))");
}

# --- tables made before the writer writes ------------------------------------------------
$node->safe_psql('postgres', q{
	CREATE TYPE ism_data.mood AS ENUM ('sad', 'ok', 'happy');
	CREATE DOMAIN ism_data.positive AS integer CHECK (VALUE > 0);
});
my %premade = (
	typed => q{(rid text, s text, i integer, b bigint, n numeric(12,4), v varchar(8), c char(3),
		ts timestamp, tz timestamptz, d date, j json, jb jsonb, u uuid, ai int[], at text[],
		m ism_data.mood, p ism_data.positive, nn text NOT NULL, df text NOT NULL DEFAULT 'dflt',
		dn integer DEFAULT 7, g bigint GENERATED ALWAYS AS (coalesce(i, 0)::bigint * 2) STORED)},
	rls => q{(rid text, s text, tenant text, n integer)},
	rls_granted => q{(rid text, s text, tenant text, n integer, _timestamp text)},
	parted => q{(rid text, s text, part text NOT NULL, n bigint) PARTITION BY LIST (part)},
	exact => q{(rid text, s text, b bigint, n numeric)});
for my $name (sort keys %premade)
{
	# exact: properties that never change, values that always fit
	my $p = add_processor(id => "rnd-$name", kind => $name eq 'exact' ? 'fixed' : 'premade',
		table_name => $name, expect_written => $name eq 'exact',
		properties => qq({"tableName": "$name", "batchSize": 5, "batchWindowTTL": 1}));
	my $t = $p->{table} = table_of($p->{id}, $name);
	$node->safe_psql('postgres', "CREATE TABLE $t $premade{$name}");
	my $owner = $name eq 'rls_granted' ? 'rnd_owner' : 'ism_worker';
	$node->safe_psql('postgres', "ALTER TABLE $t OWNER TO $owner");
}
my $rls = $processor{'rnd-rls'}{table};
my $rls_granted = $processor{'rnd-rls_granted'}{table};
my $parted = $processor{'rnd-parted'}{table};
$node->safe_psql('postgres', qq{
	ALTER TABLE $rls ENABLE ROW LEVEL SECURITY;
	ALTER TABLE $rls FORCE ROW LEVEL SECURITY;
	CREATE POLICY good_only ON $rls USING (true) WITH CHECK (tenant = 'good');
	ALTER TABLE $rls_granted ENABLE ROW LEVEL SECURITY;
	ALTER TABLE $rls_granted FORCE ROW LEVEL SECURITY;
	CREATE POLICY good_only ON $rls_granted USING (true) WITH CHECK (tenant = 'good');
	GRANT SELECT, INSERT ON $rls_granted TO ism_worker;
	CREATE TABLE ism_data.parted_a PARTITION OF $parted FOR VALUES IN ('a');
	CREATE TABLE ism_data.parted_b PARTITION OF $parted FOR VALUES IN ('b');
	ALTER TABLE ism_data.parted_a OWNER TO ism_worker;
	ALTER TABLE ism_data.parted_b OWNER TO ism_worker;
});

# --- tables the writer makes, and the catalog's NULLs --------------------------------
add_processor(id => "rnd-free$_", kind => 'free',
	properties => qq({"tableName": "free$_", "batchSize": 3, "batchWindowTTL": 1})) for 1 .. 3;
add_processor(id => 'rnd-nullprops', kind => 'fixed', properties => undef);
add_processor(id => 'rnd-noprovider', kind => 'fixed', provider => undef,
	properties => '{"tableName": "np", "batchSize": 2, "batchWindowTTL": 1}');
add_processor(id => 'rnd-noproject', kind => 'fixed', project => undef,
	properties => '{"tableName": "nj", "batchSize": 2, "batchWindowTTL": 1, "columnTypes": "infer"}');
add_processor(id => 'rnd-ai', kind => 'openai', provider => $openai_provider,
	properties => '{"concurrencyMode": "ROUTE_ID"}');
add_processor(id => 'rnd-ai-np', kind => 'openai', provider => $openai_provider, project => undef,
	properties => '{"concurrencyMode": "PROJECT_ID"}', scenario => 'router_null_project');
# a route whose processor_state has no processor, and one that does not exist
$node->safe_psql('postgres', "INSERT INTO processor_state (id, processor_id, state_id, direction, status) "
	  . "VALUES ('$answers:orphan', NULL, '$answers', 'INPUT', 'CREATED')");
my @dead_routes = ("$answers:orphan", 'rnd-no-such-route');

$node->restart;
wait_for_workers($node, "state = 'running' AND nats_state = 'connected'")
  or die 'the workers did not start as ism_worker';
$node->poll_query_until('postgres', 'SELECT count(*) = 7 FROM ism_state.route')
  or die 'the routes were not loaded';
sleep 2;
my $started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
my $log_start = -s $node->logfile;

# === random JSON, printed by hand (numbers as written, keys as chosen) ==============
# a value: undef (null), a string, or [kind, x]: num (text), bool, arr, obj
# (x: [key, value, key, value ...])

sub pick { return $_[ int rand @_ ]; }
sub chance { return rand() < $_[0]; }
sub num { return [ num => $_[0] ]; }
sub bool { return [ bool => $_[0] ]; }
sub arr { return [ arr => [@_] ]; }
sub obj { return [ obj => [@_] ]; }

sub json_string
{
	my ($s) = @_;
	my $escape_all = chance(0.3);	# \u escapes (surrogate pairs) instead of UTF-8
	my $out = '"';
	for my $ch (split //, $s)
	{
		my $c = ord $ch;
		if ($ch eq '"' || $ch eq '\\') { $out .= "\\$ch"; }
		elsif ($c < 0x20) { $out .= sprintf('\\u%04x', $c); }
		elsif ($c < 0x80 || !$escape_all) { $out .= $ch; }
		elsif ($c < 0x10000) { $out .= sprintf('\\u%04x', $c); }
		else
		{
			my $v = $c - 0x10000;
			$out .= sprintf('\\u%04x\\u%04x', 0xd800 + ($v >> 10), 0xdc00 + ($v & 0x3ff));
		}
	}
	return "$out\"";
}

sub json_text
{
	my ($v) = @_;
	return 'null' unless defined $v;
	return json_string($v) unless ref $v;
	my ($kind, $x) = @$v;
	return $x if $kind eq 'num';
	return $x ? 'true' : 'false' if $kind eq 'bool';
	return '[' . join(',', map { json_text($_) } @$x) . ']' if $kind eq 'arr';
	my @pairs;
	for (my $i = 0; $i < @$x; $i += 2)
	{
		push @pairs, json_string($x->[$i]) . ':' . json_text($x->[ $i + 1 ]);
	}
	return '{' . join(',', @pairs) . '}';
}

my @numbers = ('0', '-0', '42', '-17', '2147483647', '2147483648', '-2147483648',
	'9007199254740992', '9007199254740993', '9223372036854775807', '9223372036854775808',
	'-9223372036854775809', '123456789012345678901234567890', '0.1', '-2.5',
	'3.14159265358979323846264338327950288419716939937510', '1e10', '1.5E-7', '-2e+300',
	'1e308', '6.02214076e23', '0.000000000000000000000001', '1.0000000000000002', '100.000',
	'1e400', '-1E-400', '1.0', '12345678901234567890e-25');
my @strings = ('', 'plain', 'with space', "quote\"d", "back\\slash", "new\nline\ttab",
	"caf\x{e9}", "\x{4e2d}\x{6587}", "\x{1F600} astral \x{10348}", "\x{10FFFF}", 'x' x 1000,
	"'; DROP TABLE processor; --", '{"looks": "like json"}', '{1,2}', 'true', '12');

sub random_string { return chance(0.3) ? pick(@strings) . int(rand 1000) : pick(@strings); }

sub random_value
{
	my ($depth) = @_;
	$depth //= 0;
	my $r = rand;
	return undef if $r < 0.08;
	return bool(chance(0.5)) if $r < 0.16;
	return num(pick(@numbers)) if $r < 0.40;
	return num(int(rand 2000) - 1000) if $r < 0.50;
	return random_string() if $r < 0.75;
	return $depth > 3 ? obj() : arr(map { random_value($depth + 1) } 1 .. int rand 4) if $r < 0.85;
	return deep_value(1 + int rand 40) if $r < 0.90;
	return $depth > 3 ? obj()
	  : obj(map { (pick(@strings), random_value($depth + 1)) } 1 .. int rand 4);
}

sub deep_value
{
	my ($depth) = @_;
	my $v = num(1);
	$v = chance(0.5) ? arr($v) : obj(k => $v) for 1 .. $depth;
	return $v;
}

# === records ======================================================================

my $msg_no = 0;
my %exact;	# rid => [b, n] as sent, of the last random_records() for rnd-exact
my @sent;	# every message: {n, via, route, stream, seq, rids, s, expect, what, round}

# column generators of the typed table: [good values], [bad values]
my %typed_columns = (
	i => [ [ num(7), num('-2147483648'), '12', num('2147483647') ], [ num('2147483648'), num('1.5'), 'abc' ] ],
	b => [ [ num('9223372036854775807'), num(-5), '77' ], [ num('9223372036854775808'), num('1e300') ] ],
	n => [ [ num('12345678.1234'), num('0.00005'), num('1e3'), '-1.5' ], [ num('1e20'), 'many' ] ],
	v => [ [ 'short', "\x{1F600}x", '' ], [ 'too long for eight' ] ],
	c => [ [ 'ab', 'xyz' ], [ 'abcd' ] ],
	ts => [ [ '2026-11-30 12:34:56.789', '1999-01-08 04:05:06' ], [ '2026-13-01 00:00', 'not a time' ] ],
	tz => [ [ '2026-11-30T12:00:00Z', 'epoch', 'infinity' ], [ 'half past' ] ],
	d => [ [ '2026-02-28', '2000-02-29' ], [ '2026-02-30' ] ],
	j => [ [ obj(a => num(1)), arr(num('123456789012345678901234567890')), num(3), bool(1) ], [ '{broken' ] ],
	jb => [ [ obj(deep => deep_value(20)), arr(), obj(), num('1.0000000000000002') ], [ '[1,' ] ],
	u => [ [ 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A12}' ], [ 'not-a-uuid' ] ],
	ai => [ [ '{1,2,3}', '{}' ], [ arr(num(1), num(2)), '{a}' ] ],
	at => [ [ '{a,"b c",NULL}', "{\x{e9}}" ], [ 'x' ] ],
	m => [ [ 'sad', 'ok', 'happy' ], [ 'angry', 'OK' ] ],
	p => [ [ num(1), num(99) ], [ num(0), num(-3) ] ],
	nn => [ [ 'present' ], [ undef ] ],
	df => [ [ 'given' ], [ undef ] ],
	dn => [ [ num(8) ], [ 'eight' ] ],
	g => [ [], [ num(1) ] ],	# generated: good when absent
);
my @odd_keys = ('a', 'A', 'Name', 'name', 'NAME', 'with space', 'quote"key', 'back\\slash', '',
	'k' x 70, "\x{fc}n\x{ef}c\x{f8}d\x{e9}", "\x{1F600}key", "x; DROP TABLE state; --", 'num', 'obj',
	'deep', 'TABLE', 'select', ' lead', 'trail ', 'ro~0123456789ab');

# values rnd-exact's bigint and numeric columns must hold as sent; beyond
# 2^53 and 17 digits only with the big_numbers scenario
my @exact_bigints = ('9007199254740992', '-9007199254740991', '0', '-1', '123456789');
my @exact_numerics = ('0.1', '-0.000000000000000000001', '1e-30', '2.5E+40', '100.000', '3.25');
if ($scenario{big_numbers})
{
	push @exact_bigints, '9223372036854775807', '-9223372036854775808', '9007199254740993',
	  '1234567890123456789';
	push @exact_numerics, '3.14159265358979323846264338327950288',
	  '123456789012345678901234567890.123456789';
}

# the fields of one record for a processor (besides rid and s)
sub record_fields
{
	my ($p) = @_;
	my @f;
	my $kind = $p->{table_name} // '';
	if ($kind eq 'typed')
	{
		my $bad = chance(0.2) ? pick(sort keys %typed_columns) : '';
		for my $col (sort keys %typed_columns)
		{
			my ($good, $wrong) = @{ $typed_columns{$col} };
			if ($col eq $bad) { push @f, $col, pick(@$wrong); next; }
			next if !@$good || ($col ne 'nn' && chance(0.3));	# absent: NULL or the default
			push @f, $col, pick(@$good);
		}
	}
	elsif ($kind =~ /^rls/)
	{
		push @f, tenant => (chance(0.8) ? 'good' : pick('evil', undef, 'GOOD'));
		push @f, n => num(int rand 100) if chance(0.7);
	}
	elsif ($kind eq 'exact')
	{
		push @f, b => num(pick(@exact_bigints)) if chance(0.9);
		push @f, n => num(pick(@exact_numerics)) if chance(0.9);
		return @f;
	}
	elsif ($kind eq 'parted')
	{
		push @f, part => (chance(0.9) ? pick('a', 'b') : pick('c', undef));
		push @f, n => num(pick('1', '9223372036854775807', '-42')) if chance(0.8);
	}
	else
	{
		push @f, pick(@odd_keys), random_value() for 1 .. int rand 6;
	}
	# now and then a key no table has yet
	push @f, pick(@odd_keys), random_value() if $kind && chance(0.05);
	return @f;
}

# one message's records: objects with a unique rid and a string s, some nulls
sub random_records
{
	my ($p, $m) = @_;
	my (@records, @rids, %s);
	%exact = ();
	my $count = pick(0, 1, 1, 1, 2, 3, 5, 8);
	for my $k (1 .. $count)
	{
		if (chance(0.05)) { push @records, undef; next; }
		my $rid = sprintf('m%06dr%02d', $m, $k);
		my $s = chance(0.1) ? undef : random_string();
		my @fields = (rid => $rid, s => $s, record_fields($p));
		push @records, obj(@fields);
		if ($p->{expect_written})
		{
			my %f = @fields;
			$exact{$rid} = [ map { defined $f{$_} ? $f{$_}[1] : undef } qw(b n) ];
		}
		push @rids, $rid;
		$s{$rid} = $s;
	}
	return (\@records, \@rids, \%s);
}

# === sending ======================================================================

sub publish
{
	my ($subject, $body) = @_;
	my ($rc, $out, $err) = nats_client($url, '-t', '15000', 'js-pub', $subject, \$body);
	return $out =~ /seq=(\d+)/ ? $1 : undef if $rc == 0;
	note "js-pub failed: $err";
	return undef;
}

sub send_message
{
	my ($round, $p, %opt) = @_;
	my $m = ++$msg_no;
	my ($records, $rids, $s) = random_records($p, $m);
	my $expect = 'any';
	my $route = $opt{route} // $p->{route};
	my @top;
	if ($opt{bad_record})
	{
		push @$records, pick(num(1), 'text', arr(), bool(0));
		$expect = 'dead';
	}
	if ($opt{nul} && @$rids)
	{
		# a \u0000 to store, which text cannot hold: refused, never cut
		my ($last) = grep { defined } reverse @$records;
		push @{ $last->[1] }, 'nul', "a\x{0}b";
		$expect = 'dead';
	}
	$expect = 'dead' if grep { $_ eq $route } @dead_routes;
	$expect = 'written' if $expect eq 'any' && $p->{expect_written};
	my $via = $opt{via} // 'writer';
	if ($via eq 'router' && !@$rids)
	{
		# a dead letter of the forwarded message is found by its first rid
		my $rid = sprintf('m%06dr99', $m);
		push @$records, obj(rid => $rid, s => 'forwarded');
		push @$rids, $rid;
		$s->{$rid} = 'forwarded';
	}
	my $body;
	if ($via eq 'writer')
	{
		my $qs = @$records || chance(0.7) ? arr(@$records) : pick(undef, 'absent');
		@top = (route_id => $route);
		push @top, query_state => $qs unless defined $qs && !ref $qs;
	}
	else
	{
		@top = (type => 'query_state_entry', route_id => $route, query_state => arr(@$records));
	}
	push @top, context => obj(k => random_string()) if chance(0.1);
	$body = encode_utf8(json_text(obj(@top)));
	my $subject = $via eq 'writer' ? $writer_subject : $router_subject;
	my $seq = publish($subject, $body);
	my $what = sprintf('%s route=%s records=%d%s', $via, $route, scalar @$records,
		$expect eq 'dead' ? ' (must be dead)' : '');
	note "round $round: message $m ($what) seq=" . ($seq // 'unknown') . ': '
	  . substr($body, 0, 300);
	push @sent, { n => $m, via => $via, route => $route, p => $p->{id},
		stream => $via eq 'writer' ? $writer_stream : $router_stream, seq => $seq,
		rids => $rids, s => $s, expect => $expect, exact => {%exact}, what => $what, round => $round };
	return;
}

# === properties ==================================================================

sub random_properties
{
	my ($p) = @_;
	my $bad = $scenario{bad_properties} && chance(0.08);
	my $huge = $scenario{huge_properties} && chance(0.1);
	my @f;
	if ($p->{kind} eq 'premade')
	{
		push @f, tableName => $p->{table_name};
	}
	else
	{
		push @f, tableName => pick('free', 'other', undef, '', 'T' x 70, "\x{fc}n\x{ef} \x{1F600} name",
			'x"; DROP TABLE processor; --') if chance(0.9);
	}
	push @f, batchSize => num(pick(1, 2, 5, 10, 50)) if chance(0.8);
	push @f, batchWindowTTL => num(pick(0, 1, 1, 2, 3)) if chance(0.8);
	push @f, includeTimestamp => pick(bool(1), bool(0), undef) if chance(0.6);
	my @types = ('text', undef);
	push @types, 'infer' if $p->{kind} ne 'premade' || $scenario{infer_premade};
	push @f, columnTypes => pick(@types) if chance(0.7);
	push @f, indexColumns => pick(arr(), arr('rid'), arr('rid', 's'), arr('nonexistent'), undef)
	  if chance(0.3);
	if ($huge)
	{
		push @f, pick(
			[ batchSize => num('2147483647') ], [ batchWindowTTL => num('2147483647') ],
			[ batchWindowTTL => num('2147484') ], [ batchSize => undef ],
			[ batchWindowTTL => undef ], [ batchSize => num(0) ])->@*;
	}
	if ($bad)
	{
		push @f, pick(
			[ batchSize => num('1e300') ], [ batchSize => num(-1) ], [ batchSize => '10' ],
			[ batchSize => num('1.5') ], [ batchWindowTTL => num(-1) ],
			[ batchWindowTTL => num('1e300') ], [ batchWindowTTL => '15' ],
			[ includeTimestamp => 'yes' ], [ columnTypes => 'bogus' ], [ columnTypes => num(1) ],
			[ indexColumns => 'rid' ], [ indexColumns => arr(num(1)) ], [ tableName => num(1) ],
			[ tableName => arr() ])->@*;
	}
	# a key given again replaces the earlier value (jsonb would keep the last anyway)
	my (@keys, %value);
	for (my $i = 0; $i < @f; $i += 2)
	{
		push @keys, $f[$i] unless exists $value{ $f[$i] };
		$value{ $f[$i] } = $f[ $i + 1 ];
	}
	return json_text(obj(map { ($_ => $value{$_}) } @keys));
}

# a failure to reach the server (a crash-restart in progress) is noted, not
# fatal; so is a lock this test holds itself (LOCK TABLE public.processor)
sub try_sql
{
	my ($sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', "SET lock_timeout = '3s';\n$sql");
	note "SQL failed ($sql): $err" if $rc;
	return $rc == 0 ? $out : undef;
}

sub set_properties_of
{
	my ($round, $p, $json) = @_;
	my $lit = encode_utf8($json) =~ s/'/''/gr;
	note "round $round: properties of $p->{id}: $json";
	try_sql("UPDATE processor SET properties = '$lit' WHERE id = '$p->{id}'");
	return;
}

# === interference ==================================================================

my %lock;	# psql => background session, table, until_round, since
my @cancelled;	# [pid, role, round]
my %terminated;	# pids this test ended
my @failures;	# [invariant, message]

sub fail_invariant
{
	my ($invariant, $message) = @_;
	push @failures, [ $invariant, $message ];
	return;
}

sub worker_list
{
	my $rows = try_sql("SELECT pid, role || coalesce(' ' || nullif(worker, 0), '') "
		  . "FROM ism_state.pg_stat_ism_worker WHERE pid IS NOT NULL ORDER BY worker") // '';
	return map { [ split /\|/ ] } split /\n/, $rows;
}

sub release_lock
{
	return unless $lock{psql};
	eval { $lock{psql}->query_safe('COMMIT'); $lock{psql}->quit; 1 }
	  or note "releasing the lock: $@";
	note "lock on $lock{table} released after " . sprintf('%.1f', time - $lock{since}) . ' s';
	%lock = ();
	return;
}

sub interfere
{
	my ($round) = @_;
	my %weight = (lock => 4, cancel => 3, terminate => 1, nats_restart => 1);
	$weight{$_} = 0 for grep { !$scenario{$_} } keys %weight;
	my $total = 0;
	$total += $_ for values %weight;
	return if $total == 0;
	my $r = rand $total;
	my $what;
	for my $k (sort keys %weight)
	{
		$what = $k, last if ($r -= $weight{$k}) < 0;
	}
	my $victim_index = rand;	# drawn whatever the choice, so that later rounds do not depend on it
	my $hold = 1 + int rand 4;
	my $signal = pick('TERM', 'KILL');
	my $down = rand 2;
	my $table = pick((map { $_->{table} } grep { $_->{kind} eq 'premade' } @processors),
		'ism_state.applied', 'ism_state.dead_letter', 'public.processor');

	if ($what eq 'lock')
	{
		return if $lock{psql};
		my $psql = eval { $node->background_psql('postgres', on_error_stop => 0) };
		return note "no session for the lock: $@" unless $psql;
		$psql->query("SET lock_timeout = '5s'; BEGIN; LOCK TABLE $table IN ACCESS EXCLUSIVE MODE");
		%lock = (psql => $psql, table => $table, until_round => $round + $hold, since => time);
		note "round $round: LOCK TABLE $table for $hold rounds";
	}
	elsif ($what eq 'cancel' || $what eq 'terminate')
	{
		my @w = worker_list();
		return unless @w;
		my ($pid, $role) = @{ $w[ int($victim_index * @w) ] };
		my $f = $what eq 'cancel' ? 'pg_cancel_backend' : 'pg_terminate_backend';
		note "round $round: $f($pid) of the $role";
		try_sql("SELECT $f($pid)");
		push @cancelled, [ $pid, $role, $round ] if $what eq 'cancel';
		$terminated{$pid} = 1 if $what eq 'terminate';
	}
	else
	{
		note "round $round: nats-server stopped ($signal), down for "
		  . sprintf('%.1f', $down) . ' s';
		$nats->stop($signal);
		sleep $down;
		$nats->start;
		wait_for_jetstream();
	}
	return;
}

# until the stream answers (JetStream recovers its store after a start)
sub wait_for_jetstream
{
	for (1 .. 120)
	{
		my ($rc) = nats_client($url, 'stream-info', $writer_stream);
		return 1 if $rc == 0;
		sleep 0.25;
	}
	die 'JetStream did not come back after the nats-server restart';
}

# invariant 5: a worker this test cancelled did not exit because of it
# (its ERROR, then its exit, in the server log)
sub check_cancelled
{
	my ($log) = @_;
	for my $c (@cancelled)
	{
		my ($pid, $role, $round) = @$c;
		next if $terminated{$pid};
		fail_invariant(5, "the $role (pid $pid) exited after pg_cancel_backend() in round $round")
		  if $log =~ /\[$pid\] ERROR:  canceling statement due to user request/
		  && $log =~ /\(PID $pid\) exited with exit code 1/;
	}
	return;
}

# === the rounds ===================================================================

my @writable = grep { $_->{kind} ne 'openai' } @processors;
my @openai = grep { $_->{kind} eq 'openai' && (!$_->{scenario} || $scenario{ $_->{scenario} }) }
  @processors;
my $deadline = time + $seconds;
my $round = 0;
while (time < $deadline)
{
	$round++;
	release_lock() if $lock{psql} && ($round >= $lock{until_round} || time - $lock{since} > 6);

	if (chance(0.3))
	{
		my @changeable = grep { $_->{kind} =~ /^(premade|free)$/ } @processors;
		my $p = pick(@changeable);
		set_properties_of($round, $p, random_properties($p));
	}
	if (chance(0.1) && @openai)
	{
		my $p = pick(@openai);
		set_properties_of($round, $p, json_text(obj(concurrencyMode =>
			pick('PROJECT_ID', 'USER_ID', 'ROUTE_ID', 'project_id', undef, 'EXPRESSION',
				'project-id', 'user-id', 'route-id', 'expression'),
			concurrencyExpression => pick("data['s'] + str(1)",
				"data.get('user_id') or context.get('session_id')"))));
	}
	for (1 .. 1 + int rand 6)
	{
		my $r = rand;
		if ($r < 0.04)
		{
			send_message($round, pick(@writable), route => pick(@dead_routes),
				via => $scenario{router} && chance(0.3) ? 'router' : 'writer');
		}
		elsif ($r < 0.07) { send_message($round, pick(@writable), bad_record => 1); }
		elsif ($r < 0.09) { send_message($round, pick(@writable), nul => 1); }
		elsif ($r < 0.22 && $scenario{router})
		{
			my $p = chance(0.3) && @openai ? pick(@openai) : pick(@writable);
			send_message($round, $p, via => $p->{kind} eq 'openai' ? 'openai' : 'router');
		}
		else { send_message($round, pick(@writable)); }
	}
	interfere($round) if chance(0.15);
	sleep rand 0.5;
}
release_lock();
note "$round rounds, $msg_no messages";

# === draining ====================================================================

# the server may be restarting after a crash: wait for it
$node->poll_query_until('postgres', 'SELECT true') or die 'the server does not answer';

# sane properties everywhere: a batch waiting for a long window, or for a
# size it will never reach, sees the change and is written
for my $p (grep { $_->{kind} =~ /^(premade|free)$/ } @processors)
{
	set_properties_of('end', $p, json_text(obj(
		$p->{kind} eq 'premade' ? (tableName => $p->{table_name}) : (),
		batchSize => num(1), batchWindowTTL => num(0))));
}
sleep 2.5;

# what was sent, and the records' s, in tables of their own; rnd.outcome
# says what became of each message
sub create_outcome_tables
{
	$node->safe_psql('postgres', q{
	CREATE SCHEMA rnd;
	CREATE TABLE rnd.sent (n int PRIMARY KEY, via text, route text, stream text, seq bigint,
		rids text[], expect text, what text, round text);
	CREATE TABLE rnd.record (rid text PRIMARY KEY, n int, s text, exact_b text, exact_n text);
	-- every row of a data table with a rid: (rid, table, s)
	CREATE FUNCTION rnd.rows() RETURNS TABLE (rid text, tbl text, s text) LANGUAGE plpgsql AS $f$
	DECLARE
		t record;
	BEGIN
		FOR t IN SELECT c.oid::regclass AS rel,
				EXISTS (SELECT FROM pg_attribute WHERE attrelid = c.oid AND attname = 's'
						AND NOT attisdropped) AS has_s
			FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
			WHERE s.nspname = 'ism_data' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
			  AND EXISTS (SELECT FROM pg_attribute WHERE attrelid = c.oid AND attname = 'rid'
						  AND NOT attisdropped)
		LOOP
			RETURN QUERY EXECUTE format('SELECT rid::text, %L, %s FROM %s WHERE rid IS NOT NULL',
				t.rel::text, CASE WHEN t.has_s THEN 's::text' ELSE 'NULL::text' END, t.rel);
		END LOOP;
	END $f$;
	});
	return;
}

sub sql_text
{
	my ($v) = @_;
	return 'NULL' unless defined $v;
	return "'" . (encode_utf8($v) =~ s/'/''/gr) . "'";
}
sub store_sent_messages
{
	for (my $i = 0; $i < @sent; $i += 200)
	{
		my @chunk = @sent[ $i .. ($i + 199 < $#sent ? $i + 199 : $#sent) ];
		my @messages = map {
			my $m = $_;
			'(' . join(', ', $m->{n}, (map { sql_text($_) } @$m{qw(via route stream)}),
				$m->{seq} // 'NULL',
				'ARRAY[' . join(',', map { sql_text($_) } @{ $m->{rids} }) . ']::text[]',
				map { sql_text($_) } @$m{qw(expect what round)}) . ')'
		} @chunk;
		my @records = map {
			my $m = $_;
			map {
				'(' . join(', ', sql_text($_), $m->{n}, sql_text($m->{s}{$_}),
					map { sql_text($_) } @{ $m->{exact}{$_} // [ undef, undef ] }) . ')'
			} @{ $m->{rids} }
		} @chunk;
		my $sql = 'INSERT INTO rnd.sent VALUES ' . join(",\n", @messages) . ";\n";
		$sql .= 'INSERT INTO rnd.record VALUES ' . join(",\n", @records) . ";\n" if @records;
		$node->safe_psql('postgres', $sql);
	}
	return;
}

sub create_outcome_view
{
	$node->safe_psql('postgres', q{
	CREATE VIEW rnd.outcome AS
	WITH rows AS MATERIALIZED (SELECT * FROM rnd.rows()),
	per_rid AS (SELECT rid, count(*) AS copies, min(tbl) AS tbl, count(DISTINCT tbl) AS tables,
					bool_and(r.s IS NOT DISTINCT FROM x.s) AS same_s
				FROM rows r JOIN rnd.record x USING (rid) GROUP BY rid),
	dead AS (SELECT s.n, count(d.id) AS dead, string_agg(DISTINCT d.error, ' | ') AS errors
			 FROM rnd.sent s JOIN ism_state.dead_letter d
			   ON (d.stream = s.stream AND d.stream_seq = s.seq)
			   OR (s.via = 'router' AND d.stream = 'data_transformers_state_tables'
				   AND position(convert_to(s.rids[1], 'UTF8') IN d.payload) > 0)
			 GROUP BY s.n)
	SELECT s.*, cardinality(s.rids) AS nrids,
		coalesce(d.dead, 0) AS dead, d.errors,
		(SELECT count(*) FROM per_rid p WHERE p.rid = ANY (s.rids)) AS found,
		(SELECT coalesce(max(copies), 0) FROM per_rid p WHERE p.rid = ANY (s.rids)) AS copies,
		(SELECT count(DISTINCT tbl) FROM per_rid p WHERE p.rid = ANY (s.rids)) AS tables,
		(SELECT string_agg(DISTINCT tbl, ',') FROM per_rid p WHERE p.rid = ANY (s.rids)) AS tbl,
		(SELECT coalesce(bool_and(same_s), true) FROM per_rid p WHERE p.rid = ANY (s.rids)) AS same_s
	FROM rnd.sent s LEFT JOIN dead d USING (n);
	});
	return;
}

create_outcome_tables();
store_sent_messages();
create_outcome_view();
my $unresolved = "FROM rnd.outcome WHERE seq IS NOT NULL AND via <> 'openai' "
  . "AND dead = 0 AND found < nrids";

# until nothing is unresolved, at most $limit seconds; errors count as not yet
sub wait_resolved
{
	my ($limit) = @_;
	my $until = time + $limit;
	while (time < $until)
	{
		my $n = try_sql("SELECT count(*) $unresolved");
		return 1 if defined $n && $n eq '0';
		sleep 1;
	}
	return 0;
}

# first on their own (timers, redeliveries), then with every writer asked to
# stop, which flushes what it holds (a batch may legitimately wait for ever)
my $drained = wait_resolved(45);
if (!$drained)
{
	note 'unresolved before the writers were stopped: messages '
	  . $node->safe_psql('postgres', "SELECT string_agg(n::text, ',') $unresolved");
	try_sql("SELECT pg_terminate_backend(pid) FROM ism_state.pg_stat_ism_worker WHERE role = 'writer'");
	$drained = wait_resolved(90);
}
ok($drained, 'every message was written or dead-lettered in the end');

sub consumer_idle
{
	my ($stream, $consumer) = @_;
	my ($rc, $info) = nats_client($url, 'consumer-info', $stream, $consumer);
	return $rc == 0 && $info =~ /^num_pending=0$/m && $info =~ /^num_ack_pending=0$/m;
}
for (1 .. 30)
{
	last if consumer_idle($writer_stream, 'state_tables_workers')
	  && consumer_idle($router_stream, "${router_stream}_sub_1");
	sleep 1;
}
sleep 3;	# a duplicate would show now

# === the invariants ===============================================================

# 1. no crash
my $log = substr(slurp_file($node->logfile), $log_start);
my @crashes = $log =~ /^.*(?:terminated by signal|server process .* was terminated|all server processes terminated; reinitializing).*$/mg;
is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started,
	'1. the postmaster was not restarted');
is(scalar @crashes, 0, '1. no backend crashed (server log)')
  or diag "seed $seed: " . join("\n", @crashes[ 0 .. ($#crashes < 9 ? $#crashes : 9) ]);

# 2. every message once: in its table or a dead letter
sub report_rows
{
	my ($label, $where) = @_;
	my $rows = $node->safe_psql('postgres',
		"SELECT format('message %s (round %s, %s, seq %s): dead=%s found=%s/%s copies=%s tables=%s %s%s',"
		  . " n, round, what, seq, dead, found, nrids, copies, tables, coalesce(tbl, ''),"
		  . " coalesce(' error: ' || left(errors, 200), ''))"
		  . " FROM rnd.outcome WHERE $where ORDER BY n LIMIT 15");
	my $count = $node->safe_psql('postgres', "SELECT count(*) FROM rnd.outcome WHERE $where");
	is($count, '0', $label) or diag "$replay\n$rows";
	return;
}
my $direct = "seq IS NOT NULL AND via <> 'openai'";
report_rows('2. no message is both written and dead-lettered',
	"$direct AND dead > 0 AND found > 0");
report_rows('2. no message is neither written nor dead-lettered', "$direct AND dead = 0 AND found < nrids");
report_rows('2. no message is partly written', "$direct AND found > 0 AND found < nrids");
report_rows('2. no record is written twice, no message into two tables',
	"$direct AND (copies > 1 OR tables > 1)");
report_rows('2. no message is dead-lettered twice', 'seq IS NOT NULL AND dead > 1');
report_rows("2. every record's s is written unchanged", "$direct AND found > 0 AND NOT same_s");
report_rows('2. messages that cannot be written are dead letters',
	"seq IS NOT NULL AND expect = 'dead' AND dead <> 1");
report_rows('2. messages that can be written are written',
	"seq IS NOT NULL AND expect = 'written' AND (dead > 0 OR found < nrids)");
my $exact = $processor{'rnd-exact'}{table};
is($node->safe_psql('postgres', "SELECT count(*) || coalesce(': ' || string_agg(format('%s b=%s (sent %s) n=%s (sent %s)',"
		  . " rid, e.b, r.exact_b, e.n, r.exact_n), '; '), '') FROM $exact e JOIN rnd.record r USING (rid)"
		  . " WHERE e.b::text IS DISTINCT FROM r.exact_b::numeric::text OR e.n IS DISTINCT FROM r.exact_n::numeric"),
	'0', '2. numbers keep every digit (bigint and numeric columns)') or diag $replay;
report_rows('2. every dead letter says why', "dead > 0 AND coalesce(errors, '') = ''");
my $orphans = $node->safe_psql('postgres', q{
	SELECT count(*) || coalesce(': ' || string_agg(left(stream || '/' || stream_seq || ' ' || error, 150), '; '), '')
	FROM ism_state.dead_letter d
	WHERE NOT EXISTS (SELECT FROM rnd.sent s WHERE (d.stream = s.stream AND d.stream_seq = s.seq)
		OR (s.via = 'router' AND d.stream = 'data_transformers_state_tables'
			AND position(convert_to(s.rids[1], 'UTF8') IN d.payload) > 0))});
like($orphans, qr/^0/, '2. no dead letter of a message not sent') or diag $replay;
is(scalar(grep { !defined $_->{seq} } @sent), 0, 'every message was published (js-pub acked)');

# 3. no passing error in a dead letter
report_rows('3. no dead letter for a passing reason', "errors ~* '$passing'");

# 4. the workers run
ok(wait_for_workers($node, "state = 'running'"), '4. the workers run at the end')
  or diag $node->safe_psql('postgres', 'SELECT * FROM ism_state.pg_stat_ism_worker');

# 5. cancel
check_cancelled($log);
my @cancel_failures = map { $_->[1] } grep { $_->[0] == 5 } @failures;
is(scalar @cancel_failures, 0, '5. pg_cancel_backend() never ended a worker')
  or diag "$replay\n" . join("\n", @cancel_failures);

# 6. row-level security
for my $t ($rls, $rls_granted)
{
	is($node->safe_psql('postgres',
			"SELECT count(*) || coalesce(': ' || string_agg(rid || '=' || coalesce(tenant, 'NULL'), ', '), '')"
			  . " FROM $t WHERE tenant IS DISTINCT FROM 'good'"),
		'0', "6. no row of $t breaks its policy") or diag $replay;
}

# 7. the router forwarded what it did not dead-letter
my ($routed) = $node->safe_psql('postgres',
	"SELECT count(*) FROM rnd.outcome WHERE via = 'openai' AND seq IS NOT NULL AND dead = 0");
my (undef, $info) = nats_client($url, 'stream-info', $openai_stream);
my ($in_stream) = ($info // '') =~ /^messages=(\d+)$/m;
is($in_stream // 0, $routed, '7. each message the router did not dead-letter is in its target stream')
  or diag $replay;

note 'outcomes: ' . $node->safe_psql('postgres',
	"SELECT string_agg(k || '=' || c, ', ') FROM (SELECT CASE WHEN dead > 0 THEN 'dead' "
	  . "WHEN found = nrids AND nrids > 0 THEN 'written' ELSE 'other' END AS k, count(*) AS c "
	  . "FROM rnd.outcome GROUP BY 1) x");
note 'dead letter reasons: ' . $node->safe_psql('postgres',
	"SELECT string_agg(DISTINCT regexp_replace(left(error, 120), '[0-9]+', 'N', 'g'), ' | ') FROM ism_state.dead_letter");
diag "seed $seed: $round rounds, $msg_no messages" if @failures || !Test::More->builder->is_passing;

$node->stop('fast');
done_testing();

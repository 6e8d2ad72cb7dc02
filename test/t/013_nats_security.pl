# NATS security against real nats-servers: a token; TLS with a CA the test
# makes (server certificate checked); mutual TLS (a client certificate
# required); a credentials file (user JWT and nkey seed) against a server
# in operator mode, with the operator, accounts and users made by
# test/lib/nats_jwt.py.  Wrong credentials or an untrusted server show as a
# clear error in pg_stat_ism_worker, with the workers retrying, never
# restarting.  (User and password are in 003_settings.pl.)
use strict;
use warnings;

use HTTP::Tiny;
use IPC::Run;
use IsmTest;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

my $dir = "${PostgreSQL::Test::Utils::tmp_check}/pki";
mkdir $dir;

sub openssl
{
	my @args = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'openssl', @args ], '<', \undef, '>', \$out, '2>', \$err)
	  or die "openssl @args: $err";
}

# a CA, a server certificate for 127.0.0.1, a client certificate; and a
# second CA that signed nothing here
sub make_ca
{
	my ($name) = @_;
	openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
		'-subj', "/CN=ism_state test $name", '-keyout', "$dir/$name.key",
		'-out', "$dir/$name.pem");
}

sub make_cert
{
	my ($name, $ca, $ext) = @_;
	openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', "/CN=$name",
		'-keyout', "$dir/$name.key", '-out', "$dir/$name.csr");
	append_to_file("$dir/$name.ext", $ext);
	openssl('x509', '-req', '-in', "$dir/$name.csr", '-CA', "$dir/$ca.pem",
		'-CAkey', "$dir/$ca.key", '-CAcreateserial', '-days', '2',
		'-extfile', "$dir/$name.ext", '-out', "$dir/$name.pem");
}
make_ca('ca');
make_ca('other-ca');
make_cert('server', 'ca', "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n");
make_cert('client', 'ca', "extendedKeyUsage = clientAuth\n");

sub connected
{
	my ($node, $what) = @_;
	wait_for_workers($node, "state = 'running' AND nats_state = 'connected'")
	  or die "$what: not connected";
	pass("$what: connected");
}

# the workers report an error matching $pattern (a regular expression)
# after $since
sub refused
{
	my ($node, $since, $pattern, $what) = @_;
	my $quoted = $pattern =~ s/'/''/gr;
	wait_for_workers($node,
		"state = 'connecting' AND last_error_at > '$since' AND last_error ~* '$quoted'")
	  or die "$what: no error matching $pattern: "
	  . $node->safe_psql('postgres', 'SELECT last_error FROM ism_state.pg_stat_ism_worker');
	my $pids = worker_pids($node);
	sleep 2;
	is_deeply(worker_pids($node), $pids, "$what: a clear error, the workers retry, no restart");
}

# change settings; returns the time just before
sub set_conf
{
	my ($node, %settings) = @_;
	my $now = $node->safe_psql('postgres', 'SELECT now()');
	$node->safe_psql('postgres', join '; ',
		map { "ALTER SYSTEM SET ism_state.$_ = '$settings{$_}'" } sort keys %settings);
	$node->reload;
	return $now;
}

# --- a token ------------------------------------------------------------------------------
my $token_nats = IsmTest::Nats->new('token', conf => 'authorization { token: "t0ken-s3cret" }')->start;
my $node = new_ism_node('security', $token_nats->url, "log_statement = none\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION ism_state');
refused($node, '-infinity', 'Authorization Violation', 'no token');
my $since = set_conf($node, nats_token => 'not-the-token');
refused($node, $since, 'Authorization Violation', 'a wrong token');
set_conf($node, nats_token => 't0ken-s3cret');
connected($node, 'the right token');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET ism_state.nats_token');

# --- TLS: the server's certificate is checked against ism_state.nats_tls_ca ---------------
my $tls_nats = IsmTest::Nats->new('tls', conf => qq{tls {
  cert_file: "$dir/server.pem"
  key_file: "$dir/server.key"
}})->start;
my $tls_url = 'tls://127.0.0.1:' . $tls_nats->port;
$since = set_conf($node, nats_url => $tls_url, nats_tls_ca => "$dir/other-ca.pem");
refused($node, $since, 'SSL handshake error.*unable to get local issuer certificate',
	'a server certificate from an unknown CA');
set_conf($node, nats_tls_ca => "$dir/ca.pem");
connected($node, 'TLS with the right CA');

# --- mutual TLS: the server wants a client certificate ---------------------------------
my $mtls_nats = IsmTest::Nats->new('mtls', conf => qq{tls {
  cert_file: "$dir/server.pem"
  key_file: "$dir/server.key"
  ca_file: "$dir/ca.pem"
  verify: true
}})->start;
$since = set_conf($node, nats_url => 'tls://127.0.0.1:' . $mtls_nats->port);
refused($node, $since, 'does it require a client certificate', 'no client certificate');
set_conf($node, nats_tls_cert => "$dir/client.pem", nats_tls_key => "$dir/client.key");
connected($node, 'mutual TLS with a client certificate');

$node->stop('fast');
unlike(slurp_file($node->logfile) =~ s/^.*parameter "ism_state\.\w+" changed to .*$//mgr,
	qr/t0ken-s3cret/, 'the token never reaches the log from ism_state');

# --- a credentials file: operator mode ------------------------------------------------
# An operator, its system account, an account APP with JetStream and its
# user "ism_state" (user.creds), and a user of an account the server does
# not know (stranger.creds).
my $jwt_dir = "${PostgreSQL::Test::Utils::tmp_check}/jwt";
my ($keys_json, $jwt_err) = ('', '');
IPC::Run::run([ 'python3', ($ENV{TESTDIR} // '.') . '/test/lib/nats_jwt.py', $jwt_dir ],
	'<', \undef, '>', \$keys_json, '2>', \$jwt_err)
  or die "nats_jwt.py: $jwt_err";
my $keys = decode_json($keys_json);
my $creds = "$jwt_dir/user.creds";

# the workers connect with the credentials file, as its user, in its account
my ($cnats, $cnode) = start_example_stack('creds', "log_statement = none\n"
	  . "ism_state.nats_creds_file = '$creds'\n", slurp_file("$jwt_dir/server.conf"));
my $url = $cnats->url;
pass('the right credentials file: the workers connect and consume');
my ($rc, $out, $err) = nats_client($url, 'pub', 'x', 'y');
is($rc, 1, 'the server is in operator mode: a client without credentials is refused');
like($err, qr/^ism-nats: connect: Authentication Violation$/m, '... as an authentication violation');
my $connz = HTTP::Tiny->new(timeout => 5)->get(
	"http://127.0.0.1:$cnats->{http_port}/connz?auth=1&acc=$keys->{accounts}{APP}");
die "connz: $connz->{status}" unless $connz->{success};
is_deeply(
	[ map { "$_->{name} $_->{authorized_user} $_->{account}" }
		sort { $a->{name} cmp $b->{name} } @{ decode_json($connz->{content})->{connections} } ],
	[ map { "ism_state $_ [postgres] $keys->{users}{ism_state} $keys->{accounts}{APP}" }
		  ('router', 'writer 1') ],
	'nats-server sees the workers as the user of the file, in its account');

# a message goes through both workers: the router routes it, the writer
# writes its records
my $tables = '3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10';
my $r2 = "e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:$tables";
sub route_entries
{
	my (@questions) = @_;
	my $body = JSON::PP->new->canonical->encode({ type => 'query_state_entry', route_id => $r2,
		query_state => [ map { { question => $_ } } @questions ] });
	my ($rc, $out, $err) = nats_client($url, '--creds', $creds, 'js-pub',
		'processor.state.router', \$body);
	die "js-pub: $err" if $rc;
}
sub answers
{
	return $cnode->safe_psql('postgres',
		"SELECT string_agg(question, ',' ORDER BY question) FROM \"${tables}_answers\"");
}
route_entries('creds-1', 'creds-2');
$cnode->poll_query_until('postgres', "SELECT count(*) = 2 FROM \"${tables}_answers\"")
  or die 'no rows';
is(answers(), 'creds-1,creds-2', 'a message flows: routed and written with the credentials file');

# wrong credentials files: a clear error, the workers retry, no restart
my $pids = worker_pids($cnode);
my %creds_file = (
	user => slurp_file($creds),
	stranger => slurp_file("$jwt_dir/stranger.creds"));
my ($user_jwt) = $creds_file{user} =~ /(-+BEGIN NATS USER JWT-+\n[^\n]+\n-+END NATS USER JWT-+\n)/;
my ($stranger_seed) = $creds_file{stranger} =~ /(-+BEGIN USER NKEY SEED-+\n[^\n]+\n-+END USER NKEY SEED-+\n)/;
die 'unexpected creds layout' unless $user_jwt && $stranger_seed;

# the whole error, exactly
sub creds_refused
{
	my ($file, $error, $what) = @_;
	my $since = set_conf($cnode, nats_creds_file => $file);
	refused($cnode, $since, '^' . quotemeta("could not connect to NATS at $url: $error") . '$',
		$what);
}

sub account_missing
{
	my $n = () = slurp_file($cnats->logfile) =~ /\[WRN\] Account fetch failed: account missing$/mg;
	return $n;
}
my $missing_before = account_missing();
creds_refused("$jwt_dir/stranger.creds", 'Authentication Violation: Authorization Violation',
	'a user of an account the server does not know');
ok($missing_before == 0 && account_missing() > 0,
	'nats-server refused it for its unknown account');

# the right user's JWT with another user's seed: the nonce's signature fails
append_to_file("$jwt_dir/stolen.creds", "$user_jwt\n$stranger_seed");
creds_refused("$jwt_dir/stolen.creds", 'Authentication Violation: Authorization Violation',
	"a user's JWT with another user's seed");

creds_refused("$jwt_dir/missing.creds",
	"Error: error opening file '$jwt_dir/missing.creds': No such file or directory",
	'a credentials file that does not exist');

append_to_file("$jwt_dir/malformed.creds", "not a credentials file\n");
creds_refused("$jwt_dir/malformed.creds",
	"Error: no nkey user seed found in '$jwt_dir/malformed.creds'",
	'a malformed credentials file');

# and back: the same workers connect again, and messages flow
set_conf($cnode, nats_creds_file => $creds);
connected($cnode, 'the right credentials file again');
route_entries('creds-3');
$cnode->poll_query_until('postgres', "SELECT count(*) = 3 FROM \"${tables}_answers\"")
  or die 'no row after reconnecting';
is(answers(), 'creds-1,creds-2,creds-3', 'a message flows again');
is_deeply(worker_pids($cnode), $pids, 'the same workers throughout: none restarted');
unlike(slurp_file($cnode->logfile), qr/terminated by signal|exited with exit code|was terminated/,
	'no process exited or crashed');

$cnode->stop('fast');
my $log = slurp_file($cnode->logfile);
my @seeds = join('', values %creds_file) =~ /^(SU[A-Z2-7]+)$/mg;
is(scalar @seeds, 2, 'two user seeds');
is(scalar(grep { index($log, $_) >= 0 } @seeds), 0, 'neither seed reaches the log');
done_testing();

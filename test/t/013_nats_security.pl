# NATS security against real nats-servers: a token; TLS with a CA the test
# makes (server certificate checked); mutual TLS (a client certificate
# required).  Wrong credentials or an untrusted server show as a clear
# error in pg_stat_ism_worker, with the workers retrying, never restarting.
# (User and password are in 003_settings.pl.)
use strict;
use warnings;

use IPC::Run;
use IsmTest;
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

# the workers report an error matching $pattern after $since
sub refused
{
	my ($node, $since, $pattern, $what) = @_;
	wait_for_workers($node,
		"state = 'connecting' AND last_error_at > '$since' AND last_error ~* '$pattern'")
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
done_testing();

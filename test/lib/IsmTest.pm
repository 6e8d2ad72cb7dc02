# IsmTest: helpers for the ism_state integration tests.
#
# IsmTest::Nats runs a real nats-server (JetStream on) on a free loopback
# port, restartable on the same port and store (ISM_NATS_SERVER names
# another binary than the nats-server on PATH); every server still running
# is killed when the test script ends, passed or failed.  The functions
# below build PostgreSQL::Test::Cluster nodes with ism_state preloaded and
# wait on the pg_stat_ism_worker view.
package IsmTest;

use strict;
use warnings;

use Exporter 'import';
use File::Copy ();
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(time);

our @EXPORT = qw(new_ism_node nats_client worker_pids wait_for_workers
  count_log_matches elapsed_of thread_signal_masks start_collecting
  finish_collecting start_example_stack add_tables_processor set_properties
  helm_routing_file);

my $client = ($ENV{TESTDIR} // '.') . '/test/ism-nats';
my $nats_server = $ENV{ISM_NATS_SERVER} || 'nats-server';

# Run the test NATS client; returns (exit code, stdout, stderr).  A
# reference to a scalar as the last argument is sent on standard input
# (as DATA "-"), for messages too large for a command line.
sub nats_client
{
	my ($url, @args) = @_;
	my ($out, $err) = ('', '');
	my $in;
	if (ref $args[-1] eq 'SCALAR')
	{
		$in = pop @args;
		push @args, '-';
	}
	IPC::Run::run([ $client, '-s', $url, '-t', '3000', @args ],
		'<', $in // \undef, '>', \$out, '2>', \$err);
	return ($? >> 8, $out, $err);
}

# Subscribe to $subject in the background until $count messages came (or
# $timeout seconds passed); returns once the subscription is live.
sub start_collecting
{
	my ($url, $subject, $count, $timeout) = @_;
	my %c = (out => '', err => '');
	$c{handle} = IPC::Run::start(
		[ $client, '-s', $url, '-t', ($timeout // 30) * 1000, 'sub', $subject, $count ],
		'<', \undef, '>', \$c{out}, '2>', \$c{err});
	$c{handle}->pump until $c{err} =~ /subscribed/ || !$c{handle}->pumpable;
	return \%c;
}

# [ [subject, decoded body], ... ] of what start_collecting gathered.
sub finish_collecting
{
	my ($c) = @_;
	$c->{handle}->finish;
	my @msgs;
	for my $line (split /\n/, $c->{out})
	{
		my ($subject, $data) = split / /, $line, 2;
		push @msgs, [ $subject, JSON::PP->new->decode($data) ];
	}
	return \@msgs;
}

# A node with ism_state preloaded, pointed at $nats_url; not started.
# %params go to PostgreSQL::Test::Cluster->new (install_path: another
# PostgreSQL installation), except extra: initdb's extra arguments, and
# allows_streaming: set up for standbys.
sub new_ism_node
{
	my ($name, $nats_url, $extra_conf, %params) = @_;
	my $initdb = delete $params{extra} // [];
	my $streaming = delete $params{allows_streaming} // 0;
	my $node = PostgreSQL::Test::Cluster->new($name, %params);
	$node->init(extra => $initdb, allows_streaming => $streaming);
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'ism_state'
ism_state.nats_url = '$nats_url'
ism_state.nats_reconnect_wait = '500ms'
ism_state.nats_connect_timeout = '1s'
} . ($extra_conf // ''));
	return $node;
}

# A nats-server and a started node with the extension, the example routing
# file (as ism_state.routing_file) and the example catalog, its workers
# connected and consuming; extra postgresql.conf and nats-server settings
# may be given.  Returns (nats, node).
sub start_example_stack
{
	my ($name, $extra_conf, $nats_conf) = @_;
	my $nats = IsmTest::Nats->new($name, conf => $nats_conf)->start;
	my $routing = "${PostgreSQL::Test::Utils::tmp_check}/routing-$name.yaml";
	File::Copy::copy('test/data/routing.yaml', $routing) or die "copy: $!";
	my $node = new_ism_node($name, $nats->url,
		"ism_state.routing_file = '$routing'\n" . ($extra_conf // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION ism_state');
	$node->safe_psql('postgres', slurp_file('test/data/catalog.sql'));
	wait_for_workers($node, "state = 'running' AND nats_state = 'connected'")
	  or die 'the workers did not connect';
	# the workers subscribe once the routes are loaded
	$node->poll_query_until('postgres', 'SELECT count(*) = 7 FROM ism_state.route')
	  or die 'the routes were not loaded';
	sleep 1;
	return ($nats, $node);
}

# Another state-tables processor of the example project, fed from the
# answers state; returns its route id (processor_state.id).
sub add_tables_processor
{
	my ($node, $id, $properties) = @_;
	my $state = 'e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16';
	$node->safe_psql('postgres', qq{
		INSERT INTO processor (id, provider_id, project_id, status, properties)
		VALUES ('$id', 'data/transformers/mixer/state-tables-1.0',
				'5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03', 'CREATED', '$properties');
		INSERT INTO processor_state (id, processor_id, state_id, direction, status)
		VALUES ('$state:$id', '$id', '$state', 'INPUT', 'CREATED');
	});
	return "$state:$id";
}

# Set a processor's properties (a hash, as JSON); the workers cache the
# processor row for a second, so this returns once they see the change.
sub set_properties
{
	my ($node, $processor, $properties) = @_;
	$node->safe_psql('postgres', "UPDATE processor SET properties = \$j\$"
		  . JSON::PP->new->canonical->encode($properties) . "\$j\$ WHERE id = '$processor'");
	Time::HiRes::sleep(1.2);
}

# The platform's production routing file (test/data/platform/
# helm-routing-secret.yaml) as Helm renders it with $nats_url as
# .Values.global.nats.url: the Secret's .routing.yaml block, every URL
# through "quote".  Written to tmp_check; returns its path.
sub helm_routing_file
{
	my ($name, $nats_url) = @_;
	my $template = slurp_file('test/data/platform/helm-routing-secret.yaml');
	my ($block) = $template =~ /^  \.routing\.yaml: \|\n((?:    .*\n|\n)+)/m
	  or die 'no .routing.yaml block in the Helm template';
	$block =~ s/^    //mg;
	$block =~ s/\{\{ tpl \.Values\.global\.nats\.url \. \| quote \}\}/"$nats_url"/g;
	die "unrendered template in $block" if $block =~ /\{\{/;
	my $path = "${PostgreSQL::Test::Utils::tmp_check}/helm-routing-$name.yaml";
	open my $fh, '>', $path or die "cannot write $path: $!";
	print $fh $block;
	close $fh;
	return $path;
}

# role => pid of the running workers, from pg_stat_activity.
sub worker_pids
{
	my ($node) = @_;
	my %pids;
	my $rows = $node->safe_psql('postgres',
		"SELECT backend_type, pid FROM pg_stat_activity "
		  . "WHERE backend_type LIKE 'ism_state %' ORDER BY 1");
	for my $line (split /\n/, $rows)
	{
		my ($type, $pid) = split /\|/, $line;
		$type =~ s/^ism_state //;
		$pids{$type} = $pid;
	}
	return \%pids;
}

# Wait until every row of pg_stat_ism_worker satisfies $condition (SQL).
sub wait_for_workers
{
	my ($node, $condition, $dbname) = @_;
	return $node->poll_query_until($dbname // 'postgres',
		"SELECT count(*) > 0 AND bool_and($condition) "
		  . "FROM ism_state.pg_stat_ism_worker");
}

sub count_log_matches
{
	my ($node, $regex) = @_;
	my $log = slurp_file($node->logfile);
	my $n = () = $log =~ /$regex/g;
	return $n;
}

# Seconds a piece of code takes.
sub elapsed_of
{
	my ($code) = @_;
	my $start = time;
	$code->();
	return time - $start;
}

# tid => blocked-signal mask (SigBlk, hex) of each thread of a process.
sub thread_signal_masks
{
	my ($pid) = @_;
	my %masks;
	for my $dir (glob "/proc/$pid/task/*")
	{
		my ($tid) = $dir =~ m{/(\d+)$};
		my $status = slurp_file("$dir/status");
		my ($mask) = $status =~ /^SigBlk:\s*([0-9a-f]+)/m;
		$masks{$tid} = $mask;
	}
	return \%masks;
}

package IsmTest::Nats;

use strict;
use warnings;

use File::Path qw(make_path rmtree);
use HTTP::Tiny;
use IO::Socket::INET;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(time usleep);

my @servers;

sub new
{
	my ($class, $name, %opts) = @_;
	my $self = bless {
		name => $name,
		port => PostgreSQL::Test::Cluster::get_free_port(),
		http_port => PostgreSQL::Test::Cluster::get_free_port(),
		dir => "${PostgreSQL::Test::Utils::tmp_check}/nats_$name",
		extra_conf => $opts{conf} // '',
		handle => undef,
	}, $class;
	# tmp_check is shared by the test files of a run: a store an earlier
	# file left under the same name is not this server's
	rmtree($self->{dir});
	make_path("$self->{dir}/js");
	push @servers, $self;
	return $self;
}

# $size servers, not yet started, routed to each other as a JetStream
# cluster named $name (servers "${name}1" ...).  They do not advertise
# each other to clients, so a client reaches only the servers it is given.
sub cluster
{
	my ($class, $name, $size, %opts) = @_;
	my @nodes = map { $class->new("$name$_", %opts) } 1 .. $size;
	$_->{cluster_port} = PostgreSQL::Test::Cluster::get_free_port() for @nodes;
	my $routes = join ', ',
	  map { "nats-route://127.0.0.1:$_->{cluster_port}" } @nodes;
	$_->{extra_conf} .= "\ncluster { name: $name, "
	  . "listen: 127.0.0.1:$_->{cluster_port}, no_advertise: true, "
	  . "routes: [ $routes ] }\n"
	  for @nodes;
	return @nodes;
}

# Wait until the JetStream cluster has elected its meta leader (streams can
# be made from then on); dies after $seconds.
sub wait_for_jetstream_leader
{
	my ($self, $seconds) = @_;
	my $deadline = time + ($seconds // 60);
	while (time < $deadline)
	{
		my $res = HTTP::Tiny->new(timeout => 5)
		  ->get("http://127.0.0.1:$self->{http_port}/jsz");
		if ($res->{success})
		{
			my $meta = decode_json($res->{content})->{meta_cluster} // {};
			return $meta->{leader} if $meta->{leader};
		}
		usleep(200_000);
	}
	die "no JetStream meta leader in cluster of $self->{name}";
}

# The binary's version, as [major, minor, patch] (nats-server --version).
sub version
{
	my $out = `$nats_server --version 2>&1`;
	my @v = $out =~ /v(\d+)\.(\d+)\.(\d+)/
	  or die "no version in \"$nats_server --version\": $out";
	return \@v;
}

# Is the binary at least $major.$minor?
sub at_least
{
	my ($class, $major, $minor) = @_;
	my $v = $class->version;
	return $v->[0] > $major || ($v->[0] == $major && $v->[1] >= $minor);
}

sub url { my ($self) = @_; return "nats://127.0.0.1:$self->{port}"; }
sub port { my ($self) = @_; return $self->{port}; }
sub logfile { my ($self) = @_; return "$self->{dir}/nats.log"; }

sub start
{
	my ($self) = @_;
	my $conf = "$self->{dir}/nats.conf";
	open my $fh, '>', $conf or die "cannot write $conf: $!";
	print $fh <<"EOF";
listen: 127.0.0.1:$self->{port}
http: 127.0.0.1:$self->{http_port}
server_name: $self->{name}
jetstream { store_dir: "$self->{dir}/js" }
$self->{extra_conf}
EOF
	close $fh;
	$self->{handle} = IPC::Run::start([ $nats_server, '-c', $conf ],
		'<', \undef, '>>', $self->logfile, '2>>', $self->logfile);

	my $deadline = time + 30;
	while (time < $deadline)
	{
		my $sock = IO::Socket::INET->new(
			PeerAddr => '127.0.0.1',
			PeerPort => $self->{port},
			Proto => 'tcp');
		if ($sock)
		{
			close $sock;
			return $self;
		}
		die "nats-server $self->{name} exited; see " . $self->logfile
		  unless $self->{handle}->pumpable;
		usleep(50_000);
	}
	die "nats-server $self->{name} did not start; see " . $self->logfile;
}

# Stop the server: TERM (clean) or KILL (crash).
sub stop
{
	my ($self, $signal) = @_;
	return unless $self->{handle};
	$self->{handle}->signal($signal // 'TERM');
	eval { $self->{handle}->finish; };
	$self->{handle} = undef;
}

# Freeze the server (SIGSTOP): its connections stay open, nothing is read.
sub pause { my ($self) = @_; $self->{handle}->signal('STOP'); }

# The server's client connections (monitoring endpoint /connz).
sub connections
{
	my ($self) = @_;
	my $res = HTTP::Tiny->new(timeout => 5)
	  ->get("http://127.0.0.1:$self->{http_port}/connz?subs=1&limit=1024");
	die "connz: $res->{status} $res->{reason}" unless $res->{success};
	return decode_json($res->{content})->{connections} // [];
}

# Names of the connected clients, sorted.
sub client_names
{
	my ($self) = @_;
	return [ sort map { $_->{name} // '' } @{ $self->connections } ];
}

# client name => [ its subscriptions' subjects, sorted ]
sub subscriptions
{
	my ($self) = @_;
	return { map { ($_->{name} // '') => [ sort @{ $_->{subscriptions_list} // [] } ] }
		  @{ $self->connections } };
}

END
{
	# keep the test's exit code
	my $exit = $?;
	$_->stop('KILL') for grep { $_->{handle} } @servers;
	$? = $exit;
}

# IsmTest::Proxy relays TCP connections from a free loopback port to a
# server's, in a child process the test can freeze (SIGSTOP: nothing is
# relayed, the kernel holds what was sent) or kill (every relayed
# connection drops, with whatever it held), and start again on the same
# port: a network between a client and its server that can fail.
package IsmTest::Proxy;

use IO::Select;
use IO::Socket::INET;
use POSIX ();
use PostgreSQL::Test::Cluster;

my @proxies;

sub new
{
	my ($class, $target_port) = @_;
	my $self = bless {
		port => PostgreSQL::Test::Cluster::get_free_port(),
		target => $target_port,
		pid => undef,
	}, $class;
	push @proxies, $self;
	return $self;
}

sub url { my ($self) = @_; return "nats://127.0.0.1:$self->{port}"; }

sub start
{
	my ($self) = @_;
	my $listener = IO::Socket::INET->new(
		LocalAddr => '127.0.0.1',
		LocalPort => $self->{port},
		Listen => 16,
		ReuseAddr => 1) or die "proxy: cannot listen on $self->{port}: $!";
	my $pid = fork // die "fork: $!";
	if ($pid)
	{
		close $listener;
		$self->{pid} = $pid;
		return $self;
	}
	relay($listener, $self->{target});
	POSIX::_exit(0);
}

# The child: accept, connect to the target, copy bytes both ways.
sub relay
{
	my ($listener, $target) = @_;
	my $select = IO::Select->new($listener);
	my %peer;
	while (1)
	{
		for my $ready ($select->can_read)
		{
			if ($ready == $listener)
			{
				my $client = $listener->accept or next;
				my $server = IO::Socket::INET->new(
					PeerAddr => '127.0.0.1',
					PeerPort => $target) or do { close $client; next };
				@peer{ $client, $server } = ($server, $client);
				$select->add($client, $server);
				next;
			}
			my $other = $peer{$ready};
			my $n = sysread($ready, my $buf, 65536);
			if (!$n || !defined syswrite($other, $buf))
			{
				$select->remove($ready, $other);
				delete @peer{ $ready, $other };
				close $ready;
				close $other;
			}
		}
	}
}

sub pause { my ($self) = @_; kill 'STOP', $self->{pid}; }

sub stop
{
	my ($self) = @_;
	return unless $self->{pid};
	kill 'KILL', $self->{pid};
	waitpid $self->{pid}, 0;
	$self->{pid} = undef;
}

END
{
	my $exit = $?;
	$_->stop for grep { $_->{pid} } @proxies;
	$? = $exit;
}

1;

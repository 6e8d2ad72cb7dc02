# The randomized end-to-end test (test/random/random_e2e.pl) with a seed of
# its own on every run, for a bounded time: what the fixed seed never
# tries.  The seed is printed; ISM_RANDOM_SEED=<seed> replays the run.
use strict;
use warnings;

# loaded here, at compile time, for their INIT blocks (the script is run by do)
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

$ENV{ISM_RANDOM_SEED} //= (time ^ ($$ << 15)) % 1_000_000_007;
$ENV{ISM_RANDOM_SECONDS} //= 60;
my $script = './test/random/random_e2e.pl';
-f $script or die "no $script";
do $script;
die $@ if $@;

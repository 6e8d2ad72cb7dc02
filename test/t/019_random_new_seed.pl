# The randomized end-to-end test (test/random/random_e2e.pl) with a seed of
# its own on every run, for a bounded time: what the fixed seed never
# tries.  The seed is printed; ISM_RANDOM_SEED=<seed> replays the run.
#
# big_numbers is left out until the writer keeps every digit of a number
# (issue #15): it finds that today.
use strict;
use warnings;

# loaded here, at compile time, for their INIT blocks (the script is run by do)
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

$ENV{ISM_RANDOM_SEED} //= (time ^ ($$ << 15)) % 1_000_000_007;
$ENV{ISM_RANDOM_SECONDS} //= 60;
$ENV{ISM_RANDOM_EXCLUDE} //= 'big_numbers';
my $script = './test/random/random_e2e.pl';
-f $script or die "no $script";
do $script;
die $@ if $@;

# The randomized end-to-end test (test/random/random_e2e.pl) with a fixed
# seed, for a bounded time: the same rounds on every run, so a change that
# breaks what it covered shows here first.
use strict;
use warnings;

# loaded here, at compile time, for their INIT blocks (the script is run by do)
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

$ENV{ISM_RANDOM_SEED} //= 20261130;
$ENV{ISM_RANDOM_SECONDS} //= 60;
my $script = './test/random/random_e2e.pl';
-f $script or die "no $script";
do $script;
die $@ if $@;

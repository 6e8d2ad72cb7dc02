#!/usr/bin/env bash
# Chroots of the Debian releases that ship the newer PostgreSQL majors
# ism_state is built and tested on (issue #16), made once and reused:
#
#   release   PostgreSQL  nats-server  nats.c (libnats)
#   trixie    17          2.10         3.10
#   forky     18          2.15         3.14
#   bookworm  15          2.9          3.4    (this machine's: the whole
#                                             suite without its PostgreSQL)
#
#   scripts/chroot.sh make RELEASE       create it, or bring a complete one
#                                        up to date (idempotent)
#   scripts/chroot.sh run RELEASE CMD…   run CMD inside, as root, in a copy
#                                        of this work tree
#   scripts/chroot.sh path RELEASE       print where it lives
#   scripts/chroot.sh remove RELEASE     delete it
#
# Where: $ISM_STATE_CHROOT_DIR/<release>, by default
# /var/cache/ism_state/chroots/<release> (root only: debootstrap, chroot and
# mount need it).  A chroot is complete once its stamp file
# (.ism_state-complete) exists; make reuses a complete one, only installing
# what the package list gained since, and finishes an interrupted one
# (one whose debootstrap did not finish is deleted and made again).
#
# make: debootstrap (minbase) from the Debian mirror this machine's apt
# sources use ($ISM_STATE_DEBIAN_MIRROR overrides it), then, inside,
# scripts/install-deps.sh, which picks the release's PostgreSQL major and
# clang from /etc/os-release.  Bookworm's debootstrap has no forky script:
# forky is made with the sid script.  apt inside ignores Valid-Until
# (a mirror's Release file of testing may be past it).  Daemons are not
# started inside (policy-rc.d), and no PostgreSQL cluster is created.
#
# run: the work tree (its files, less .git and build output) is copied to
# /tmp/ism_state-src.XXXXXX inside, CMD runs there, and the copy is deleted
# afterwards.  /proc, /dev, /dev/pts and a /dev/shm of its own are mounted
# only while CMD runs, in a mount namespace of its own (so they can never
# outlive it, and concurrent runs do not see each other's mounts), and are
# unmounted by a trap on any exit too.  CMD also runs in a network namespace
# of its own with only the loopback interface up: nothing it starts can
# reach beyond 127.0.0.1 (ISM_STATE_CHROOT_NET=host keeps the machine's
# network, for instance to install packages by hand).  Environment: a clean
# one, plus CI, PROVE_TESTS, REGRESS, FUZZ_SECONDS, PG_CONFIG and ISM_*
# variables.
set -euo pipefail

CACHE=${ISM_STATE_CHROOT_DIR:-/var/cache/ism_state/chroots}
REPO=$(cd "$(dirname "$0")/.." && pwd)
STAMP=.ism_state-complete

die() { echo "chroot.sh: $*" >&2; exit 1; }

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
	exit 2
}

check_release() {
	case "${1:-}" in
	trixie | forky | bookworm) ;;
	*) die "unknown release '${1:-}' (trixie, forky or bookworm)" ;;
	esac
}

# The Debian mirror this machine's apt uses for its own release: the first
# URI of a deb source whose suites include the host's codename.
host_mirror() {
	if [ -n "${ISM_STATE_DEBIAN_MIRROR:-}" ]; then
		echo "$ISM_STATE_DEBIAN_MIRROR"
		return
	fi
	local codename uri=
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	[ -n "$codename" ] || die "no VERSION_CODENAME in /etc/os-release; set ISM_STATE_DEBIAN_MIRROR"
	shopt -s nullglob
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		# deb822: one paragraph per source
		uri=$(awk -v c="$codename" 'BEGIN { RS = ""; FS = "\n" }
			{
				types = ""; uris = ""; suites = ""; enabled = "yes"
				for (i = 1; i <= NF; i++) {
					if ($i ~ /^#/) continue
					if ($i ~ /^Types:/) types = $i
					if ($i ~ /^URIs:/) uris = $i
					if ($i ~ /^Suites:/) suites = $i
					if ($i ~ /^Enabled:[ \t]*no/) enabled = "no"
				}
				if (enabled == "yes" && types ~ /[ \t]deb([ \t]|$)/ &&
				    (" " suites " ") ~ ("[ \t]" c "[ \t]")) {
					sub(/^URIs:[ \t]*/, "", uris); split(uris, u, /[ \t]+/)
					print u[1]; exit
				}
			}' "$f")
		[ -z "$uri" ] || break
	done
	if [ -z "$uri" ]; then
		uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
			awk -v c="$codename" '$1 == "deb" {
				i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
				if ($(i + 1) == c) { print $i; exit }
			}')
	fi
	shopt -u nullglob
	[ -n "$uri" ] || die "no deb source for $codename in /etc/apt; set ISM_STATE_DEBIAN_MIRROR"
	echo "${uri%/}"
}

# Runs "$@" inside the chroot $1 with /proc and /dev mounted, in a private
# mount namespace (and, unless told otherwise, a private network namespace).
# Called through unshare by in_chroot below.
inner() {
	local root=$1 net=$2
	shift 2
	mounted=()
	cleanup() {
		local i
		for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
			umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" || true
		done
	}
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	mount -t proc proc "$root/proc" && mounted+=("$root/proc")
	mount --bind /dev "$root/dev" && mounted+=("$root/dev")
	mount --bind /dev/pts "$root/dev/pts" && mounted+=("$root/dev/pts")
	mkdir -p "$root/dev/shm"
	mount -t tmpfs -o mode=1777,nosuid,nodev shm "$root/dev/shm" && mounted+=("$root/dev/shm")
	if [ "$net" = private ]; then
		ip link set lo up
	fi
	local envs=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
		HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" DEBIAN_FRONTEND=noninteractive)
	local v
	for v in CI PROVE_TESTS REGRESS FUZZ_SECONDS PG_CONFIG $(compgen -v ISM_ || true); do
		[ -z "${!v+x}" ] || envs+=("$v=${!v}")
	done
	local status=0
	chroot "$root" /usr/bin/env -i "${envs[@]}" "$@" || status=$?
	return $status
}

in_chroot() {
	local root=$1 net=$2
	shift 2
	local flags=(--mount --propagation private)
	[ "$net" = private ] && flags+=(--net)
	unshare "${flags[@]}" "$0" __inner "$root" "$net" "$@"
}

make_chroot() {
	local release=$1 root=$CACHE/$1
	# .ism_state-base: debootstrap finished; $STAMP: the packages too
	if [ -d "$root" ] && [ ! -f "$root/.ism_state-base" ]; then
		echo "chroot.sh: $root is incomplete: making it again"
		remove_chroot "$release"
	fi
	if [ ! -d "$root" ]; then
		command -v debootstrap >/dev/null ||
			{ apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap; }
		local mirror script=$release tmp=$root.new
		mirror=$(host_mirror)
		# bookworm's debootstrap knows trixie, not forky: testing is made
		# like sid
		[ -f "/usr/share/debootstrap/scripts/$release" ] || script=sid
		rm -rf "$tmp"
		mkdir -p "$CACHE"
		echo "chroot.sh: debootstrap $release from $mirror into $root"
		debootstrap --variant=minbase --include=ca-certificates,iproute2,procps \
			"$release" "$tmp" "$mirror" "/usr/share/debootstrap/scripts/$script"
		cat >"$tmp/etc/apt/sources.list" <<-EOF
			deb $mirror $release main
		EOF
		cat >"$tmp/etc/apt/apt.conf.d/99ism_state" <<-'EOF'
			// a mirror's Release file of testing may be past its Valid-Until
			Acquire::Check-Valid-Until "false";
			APT::Install-Recommends "false";
		EOF
		# no daemon starts inside (postgresql, nats-server)
		printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
		chmod 755 "$tmp/usr/sbin/policy-rc.d"
		grep -qs localhost "$tmp/etc/hosts" ||
			printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$tmp/etc/hosts"
		touch "$tmp/.ism_state-base"
		mv "$tmp" "$root"
	fi
	cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
	# the packages: the project's own list, as on bookworm
	mkdir -p "$root/tmp"
	cp "$REPO/scripts/install-deps.sh" "$root/tmp/ism_state-install-deps.sh"
	in_chroot "$root" host bash /tmp/ism_state-install-deps.sh
	rm -f "$root/tmp/ism_state-install-deps.sh"
	in_chroot "$root" host apt-get clean
	date -u +%FT%TZ >"$root/$STAMP"
	echo "chroot.sh: $release ready in $root ($(du -sh "$root" | cut -f1)):"
	in_chroot "$root" host dpkg-query -W -f '${db:Status-Abbrev} ${Package} ${Version}\n' \
		'postgresql-[0-9]*' nats-server libnats-dev 2>/dev/null | awk '$1 == "ii" { print "  " $2, $3 }' || true
}

run_in_chroot() {
	local release=$1 root=$CACHE/$1
	shift
	[ $# -gt 0 ] || die "run $release: no command"
	[ -f "$root/$STAMP" ] || die "no complete $release chroot in $root: scripts/chroot.sh make $release"
	local net=private
	[ "${ISM_STATE_CHROOT_NET:-}" != host ] || net=host
	local src
	src=$(mktemp -d "$root/tmp/ism_state-src.XXXXXX")
	# shellcheck disable=SC2064
	trap "rm -rf '$src'" EXIT
	# the work tree as it is, less .git and build output (the chroot builds
	# against its own PostgreSQL)
	(cd "$REPO" && tar --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
		--exclude=./test/ism-nats --exclude=./tmp_check --exclude=./tmp_check_regress \
		--exclude=./results --exclude=./log --exclude=./bench/route_bench --exclude=./bench/json_bench \
		--exclude=./bench/external-consumer --exclude=./bench/upstream-router \
		--exclude=./fuzz/findings -cf - .) |
		tar -C "$src" -xf -
	chmod 755 "$src"
	local status=0
	in_chroot "$root" "$net" /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "/tmp/${src##*/}" "$@" || status=$?
	return $status
}

remove_chroot() {
	local root=$CACHE/$1
	[ -d "$root" ] || return 0
	# never delete through a mount left behind
	if grep -q " $root/" /proc/mounts; then
		die "$root has mounts: $(grep " $root/" /proc/mounts | cut -d' ' -f2 | tr '\n' ' ')"
	fi
	rm -rf --one-file-system "$root"
}

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, mount)"
cmd=${1:-}
shift || true
case "$cmd" in
__inner) inner "$@" ;;
make) check_release "${1:-}"; make_chroot "$1" ;;
run) check_release "${1:-}"; run_in_chroot "$@" ;;
path) check_release "${1:-}"; echo "$CACHE/$1" ;;
remove) check_release "${1:-}"; remove_chroot "$1" ;;
*) usage ;;
esac

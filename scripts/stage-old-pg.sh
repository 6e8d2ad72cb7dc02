#!/usr/bin/env bash
# PostgreSQL 15 (bookworm's, from its chroot) with ism_state built for it,
# staged inside the trixie or forky chroot, for test/t/029_pg_upgrade.pl:
# pg_upgrade needs the old and the new binaries in one filesystem.
#
#   scripts/stage-old-pg.sh RELEASE      prints the old installation's
#                                        bindir's parent, as RELEASE sees it
#
# Inside RELEASE it is /opt/ism_state-pg15/usr/{lib,share}/postgresql/15:
# PostgreSQL finds its share directory relative to its binaries, so the
# tree keeps Debian's layout under another root.  The shared libraries
# bookworm's binaries need and RELEASE lacks (libicu 72, libldap 2.5, ...:
# found with ldd inside RELEASE) are copied from bookworm into the
# installation's lib directory, which PostgreSQL::Test::Cluster puts on
# LD_LIBRARY_PATH for that installation's binaries only.  Made again on
# each call (a few seconds: the chroots are made once).  As root.
set -euo pipefail
cd "$(dirname "$0")/.."

release=${1:?usage: stage-old-pg.sh trixie|forky}
case "$release" in trixie | forky) ;; *) echo "stage-old-pg.sh: trixie or forky" >&2; exit 2 ;; esac
old=15
inside=/opt/ism_state-pg$old

scripts/chroot.sh make bookworm >/dev/null
scripts/chroot.sh make "$release" >/dev/null
bookworm=$(scripts/chroot.sh path bookworm)
root=$(scripts/chroot.sh path "$release")

# ism_state built against 15, installed under a staging root in bookworm
ext=/var/tmp/ism_state-pg$old
rm -rf "${bookworm:?}$ext"
scripts/chroot.sh run bookworm sh -c "make -s PG_CONFIG=/usr/lib/postgresql/$old/bin/pg_config &&
	make -s install PG_CONFIG=/usr/lib/postgresql/$old/bin/pg_config DESTDIR=$ext" >/dev/null

dest=$root$inside
rm -rf "${dest:?}"
mkdir -p "$dest/usr/lib/postgresql" "$dest/usr/share/postgresql"
cp -a "$bookworm/usr/lib/postgresql/$old" "$dest/usr/lib/postgresql/"
cp -a "$bookworm/usr/share/postgresql/$old" "$dest/usr/share/postgresql/"
cp -a "$bookworm$ext/usr/." "$dest/usr/"
rm -rf "${bookworm:?}$ext"

# the libraries RELEASE lacks, from bookworm (a library found may need others)
lib=$inside/usr/lib/postgresql/$old/lib
for _ in 1 2 3 4 5; do
	missing=$(chroot "$root" /usr/bin/env LD_LIBRARY_PATH="$lib" \
		sh -c "ldd $inside/usr/lib/postgresql/$old/bin/* $lib/*.so 2>/dev/null" |
		awk '$2 == "=>" && $3 == "not" { print $1 }' | sort -u)
	[ -n "$missing" ] || break
	for so in $missing; do
		found=$(find "$bookworm/usr/lib/x86_64-linux-gnu" "$bookworm/lib/x86_64-linux-gnu" \
			-maxdepth 1 -name "$so" 2>/dev/null | head -1)
		[ -n "$found" ] || { echo "stage-old-pg.sh: $so is not in bookworm either" >&2; exit 1; }
		cp -L "$found" "$root$lib/$so"
	done
done
[ -z "$missing" ] || { echo "stage-old-pg.sh: still missing: $missing" >&2; exit 1; }
echo "$inside/usr/lib/postgresql/$old"

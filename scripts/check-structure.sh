#!/usr/bin/env bash
# The source structure issue #14 asked for, checked on src/ after a build:
#
#  1. no cycle among the modules: module A depends on module B when A.c or
#     A.h includes "B.h" (B.h in src/); a cycle is printed, A -> B -> ... -> A;
#  2. every extern function or variable defined in src/*.c is named ism_*
#     (nm on the built src/*.o: defined global symbols), as
#     test/t/017_robustness.pl (15) requires of the library's exports: the
#     only others are PostgreSQL's entry points _PG_init and Pg_magic_func,
#     and the pg_finfo_ism_* records of the SQL-callable functions
#     (PG_FUNCTION_INFO_V1), which are ism_* themselves;
#  3. every src/*.c includes "postgres.h" first (but route_index.c, plain C
#     for the benchmark and its fuzz target), and every src/*.h compiles on
#     its own after it.
#
#   scripts/check-structure.sh      (after make; PG_CONFIG as for make)
#
# Exit status 1, with what is wrong, when any check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=${PG_CONFIG:-pg_config}
status=0

# --- 1: the module graph has no cycle ------------------------------------------
if ! python3 - src <<'EOF'
import os
import re
import sys

src = sys.argv[1]
files = sorted(f for f in os.listdir(src) if f.endswith(('.c', '.h')))
modules = {os.path.splitext(f)[0] for f in files}
headers = {f for f in files if f.endswith('.h')}
deps = {m: set() for m in modules}
for f in files:
    m = os.path.splitext(f)[0]
    with open(os.path.join(src, f)) as fh:
        for line in fh:
            inc = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
            if inc and inc.group(1) in headers and os.path.splitext(inc.group(1))[0] != m:
                deps[m].add(os.path.splitext(inc.group(1))[0])

# depth-first search; a back edge closes a cycle
WHITE, GREY, BLACK = 0, 1, 2
colour = {m: WHITE for m in modules}
cycles = []

def visit(m, path):
    colour[m] = GREY
    path.append(m)
    for d in sorted(deps[m]):
        if colour[d] == GREY:
            cycles.append(path[path.index(d):] + [d])
        elif colour[d] == WHITE:
            visit(d, path)
    path.pop()
    colour[m] = BLACK

sys.setrecursionlimit(10000)
for m in sorted(modules):
    if colour[m] == WHITE:
        visit(m, [])
for c in cycles:
    print('check-structure: module cycle: ' + ' -> '.join(c))
if cycles:
    sys.exit(1)

# the modules, each after all it depends on (leaf first)
order, done = [], set()
def place(m):
    if m in done:
        return
    done.add(m)
    for d in sorted(deps[m]):
        place(d)
    order.append(m)
for m in sorted(modules):
    place(m)
print('check-structure: %d modules, no cycle; leaf first: %s' % (len(order), ' '.join(order)))
EOF
then
	status=1
fi

# --- 2: every extern symbol is ism_'s --------------------------------------------
objects=()
for c in src/*.c; do
	o=${c%.c}.o
	if [ ! -f "$o" ] || [ "$o" -ot "$c" ]; then
		echo "check-structure: $o is missing or older than $c: run make first" >&2
		exit 1
	fi
	objects+=("$o")
done
# nm: "<value> <type> <name>"; upper-case types are global, U (undefined) is not ours
foreign=$(nm --defined-only "${objects[@]}" |
	awk 'NF == 3 && $2 ~ /^[A-Z]$/ { print $3 }' |
	grep -Ev '^(ism_|pg_finfo_ism_|_PG_init$|Pg_magic_func$)' || true)
if [ -n "$foreign" ]; then
	echo "check-structure: extern symbols without the ism_ prefix:"
	for s in $foreign; do
		printf '  %s (%s)\n' "$s" "$(nm --defined-only -A "${objects[@]}" |
			awk -v s="$s" '$NF == s { sub(/:.*/, "", $1); print $1 }' | tr '\n' ' ')"
	done
	status=1
fi

# --- 3: postgres.h first; headers that stand alone --------------------------------
for c in src/*.c; do
	[ "$c" = src/route_index.c ] && continue
	first=$(grep -m1 '^#include' "$c" || true)
	if [ "$first" != '#include "postgres.h"' ]; then
		echo "check-structure: $c includes ${first#\#include } first, not \"postgres.h\""
		status=1
	fi
done
pginc=$("$PG_CONFIG" --includedir-server)
for h in src/*.h; do
	if ! printf '#include "postgres.h"\n#include "%s"\n' "${h#src/}" |
		${CC:-cc} -fsyntax-only -Wall -Werror -I src -I "$pginc" -x c - 2>&1; then
		echo "check-structure: $h does not compile on its own after postgres.h"
		status=1
	fi
done

[ $status -eq 0 ] && echo "check-structure: ok"
exit $status

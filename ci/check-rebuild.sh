#!/bin/sh
# check-rebuild.sh - the build notices what changed on the machine.
#
# In a throwaway build directory, with the same CPPFLAGS every time (so the
# flags stamp never forces a full rebuild; only the feature probe can):
#   1. libibverbs headers hidden (a -I directory whose infiniband/verbs.h
#      #errors, as on a fresh machine before ci/install-deps.sh): the probe
#      records 0 and libllmlink.a carries the "built without" stub text;
#   2. `make` again, nothing changed: no object is rebuilt;
#   3. headers "installed" (the hiding file removed): exactly the objects
#      whose dependency files name llk_config.h are rebuilt, the stub text
#      is gone;
#   4. headers hidden again ("removed"): the same objects rebuilt, stubs back.
# This is the `make demo` (before deps) then `make test` (after) order that
# used to leave the RDMA programs with stubs.
# Needs the real libibverbs headers (ci/install-deps.sh installs them).
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
build=$work/build
hide=$work/hide
cc=${CC:-cc}
stub='built without libibverbs headers'

fail() { echo "check-rebuild: FAIL: $*" >&2; exit 1; }

if ! printf '#include <infiniband/verbs.h>\n' | "$cc" -E -x c -o /dev/null - 2>/dev/null; then
    fail "<infiniband/verbs.h> is not installed here (run ci/install-deps.sh)"
fi

mk() { # the library only: the probe's effect is on its objects
    timeout 600 make -C "$repo" --no-print-directory -s -j2 CC="$cc" BUILD="$build" \
        CPPFLAGS="-I$hide" static >/dev/null || fail "make static (step $1) failed"
}
config() { sed -n 's/^#define LLK_HAVE_VERBS_H //p' "$build/gen/llk_config.h"; }
has_stub() { strings "$build/libllmlink.a" | grep -q "$stub"; }
# Objects newer than the marker, and those whose .d file names the config header.
rebuilt() { (cd "$build/obj" && find . -name '*.o' -newer "$work/marker" | sort); }
affected() { (cd "$build/obj" && grep -l 'gen/llk_config\.h' -r --include='*.d' . | sed 's/\.d$/.o/' | sort); }
mark() { sleep 1; touch "$work/marker"; sleep 1; } # mtimes on both sides of it differ

mkdir -p "$hide/infiniband"
printf '#error "hidden by ci/check-rebuild.sh"\n' > "$hide/infiniband/verbs.h"

# 1. hidden
mk 1
[ "$(config)" = 0 ] || fail "probe recorded LLK_HAVE_VERBS_H=$(config) with the headers hidden"
has_stub || fail "libllmlink.a built with hidden headers lacks '$stub'"
want=$(affected)
[ -n "$want" ] || fail "no object's dependency file names gen/llk_config.h"
echo "$want" | grep -q '/core/transport/verbs\.o$' || fail "verbs.o does not depend on llk_config.h: $want"
echo "check-rebuild: 1. headers hidden: LLK_HAVE_VERBS_H 0, stub text in libllmlink.a;" \
    "objects depending on the probe:" $want

# 2. nothing changed
mark
mk 2
got=$(rebuilt)
[ -z "$got" ] || fail "a second make with nothing changed rebuilt:" $got
echo "check-rebuild: 2. nothing changed: nothing rebuilt"

# 3. installed
rm -f "$hide/infiniband/verbs.h"
mark
mk 3
[ "$(config)" = 1 ] || fail "probe recorded LLK_HAVE_VERBS_H=$(config) with the headers present"
got=$(rebuilt)
[ "$got" = "$want" ] || fail "headers appeared: rebuilt [$(echo $got)], expected [$(echo $want)]"
! has_stub || fail "libllmlink.a still has '$stub' after the headers appeared"
echo "check-rebuild: 3. headers installed: LLK_HAVE_VERBS_H 1, rebuilt exactly" $got "; stub text gone"

# 4. removed again
printf '#error "hidden by ci/check-rebuild.sh"\n' > "$hide/infiniband/verbs.h"
mark
mk 4
[ "$(config)" = 0 ] || fail "probe recorded LLK_HAVE_VERBS_H=$(config) after hiding the headers again"
got=$(rebuilt)
[ "$got" = "$want" ] || fail "headers removed: rebuilt [$(echo $got)], expected [$(echo $want)]"
has_stub || fail "libllmlink.a lacks '$stub' after the headers were removed"
echo "check-rebuild: 4. headers removed: LLK_HAVE_VERBS_H 0, rebuilt exactly the same objects, stubs back"
echo "check-rebuild: PASS"

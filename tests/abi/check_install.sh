#!/bin/sh
# check_install.sh BUILD_DIR - install into a staging DESTDIR, build a small
# program against the installed header through pkg-config (shared and
# static), run it, check the man pages (every page of tools/gen_man.py
# --list installed under MANDIR/man3, rendered without warnings by man or
# groff when one is there), check that the llmlink command runs from BINDIR,
# then uninstall and check that nothing is left.
# What a packager or a binding's build.rs does with `make install`.
set -eu
build=${1:?usage: check_install.sh BUILD_DIR}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT INT TERM
prefix=/usr/local

make -s --no-print-directory install BUILD="$build" DESTDIR="$stage" PREFIX="$prefix" >/dev/null

cat > "$stage/consumer.c" <<'SRC'
#include <llmlink.h>
#include <stdio.h>
int main(void)
{
    llmlink_t *e = NULL;
    if (llmlink_version_number() != LLMLINK_VERSION_NUMBER) {
        fprintf(stderr, "header %d, library %u\n", LLMLINK_VERSION_NUMBER, llmlink_version_number());
        return 1;
    }
    if (llmlink_create(&e, LLMLINK_ROLE_DECODER, 7) != LLMLINK_SUCCESS || llmlink_init(e, NULL, 0) != LLMLINK_SUCCESS) {
        fprintf(stderr, "%s\n", llmlink_last_error());
        return 1;
    }
    llmlink_destroy(e);
    puts(llmlink_status_name(LLMLINK_SUCCESS));
    return 0;
}
SRC

export PKG_CONFIG_PATH="$stage$prefix/lib/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$stage"
cc -o "$stage/consumer-shared" "$stage/consumer.c" $(pkg-config --cflags --libs llmlink)
out=$(LD_LIBRARY_PATH="$stage$prefix/lib" "$stage/consumer-shared")
[ "$out" = "LLM_SUCCESS" ] || { echo "check_install: shared consumer printed '$out'"; exit 1; }
cc -static-libgcc -o "$stage/consumer-static" "$stage/consumer.c" \
    $(pkg-config --cflags llmlink) "$stage$prefix/lib/libllmlink.a" \
    $(pkg-config --static --libs llmlink | sed 's/-lllmlink\b//')
out=$("$stage/consumer-static")
[ "$out" = "LLM_SUCCESS" ] || { echo "check_install: static consumer printed '$out'"; exit 1; }
# The command (tools/llmlink/, docs/cli.md), in BINDIR.
cli=$("$stage$prefix/bin/llmlink" --version) ||
    { echo "check_install: $stage$prefix/bin/llmlink --version failed"; exit 1; }
case "$cli" in "llmlink "[0-9]*) ;; *) echo "check_install: llmlink --version printed '$cli'"; exit 1 ;; esac
# Man pages: the names come from the header, as `make install` takes them.
mandir="$stage$prefix/share/man/man3"
pages=$(python3 tools/gen_man.py --header ffi/llmlink.h --list)
npages=0
for p in $pages; do
    [ -s "$mandir/$p" ] || { echo "check_install: man page $mandir/$p not installed"; exit 1; }
    npages=$((npages + 1))
done
[ "$npages" -gt 1 ] || { echo "check_install: only $npages man pages listed"; exit 1; }
# Render with warnings on; any warning (or failure) fails the check.
render=none
if command -v man >/dev/null 2>&1; then
    render="man --warnings -l"
elif command -v groff >/dev/null 2>&1; then
    render="groff -man -Tutf8 -ww"
fi
if [ "$render" != none ]; then
    for p in $pages; do
        warn=$(MANPAGER=cat MAN_DISABLE_SECCOMP=1 MANWIDTH=80 $render "$mandir/$p" 2>&1 >/dev/null) &&
            [ -z "$warn" ] || { echo "check_install: $render $p: ${warn:-failed}"; exit 1; }
    done
    rendered="rendered by ${render%% *} without warnings"
else
    rendered="not rendered (neither man nor groff installed)"
fi

soname=$(readelf -d "$stage$prefix/lib/libllmlink.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')

make -s --no-print-directory uninstall BUILD="$build" DESTDIR="$stage" PREFIX="$prefix" >/dev/null
left=$(find "$stage$prefix" -type f 2>/dev/null | head -5)
[ -z "$left" ] || { echo "check_install: left after uninstall: $left"; exit 1; }
echo "check_install: installed, built (pkg-config, shared + static), ran, uninstalled; soname $soname; $cli in bin/"
echo "check_install: $npages man pages installed in MANDIR/man3, $rendered, removed by uninstall"

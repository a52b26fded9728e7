#!/bin/sh
# check_install.sh BUILD_DIR - install into a staging DESTDIR, build a small
# program against the installed header through pkg-config (shared and
# static), run it, then uninstall and check that nothing is left behind.
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
    $(pkg-config --cflags llmlink) "$stage$prefix/lib/libllmlink.a" $(pkg-config --static --libs-only-other llmlink)
out=$("$stage/consumer-static")
[ "$out" = "LLM_SUCCESS" ] || { echo "check_install: static consumer printed '$out'"; exit 1; }
soname=$(readelf -d "$stage$prefix/lib/libllmlink.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')

make -s --no-print-directory uninstall BUILD="$build" DESTDIR="$stage" PREFIX="$prefix" >/dev/null
left=$(find "$stage$prefix" -type f 2>/dev/null | head -5)
[ -z "$left" ] || { echo "check_install: left after uninstall: $left"; exit 1; }
echo "check_install: installed, built (pkg-config, shared + static), ran, uninstalled; soname $soname"

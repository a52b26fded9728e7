#!/usr/bin/env bash
# install-deps.sh - make sure what the build and the tests need is installed.
#
# Idempotent: checks first, and only when something is missing runs
# `apt-get update` once and `apt-get install -y --no-install-recommends`
# for the missing Debian packages (through sudo when not root).
# Exits non-zero with a message naming what is missing if it cannot install.
#
# Bindings and optional parts add their Debian needs in a file of their own,
# bindings/<lang>/deps.sh or ci/deps-<part>.sh, sourced here: one need_cmd /
# need_check line each (see below). Callers can ask for extra packages too:
# LLMLINK_EXTRA_PKGS="swig golang".
set -euo pipefail

repo_root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)

missing_pkgs=()   # Debian packages to install
missing_what=()   # human-readable names, for messages

add_pkg() { # add_pkg PACKAGE WHAT
    local p
    for p in "${missing_pkgs[@]+"${missing_pkgs[@]}"}"; do
        [ "$p" = "$1" ] && return 0
    done
    missing_pkgs+=("$1")
    missing_what+=("$2")
}

need_cmd() { # need_cmd COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || add_pkg "$2" "$1"
}

need_check() { # need_check PACKAGE WHAT SHELL-TEST
    if ! sh -c "$3" >/dev/null 2>&1; then add_pkg "$1" "$2"; fi
}

# --- what the C build and tests need ------------------------------------
check_all() {
    need_cmd gcc gcc
    need_cmd cc gcc
    need_cmd make make
    need_cmd pkg-config pkg-config
    need_cmd nm binutils
    need_cmd ar binutils
    need_cmd ip iproute2
    need_cmd python3 python3
    need_cmd timeout coreutils
    need_cmd awk mawk
    need_cmd setarch util-linux
    # gcc with --no-install-recommends does not pull the libc headers in.
    need_check libc6-dev "libc headers" 'printf "#include <stdio.h>\n" | cc -E -x c - -o /dev/null'
    need_check libcmocka-dev "cmocka (pkg-config cmocka)" 'pkg-config --exists cmocka'
    # OpenSSL 3: libcrypto (authentication) and libssl (TLS), core/sources.list's "lib" lines.
    need_check libssl-dev "OpenSSL 3 (pkg-config openssl)" 'pkg-config --atleast-version=3.0 openssl'

    local f
    for f in "$repo_root"/bindings/*/deps.sh "$repo_root"/ci/deps-*.sh; do
        [ -f "$f" ] || continue
        # shellcheck source=/dev/null
        . "$f"
    done

    local p
    for p in ${LLMLINK_EXTRA_PKGS:-}; do
        need_check "$p" "$p" "dpkg-query -W -f='\${Status}' '$p' 2>/dev/null | grep -q 'ok installed'"
    done
}

check_all

if [ "${#missing_pkgs[@]}" -eq 0 ]; then
    extra=$(echo ${LLMLINK_EXTRA_PKGS:-})
    echo "install-deps: all build and test dependencies present${extra:+ (and $extra)}"
    exit 0
fi

echo "install-deps: missing: ${missing_what[*]}"
echo "install-deps: installing Debian packages: ${missing_pkgs[*]}"

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: ERROR: apt-get not found; install by hand: ${missing_pkgs[*]}" >&2
    exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-deps: ERROR: not root and sudo is missing; as root run:" >&2
        echo "    apt-get update && apt-get install -y --no-install-recommends ${missing_pkgs[*]}" >&2
        exit 1
    fi
    # Never hang on a password prompt when nobody can answer it.
    if [ -t 0 ]; then sudo=(sudo); else sudo=(sudo -n); fi
fi

# noninteractive, passed through env because sudo resets the environment:
# debconf takes its defaults (iperf3, for one, asks whether to start a
# daemon: no, which is what a benchmark wants).
export DEBIAN_FRONTEND=noninteractive
apt=("${sudo[@]+"${sudo[@]}"}" env DEBIAN_FRONTEND=noninteractive apt-get)
if ! "${apt[@]}" update -q; then
    echo "install-deps: ERROR: apt-get update failed; cannot install ${missing_pkgs[*]}" >&2
    exit 1
fi
if ! "${apt[@]}" install -y -q --no-install-recommends "${missing_pkgs[@]}"; then
    echo "install-deps: ERROR: apt-get install failed for: ${missing_pkgs[*]}" >&2
    exit 1
fi

# Verify, so a package that installs but does not provide the tool is caught.
installed=("${missing_what[@]}")
pkgs_done=("${missing_pkgs[@]}")
missing_pkgs=()
missing_what=()
check_all
if [ "${#missing_pkgs[@]}" -ne 0 ]; then
    echo "install-deps: ERROR: still missing after install: ${missing_what[*]}" >&2
    exit 1
fi
echo "install-deps: installed ${installed[*]} (packages: ${pkgs_done[*]})"

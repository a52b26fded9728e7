#!/usr/bin/env bash
# install-bench-deps.sh - install the reference tools that bench/run.sh
# compares llmlink with: iperf3 (one TCP stream on 127.0.0.1) and
# ucx_perftest (UCX's ucp_get over its tcp transport).
#
# Benchmark dependencies are not test dependencies: `make test` never runs
# this, and bench/run.sh runs without these tools (their rows then say
# "not installed").
#
# Idempotent, like ci/install-deps.sh: checks first, and only when something
# is missing runs `apt-get update` once and `apt-get install -y
# --no-install-recommends` for the missing Debian packages (through sudo
# when not root). Exits non-zero with a message naming what is missing if
# it cannot install.
set -euo pipefail

missing_pkgs=()   # Debian packages to install
missing_what=()   # the commands they provide, for messages

need_cmd() { # need_cmd COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    local p
    for p in "${missing_pkgs[@]+"${missing_pkgs[@]}"}"; do
        [ "$p" = "$2" ] && return 0
    done
    missing_pkgs+=("$2")
    missing_what+=("$1")
}

check_all() {
    need_cmd iperf3 iperf3
    need_cmd ucx_perftest ucx-utils
}

check_all

if [ "${#missing_pkgs[@]}" -eq 0 ]; then
    echo "install-bench-deps: iperf3 and ucx_perftest present"
    exit 0
fi

echo "install-bench-deps: missing: ${missing_what[*]}"
echo "install-bench-deps: installing Debian packages: ${missing_pkgs[*]}"

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-bench-deps: ERROR: apt-get not found; install by hand: ${missing_pkgs[*]}" >&2
    exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-bench-deps: ERROR: not root and sudo is missing; as root run:" >&2
        echo "    apt-get update && apt-get install -y --no-install-recommends ${missing_pkgs[*]}" >&2
        exit 1
    fi
    # Never hang on a password prompt when nobody can answer it.
    if [ -t 0 ]; then sudo=(sudo); else sudo=(sudo -n); fi
fi

# noninteractive: the iperf3 package asks whether to start a daemon
# (debconf default: no, which is what a benchmark wants).
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]+"${sudo[@]}"}" env DEBIAN_FRONTEND=noninteractive apt-get update -q; then
    echo "install-bench-deps: ERROR: apt-get update failed; cannot install ${missing_pkgs[*]}" >&2
    exit 1
fi
if ! "${sudo[@]+"${sudo[@]}"}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing_pkgs[@]}"; then
    echo "install-bench-deps: ERROR: apt-get install failed for: ${missing_pkgs[*]}" >&2
    exit 1
fi

# Verify, so a package that installs but does not provide the tool is caught.
installed=("${missing_what[@]}")
pkgs_done=("${missing_pkgs[@]}")
missing_pkgs=()
missing_what=()
check_all
if [ "${#missing_pkgs[@]}" -ne 0 ]; then
    echo "install-bench-deps: ERROR: still missing after install: ${missing_what[*]}" >&2
    exit 1
fi
echo "install-bench-deps: installed ${installed[*]} (packages: ${pkgs_done[*]})"

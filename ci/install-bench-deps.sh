#!/usr/bin/env bash
# install-bench-deps.sh - install the reference tools that bench/run.sh
# compares llmlink with: iperf3 (one TCP stream on 127.0.0.1) and
# ucx_perftest (UCX's ucp_get over its tcp transport; Debian package
# ucx-utils).
#
# Benchmark dependencies are not test dependencies: `make test` never runs
# this, and bench/run.sh runs without these tools (their rows then say
# "not installed").
#
# ci/install-deps.sh does the work, with these two packages added to
# LLMLINK_EXTRA_PKGS (it also checks what the build needs, which a
# benchmark run needs as well): idempotent, `apt-get install` only for what
# is missing (through sudo when not root), non-zero exit with a message
# naming what it could not install.
set -euo pipefail

LLMLINK_EXTRA_PKGS="iperf3 ucx-utils ${LLMLINK_EXTRA_PKGS:-}" \
    exec bash "$(dirname "$0")/install-deps.sh"

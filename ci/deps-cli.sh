# deps-cli.sh - Debian packages the `llmlink` command (tools/llmlink/) and
# its test need. Sourced by ci/install-deps.sh inside its check function.
# libmicrohttpd serves `llmlink serve --metrics` (the command's dependency
# only, never libllmlink's); its test parses the endpoint with
# prometheus_client from a venv (make cli-venv), hence python3-venv.
need_check libmicrohttpd-dev "libmicrohttpd headers (microhttpd.h)" 'pkg-config --exists libmicrohttpd || test -f /usr/include/microhttpd.h'
need_check python3-venv "python3 -m venv (venv and ensurepip)" 'python3 -c "import venv, ensurepip"'

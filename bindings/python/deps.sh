# bindings/python/deps.sh - Debian packages the Python binding needs; sourced
# by ci/install-deps.sh inside its check function (need_cmd / need_check).
need_cmd swig swig
need_check python3-venv "python3 -m venv (venv and ensurepip)" 'python3 -c "import venv, ensurepip"'
need_check python3-dev "Python headers (Python.h)" 'python3 -c "import os, sys, sysconfig; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()[\"include\"], \"Python.h\")))"'

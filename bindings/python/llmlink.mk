# bindings/python/llmlink.mk - the Python binding's part of the top Makefile.
#
#   make test-python    venv in $(BUILD)/py-venv, `pip install ./bindings/python
#                       numpy` into it (SWIG runs and the C library is compiled
#                       into the extension; [prometheus]: prometheus_client for
#                       llmlink.prometheus), then the pytest suite
#   make python         only the venv with the package installed
#   make test-python-dist   `python -m build` the sdist and the wheel (from the
#                       sdist), check what they carry, install each into a
#                       fresh venv under $(BUILD)/py-dist (the sdist with swig
#                       made to fail) and run the seed example from each
#
# The venv sees the system's site-packages, so a preinstalled pytest is used
# (pip installs one when there is none). setuptools builds under
# $(BUILD)/py-build, so BUILD=build-<you> keeps every output apart.

PY_DIR         := bindings/python
PY_VENV        := $(BUILD)/py-venv
PY_VENV_PYTHON := $(PY_VENV)/bin/python
PY_STAMP       := $(PY_VENV)/.llmlink-installed
PYTHON3        ?= python3
# The suite's own waits are bounded; this bounds the whole run as well.
PY_TEST_TIMEOUT ?= 900

PY_SOURCES := $(sort $(wildcard $(PY_DIR)/src/llmlink/*.py $(PY_DIR)/src/llmlink/*.pyi \
                                $(PY_DIR)/swig/*)) \
              $(PY_DIR)/setup.py $(PY_DIR)/pyproject.toml $(LIB_SRCS) \
              $(shell find core -name "*.h") $(SOURCES_LIST) $(HEADER)

# Two C builds of the extension (the wheel from the sdist, then the sdist's
# install) and pip downloads (setuptools, build, numpy, pytest); each step
# has its own limit in check_dist.py, and this bounds the whole run.
PY_DIST_TIMEOUT ?= 1200

TEST_SUITES_EXTRA += test-python test-python-dist
.PHONY: test-python python test-python-dist

python: $(PY_STAMP)

$(PY_VENV_PYTHON):
	$(say) VENV $(PY_VENV)
	$(Q)rm -rf $(PY_VENV)
	$(Q)$(PYTHON3) -m venv --system-site-packages $(PY_VENV)

$(PY_STAMP): $(PY_SOURCES) | $(PY_VENV_PYTHON)
	$(say) PIP $(PY_DIR)
	$(Q)LLMLINK_PY_BUILD_DIR=$(abspath $(BUILD))/py-build \
	    $(PY_VENV_PYTHON) -m pip install --quiet --disable-pip-version-check './$(PY_DIR)[prometheus]' numpy
	$(Q)$(PY_VENV_PYTHON) -c 'import pytest' 2>/dev/null || \
	    $(PY_VENV_PYTHON) -m pip install --quiet --disable-pip-version-check pytest
	$(Q)touch $@

test-python: $(PY_STAMP)
	cd $(PY_DIR)/tests && timeout $(PY_TEST_TIMEOUT) $(abspath $(PY_VENV_PYTHON)) -m pytest -q -p no:cacheprovider .

test-python-dist:
	timeout -k 10 $(PY_DIST_TIMEOUT) $(PYTHON3) $(PY_DIR)/tools/check_dist.py $(abspath $(BUILD))/py-dist

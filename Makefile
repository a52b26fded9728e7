# ################################################################
# llmlink - Makefile (GNU make)
#
# Common targets:
#   make                 static + shared library + llmlink.pc   (target: all)
#   make test            install deps, build everything, run every C suite
#                        (+ $(TEST_SUITES_EXTRA)); add WERROR=1 for CI
#   make asan / tsan     the same C suites under sanitizers (build-asan/, build-tsan/)
#   make fuzz            standalone fuzz drivers; libFuzzer runs when clang exists
#   make fuzz-ci         deps (clang, libFuzzer), then a bounded libFuzzer run of every
#                        fuzz target (FUZZ_CI_SECONDS each); fails on any crash
#   make demo / bench    run examples/pd_demo, bench/run.sh
#   make check-exports   the shared library exports only llmlink_*
#   make check-rebuild   installing/removing libibverbs-dev rebuilds what it affects
#   make test-rdma       tests/rdma/ programs in a soft-RoCE QEMU VM (ci/rdma-vm.sh);
#                        part of make test, and of make asan / tsan sanitized
#   make test-rdma-harness   the VM harness's own tests
#   make bench-rdma-2host    ib_read_bw vs llmlink pulls across the two guests
#   make man             man pages from ffi/llmlink.h's comments ($(BUILD)/man/man3)
#   make cli             the `llmlink` command ($(BUILD)/bin/llmlink, tools/llmlink/);
#                        its --metrics endpoint needs libmicrohttpd-dev (probed)
#   make cli-venv        a venv with prometheus_client for the command's test
#   make test-plot       bench/plot.py on a recorded JSON (in `make test`; matplotlib)
#   make install / uninstall   PREFIX, DESTDIR, LIBDIR, INCLUDEDIR, PKGCONFIGDIR, MANDIR, BINDIR
#   make clean
#
# Flags: CFLAGS (default -O2 -g), CPPFLAGS, LDFLAGS, LDLIBS are yours to
# override; the flags the code needs live in LLK_* variables and are always
# applied, so `make CFLAGS=-O0` still builds a correct library.
# ################################################################

.DEFAULT_GOAL := all
SHELL := /bin/sh
.SUFFIXES:
.DELETE_ON_ERROR:

# ---------------------------------------------------------------
# Version, parsed from the public header (single source of truth)
# ---------------------------------------------------------------
HEADER := ffi/llmlink.h
llk_version = $(shell sed -n 's/^\#define[[:space:]]\{1,\}LLMLINK_VERSION_$(1)[[:space:]]\{1,\}\([0-9]\{1,\}\).*/\1/p' $(HEADER))
MAJOR   := $(call llk_version,MAJOR)
MINOR   := $(call llk_version,MINOR)
PATCH   := $(call llk_version,PATCH)
VERSION := $(MAJOR).$(MINOR).$(PATCH)
ifeq ($(strip $(MAJOR)),)
$(error could not parse LLMLINK_VERSION_MAJOR from $(HEADER))
endif

# ---------------------------------------------------------------
# Tools and flags
# ---------------------------------------------------------------
# V=1 prints full command lines; by default one short line per step.
V ?= 0
ifeq ($(V),1)
Q :=
say = @:
else
Q := @
say = @printf '  %-7s %s\n'
endif

CC  ?= cc
AR  ?= ar
# `make` predefines CC=cc and AR=ar, so ?= above only matters under -R.
PKG_CONFIG ?= pkg-config

BUILD ?= build

CFLAGS   ?= -O2 -g
CPPFLAGS ?=
LDFLAGS  ?=
LDLIBS   ?=

# Set by `make asan` / `make tsan` / the libFuzzer build; applied to every
# compile and link (and after CFLAGS so a user -O cannot drop them).
SAN_FLAGS ?=

WERROR ?= 0
ifeq ($(WERROR),1)
LLK_WERROR := -Werror
endif

LLK_WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wno-unused-parameter $(LLK_WERROR)

# Library code: what the ABI requires (hidden by default, llmlink_* exported
# through LLMLINK_EXTERN when LLMLINK_BUILDING is defined).
# Sources, include directories, defines and the flags the code needs come
# from core/sources.list, which setup.py and build.rs read too.
SOURCES_LIST := core/sources.list
llk_list = $(shell sed -n 's/^$(1)[[:space:]]\{1,\}\([^[:space:]#]*\).*/\1/p' $(SOURCES_LIST))
LLK_SRC_LIST := $(call llk_list,src)
LLK_INCLUDES := $(addprefix -I,$(call llk_list,include))
LLK_CPPFLAGS := $(addprefix -D,$(call llk_list,define)) $(LLK_INCLUDES)
LLK_CFLAGS   := $(addprefix -std=,$(call llk_list,std)) $(LLK_WARN) $(call llk_list,flag) -fPIC
# System libraries ("lib NAME"): -lNAME on every link of the library, and
# libNAME in llmlink.pc's Requires.private.
LLK_LIBS     := $(addprefix -l,$(call llk_list,lib))
LLK_PC_REQUIRES := $(addprefix lib,$(call llk_list,lib))
ifeq ($(strip $(LLK_SRC_LIST)),)
$(error no "src" line in $(SOURCES_LIST))
endif

# Programs (tests, tools, fuzz targets, examples, bench): same dialect and
# warnings, but no prototype requirement for their file-local helpers and
# entry points such as LLVMFuzzerTestOneInput.
CMOCKA_CFLAGS := $(shell $(PKG_CONFIG) --cflags cmocka 2>/dev/null)
CMOCKA_LIBS   := $(shell $(PKG_CONFIG) --libs cmocka 2>/dev/null || echo -lcmocka)
ifeq ($(strip $(CMOCKA_LIBS)),)
CMOCKA_LIBS := -lcmocka
endif
PROG_CPPFLAGS := -D_GNU_SOURCE $(LLK_INCLUDES) -Itests/common $(CMOCKA_CFLAGS)

# What this machine has, probed on every run (see $(CONFIG_H) below). Only
# the Makefile's compiles use it; the others fall back to __has_include.
GEN_DIR  := $(BUILD)/gen
CONFIG_H := $(GEN_DIR)/llk_config.h
LLK_CPPFLAGS  += -DLLK_HAVE_CONFIG_H -I$(GEN_DIR)
PROG_CPPFLAGS += -DLLK_HAVE_CONFIG_H -I$(GEN_DIR)
PROG_CFLAGS   := -std=c11 $(LLK_WARN) -Wno-missing-prototypes -pthread

DEPFLAGS = -MMD -MP -MF $(@:.o=.d) -MT $@

# Libraries the shared object itself needs. -lm (and libssl until TLS code
# calls it) only lands in DT_NEEDED when the core really calls into it.
LIB_LDLIBS := -Wl,--push-state,--as-needed $(LLK_LIBS) -lm -Wl,--pop-state

# ---------------------------------------------------------------
# Sources and outputs
# ---------------------------------------------------------------
LIB_SRCS    := $(LLK_SRC_LIST)
COMMON_SRCS := $(sort $(wildcard tests/common/*.c))
UNIT_SRCS   := $(sort $(wildcard tests/unit/test_*.c))
INTEG_SRCS  := $(sort $(wildcard tests/integration/test_*.c))
# RDMA programs: built with the tests, run only inside the VM (test-rdma).
RDMA_SRCS   := $(sort $(wildcard tests/rdma/test_rdma_*.c))
TOOL_SRCS   := $(sort $(wildcard tests/tools/*.c))
# The two-guest VM's agent (test-only, runs in guest A): no library.
VM_AGENT_SRC := tests/rdma/vm_agent.c
FUZZ_SRCS   := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_MAIN   := tests/fuzz/standalone_main.c
EXAMPLE_SRCS := $(sort $(wildcard examples/*.c))
# bench/bench_async.c needs the task API (llmlink_task_poll_done and the
# rest): built once the library defines it.
BENCH_NEEDS_TASKS := $(if $(shell grep -lw llmlink_task_poll_done ffi/*.c 2>/dev/null),,bench/bench_async.c)
BENCH_SRCS  := $(filter-out $(BENCH_NEEDS_TASKS),$(sort $(wildcard bench/*.c)))
# bench/bench_common.c and bench/small_session.c are no programs: their
# objects are linked into every one.
BENCH_COMMON_SRC := bench/bench_common.c bench/small_session.c
BENCH_PROG_SRCS  := $(filter-out $(BENCH_COMMON_SRC),$(BENCH_SRCS))
# The `llmlink` command: every tools/llmlink/*.c makes one program.
CLI_SRCS    := $(sort $(wildcard tools/llmlink/*.c))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIB_OBJS    := $(call obj,$(LIB_SRCS))
COMMON_OBJS := $(call obj,$(COMMON_SRCS))
PROG_OBJS   := $(call obj,$(UNIT_SRCS) $(INTEG_SRCS) $(RDMA_SRCS) $(TOOL_SRCS) $(FUZZ_SRCS) $(VM_AGENT_SRC) \
                 $(FUZZ_MAIN) $(EXAMPLE_SRCS) $(BENCH_SRCS) $(CLI_SRCS)) $(COMMON_OBJS)

STATIC_LIB  := $(BUILD)/libllmlink.a
SHARED_REAL := $(BUILD)/libllmlink.so.$(VERSION)
SHARED_SO   := $(BUILD)/libllmlink.so.$(MAJOR)
SHARED_LIB  := $(BUILD)/libllmlink.so
PC_FILE     := $(BUILD)/llmlink.pc
EXPORT_MAP  := ffi/llmlink.map

# tests/unit/test_foo.c and tests/integration/test_bar.c -> $(BUILD)/tests/test_foo, test_bar
UNIT_BINS    := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))
INTEG_BINS   := $(patsubst tests/integration/%.c,$(BUILD)/tests/%,$(INTEG_SRCS))
RDMA_BINS    := $(patsubst tests/rdma/%.c,$(BUILD)/tests/%,$(RDMA_SRCS))
TOOL_BINS    := $(patsubst tests/tools/%.c,$(BUILD)/tests/%,$(TOOL_SRCS))
VM_AGENT_BIN := $(BUILD)/tests/llmlink-vm-agent
FUZZ_BINS    := $(patsubst tests/fuzz/%.c,$(BUILD)/tests/%,$(FUZZ_SRCS))
EXAMPLE_BINS := $(patsubst examples/%.c,$(BUILD)/examples/%,$(EXAMPLE_SRCS))
BENCH_BINS   := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_PROG_SRCS))
BENCH_COMMON_OBJ := $(call obj,$(BENCH_COMMON_SRC))
CLI_OBJS     := $(call obj,$(CLI_SRCS))
CLI_BIN      := $(BUILD)/bin/llmlink
# libmicrohttpd is the command's only extra library, and optional: without
# its header the command builds without `serve --metrics` (tools/llmlink/http.c).
# Deferred (=): probed only when the command is linked.
CLI_HAVE_MHD = $(call probe_header,microhttpd.h)
CLI_LIBS     = $(if $(filter 1,$(CLI_HAVE_MHD)),-lmicrohttpd)

dup_tests := $(filter $(UNIT_BINS),$(INTEG_BINS))
ifneq ($(dup_tests),)
$(error test names must be unique across tests/unit and tests/integration: $(notdir $(dup_tests)))
endif

DEPS := $(PROG_OBJS:.o=.d) $(LIB_OBJS:.o=.d)

# Installation
PREFIX       ?= /usr/local
EXEC_PREFIX  ?= $(PREFIX)
LIBDIR       ?= $(EXEC_PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
BINDIR       ?= $(EXEC_PREFIX)/bin
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
MANDIR       ?= $(PREFIX)/share/man
DESTDIR      ?=
INSTALL      ?= install

# ---------------------------------------------------------------
# Hook for the bindings: each appends the name of a target that runs its
# suite, and defines that target (here or in a file it -includes), e.g.
#     TEST_SUITES_EXTRA += test-python
#     test-python: all ; cd bindings/python && python3 -m pytest
# `make test` runs the C suite first, then these in order; every suite runs
# even when an earlier one failed, and `make test` fails if any failed.
# A binding may keep its rules in bindings/<lang>/llmlink.mk: every such
# file is included here (it sees BUILD, STATIC_LIB, SHARED_LIB, VERSION...).
# ---------------------------------------------------------------
TEST_SUITES_EXTRA ?=
BINDING_MKS := $(sort $(wildcard bindings/*/llmlink.mk))
-include $(BINDING_MKS)

# Fuzzing
FUZZ_SECONDS ?= 60
# make fuzz-ci: seconds per target (7 targets: ~6 min on CI's cores)
FUZZ_CI_SECONDS ?= 50
FUZZ_BUILD   ?= build-fuzz
CLANG        ?= clang
# standalone (default): link tests/fuzz/standalone_main.c;
# libfuzzer: link with clang's -fsanitize=fuzzer (used for $(FUZZ_BUILD)).
FUZZ_ENGINE  ?= standalone

ifeq ($(FUZZ_ENGINE),libfuzzer)
FUZZ_MAIN_OBJ  :=
FUZZ_LINK_FLAG := -fsanitize=fuzzer
else
FUZZ_MAIN_OBJ  := $(call obj,$(FUZZ_MAIN))
FUZZ_LINK_FLAG :=
endif

ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
TSAN_FLAGS := -fsanitize=thread
SAN_CFLAGS := -O1 -g

# ---------------------------------------------------------------
# Rebuild when flags change: the stamp's contents are the flags, and the
# file is rewritten (new mtime) only when they differ (cf. git's GIT-CFLAGS).
# ---------------------------------------------------------------
FLAGS_STAMP := $(BUILD)/.flags
FLAGS_NOW := $(CC) | $(CPPFLAGS) | $(CFLAGS) | $(LDFLAGS) | $(LDLIBS) | $(SAN_FLAGS) | $(LLK_WERROR) | $(FUZZ_ENGINE)

$(FLAGS_STAMP): FORCE
	@mkdir -p $(@D)
	@printf '%s\n' '$(subst ','\'',$(FLAGS_NOW))' > $@.tmp; \
	if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv -f $@.tmp $@; fi

# ---------------------------------------------------------------
# Feature probes, recorded in $(CONFIG_H) and rewritten only when the answer
# changes, with the compiler and CPPFLAGS of the build (a -I that shadows a
# header counts). Objects depend on it through their .d files, so `make`
# after installing libibverbs-dev rebuilds exactly the objects that include
# core/transport/verbs.h. Compiles wait for it (order-only prerequisite):
# on a first build no .d file exists yet.
# ---------------------------------------------------------------
probe_header = $(shell printf '\043include <%s>\n' '$(1)' | \
    $(CC) $(LLK_CPPFLAGS) $(CPPFLAGS) -E -x c -o /dev/null - >/dev/null 2>&1 && echo 1 || echo 0)

$(CONFIG_H): FORCE
	@mkdir -p $(@D)
	@{ echo '/* Generated by the Makefile on every run: what this machine has. */'; \
	   echo '#define LLK_HAVE_VERBS_H $(call probe_header,infiniband/verbs.h)'; \
	   echo '#define LLK_HAVE_MICROHTTPD_H $(call probe_header,microhttpd.h)'; } > $@.tmp; \
	if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv -f $@.tmp $@; printf '  %-7s %s\n' GEN "$@ ($$(sed -n 's/^.define //p' $@))"; fi

# ---------------------------------------------------------------
# Top-level targets
# ---------------------------------------------------------------
.PHONY: all lib static shared pc tests tools cli cli-venv plot-venv test-plot fuzz-bins examples bench-bins \
        build-all deps test test-c test-rdma test-rdma-harness bench-rdma-2host check-exports check-rebuild asan tsan san-run fuzz \
        fuzz-run-standalone fuzz-libfuzzer fuzz-libfuzzer-bins fuzz-ci demo bench man install uninstall clean \
        print-version FORCE

all: static shared pc
lib: static shared
static: $(STATIC_LIB)
shared: $(SHARED_LIB) $(SHARED_SO)
pc: $(PC_FILE)

tests: $(UNIT_BINS) $(INTEG_BINS) $(RDMA_BINS) $(TOOL_BINS) $(VM_AGENT_BIN)
tools: $(TOOL_BINS)
fuzz-bins: $(FUZZ_BINS)
examples: $(EXAMPLE_BINS)
bench-bins: $(BENCH_BINS)
cli: $(CLI_BIN)

# Everything the test run needs, plus examples and bench so CI compiles them.
build-all: all tests fuzz-bins examples bench-bins cli

print-version:
	@echo $(VERSION)

# ---------------------------------------------------------------
# Compilation
# ---------------------------------------------------------------
$(LIB_OBJS): $(BUILD)/obj/%.o: %.c $(FLAGS_STAMP) | $(CONFIG_H)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) $(LLK_CPPFLAGS) $(CPPFLAGS) $(LLK_CFLAGS) $(CFLAGS) $(SAN_FLAGS) $(DEPFLAGS) -c -o $@ $<

$(PROG_OBJS): $(BUILD)/obj/%.o: %.c $(FLAGS_STAMP) | $(CONFIG_H)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) $(PROG_CPPFLAGS) $(CPPFLAGS) $(PROG_CFLAGS) $(CFLAGS) $(SAN_FLAGS) $(DEPFLAGS) -c -o $@ $<

# ---------------------------------------------------------------
# Libraries
# ---------------------------------------------------------------
$(STATIC_LIB): $(LIB_OBJS)
	@mkdir -p $(@D)
	@rm -f $@
	$(say) AR $@
	$(Q)$(AR) rcs $@ $(LIB_OBJS)

$(SHARED_REAL): $(LIB_OBJS) $(EXPORT_MAP)
	@mkdir -p $(@D)
	$(say) LD $@
	$(Q)$(CC) -shared $(LDFLAGS) $(CFLAGS) $(SAN_FLAGS) -pthread \
	    -Wl,-soname,libllmlink.so.$(MAJOR) \
	    -Wl,--version-script=$(EXPORT_MAP) -Wl,-z,defs \
	    -o $@ $(LIB_OBJS) $(LIB_LDLIBS) $(LDLIBS)

$(SHARED_SO): $(SHARED_REAL)
	$(Q)ln -sf $(notdir $<) $@

$(SHARED_LIB): $(SHARED_SO)
	$(Q)ln -sf $(notdir $<) $@

# pkg-config file. PREFIX etc. are baked in, so it is regenerated (only
# rewritten when different) on every run: `make install PREFIX=/usr` after a
# plain `make` must not install a .pc pointing at /usr/local.
pc_libdir     = $(patsubst $(EXEC_PREFIX)%,$${exec_prefix}%,$(LIBDIR))
pc_includedir = $(patsubst $(PREFIX)%,$${prefix}%,$(INCLUDEDIR))
pc_exec_prefix = $(patsubst $(PREFIX)%,$${prefix}%,$(EXEC_PREFIX))

$(PC_FILE): ffi/llmlink.pc.in $(HEADER) FORCE
	@mkdir -p $(@D)
	@sed -e 's|@PREFIX@|$(PREFIX)|' \
	     -e 's|@EXEC_PREFIX@|$(pc_exec_prefix)|' \
	     -e 's|@LIBDIR@|$(pc_libdir)|' \
	     -e 's|@INCLUDEDIR@|$(pc_includedir)|' \
	     -e 's|@VERSION@|$(VERSION)|' \
	     -e 's|@REQUIRES_PRIVATE@|$(LLK_PC_REQUIRES)|' \
	     ffi/llmlink.pc.in > $@.tmp; \
	if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv -f $@.tmp $@; printf '  %-7s %s\n' GEN $@; fi

# ---------------------------------------------------------------
# Programs. All link the STATIC library, so tests may call the internal
# llk_* functions declared in the headers under core/.
# ---------------------------------------------------------------
TEST_LINK = $(CC) $(LDFLAGS) $(CFLAGS) $(SAN_FLAGS) -pthread -o $@ $(filter %.o,$^) \
            $(STATIC_LIB) $(CMOCKA_LIBS) $(LLK_LIBS) -lm $(LDLIBS)

$(UNIT_BINS): $(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(COMMON_OBJS) $(STATIC_LIB)
	@mkdir -p $(@D)
	$(say) LD $@
	$(Q)$(TEST_LINK)

$(INTEG_BINS): $(BUILD)/tests/%: $(BUILD)/obj/tests/integration/%.o $(COMMON_OBJS) $(STATIC_LIB)
	@mkdir -p $(@D)
	$(say) LD $@
	$(Q)$(TEST_LINK)

$(RDMA_BINS): $(BUILD)/tests/%: $(BUILD)/obj/tests/rdma/%.o $(COMMON_OBJS) $(STATIC_LIB)
	@mkdir -p $(@D)
	$(say) LD $@
	$(Q)$(TEST_LINK)

$(TOOL_BINS): $(BUILD)/tests/%: $(BUILD)/obj/tests/tools/%.o $(COMMON_OBJS) $(STATIC_LIB)
	@mkdir -p $(@D)
	$(say) LD $@
	$(Q)$(TEST_LINK)

$(VM_AGENT_BIN): $(call obj,$(VM_AGENT_SRC))
	@mkdir -p $(@D)
	$(say) LD $@
	$(Q)$(CC) $(LDFLAGS) $(CFLAGS) $(SAN_FLAGS) -pthread -o $@ $^

$(FUZZ_BINS): $(BUILD)/tests/%: $(BUILD)/obj/tests/fuzz/%.o $(FUZZ_MAIN_OBJ) $(STATIC_LIB)
	@mkdir -p $(@D)
	$(say) LD $@
	$(Q)$(CC) $(LDFLAGS) $(CFLAGS) $(SAN_FLAGS) $(FUZZ_LINK_FLAG) -pthread -o $@ $(filter %.o,$^) \
	    $(STATIC_LIB) $(LLK_LIBS) -lm $(LDLIBS)

$(EXAMPLE_BINS): $(BUILD)/examples/%: $(BUILD)/obj/examples/%.o $(STATIC_LIB)
	@mkdir -p $(@D)
	$(say) LD $@
	$(Q)$(CC) $(LDFLAGS) $(CFLAGS) $(SAN_FLAGS) -pthread -o $@ $< $(STATIC_LIB) $(LLK_LIBS) -lm $(LDLIBS)

$(BENCH_BINS): $(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BENCH_COMMON_OBJ) $(STATIC_LIB)
	@mkdir -p $(@D)
	$(say) LD $@
	$(Q)$(CC) $(LDFLAGS) $(CFLAGS) $(SAN_FLAGS) -pthread -o $@ $(filter %.o,$^) $(STATIC_LIB) \
	    $(LLK_LIBS) -lm $(LDLIBS)

$(CLI_BIN): $(CLI_OBJS) $(STATIC_LIB)
	@mkdir -p $(@D)
	$(say) LD $@
	$(Q)$(CC) $(LDFLAGS) $(CFLAGS) $(SAN_FLAGS) -pthread -o $@ $(CLI_OBJS) $(STATIC_LIB) \
	    $(CLI_LIBS) $(LLK_LIBS) -lm $(LDLIBS)

# ---------------------------------------------------------------
# Tests
# ---------------------------------------------------------------
# The command's test (tests/integration/test_cli.c) parses the metrics
# endpoint with prometheus_client's own parser, from this venv (pip, as the
# Python binding's suite installs its dependencies).
CLI_VENV := $(BUILD)/cli-venv
CLI_VENV_STAMP := $(CLI_VENV)/.prometheus-client
cli-venv: $(CLI_VENV_STAMP)
$(CLI_VENV_STAMP):
	$(say) VENV $(CLI_VENV)
	$(Q)rm -rf $(CLI_VENV)
	$(Q)$(PYTHON3) -m venv $(CLI_VENV)
	$(Q)$(CLI_VENV)/bin/python -m pip install --quiet --disable-pip-version-check prometheus_client
	@touch $@

# bench/plot.py's test (tests/tools/test_plot.py, in `make test`) and `make
# bench` draw with matplotlib, installed into the same venv.
PLOT_VENV_STAMP := $(CLI_VENV)/.matplotlib
plot-venv: $(PLOT_VENV_STAMP)
$(PLOT_VENV_STAMP): $(CLI_VENV_STAMP)
	$(say) PIP matplotlib
	$(Q)$(CLI_VENV)/bin/python -m pip install --quiet --disable-pip-version-check matplotlib
	@touch $@

TEST_SUITES_EXTRA += test-plot
test-plot: $(PLOT_VENV_STAMP)
	timeout 300 $(CLI_VENV)/bin/python tests/tools/test_plot.py

deps:
	bash ci/install-deps.sh

# Dependencies are installed before anything is compiled, hence the
# recursive make rather than prerequisites (which -j could reorder).
test: deps
	@status=0; \
	for suite in test-c test-rdma $(TEST_SUITES_EXTRA); do \
	    $(MAKE) --no-print-directory $$suite || status=1; \
	done; \
	exit $$status

# cli-venv needs pip's index: without it the suite still runs, and
# test_cli fails naming the missing venv.
test-c:
	$(MAKE) --no-print-directory build-all
	-$(MAKE) --no-print-directory cli-venv
	bash ci/run-tests.sh $(BUILD)

# The RDMA programs need a kernel with RDMA: the harness boots one with
# soft-RoCE (its host needs ci/deps-rdma.sh) and runs each there: every
# test_rdma_* but test_rdma_2host* in one guest, then the cross-guest list
# (matrix programs with P in guest A, test_rdma_2host) in two guests. One
# after the other: on 2 cores, three TCG vCPUs at once gain nothing. Both
# run even when the first fails.
# The two-guest programs get 240 s each: test_rdma_2host's pulls of 256 MiB
# over soft-RoCE under TCG take twice as long on a busy host.
test-rdma:
	$(MAKE) --no-print-directory build-all
	@status=0; \
	bash ci/rdma-vm.sh $(BUILD) || status=1; \
	LLMLINK_RDMA_TEST_TIMEOUT=$${LLMLINK_RDMA_TEST_TIMEOUT:-240} \
	    bash ci/rdma-vm.sh --two-guest $(BUILD) || status=1; \
	exit $$status

# RDMA READ bandwidth across the two guests: ib_read_bw and llmlink pulls
# per rail and over both, in one run (bench/rdma_2host.sh; bench/README.md).
bench-rdma-2host:
	$(MAKE) --no-print-directory build-all
	LLMLINK_RDMA_TEST_TIMEOUT=400 LLMLINK_RDMA_VM_VERBOSE=1 \
	    bash ci/rdma-vm.sh --two-guest $(BUILD) $(CURDIR)/bench/rdma_2host.sh

# The harness's own tests: stand-in programs that pass, fail, hang, leak a
# child, check the VM's environment; a crashed kernel; the host-side bound.
test-rdma-harness:
	$(MAKE) --no-print-directory build-all
	bash ci/rdma-vm/selftest.sh $(BUILD)

# The build notices libibverbs-dev appearing or going (ci/check-rebuild.sh,
# in a throwaway build directory); ci/run-tests.sh runs it too.
check-rebuild:
	sh ci/check-rebuild.sh

check-exports: $(SHARED_LIB)
	sh tests/abi/check_exports.sh $(SHARED_LIB)

# Sanitizer runs: the same rules, another build directory and extra flags.
# LLMLINK_SANITIZER lets slow tests scale themselves down; nothing is skipped.
# Sanitized RDMA programs run in a VM of 2 GiB (LLMLINK_RDMA_VM_MEM): the
# sanitizers' shadow memory ran the default 1 GiB guest out of memory.
asan: deps
	$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="$(SAN_CFLAGS)" \
	    SAN_FLAGS="$(ASAN_FLAGS)" build-all
	-$(MAKE) --no-print-directory BUILD=build-asan cli-venv
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	LLMLINK_SANITIZER=asan bash ci/run-tests.sh build-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	LLMLINK_SANITIZER=asan LLMLINK_RDMA_VM_MEM=2048 bash ci/rdma-vm.sh build-asan

tsan: deps
	$(MAKE) --no-print-directory BUILD=build-tsan CFLAGS="$(SAN_CFLAGS)" \
	    SAN_FLAGS="$(TSAN_FLAGS)" build-all
	-$(MAKE) --no-print-directory BUILD=build-tsan cli-venv
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	LLMLINK_SANITIZER=tsan bash ci/run-tests.sh build-tsan
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	LLMLINK_SANITIZER=tsan LLMLINK_RDMA_VM_MEM=2048 bash ci/rdma-vm.sh build-tsan

# ---------------------------------------------------------------
# Fuzzing: the standalone drivers (replay corpus + random + mutations),
# then, with clang, real libFuzzer runs of FUZZ_SECONDS each. libFuzzer
# writes new inputs into $(FUZZ_BUILD)/corpus/<name>, never into the repo.
# ---------------------------------------------------------------
# clang alone is not enough: Debian ships libFuzzer in libclang-rt-NN-dev,
# so probe by linking a trivial target.
fuzz: fuzz-run-standalone
	@if ! command -v $(CLANG) >/dev/null 2>&1; then \
	    echo "make fuzz: $(CLANG) is missing; ran the standalone drivers only (apt-get install clang libclang-rt-dev for libFuzzer)"; \
	elif ! printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n);\nint LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' | \
	        $(CLANG) -x c -fsanitize=fuzzer,address,undefined -o /dev/null - >/dev/null 2>&1; then \
	    echo "make fuzz: $(CLANG) cannot link -fsanitize=fuzzer (install its runtime, e.g. libclang-rt-14-dev); ran the standalone drivers only"; \
	else \
	    $(MAKE) --no-print-directory fuzz-libfuzzer; \
	fi

fuzz-run-standalone: fuzz-bins
	@status=0; \
	for bin in $(FUZZ_BINS); do \
	    name=$${bin##*/fuzz_}; \
	    echo "== $$bin tests/fuzz/corpus/$$name"; \
	    $$bin tests/fuzz/corpus/$$name || status=1; \
	done; exit $$status

# The targets built with clang, libFuzzer and ASan+UBSan into $(FUZZ_BUILD);
# ci/fuzz-run.sh runs them (per target: executions, cov/ft, crashes).
fuzz-libfuzzer-bins:
	$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=$(CLANG) CFLAGS="$(SAN_CFLAGS)" \
	    SAN_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	    FUZZ_ENGINE=libfuzzer fuzz-bins

fuzz-libfuzzer: fuzz-libfuzzer-bins
	bash ci/fuzz-run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# CI: installs clang and libFuzzer first (ci/deps-fuzz.sh, only when asked:
# `make test` needs no clang), then FUZZ_CI_SECONDS per target.
fuzz-ci:
	LLMLINK_FUZZ=1 bash ci/install-deps.sh
	$(MAKE) --no-print-directory fuzz-libfuzzer-bins
	bash ci/fuzz-run.sh $(FUZZ_BUILD) $(FUZZ_CI_SECONDS)

# ---------------------------------------------------------------
# Demo and benchmarks
# ---------------------------------------------------------------
demo: $(BUILD)/examples/pd_demo
	$(BUILD)/examples/pd_demo

# Then the figures: bench/collect.py measures with the llmlink command into
# $(BUILD)/bench/bench.jsonl, bench/plot.py draws $(BUILD)/bench/plots/*.png
# (bench/README.md). The status is run.sh's, or collect's when run.sh passed.
bench: bench-bins examples cli plot-venv
	@status=0; \
	if [ -f bench/run.sh ]; then \
	    LLMLINK_BUILD=$(BUILD) bash bench/run.sh $(BUILD) || status=$$?; \
	else \
	    echo "make bench: bench/run.sh does not exist; built: $(BENCH_BINS)"; \
	fi; \
	$(PYTHON3) bench/collect.py --llmlink $(CLI_BIN) -o $(BUILD)/bench/bench.jsonl || \
	    { [ $$status -ne 0 ] || status=1; }; \
	$(CLI_VENV)/bin/python bench/plot.py -o $(BUILD)/bench/plots $(BUILD)/bench/bench.jsonl || \
	    { [ $$status -ne 0 ] || status=1; }; \
	exit $$status

# ---------------------------------------------------------------
# Man pages (section 3), generated from the comments of $(HEADER):
# llmlink.3 (overview, status codes, option keys) and one per function.
# PYTHON3 only runs tools/gen_man.py (standard library).
# ---------------------------------------------------------------
PYTHON3   ?= python3
MAN_BUILD := $(BUILD)/man/man3
MAN_STAMP := $(MAN_BUILD)/.stamp
GEN_MAN   := tools/gen_man.py
# The page names, from the header (deferred: only install asks).
MAN_PAGES  = $(shell $(PYTHON3) $(GEN_MAN) --header $(HEADER) --list)
# `make install` worked without Python before the man pages: without it,
# it still installs the rest and says the pages were left out.
HAVE_PYTHON := $(if $(filter install,$(MAKECMDGOALS)),$(shell command -v $(PYTHON3) 2>/dev/null))

man: $(MAN_STAMP)

$(MAN_STAMP): $(HEADER) core/base/status.c $(GEN_MAN)
	$(say) GEN $(MAN_BUILD)
	$(Q)$(PYTHON3) $(GEN_MAN) --header $(HEADER) --status core/base/status.c --out $(MAN_BUILD) >/dev/null
	@touch $@

# ---------------------------------------------------------------
# Install
# ---------------------------------------------------------------
MAN_INSTALL = $(if $(HAVE_PYTHON),$(INSTALL) -m 644 $(addprefix $(MAN_BUILD)/,$(MAN_PAGES)) \
    $(DESTDIR)$(MANDIR)/man3/,echo "make install: $(PYTHON3) not found, man pages not installed")

install: all cli $(if $(HAVE_PYTHON),man)
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) \
	    $(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(BINDIR)
	$(INSTALL) -m 755 $(CLI_BIN) $(DESTDIR)$(BINDIR)/llmlink
	$(INSTALL) -m 644 $(STATIC_LIB) $(DESTDIR)$(LIBDIR)/libllmlink.a
	$(INSTALL) -m 755 $(SHARED_REAL) $(DESTDIR)$(LIBDIR)/libllmlink.so.$(VERSION)
	ln -sf libllmlink.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libllmlink.so.$(MAJOR)
	ln -sf libllmlink.so.$(MAJOR) $(DESTDIR)$(LIBDIR)/libllmlink.so
	$(INSTALL) -m 644 $(HEADER) $(DESTDIR)$(INCLUDEDIR)/llmlink.h
	$(INSTALL) -m 644 $(PC_FILE) $(DESTDIR)$(PKGCONFIGDIR)/llmlink.pc
	$(MAN_INSTALL)
	@echo "llmlink $(VERSION) installed in $(DESTDIR)$(LIBDIR)"

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libllmlink.a \
	      $(DESTDIR)$(LIBDIR)/libllmlink.so \
	      $(DESTDIR)$(LIBDIR)/libllmlink.so.$(MAJOR) \
	      $(DESTDIR)$(LIBDIR)/libllmlink.so.$(VERSION) \
	      $(DESTDIR)$(INCLUDEDIR)/llmlink.h \
	      $(DESTDIR)$(PKGCONFIGDIR)/llmlink.pc \
	      $(DESTDIR)$(BINDIR)/llmlink \
	      $(DESTDIR)$(MANDIR)/man3/llmlink.3 $(DESTDIR)$(MANDIR)/man3/llmlink_*.3
	@echo "llmlink $(VERSION) removed from $(DESTDIR)$(LIBDIR)"

clean:
	rm -rf $(BUILD) build-asan build-tsan $(FUZZ_BUILD)

FORCE:

# Automatic header dependencies (skipped for goals that compile nothing).
ifeq ($(filter clean uninstall print-version,$(MAKECMDGOALS)),)
-include $(DEPS)
endif

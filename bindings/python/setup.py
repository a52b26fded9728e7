"""Builds llmlink.capi: the C library is compiled into the extension from
its sources, with the includes, defines and flags listed in core/sources.list
(the one list the Makefile and llmlink-sys's build.rs read too), together
with SWIG's wrapper of swig/llmlink.i.

Where the sources and the wrapper come from:
  - an sdist (this directory has a PKG-INFO): csrc/, the C sources and
    core/sources.list copied in when the sdist was made, and gen/, the
    wrapper SWIG generated then; so installing an sdist needs a C compiler
    and the Python headers, not SWIG and not the repository;
  - a checkout: LLMLINK_SOURCE_DIR, else the repository this directory sits
    in (bindings/python -> ../..), and SWIG runs at build time.
`python -m build` (or `setup.py sdist`) stages csrc/ and gen/ for the sdist
and removes them afterwards: they are build outputs, never committed.
LLMLINK_PY_BUILD_DIR moves setuptools' build directory (the Makefile puts
it under its own BUILD directory).
"""
import ctypes
import os
import re
import shutil
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))
SWIG_DIR = os.path.join(HERE, "swig")
CSRC_DIR = os.path.join(HERE, "csrc")
GEN_DIR = os.path.join(HERE, "gen")
# SWIG's C output (it writes capi.py beside it); an sdist carries both in gen/.
WRAPPER_C = "llmlink_wrap.c"
# setuptools writes PKG-INFO at the top of every sdist and never in a
# checkout (there it goes into the egg-info directory).
IN_SDIST = os.path.isfile(os.path.join(HERE, "PKG-INFO"))


def source_dir():
    if IN_SDIST:
        root = CSRC_DIR
    else:
        root = os.environ.get("LLMLINK_SOURCE_DIR") or os.path.join(HERE, "..", "..")
    root = os.path.abspath(root)
    if not os.path.isfile(os.path.join(root, "ffi", "llmlink.h")):
        raise SystemExit(
            f"llmlink sources not found in {root} (no ffi/llmlink.h); "
            "set LLMLINK_SOURCE_DIR to the llmlink repository"
        )
    return root


ROOT = source_dir()
# SWIG's stdint.i takes uint64_t for unsigned long long unless told that
# long is 64 bits (LP64), as the C compiler sees it there.
WORDSIZE = ["-DSWIGWORDSIZE64"] if ctypes.sizeof(ctypes.c_long) == 8 else []
HEADER = os.path.join(ROOT, "ffi", "llmlink.h")


def header_version():
    text = open(HEADER, encoding="utf-8").read()
    parts = [re.search(rf"#define\s+LLMLINK_VERSION_{p}\s+(\d+)", text).group(1)
             for p in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(parts)


def read_sources_list():
    """core/sources.list as {kind: [values]}: "src FILE", "include DIR",
    "define NAME", "std NAME", "flag FLAG", "lib NAME" (a system library,
    -lNAME); '#' starts a comment."""
    entries = {}
    path = os.path.join(ROOT, "core", "sources.list")
    with open(path, encoding="utf-8") as f:
        for line in f:
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) != 2:
                raise SystemExit(f"{path}: bad line: {line.strip()!r}")
            entries.setdefault(words[0], []).append(words[1])
    if not entries.get("src"):
        raise SystemExit(f"{path}: no src lines")
    return entries


SOURCES = read_sources_list()


def library_sources():
    return [os.path.join(ROOT, s) for s in SOURCES["src"]]


def run_swig(out_dir):
    """SWIG over swig/llmlink.i into out_dir: llmlink_wrap.c and capi.py."""
    swig = shutil.which(os.environ.get("SWIG", "swig"))
    if not swig:
        raise SystemExit("swig not found: install it (Debian: apt-get install swig)")
    os.makedirs(out_dir, exist_ok=True)
    subprocess.check_call([
        swig, "-python", "-threads", *WORDSIZE, "-I" + os.path.join(ROOT, "ffi"),
        "-outdir", out_dir, "-o", os.path.join(out_dir, WRAPPER_C),
        os.path.join(SWIG_DIR, "llmlink.i"),
    ])


class BuildExtWithSwig(build_ext):
    """Takes SWIG's output (gen/ in an sdist, else SWIG runs now): the C
    wrapper is compiled into the extension, and capi.py is copied next to
    the package's other modules."""

    def run(self):
        if IN_SDIST:
            gen_dir = GEN_DIR
        else:
            gen_dir = os.path.join(self.build_temp, "swig")
            run_swig(gen_dir)
        wrapper = os.path.join(gen_dir, WRAPPER_C)
        # The extension carries its own copy of the library: export only the
        # module's init, so that another libllmlink in the process (or its
        # symbols) can neither interpose on nor clash with this one.
        os.makedirs(self.build_temp, exist_ok=True)
        version_script = os.path.join(self.build_temp, "capi.map")
        with open(version_script, "w", encoding="utf-8") as f:
            f.write("{ global: PyInit__capi; local: *; };\n")
        # The library sources are added only now: in a checkout they lie
        # outside this directory, which the sdist/egg-info steps refuse.
        for ext in self.extensions:
            ext.sources = ([wrapper] + [s for s in ext.sources if not s.endswith(".i")] +
                           library_sources())
            ext.extra_link_args = ext.extra_link_args + ["-Wl,--version-script=" + version_script]
        super().run()
        # capi.py goes where build_py put the package, and in place for
        # `pip install -e` / `build_ext --inplace`.
        targets = [os.path.join(self.build_lib, "llmlink")]
        if self.inplace:
            targets.append(os.path.join(HERE, "src", "llmlink"))
        for target in targets:
            os.makedirs(target, exist_ok=True)
            shutil.copyfile(os.path.join(gen_dir, "capi.py"), os.path.join(target, "capi.py"))


def stage_c_sources(dest):
    """Copies into dest, in the repository's layout, what the extension is
    built from: core/sources.list, each "src" file it lists, and every header
    under its "include" directories (the sources include path-qualified
    headers from there: "base/err.h", "llmlink.h")."""
    files = ["core/sources.list"] + SOURCES["src"]
    for inc in SOURCES.get("include", []):
        for top, _, names in os.walk(os.path.join(ROOT, inc)):
            files += [os.path.relpath(os.path.join(top, n), ROOT)
                      for n in names if n.endswith(".h")]
    for rel in sorted(set(files)):
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), os.path.join(dest, rel))


class SdistWithSources(sdist):
    """Makes an sdist that builds on its own: the C sources copied into
    csrc/ and SWIG's output into gen/ (MANIFEST.in grafts both), removed
    again once the archive is written. From an unpacked sdist both are
    already there and are packed as they are."""

    def run(self):
        if IN_SDIST:
            super().run()
            return
        for d in (CSRC_DIR, GEN_DIR):
            shutil.rmtree(d, ignore_errors=True)
        try:
            stage_c_sources(CSRC_DIR)
            run_swig(GEN_DIR)
            super().run()
        finally:
            for d in (CSRC_DIR, GEN_DIR):
                shutil.rmtree(d, ignore_errors=True)


# The library's includes, defines and flags, as the Makefile applies them.
extension = Extension(
    "llmlink._capi",
    sources=["swig/llmlink.i", "swig/llk_py_convert.c", "swig/llk_py_task.c",
             "swig/llk_py_metrics.c"],
    include_dirs=[os.path.join(ROOT, d) for d in SOURCES.get("include", [])] + [SWIG_DIR],
    define_macros=[(d, None) for d in SOURCES.get("define", [])],
    extra_compile_args=["-std=" + s for s in SOURCES.get("std", [])] + SOURCES.get("flag", []),
    extra_link_args=["-pthread"],
    # The system libraries of core/sources.list (OpenSSL), in its order.
    libraries=SOURCES.get("lib", []) + ["m"],
)

build_dir = os.environ.get("LLMLINK_PY_BUILD_DIR")
options = {}
if build_dir:
    # egg-info too: concurrent builds from one checkout then share nothing.
    os.makedirs(build_dir, exist_ok=True)
    options = {"build": {"build_base": build_dir}, "egg_info": {"egg_base": build_dir}}

setup(
    version=header_version(),
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtWithSwig, "sdist": SdistWithSources},
    options=options,
)

"""Builds llmlink.capi: SWIG runs at build time over swig/llmlink.i, and the
C library is compiled into the extension from its sources, with the
includes, defines and flags listed in the repository's core/sources.list
(the one list the Makefile and llmlink-sys's build.rs read too).

Where the sources are: LLMLINK_SOURCE_DIR, else the repository this
directory sits in (bindings/python -> ../..).
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

HERE = os.path.dirname(os.path.abspath(__file__))
SWIG_DIR = os.path.join(HERE, "swig")


def source_dir():
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
    "define NAME", "std NAME", "flag FLAG"; '#' starts a comment."""
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


class BuildExtWithSwig(build_ext):
    """Runs SWIG first: the C wrapper is compiled into the extension, and
    the generated capi.py is copied next to the package's other modules."""

    def run(self):
        swig = shutil.which(os.environ.get("SWIG", "swig"))
        if not swig:
            raise SystemExit("swig not found: install it (Debian: apt-get install swig)")
        gen_dir = os.path.join(self.build_temp, "swig")
        os.makedirs(gen_dir, exist_ok=True)
        wrapper = os.path.join(gen_dir, "llmlink_wrap.c")
        subprocess.check_call([
            swig, "-python", "-threads", *WORDSIZE, "-I" + os.path.join(ROOT, "ffi"),
            "-outdir", gen_dir, "-o", wrapper, os.path.join(SWIG_DIR, "llmlink.i"),
        ])
        # The extension carries its own copy of the library: export only the
        # module's init, so that another libllmlink in the process (or its
        # symbols) can neither interpose on nor clash with this one.
        version_script = os.path.join(gen_dir, "capi.map")
        with open(version_script, "w", encoding="utf-8") as f:
            f.write("{ global: PyInit__capi; local: *; };\n")
        # The library sources are added only now: they lie outside this
        # directory, which the sdist/egg-info steps before this refuse.
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


# The library's includes, defines and flags, as the Makefile applies them.
extension = Extension(
    "llmlink._capi",
    sources=["swig/llmlink.i", "swig/llk_py_convert.c"],
    include_dirs=[os.path.join(ROOT, d) for d in SOURCES.get("include", [])] + [SWIG_DIR],
    define_macros=[(d, None) for d in SOURCES.get("define", [])],
    extra_compile_args=["-std=" + s for s in SOURCES.get("std", [])] + SOURCES.get("flag", []),
    extra_link_args=["-pthread"],
    libraries=["m"],
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
    cmdclass={"build_ext": BuildExtWithSwig},
    options=options,
)

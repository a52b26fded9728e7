"""Builds llmlink.capi: SWIG runs at build time over swig/llmlink.i, and the
C library is compiled into the extension from its sources (core/*.c and
ffi/*.c of the repository, found by glob, so new files need no change here).

Where the sources are: LLMLINK_SOURCE_DIR, else the repository this
directory sits in (bindings/python -> ../..).
LLMLINK_PY_BUILD_DIR moves setuptools' build directory (the Makefile puts
it under its own BUILD directory).
"""
import ctypes
import glob
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


def library_sources():
    # Same set as the top Makefile's LIB_SRCS.
    return sorted(glob.glob(os.path.join(ROOT, "core", "*.c")) +
                  glob.glob(os.path.join(ROOT, "ffi", "*.c")))


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


# What the Makefile's LLK_CPPFLAGS / LLK_CFLAGS give the library.
extension = Extension(
    "llmlink._capi",
    sources=["swig/llmlink.i", "swig/llk_py_convert.c"],
    include_dirs=[os.path.join(ROOT, "ffi"), os.path.join(ROOT, "core"), SWIG_DIR],
    define_macros=[("_GNU_SOURCE", None), ("LLMLINK_BUILDING", None)],
    extra_compile_args=["-std=c11", "-fvisibility=hidden", "-pthread"],
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

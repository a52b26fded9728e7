"""make test-python-dist: the package as a user installs it, from an sdist and
from a wheel, each in a fresh virtualenv outside the source tree.

    check_dist.py OUT_DIR

1. `python -m build` (the `build` package from PyPI, in a tools venv under
   OUT_DIR) makes the sdist, and the wheel from that sdist.
2. The sdist's file list: every C source and header the library is built
   from (csrc/, by core/sources.list), core/sources.list itself, SWIG's
   output (gen/), and no absolute or ../ path. The wheel's: the extension,
   capi.py, py.typed and the stubs; its metadata: license, Python, typed.
3. venv-sdist: `pip install` the sdist with a `swig` first on PATH (and
   SWIG pointing at it) that records any call and fails: the install must
   not call it. venv-wheel: `pip install` the wheel. numpy into both (the
   test's prompt engine uses it), pytest too (its conftest imports it).
4. In each venv, from a directory outside the source tree: llmlink is the
   venv's, and the seed example (tests/fixtures/run_seed_example.py) links
   to a prompt engine in another process, in a network namespace of its own
   where this machine allows one (the example's port, 26000, is fixed).
Every step has its own time limit; the Makefile bounds the whole run too.
Exits non-zero at the first failure, saying what failed.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_DIR = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(PKG_DIR))
FIXTURES = os.path.join(PKG_DIR, "tests", "fixtures")
SEED_DRIVER = os.path.join(FIXTURES, "run_seed_example.py")
PIP_QUIET = ["--quiet", "--disable-pip-version-check"]
START = time.monotonic()

sys.path.insert(0, FIXTURES)
from netns import own_netns_command  # noqa: E402


def say(msg):
    print(f"  [{time.monotonic() - START:6.1f} s] {msg}", flush=True)


def fail(msg):
    print(f"test-python-dist: FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def run(cmd, timeout, **kw):
    """Runs cmd; its output is shown only when it fails."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        fail(f"timed out after {timeout} s: {' '.join(cmd)}")
    if res.returncode != 0:
        sys.stderr.write(res.stdout[-6000:] + res.stderr[-6000:])
        fail(f"exit {res.returncode}: {' '.join(cmd)}")
    return res


def make_venv(path):
    shutil.rmtree(path, ignore_errors=True)
    run([sys.executable, "-m", "venv", path], timeout=120)
    return os.path.join(path, "bin", "python")


def sources_list():
    """core/sources.list's src files and include dirs (as setup.py reads it)."""
    srcs, incs = [], []
    with open(os.path.join(REPO, "core", "sources.list"), encoding="utf-8") as f:
        for line in f:
            words = line.split("#", 1)[0].split()
            if len(words) == 2 and words[0] == "src":
                srcs.append(words[1])
            elif len(words) == 2 and words[0] == "include":
                incs.append(words[1])
    return srcs, incs


def header_version():
    text = open(os.path.join(REPO, "ffi", "llmlink.h"), encoding="utf-8").read()
    return re.search(r'LLMLINK_VERSION_STRING "([^"]+)"', text).group(1)


def check_sdist(sdist, version):
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    top = f"llmlink-{version}/"
    bad = [n for n in names if n.startswith("/") or ".." in n.split("/") or
           not (n + "/").startswith(top)]
    if bad:
        fail(f"sdist has paths outside its top directory {top}: {bad}")
    rel = {n[len(top):] for n in names}
    srcs, incs = sources_list()
    want = ["csrc/core/sources.list", "gen/llmlink_wrap.c", "gen/capi.py", "setup.py",
            "pyproject.toml", "swig/llk_py_convert.c", "swig/llk_py_convert.h",
            "swig/llk_py_task.c", "swig/llk_py_task.h",
            "swig/llk_py_metrics.c",
            "swig/llmlink.i", "src/llmlink/py.typed", "src/llmlink/__init__.pyi"]
    want += ["csrc/" + s for s in srcs]
    # Every header the library can include: those under the include dirs.
    for inc in incs:
        for root, _, files in os.walk(os.path.join(REPO, inc)):
            want += ["csrc/" + os.path.relpath(os.path.join(root, f), REPO)
                     for f in files if f.endswith(".h")]
    missing = sorted(set(want) - rel)
    if missing:
        fail(f"sdist lacks {missing}")
    say(f"sdist {os.path.basename(sdist)}: {len(names)} entries, no ../ or absolute path; "
        f"has the {len(srcs)} C sources of core/sources.list, every header under "
        f"{', '.join(incs)}, core/sources.list, gen/llmlink_wrap.c, gen/capi.py")


def check_wheel(wheel, version):
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        meta = whl.read(f"llmlink-{version}.dist-info/METADATA").decode()
    want = ["llmlink/py.typed", "llmlink/__init__.pyi", "llmlink/capi.py", "llmlink/__init__.py"]
    missing = [n for n in want if n not in names]
    if missing or not any(re.fullmatch(r"llmlink/_capi\..*\.so", n) for n in names):
        fail(f"wheel lacks {missing or 'llmlink/_capi*.so'}: {names}")
    for field in ("License-Expression: Apache-2.0", "Requires-Python: >=3.9",
                  "Classifier: Typing :: Typed", "Description-Content-Type: text/markdown",
                  "# llmlink for Python"):
        if field not in meta:
            fail(f"wheel METADATA lacks {field!r}")
    say(f"wheel {os.path.basename(wheel)}: extension, capi.py, py.typed, __init__.pyi; "
        "METADATA has the license (Apache-2.0), Requires-Python, Typing :: Typed, the README")


def check_installed(name, venv, python, run_dir, version, env):
    where = run([python, "-c", "import llmlink; print(llmlink.__file__); "
                 "print(llmlink.__version__)"], timeout=60, cwd=run_dir, env=env).stdout.split("\n")
    path, got_version = where[0], where[1]
    if not os.path.realpath(path).startswith(os.path.realpath(venv) + os.sep):
        fail(f"{name}: llmlink imported from {path}, not from the venv {venv}")
    if got_version != version:
        fail(f"{name}: llmlink.__version__ {got_version}, the header says {version}")
    prefix = own_netns_command() or []
    res = run(prefix + [python, SEED_DRIVER], timeout=150, cwd=run_dir, env=env)
    result = json.loads(res.stdout.strip().splitlines()[-1])
    if result["rc"] != 0 or "link failed" in result["stdout"] or \
            result["handshakes_completed"] != 1:
        fail(f"{name}: seed example: {result}")
    say(f"{name}: llmlink {got_version} from {path}; the seed example linked to a prompt "
        f"engine in another process (exit 0, 1 handshake; "
        f"{'own network namespace' if prefix else 'host loopback'}), run from {run_dir}")


def main():
    out = os.path.abspath(sys.argv[1])
    if os.path.realpath(out).startswith(os.path.realpath(PKG_DIR) + os.sep):
        fail(f"{out} is inside {PKG_DIR}: the venvs must import the installed package")
    os.makedirs(out, exist_ok=True)
    version = header_version()

    tools = os.path.join(out, "tools-venv", "bin", "python")
    # Kept between runs: only the build front end, not what is tested.
    if not os.path.exists(tools) or \
            subprocess.run([tools, "-c", "import build"], capture_output=True).returncode != 0:
        tools = make_venv(os.path.join(out, "tools-venv"))
        run([tools, "-m", "pip", "install", *PIP_QUIET, "build"], timeout=300)
    dist = os.path.join(out, "dist")
    shutil.rmtree(dist, ignore_errors=True)
    # No LLMLINK_PY_BUILD_DIR: it would move the egg-info out of the sdist's
    # tree, and the sdist would then list it by a ../ path.
    # No PYTHONPATH/PYTHONHOME either: the venvs must import what they installed.
    env = {k: v for k, v in os.environ.items()
           if k not in ("LLMLINK_PY_BUILD_DIR", "PYTHONPATH", "PYTHONHOME")}
    run([tools, "-m", "build", "--outdir", dist, PKG_DIR], timeout=600, env=env)
    sdist = os.path.join(dist, f"llmlink-{version}.tar.gz")
    wheels = [f for f in os.listdir(dist) if f.endswith(".whl")]
    if not os.path.isfile(sdist) or len(wheels) != 1:
        fail(f"python -m build made {os.listdir(dist)}, not one sdist and one wheel")
    wheel = os.path.join(dist, wheels[0])
    say(f"python -m build {os.path.relpath(PKG_DIR, REPO)}: {os.path.basename(sdist)}, {wheels[0]}")
    check_sdist(sdist, version)
    check_wheel(wheel, version)

    # A swig that fails and leaves a mark: installing the sdist must not call it.
    fake_bin = os.path.join(out, "no-swig-bin")
    os.makedirs(fake_bin, exist_ok=True)
    fake_swig, swig_called = os.path.join(fake_bin, "swig"), os.path.join(out, "swig-was-called")
    with open(fake_swig, "w", encoding="utf-8") as f:
        f.write(f'#!/bin/sh\necho "swig called: $*" >> "{swig_called}"\nexit 1\n')
    os.chmod(fake_swig, 0o755)
    if os.path.exists(swig_called):
        os.remove(swig_called)
    no_swig_env = dict(env, PATH=fake_bin + os.pathsep + env.get("PATH", ""), SWIG=fake_swig)

    run_dir = os.path.join(out, "run")
    os.makedirs(run_dir, exist_ok=True)
    for name, artifact, install_env in (("venv-sdist", sdist, no_swig_env),
                                        ("venv-wheel", wheel, env)):
        venv = os.path.join(out, name)
        python = make_venv(venv)
        run([python, "-m", "pip", "install", *PIP_QUIET, "--no-cache-dir", artifact,
             "numpy", "pytest"], timeout=600, env=install_env, cwd=run_dir)
        if name == "venv-sdist":
            if os.path.exists(swig_called):
                fail(f"installing the sdist called swig: {open(swig_called).read()}")
            say(f"{name}: pip install {os.path.basename(artifact)} with a failing swig first "
                "on PATH and SWIG set to it: built, and swig was never called")
        else:
            say(f"{name}: pip install {os.path.basename(artifact)}")
        check_installed(name, venv, python, run_dir, version, env)
    print(f"test-python-dist: OK ({time.monotonic() - START:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

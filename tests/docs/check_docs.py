#!/usr/bin/env python3
"""check_docs.py - the user docs say what the code does.

- docs/options.md lists exactly the keys of the option table (specs[]) in
  core/base/options.c, each once;
- docs/status-codes.md lists exactly the status macros of ffi/llmlink.h,
  each with the header's value and the name and sentence of
  core/base/status.c;
- docs/migration.md names every public name of the Python package
  (llmlink.__all__), every LLMConfig option and every public method of
  LLMDataDist and CacheManager (read from the sources, no build needed);
- docs/async.md's C example is, word for word, the marked part of
  examples/async_pull.c (which `make examples` compiles).

Prints what it compared; exits 1 on any difference. Standard library only.
"""
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
problems = []


def read(rel):
    return (ROOT / rel).read_text(encoding="utf-8")


def table_rows(md):
    """Cells of each table row of a markdown text, header and rule excluded."""
    rows = []
    for line in md.splitlines():
        if not line.startswith("|") or re.match(r"^\|\s*-", line):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in ("Key", "C macro"):
            continue
        rows.append(cells)
    return rows


def code(cell):
    m = re.fullmatch(r"`([^`]*)`", cell)
    return m.group(1) if m else None


def compare(what, documented, actual):
    missing = sorted(set(actual) - set(documented))
    extra = sorted(set(documented) - set(actual))
    dups = sorted({k for k in documented if documented.count(k) > 1})
    if missing:
        problems.append(f"{what}: not documented: {', '.join(missing)}")
    if extra:
        problems.append(f"{what}: documented but not in the code: {', '.join(extra)}")
    if dups:
        problems.append(f"{what}: documented more than once: {', '.join(dups)}")


# --- options ------------------------------------------------------------
src = read("core/base/options.c")
m = re.search(r"static const key_spec_t specs\[\] = \{(.*?)\n\};", src, re.S)
if not m:
    sys.exit("check_docs: cannot find specs[] in core/base/options.c")
code_keys = re.findall(r'\{"([^"]+)",\s*K_', m.group(1))
doc_keys = [code(r[0]) for r in table_rows(read("docs/options.md"))]
compare("docs/options.md vs core/base/options.c specs[]", doc_keys, code_keys)
print(f"check_docs: options: {len(code_keys)} keys in specs[], {len(doc_keys)} rows in docs/options.md")

# --- statuses -----------------------------------------------------------
header = read("ffi/llmlink.h")
macros = {n: int(v, 16) for n, v in
          re.findall(r"^#define\s+(LLMLINK_\w+)\s+0x([0-9A-Fa-f]+)u\b", header, re.M)}
table = {c: (n, t) for c, n, t in
         re.findall(r'\{(LLMLINK_\w+),\s*"([^"]+)",\s*"([^"]*)"\}', read("core/base/status.c"))}
compare("core/base/status.c table vs ffi/llmlink.h", list(table), list(macros))
rows = table_rows(read("docs/status-codes.md"))
compare("docs/status-codes.md vs ffi/llmlink.h", [code(r[0]) for r in rows], list(macros))
for r in rows:
    if len(r) != 5:
        problems.append(f"docs/status-codes.md: row {r[0]} has {len(r)} cells, not 5")
        continue
    macro, name, value, sentence = code(r[0]), code(r[1]), code(r[2]), r[3]
    if macro not in macros:
        continue
    if value is None or int(value, 16) != macros[macro]:
        problems.append(f"docs/status-codes.md: {macro} is {r[2]}, the header says 0x{macros[macro]:08X}")
    if macro in table:
        want_name, want_text = table[macro]
        if name != want_name:
            problems.append(f"docs/status-codes.md: {macro} named {r[1]}, status.c says {want_name}")
        if sentence != want_text:
            problems.append(f"docs/status-codes.md: {macro} sentence '{sentence}', status.c says '{want_text}'")
    if not r[4]:
        problems.append(f"docs/status-codes.md: {macro} does not say when it is returned")
print(f"check_docs: statuses: {len(macros)} in ffi/llmlink.h, {len(table)} in status.c, "
      f"{len(rows)} rows in docs/status-codes.md (value, name, sentence each)")

# --- migration ----------------------------------------------------------
pkg = ROOT / "bindings/python/src/llmlink"


def module(name):
    return ast.parse((pkg / name).read_text(encoding="utf-8"))


def class_def(tree, name):
    return next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name)


wanted = []
init = module("__init__.py")
for node in ast.walk(init):
    if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
        wanted += [e.value for e in node.value.elts]
for file, cls in (("_datadist.py", "LLMDataDist"), ("_cache_manager.py", "CacheManager")):
    for node in class_def(module(file), cls).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                not node.name.startswith("_"):
            wanted.append(node.name)
config = class_def(module("_config.py"), "LLMConfig")
for node in config.body:
    if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
        wanted += [t.id for t in node.targets]
    if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
        wanted.append(node.name)
migration = read("docs/migration.md")
named = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_.]*)(?:\(|`)", migration))
named |= {n.rsplit(".", 1)[-1] for n in named}
missing = sorted(set(wanted) - named)
if missing:
    problems.append(f"docs/migration.md: does not name {', '.join(missing)}")
print(f"check_docs: migration: {len(set(wanted))} public Python names, all named in docs/migration.md"
      if not missing else f"check_docs: migration: {len(missing)} of {len(set(wanted))} public names missing")

# --- the async.md example ------------------------------------------------
# The function in docs/async.md's C block (after its #include lines) is the
# one examples/async_pull.c compiles and runs, between its markers.
example = read("examples/async_pull.c")
m = re.search(r"/\* \[async\.md example\] \*/\n(.*?)/\* \[end of the async\.md example\] \*/",
              example, re.S)
blocks = re.findall(r"```c\n(.*?)```", read("docs/async.md"), re.S)
if not m:
    problems.append("examples/async_pull.c: the async.md example markers are missing")
elif len(blocks) != 1:
    problems.append(f"docs/async.md: {len(blocks)} C blocks, expected 1 (the example)")
else:
    doc_body = re.sub(r"\A(#include [^\n]*\n)+\n", "", blocks[0])
    if doc_body != m.group(1):
        problems.append("docs/async.md: the C example differs from examples/async_pull.c "
                        "(between its '[async.md example]' markers)")
if m and len(blocks) == 1 and doc_body == m.group(1):
    print("check_docs: async.md example: the same text as examples/async_pull.c")

# --- links --------------------------------------------------------------
# Links may point into the repository or to public upstream documentation.
for doc in ("docs/options.md", "docs/status-codes.md", "docs/migration.md", "docs/async.md"):
    text = read(doc)
    for url in re.findall(r"https?://[^\s)>\]`]+", text):
        if not re.match(r"https://www\.hiascend\.com/", url):
            problems.append(f"{doc}: link outside the repository: {url}")
    for target in re.findall(r"\]\(([^)]+)\)", text):
        if re.match(r"https?://", target):
            continue
        path = (ROOT / doc).parent / target.split("#")[0]
        if not path.exists():
            problems.append(f"{doc}: broken link {target}")
print("check_docs: links: relative links resolve, external ones only to hiascend.com")

for p in problems:
    print(f"check_docs: FAIL: {p}")
if problems:
    sys.exit(1)
print("check_docs: PASS")

#!/usr/bin/env python3
"""gen_man.py - man pages (section 3) from the comments of ffi/llmlink.h.

    gen_man.py --header ffi/llmlink.h [--status core/base/status.c] --out DIR
    gen_man.py --header ffi/llmlink.h --list

Writes DIR/llmlink.3 (overview: conventions, thread safety, status codes,
option keys, the list of functions) and DIR/<function>.3 for every
LLMLINK_EXTERN declaration: its synopsis, the comment above it (shared by
declarations that follow each other without a blank line), and the types
its parameters use with their comments. The header's comments are the
documentation; nothing here restates them, so the pages cannot drift.
--list prints the page names (what `make install` / `uninstall` handle).
Standard library only; exits non-zero when the header has an unexpected
shape, so a header change that breaks the pages is noticed by `make man`.
"""
import argparse
import re
import sys
from pathlib import Path


def die(msg):
    sys.exit(f"gen_man: {msg}")


def comment_text(block):
    """The text of a /* ... */ block, without the comment markers."""
    out = []
    for line in block.splitlines():
        line = re.sub(r"^\s*/?\*+/?( ?)", "", line.rstrip())
        line = re.sub(r"\s*\*+/$", "", line)
        out.append(line)
    while out and not out[0].strip():
        out.pop(0)
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out)


def parse(header_text):
    """(top comment, [groups], {type name: (comment, code)}, [(macro, value, trailing comment)])"""
    lines = header_text.splitlines()
    top = None
    groups, types, statuses = [], {}, []
    pending = None      # the comment right above what comes next
    group = None        # the declaration group being extended
    i = 0
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if s.startswith("/*"):
            j = i
            while "*/" not in lines[j]:
                j += 1
            text = comment_text("\n".join(lines[i:j + 1]))
            # Section banners: a rule of dashes, or a title padded to it.
            banner = i == j and re.fullmatch(r"/\* (-+|.*\S {3,}) \*/", s)
            if top is None:
                top = text
            else:
                pending = None if banner else text
            group = None
            i = j + 1
            continue
        if s.startswith("LLMLINK_EXTERN"):
            j = i
            while ";" not in lines[j]:
                j += 1
            decl = " ".join(part.strip() for part in lines[i:j + 1])
            decl = re.sub(r"^LLMLINK_EXTERN\s+", "", decl)
            m = re.search(r"\b(llmlink_\w+)\s*\(", decl)
            if not m:
                die(f"line {i + 1}: no function name in: {decl}")
            if group is None:
                group = {"comment": pending, "decls": []}
                groups.append(group)
            group["decls"].append((m.group(1), decl))
            pending = None
            i = j + 1
            continue
        if s.startswith("typedef"):
            j = i
            if "{" in s:
                while not re.match(r"^\}\s*\w+\s*;", lines[j].strip()):
                    j += 1
            else:
                while ";" not in lines[j]:
                    j += 1
            code = "\n".join(lines[i:j + 1])
            m = re.search(r"(\w+)\s*;\s*$", code) or re.search(r"\(\*(\w+)\)", code)
            if m:
                types[m.group(1)] = (pending, code)
            pending = None
            group = None
            i = j + 1
            continue
        m = re.match(r"#define\s+(LLMLINK_\w+)\s+0x([0-9A-Fa-f]+)u\b(?:\s*/\*\s*(.*?)\s*\*/)?", s)
        if m:
            statuses.append((m.group(1), int(m.group(2), 16), m.group(3) or ""))
        if s.startswith("#define"):
            # A comment above #defines may describe a typedef that follows.
            while lines[i].rstrip().endswith("\\"):
                i += 1
            group = None
            i += 1
            continue
        if not s:
            pending = None
        group = None
        i += 1
    if top is None or not groups or not statuses:
        die("the header has no leading comment, no LLMLINK_EXTERN function or no status macro")
    return top, groups, types, statuses


def status_sentences(path):
    if not path:
        return {}
    text = Path(path).read_text(encoding="utf-8")
    return {c: (n, t) for c, n, t in
            re.findall(r'\{(LLMLINK_\w+),\s*"([^"]+)",\s*"([^"]*)"\}', text)}


def esc(text):
    """Text for roff: backslashes escaped, no line starting a request."""
    out = []
    for line in text.split("\n"):
        line = line.replace("\\", "\\e")
        if line.startswith((".", "'")):
            line = "\\&" + line
        out.append(line)
    return "\n".join(out)


def preformatted(text):
    return ".PP\n.nf\n" + esc(text) + "\n.fi\n"


def short(comment, name):
    """The NAME line: the comment's first sentence when it is short."""
    if not comment:  # llmlink_get_role: "get role"
        return name[len("llmlink_"):].replace("_", " ")
    first = re.split(r"(?<=[.:;])\s", " ".join(comment.split()), maxsplit=1)[0].rstrip(".:;")
    if len(first.split()) < 3:  # a heading ("Transfers."): the name says more
        return name[len("llmlink_"):].replace("_", " ")
    if len(first) > 70:
        first = first[:67].rsplit(" ", 1)[0] + "..."
    return first


def wrap_decl(decl, width=78):
    """One declaration over lines of at most width, broken after commas."""
    head, sep, rest = decl.partition("(")
    parts = rest.split(", ")
    lines, line = [], head + sep
    for k, part in enumerate(parts):
        piece = part + ("," if k < len(parts) - 1 else "")
        if len(line) + len(piece) + 1 > width and line.strip() and not line.endswith("("):
            lines.append(line.rstrip())
            line = "    "
        line += piece + ("" if k == len(parts) - 1 else " ")
    lines.append(line.rstrip())
    return "\n".join(lines)


def th(name, version):
    # .nh .ad l: no hyphenated or stretched identifiers.
    return f'.TH {name.upper()} 3 "" "llmlink {version}" "llmlink manual"\n.nh\n.ad l\n'


def section(top, title):
    """The part of the top comment under a heading line such as "Thread safety"."""
    m = re.search(rf"^{title}\n(.*?)(?=^\S|\Z)", top, re.M | re.S)
    if not m:
        die(f'the header\'s leading comment has no "{title}" section')
    return m.group(1).rstrip()


def overview(top, groups, types, statuses, sentences, version):
    intro = re.split(r"^Conventions$", top, flags=re.M)[0].strip()
    intro = "\n".join(l for l in intro.splitlines() if not l.startswith("llmlink.h - "))
    init = next((g for g in groups if g["decls"][0][0] == "llmlink_init"), None)
    if init is None or not init["comment"]:
        die("no comment above llmlink_init (the option keys)")
    out = [th("llmlink", version),
           ".SH NAME\nllmlink \\- link LLM decode clusters to prefill clusters and move KV cache\n",
           ".SH SYNOPSIS\n.nf\n.B #include <llmlink.h>\n.PP\n"
           "cc ... $(pkg\\-config \\-\\-cflags \\-\\-libs llmlink)\n"
           "cc ... \\-static ... $(pkg\\-config \\-\\-static \\-\\-libs llmlink)\n.fi\n",
           ".SH DESCRIPTION\n" + preformatted(intro),
           ".SS Conventions\n" + preformatted(section(top, "Conventions")),
           ".SH THREAD SAFETY\n" + preformatted(section(top, "Thread safety")),
           ".SH STATUS CODES\n"]
    for macro, value, note in statuses:
        name, text = sentences.get(macro, ("", note))
        out.append(f".TP\n.B {macro}\n0x{value:08X}" + (f" ({esc(name)})" if name else "") +
                   "\n" + (esc(text) if text else "") + "\n")
    out.append(".SH OPTIONS\nKeys and values of\n.BR llmlink_init (3):\n" +
               preformatted(init["comment"]))
    out.append(".SH FUNCTIONS\n")
    for g in groups:
        for name, _ in g["decls"]:
            out.append(f".TP\n.BR {name} (3)\n{esc(short(g['comment'], name))}\n")
    out.append(".SH SEE ALSO\n" + ",\n".join(f".BR {n} (3)" for g in groups for n, _ in g["decls"])
               + "\n")
    return "".join(out)


def page(g, name, types, version):
    out = [th(name, version),
           f".SH NAME\n{name} \\- {esc(short(g['comment'], name))}\n",
           ".SH SYNOPSIS\n.nf\n.B #include <llmlink.h>\n.PP\n"]
    for _, decl in g["decls"]:
        out.append(esc(wrap_decl(decl)) + "\n")
    out.append(".fi\n")
    out.append(".SH DESCRIPTION\n")
    if g["comment"]:
        out.append(preformatted(g["comment"]))
    else:
        out.append("No comment of its own in\n.IR llmlink.h ;\nsee\n.BR llmlink (3)\n"
                   "for the conventions every call follows.\n")
    used = []
    for _, decl in g["decls"]:
        for t in re.findall(r"\b(llmlink_\w+_t)\b", decl):
            if t in types and t not in used and t not in ("llmlink_t", "llmlink_status_t"):
                used.append(t)
    # Types those types use (a cluster info's ip infos, a role).
    for t in list(used):
        for inner in re.findall(r"\b(llmlink_\w+_t)\b", types[t][1]):
            if inner in types and inner not in used and inner != t and inner != "llmlink_status_t":
                used.append(inner)
    if used:
        out.append(".SH TYPES\n")
        for t in used:
            comment, code = types[t]
            out.append(preformatted((comment + "\n\n" if comment else "") + code))
    out.append(".SH RETURN VALUE\n")
    if any(re.match(r"llmlink_status_t\s", d) for _, d in g["decls"]):
        out.append("A status code: LLMLINK_SUCCESS, or what failed, with the detail in\n"
                   ".BR llmlink_last_error (3).\nThe codes are listed in\n.BR llmlink (3).\n")
    else:
        out.append("As declared above; see the description.\n")
    out.append(".SH SEE ALSO\n.BR llmlink (3)\n")
    return "".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--header", required=True)
    ap.add_argument("--status", help="core/base/status.c, for each status's name and sentence")
    ap.add_argument("--out")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    text = Path(a.header).read_text(encoding="utf-8")
    m = re.search(r'#define\s+LLMLINK_VERSION_STRING\s+"([^"]+)"', text)
    version = m.group(1) if m else "?"
    top, groups, types, statuses = parse(text)
    names = [n for g in groups for n, _ in g["decls"]]
    if len(set(names)) != len(names):
        die("a function is declared twice")
    if a.list:
        print("\n".join(["llmlink.3"] + [n + ".3" for n in names]))
        return
    if not a.out:
        die("--out DIR or --list")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.3"):
        old.unlink()  # a function removed from the header loses its page
    (out / "llmlink.3").write_text(overview(top, groups, types, statuses,
                                            status_sentences(a.status), version))
    for g in groups:
        for name, _ in g["decls"]:
            (out / f"{name}.3").write_text(page(g, name, types, version))
    print(f"gen_man: {len(names) + 1} pages in {out} (llmlink.3 and {len(names)} functions)")


if __name__ == "__main__":
    main()

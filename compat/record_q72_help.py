#!/usr/bin/env python3
"""Records QEMU 7.2's `help` and `info` lists from the installed
qemu-system-x86_64 and writes compat/q72_help_table.c.

    compat/record_q72_help.py [OUTPUT.c]     (default: compat/q72_help_table.c)
    compat/record_q72_help.py --check        (exit 1 if the checked-in table differs)

Each entry is what QEMU prints for `help NAME` (`help info NAME`); the
script cuts the full list into entries and proves the cut by asking QEMU
for every entry alone.  The texts are QEMU's output, recorded so that the
qemu-7.2 profile can answer `help` byte for byte without a QEMU behind it."""
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
import sgtest  # noqa: E402


def hmp(q, line):
    return q.hmp(line).replace("\r\n", "\n")


def entries(text, info):
    """Splits a help list into entries: an entry starts at a line that begins
    with a command name (continuation lines start with a tab or '[')."""
    pat = re.compile(r"^info [a-z]" if info else r"^[a-z?]")
    out = []
    for line in text.split("\n")[:-1]:
        if pat.match(line) or not out:
            out.append(line + "\n")
        else:
            out[-1] += line + "\n"
    return out


def names(entry, info):
    first = entry.split(" ", 2)[1 if info else 0]
    return first


def record():
    d = tempfile.mkdtemp(prefix="q72help-")
    img = os.path.join(d, "a.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "16M"], check=True)
    proc, sock = sgtest.start_qemu(
        [f"file={img},if=none,id=drive0,format=qcow2"], d)
    try:
        q = sgtest.QMP(sock)
        version = q.cmd("query-version")["return"]["qemu"]
        if (version["major"], version["minor"]) != (7, 2):
            sgtest.fail(f"this is QEMU {version}, not 7.2")
        full, info = hmp(q, "help"), hmp(q, "info")
        tables = {}
        alones = {}
        for is_info, text in ((False, full), (True, info)):
            es = entries(text, is_info)
            for e in es:
                name = names(e, is_info).split("|")[0]
                if not is_info and name == "info":
                    continue   # `help info` is the info list, checked below
                alone = hmp(q, ("help info " if is_info else "help ") + name)
                # `help log` adds the log items: kept as the entry's own text.
                if alone != e and not alone.startswith(e):
                    if not (not is_info and name == "log"):
                        sgtest.fail(f"entry {name!r}: cut {e!r} but QEMU says {alone!r}")
                alones[(is_info, e)] = alone if alone != e else None
            if "".join(es) != text:
                sgtest.fail("entries do not add up to the whole list")
            tables[is_info] = es
        if hmp(q, "help info") != info:
            sgtest.fail("`help info` is not the `info` list")
        return tables, alones
    finally:
        proc.kill()
        proc.wait()


def c_string(s):
    out = '"'
    for ch in s:
        if ch == "\n":
            out += '\\n"\n     "'
        elif ch == "\t":
            out += "\\t"
        elif ch in '"\\':
            out += "\\" + ch
        else:
            out += ch
    out += '"'
    return out.replace('\n     ""', "")


def render(recorded):
    tables, alones = recorded
    lines = [
        "/* q72_help_table.c: QEMU 7.2's `help` and `info` lists, entry by entry,",
        " * as qemu-system-x86_64 7.2 prints them (recorded by record_q72_help.py;",
        " * do not edit by hand, run it again).  Line ends are \"\\n\". */",
        '#include <stddef.h>',
        "",
        '#include "sg_q72.h"',
        "",
    ]
    for is_info, tab in ((False, "sg_q72_help_top"), (True, "sg_q72_help_info")):
        lines.append(f"const struct sg_q72_help_entry {tab}[] = {{")
        for e in tables[is_info]:
            lines.append(f'    {{"{names(e, is_info)}",')
            alone = alones.get((is_info, e))
            lines.append(f"     {c_string(e)},")
            lines.append(f"     {c_string(alone) if alone else 'NULL'}}},")
        lines.append("    {0, 0, 0},")
        lines.append("};")
        lines.append("")
    return "\n".join(lines)


def main():
    sgtest.require_tool("qemu-system-x86_64")
    sgtest.require_tool("qemu-img")
    check = "--check" in sys.argv[1:]
    args = [a for a in sys.argv[1:] if a != "--check"]
    path = args[0] if args else os.path.join(HERE, "q72_help_table.c")
    text = render(record())
    if check:
        with open(path) as f:
            if f.read() != text:
                sgtest.fail(f"{path} differs from QEMU 7.2's help (run compat/record_q72_help.py)")
        print(f"{path} matches QEMU 7.2's help and info lists")
        return
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

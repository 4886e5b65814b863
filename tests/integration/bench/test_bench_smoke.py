#!/usr/bin/env python3
"""bench_smoke: every benchmark of bench/ in smoke mode prints its table."""
import json
import os
import re
import shutil
import subprocess
import sys

import sgtest

TABLES = ["(1a) machine limits", "(1b) snapshot jobs", "(2) query-status",
          "(3a) gateway overhead", "(3b) WebSocket /qmp fan-out", "(4a) HMP with N",
          "(4b) qcow2 random 4 KiB writes"]


def table_rows(out, title):
    """Data rows of the table whose title starts with `title`."""
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(title))
    rows = []
    for l in lines[start + 3:]:          # title, header, dashes
        if not l.strip():
            break
        rows.append(l)
    return rows


def main():
    sgtest.require_tool("qemu-img")
    work = sgtest.tmpdir("bench-smoke-")
    js = os.path.join(work, "out.json")
    script = os.path.join(sgtest.SRC, "bench", "bench.py")
    r = subprocess.run([sys.executable, script, "--mode", "smoke", "--build", sgtest.BUILD,
                        "--dir", os.path.join(work, "scratch"), "--json", js],
                       capture_output=True, text=True, timeout=110)
    out = r.stdout
    print(out)
    sgtest.check(r.returncode == 0, f"bench.py exited {r.returncode}: {r.stderr[-2000:]}")
    for t in TABLES:
        sgtest.check(t in out, f"table {t!r} missing from the output")
        sgtest.check(table_rows(out, t), f"table {t!r} has no rows")

    # Machine limits are always real numbers.
    for row in table_rows(out, TABLES[0]):
        sgtest.check(re.search(r"\d+\.\d\d$", row), f"limits row without a number: {row}")

    have_qemu = shutil.which("qemu-system-x86_64") is not None
    have_kvm = os.access("/dev/kvm", os.R_OK | os.W_OK)
    have_vmm = os.access(os.path.join(sgtest.BUILD, "snapgate-vmm"), os.X_OK) and have_kvm
    res = json.load(open(js))
    snaps = res["snapshots"]["64-random"]
    if have_qemu:
        sgtest.check(isinstance(snaps["qemu"], dict), f"QEMU side of (1b) failed: {snaps['qemu']}")
        for op in ("save", "load", "delete"):
            walls = snaps["qemu"][op]["wall"]
            sgtest.check(len(walls) == 1 and walls[0] > 0, f"QEMU {op} wall: {walls}")
        # A 64 MiB random-RAM save writes at least the 32 MiB of non-zero RAM.
        sgtest.check(snaps["qemu"]["save"]["growth"][0] >= 30,
                     f"QEMU image growth {snaps['qemu']['save']['growth']}")
    if have_vmm:
        sgtest.check(isinstance(snaps["snapgate"], dict),
                     f"snapgate side of (1b) failed: {snaps['snapgate']}")
        sgtest.check(snaps["snapgate"]["save"]["growth"][0] >= 30,
                     f"snapgate image growth {snaps['snapgate']['save']['growth']}")
        mon = res["monitor"].get("snapgate")
        sgtest.check(mon and mon["latencies"], f"no query-status answered during the save: {mon}")
    if have_vmm and os.access(os.path.join(sgtest.BUILD, "snapgate"), os.X_OK):
        g = res["gateway"]
        for k, v in g.items():
            if k.startswith("qemu") and not have_qemu:
                continue
            sgtest.check(isinstance(v, dict) and v["n"] > 0, f"gateway row {k}: {v}")
        sgtest.check(g["fanout-10"]["missing"] == 0, f"fan-out lost events: {g['fanout-10']}")
        scale = res["scale"]["10"]
        sgtest.check(isinstance(scale["snapgate"], dict), f"(4a) snapgate: {scale['snapgate']}")
    randw = res["scale"]["randw-allocating"]
    if os.access(os.path.join(sgtest.BUILD, "bench", "bench-qcow2-randw"), os.X_OK):
        sgtest.check(isinstance(randw["snapgate"], float) and randw["snapgate"] > 0,
                     f"bench-qcow2-randw row: {randw['snapgate']}")
    if shutil.which("qemu-io"):
        sgtest.check(isinstance(randw["qemu-io"], float), f"qemu-io row: {randw['qemu-io']}")
    # With every program present, no cell may be n/a.
    if have_qemu and have_vmm and shutil.which("qemu-io"):
        sgtest.check("n/a" not in out, "a row is n/a although every program is present:\n" +
                     "\n".join(l for l in out.splitlines() if "n/a" in l))
    print("bench smoke: all tables printed")


main()

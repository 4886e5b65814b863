#!/usr/bin/env python3
"""bench_libvirt: `virsh start`-to-running and `snapshot-create-as` of one TCG domain, through
snapgate-qemu and on plain QEMU 7.2, in the same run (private libvirtd, as the test's).

Usage: SNAPGATE_BUILD=$PWD/build bench/bench_libvirt.py [--reps N]     (root; ~2 min)
Prints a table: median [min-max] in ms, and snapgate-qemu/QEMU."""
import os
import statistics
import subprocess
import sys
import time

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))
sys.path.insert(0, os.path.join(SRC, "tests", "integration", "libvirt"))
import sg_libvirt  # noqa: E402
import sgtest  # noqa: E402

reps = int(sys.argv[sys.argv.index("--reps") + 1]) if "--reps" in sys.argv else 5
sg_libvirt.enter_namespace()
work = sgtest.tmpdir("sgbench-libvirt-")
kernel, initrd = sg_libvirt.build_guest(os.path.join(sgtest.BUILD, "libvirt-guest"))
lv = sg_libvirt.Libvirt(work)
lv.start()
emulators = {"QEMU 7.2": "/usr/bin/qemu-system-x86_64",
             "snapgate-qemu": sgtest.binary("snapgate-qemu")}
res = {k: {"start": [], "snapshot": []} for k in emulators}
for name, emu in emulators.items():
    dom = name.replace(" ", "").replace(".", "")
    disk = os.path.join(work, dom + ".qcow2")
    serial = os.path.join(work, dom + ".serial")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "64M"], check=True)
    xml = os.path.join(work, dom + ".xml")
    with open(xml, "w") as f:
        f.write(sg_libvirt.domain_xml(dom, emu, kernel, initrd, disk, serial))
    lv.virsh("define", xml)
for i in range(reps):
    for name in emulators:   # interleaved, so load changes hit both sides alike
        dom = name.replace(" ", "").replace(".", "")
        t = time.monotonic()
        lv.virsh("start", dom)
        sgtest.check(lv.virsh("domstate", dom).stdout.strip() == "running", "not running")
        res[name]["start"].append((time.monotonic() - t) * 1000)
        serial = os.path.join(work, dom + ".serial")
        n = len(sg_libvirt.ticks(serial))
        sgtest.wait_for(lambda: len(sg_libvirt.ticks(serial)) > n + 2, 120, "guest ticks")
        t = time.monotonic()
        lv.virsh("snapshot-create-as", dom, f"b{i}")
        res[name]["snapshot"].append((time.monotonic() - t) * 1000)
        lv.virsh("destroy", dom)
lv.stop()


def cell(v):
    return f"{statistics.median(v):8.0f} [{min(v):.0f}-{max(v):.0f}]"


print(f"\nlibvirt 9.0, TCG domain (128 MiB, tiny Linux guest), {reps} repetitions, ms")
print(f"{'operation':<34}{'QEMU 7.2':>22}{'snapgate-qemu':>22}{'ratio':>8}")
for op, label in (("start", "virsh start -> running"),
                  ("snapshot", "snapshot-create-as (internal)")):
    q, s = res["QEMU 7.2"][op], res["snapgate-qemu"][op]
    print(f"{label:<34}{cell(q):>22}{cell(s):>22}"
          f"{statistics.median(s) / statistics.median(q):8.2f}")

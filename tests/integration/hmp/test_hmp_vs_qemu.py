#!/usr/bin/env python3
"""The qemu-7.2 HMP profile against the real QEMU 7.2.

Two QEMU instances get identical images (duplicate tags, snapshots on only
some disks, a read-only qcow2, a read-only raw disk).  The same HMP lines go
to QEMU A directly (human-monitor-command) and to QEMU B through snapgate's
HMP engine (hmp_bridge: lines become snapshot-* jobs with explicit devices).
Every reply must be equal byte for byte after normalizing only dates, VM
sizes, VM clocks and the time in default savevm tags.
"""
import os
import re
import shutil
import subprocess
import sys

import sgtest

qemu_img = sgtest.require_tool("qemu-img")
sgtest.require_tool("qemu-system-x86_64")
bridge = sgtest.binary("tests/hmp_bridge")
work = sgtest.tmpdir("sghmp-")


def mkimg(d, name, snaps, fmt="qcow2"):
    p = os.path.join(d, name)
    sgtest.run([qemu_img, "create", "-q", "-f", fmt, p, "16M"])
    for s in snaps:
        sgtest.run([qemu_img, "snapshot", "-c", s, p])


DRIVES = [
    "file=a.qcow2,if=none,id=drive0,node-name=disk0",
    "file=b.qcow2,if=none,id=drive1,node-name=disk1",
    "file=ro.qcow2,if=none,id=drive2,node-name=disk2,readonly=on",
    "file=r.raw,format=raw,if=none,id=drive3,node-name=disk3,readonly=on",
]
dirs = []
for side in ("direct", "bridge"):
    d = os.path.join(work, side)
    os.mkdir(d)
    mkimg(d, "a.qcow2", ["dup", "dup", "x", "only0"])
    mkimg(d, "b.qcow2", ["x", "dup", "only1", "1"])
    mkimg(d, "ro.qcow2", ["rosnap"])
    mkimg(d, "r.raw", [], fmt="raw")
    dirs.append(d)

LINES = [
    "info snapshots", "info status", "info block", "info block -n disk0",
    "loadvm nope", "delvm nope", "loadvm dup", "loadvm x", "loadvm only0", "loadvm only1",
    "loadvm 1", "loadvm rosnap",
    "savevm s1", "info snapshots", "savevm s1", "info snapshots",
    'savevm "a b"', "savevm 'c d'", "info snapshots",
    "loadvm s1", 'loadvm "a b"', "loadvm -t s1", "delvm only1", "delvm 1", "info snapshots",
    "delvm s1", "delvm x", "info snapshots",
    "savevm", "info snapshots",
    "stop", "info status", "cont", "info status", "stop", "system_reset",
    "foo", "info jobs", "info version", "info version x", "help savevm", "help info snapshots",
    "loadvm", "q extra", "",
]

qa, sa = sgtest.start_qemu(DRIVES, dirs[0])
direct = sgtest.QMP(sa)
qb, sb = sgtest.start_qemu(DRIVES, dirs[1])
br = subprocess.Popen([bridge, sb, "qemu-7.2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                      text=True)

ROW = re.compile(r" +\d+(?:\.\d+)? [KMGTPE]?i?B +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +\d+:\d\d:\d\d\.\d{3}")
AUTOTAG = re.compile(r"vm-\d{14}")


def norm(s):
    return AUTOTAG.sub("vm-TIME", ROW.sub(" SIZE DATE CLOCK", s))


import json  # noqa: E402
failures = 0
for line in LINES:
    want = direct.hmp(line)
    br.stdin.write(line + "\n")
    br.stdin.flush()
    got = json.loads(br.stdout.readline())
    if norm(got) != norm(want):
        failures += 1
        print(f"MISMATCH for {line!r}:\n  qemu:     {want!r}\n  snapgate: {got!r}")
    else:
        print(f"ok {line!r} -> {got!r}")
br.stdin.close()
br.wait(timeout=30)
sgtest.check_eq(br.returncode, 0, "hmp_bridge exit status")
sgtest.check(failures == 0, f"{failures} replies differ from QEMU 7.2")

# The snapgate profile's own rules, carried out by the real QEMU.
sg = subprocess.Popen([bridge, sb, "snapgate"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                      text=True)


def sgline(line):
    sg.stdin.write(line + "\n")
    sg.stdin.flush()
    return json.loads(sg.stdout.readline())


sgtest.check_eq(sgline("loadvm dup"),
                "Error: Snapshot tag 'dup' is ambiguous: IDs 1, 2 on 'drive0'; delete the ones you do not want with 'delvm -i ID', then 'loadvm dup'\n",
                "rule 3")
# The advice works: delvm -i deletes one of the duplicates (by ID, through
# blockdev-snapshot-delete-internal-sync); drive1's 'dup' has another date,
# it is another snapshot and stays.
sgtest.check_eq(sgline("delvm -i 1"), "(snapshot ID 1; its tag is carried by others too: "
                "deleted by ID disk by disk)\n", "delvm -i on a duplicated tag")
info = sgline("info snapshots")
sgtest.check("\n2         dup " in info and "\n1         dup " not in info,
             f"ID 2 'dup' left, on every disk: {info!r}")
sgtest.check_eq(sgline("loadvm only0"),
                "Error: Snapshot 'only0' is not loadable: it is missing on 'drive1'\n", "partial")
sgtest.check_eq(sgline("savevm dup"), "(replaced the existing snapshot 'dup')\n", "savevm over dup")
info = sgline("info snapshots")
sgtest.check(info.count(" dup ") == 1, f"every old 'dup' replaced: {info!r}")
sgtest.check("4         only0" in info, f"partial snapshots keep their IDs: {info!r}")
sgtest.check_eq(sgline("loadvm -t dup"), "", "loadvm -t")
sgtest.check_eq(sgline("loadvm 4"), "(matched snapshot ID 4, tag 'only0')\n"
                "Error: Snapshot 'only0' is not loadable: it is missing on 'drive1'\n", "rule 4")
sgtest.check_eq(sgline("delvm dup"), "", "delvm")
sgtest.check(" dup " not in sgline("info snapshots"), "dup deleted on every disk")
jobs = sgline("info jobs")
sgtest.check_eq(jobs, "No jobs\n", "every job dismissed")
sg.stdin.close()
sg.wait(timeout=30)
direct.close()
for p in (qa, qb):
    p.kill()
    p.wait()

# A tag that is another snapshot's ID: QEMU 7.2's snapshot-load of tag "1"
# restores the snapshot whose ID is 1 (qcow2 looks the name up as an ID
# first), so the snapgate profile refuses instead of restoring the wrong one.
d3 = os.path.join(work, "collide")
os.mkdir(d3)
mkimg(d3, "a.qcow2", [])
qc, sc = sgtest.start_qemu(DRIVES[:1], d3)
sg = subprocess.Popen([bridge, sc, "snapgate"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                      text=True)
sgtest.check_eq(sgline("savevm alpha"), "", "savevm alpha")
sgtest.check_eq(sgline("savevm 1"), "", "savevm 1")
sgtest.check_eq(sgline("loadvm 1"),
                "(note: '1' is also the ID of snapshot 'alpha' on 'drive0'; use 'loadvm -i 1' "
                "for that one)\nError: Snapshot tag '1' is also the ID of snapshot 'alpha' on "
                "'drive0'; this back end would restore that one (it looks names up as IDs "
                "first), so loadvm refuses. 'loadvm -i 1' loads 'alpha'; to load '1' itself, "
                "delete 'alpha' first ('delvm -i 1'), or revert the disks offline with "
                "'snapgate-img snapshot -a -t 1 FILE' (without the VM state)\n",
                "tag shadowed by an ID")
sgtest.check_eq(sgline("loadvm -i 1"), "(snapshot ID 1, tag 'alpha')\n", "loadvm -i 1")
# The advice works: once 'alpha' (ID 1) is gone, tag '1' loads.
sgtest.check_eq(sgline("delvm -i 1"), "(snapshot ID 1, tag 'alpha')\n", "delvm -i 1")
sgtest.check_eq(sgline("loadvm 1"), "", "loadvm 1 after the advice")
sg.stdin.close()
sg.wait(timeout=30)
qc.kill()
qc.wait()
for d in dirs:
    for img in ("a.qcow2", "b.qcow2"):
        sgtest.qemu_img_check(os.path.join(d, img))
print("PASS")

#!/usr/bin/env python3
"""snapgate-img as a drop-in for qemu-img: every subcommand (create, info,
check, snapshot) and the top-level errors run through both programs on the
same inputs (a fresh copy of the same files for each, same relative names);
stdout, stderr (with the program name replaced) and the exit status must be
identical.  The differences snapgate-img makes on purpose are listed in
DIFFERENT with the reason and what snapgate-img says instead (also in
snapgate-img(1)).  Images either tool created must pass `qemu-img check`
and describe themselves alike in `qemu-img info --output=json`."""
import json
import os
import re
import shutil
import struct
import subprocess

import sgtest

QIMG = sgtest.require_tool("qemu-img")
QIO = sgtest.require_tool("qemu-io")
IMG = sgtest.binary("snapgate-img")
D = sgtest.tmpdir("sg-img-vs-qemu-")
TEMPLATE = os.path.join(D, "template")
os.makedirs(TEMPLATE)


def sh(argv, cwd=TEMPLATE):
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    sgtest.check(r.returncode == 0, f"{argv}: {r.stderr}")


def set_refcount(path, cluster, value):
    raw = open(path, "rb").read(104)
    rt = struct.unpack(">Q", raw[48:56])[0]
    with open(path, "r+b") as f:
        f.seek(rt)
        rb0 = struct.unpack(">Q", f.read(8))[0]
        f.seek(rb0 + 2 * cluster)
        f.write(struct.pack(">H", value))


# The inputs: a plain image, one with snapshots (a tag "2" that is the ID of
# another snapshot), one with leaks, one with a corruption, a raw file.
sh([QIMG, "create", "-q", "-f", "qcow2", "a.qcow2", "1G"])
sh([QIO, "-c", "write -P 7 0 128k", "a.qcow2"])
sh([QIMG, "create", "-q", "-f", "qcow2", "s.qcow2", "64M"])
for i, tag in enumerate(("2", "s2", "s3")):
    sh([QIO, "-c", f"write -P {i + 1} 0 4k", "s.qcow2"])
    sh([QIMG, "snapshot", "-c", tag, "s.qcow2"])
for name, kind in (("leak.qcow2", "leak"), ("bad.qcow2", "bad")):
    sh([QIMG, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", name, "4M"])
    sh([QIO, "-c", "write -P 17 0 8k", name])
    path = os.path.join(TEMPLATE, name)
    n = os.path.getsize(path) // 4096
    if kind == "leak":
        with open(path, "ab") as f:
            f.write(b"\0" * 8192)
        set_refcount(path, n, 1)
        set_refcount(path, n + 1, 1)
    else:
        set_refcount(path, n - 1, 0)
with open(os.path.join(TEMPLATE, "r.raw"), "wb") as f:
    f.write(b"\1" * 5000)

CASES = [
    # top level
    [], ["frob"],
    # create
    ["create", "-f", "qcow2", "n.qcow2", "1.5G"],
    ["create", "-f", "qcow2", "n.qcow2", "0.5k"],
    ["create", "-f", "qcow2", "-o", "cluster_size=4096", "n.qcow2", "64M"],
    ["create", "-f", "qcow2", "-o", "cluster_size=64k", "n.qcow2", "1G"],
    ["create", "-f", "qcow2", "-o", "compat=v3,refcount_bits=16,lazy_refcounts=off", "n.qcow2",
     "1G"],
    ["create", "-q", "-f", "qcow2", "n.qcow2", "1M"],
    ["create", "-f", "raw", "n.raw", "1M"],
    ["create", "-f", "qcow2", "n.qcow2", "1x"],
    ["create", "-f", "qcow2", "n.qcow2", "1.5"],
    ["create", "-f", "qcow2", "-o", "nosuch=1", "n.qcow2", "1G"],
    ["create", "-f", "qcow2", "-o", "cluster_size=65536,nosuch=1", "n.qcow2", "1G"],
    ["create", "-f", "qcow2", "-o", ",cluster_size=65536", "n.qcow2", "1G"],
    ["create", "-f", "qcow2", "-o", "cluster_size=65536,", "n.qcow2", "1G"],
    ["create", "-f", "qcow2", "-o", "cluster_size=abc", "n.qcow2", "1G"],
    ["create", "-f", "qcow2", "-o", "cluster_size=3000", "n.qcow2", "64M"],
    ["create", "-f", "qcow2", "n.qcow2"],
    ["create", "-f", "qcow2", "n.qcow2", "1G", "extra"],
    ["create", "-f", "qcow2", "n.qcow2", "16E"],
    ["create", "-f", "qcow2", "n.qcow2", "-5"],
    ["create"],
    ["create", "-f"],
    # info
    ["info", "a.qcow2"], ["info", "-f", "qcow2", "a.qcow2"], ["info", "-U", "a.qcow2"],
    ["info", "--output=json", "a.qcow2"], ["info", "--output", "json", "s.qcow2"],
    ["info", "s.qcow2"], ["info", "-f", "raw", "r.raw"], ["info", "r.raw"],
    ["info", "nosuch.qcow2"], ["info"], ["info", "a.qcow2", "s.qcow2"],
    ["info", "--output=xml", "a.qcow2"], ["info", "-f"], ["info", "-q", "a.qcow2"],
    # check
    ["check", "a.qcow2"], ["check", "--output=json", "a.qcow2"], ["check", "-U", "a.qcow2"],
    ["check", "-f", "qcow2", "a.qcow2"], ["check", "-q", "a.qcow2"],
    ["check", "leak.qcow2"], ["check", "--output=json", "leak.qcow2"],
    ["check", "bad.qcow2"], ["check", "--output=json", "bad.qcow2"],
    ["check", "r.raw"], ["check", "nosuch"], ["check"], ["check", "-r", "nope", "a.qcow2"],
    ["check", "-r", "leaks", "-U", "a.qcow2"], ["check", "--output=xml", "a.qcow2"],
    # snapshot
    ["snapshot", "-l", "s.qcow2"], ["snapshot", "s.qcow2"], ["snapshot", "-l", "a.qcow2"],
    ["snapshot", "-l", "-U", "s.qcow2"], ["snapshot", "-q", "-l", "s.qcow2"],
    ["snapshot", "-a", "s2", "s.qcow2"], ["snapshot", "-d", "s3", "s.qcow2"],
    ["snapshot", "-q", "-d", "s3", "s.qcow2"],
    ["snapshot", "-a", "3", "s.qcow2"],
    ["snapshot", "-a", "nosuch", "s.qcow2"], ["snapshot", "-d", "nosuch", "s.qcow2"],
    ["snapshot", "-a", "2", "s.qcow2"], ["snapshot", "-d", "2", "s.qcow2"],
    ["snapshot", "-a", "1", "-d", "2", "s.qcow2"], ["snapshot", "-x", "s.qcow2"],
    ["snapshot", "-l"], ["snapshot", "-c"], ["snapshot", "-c", "x", "-U", "s.qcow2"],
    ["snapshot", "-l", "r.raw"], ["snapshot", "-c", "x", "r.raw"],
]

# On purpose, with the reason (snapgate-img(1) says the same).  Each entry:
# the fields that differ, and a regex our stderr must match.
DIFFERENT = {
    ("create", "-f", "qcow2", "-o", "cluster_size=3000", "n.qcow2", "64M"):
        ("stdout", "everything is checked before the Formatting line, which qemu-img prints "
         "before it fails", r"Cluster size must be a power of two"),
    ("snapshot", "-a", "nosuch", "s.qcow2"):
        ("stderr", "a message that names the snapshot instead of an errno text",
         r"Could not apply snapshot 'nosuch': Snapshot 'nosuch' does not exist"),
    ("snapshot", "-d", "nosuch", "s.qcow2"):
        ("stderr", "the same message as -a", r"Snapshot 'nosuch' does not exist"),
    ("snapshot", "-a", "2", "s.qcow2"):
        ("stderr rc", "'2' is one snapshot's tag and another's ID: qemu-img -a takes the ID "
         "silently (and -d the tag), snapgate-img asks for -t or -i", r"'2' is the tag of snapshot ID 1 and the "
         r"ID of snapshot 's2'; say which with -t 2 \(the tag\) or -i 2"),
    ("snapshot", "-d", "2", "s.qcow2"):
        ("stderr rc", "as -a 2", r"'2' is the tag of snapshot ID 1 and the ID of snapshot 's2'"),
    ("snapshot", "-c", "x", "r.raw"):
        ("stderr", "names the format instead of an errno number (and no probing warning)",
         r"format 'raw' does not support snapshots"),
}


def norm(s, prog):
    return s.replace(prog + ":", "PROG:").replace(f"'{prog} --help'", "'PROG --help'")


def run_in(tool, args, where):
    shutil.copytree(TEMPLATE, where)
    r = subprocess.run([tool, *args], cwd=where, capture_output=True, text=True, timeout=60)
    prog = os.path.basename(tool)
    return r.returncode, norm(r.stdout, prog), norm(r.stderr, prog)


def image_facts(path):
    """What qemu-img says of an image, minus what depends on the writer's
    allocation pattern."""
    r = subprocess.run([QIMG, "info", "--output=json", path], capture_output=True, text=True)
    sgtest.check(r.returncode == 0, f"qemu-img info {path}: {r.stderr}")
    info = json.loads(r.stdout)
    for k in ("actual-size", "filename"):
        info.pop(k, None)
    for s in info.get("snapshots", []):
        for k in ("date-sec", "date-nsec"):
            s.pop(k, None)
    return info


same = diff = 0
for i, args in enumerate(CASES):
    q = run_in(QIMG, args, os.path.join(D, f"q{i}"))
    o = run_in(IMG, args, os.path.join(D, f"o{i}"))
    what = "snapgate-img " + " ".join(args)
    known = DIFFERENT.get(tuple(args))
    if known:
        fields, why, rx = known
        sgtest.check(re.search(rx, o[2]), f"{what}: stderr {o[2]!r} lacks /{rx}/ ({why})")
        if "rc" not in fields:
            sgtest.check_eq(o[0], q[0], f"{what}: exit status")
        if "stdout" not in fields:
            sgtest.check_eq(o[1], q[1], f"{what}: stdout")
        diff += 1
    else:
        sgtest.check_eq(o[0], q[0], f"{what}: exit status (stderr {o[2]!r} / {q[2]!r})")
        sgtest.check_eq(o[1], q[1], f"{what}: stdout")
        sgtest.check_eq(o[2], q[2], f"{what}: stderr")
        same += 1
    # Whatever the command wrote must be the same image as qemu-img's.
    if known and "rc" in known[0]:
        continue   # snapgate-img refused: its image is the input, unchanged
    for f in sorted(os.listdir(os.path.join(D, f"q{i}"))):
        qp, op = os.path.join(D, f"q{i}", f), os.path.join(D, f"o{i}", f)
        if f in ("bad.qcow2", "r.raw") or not os.path.exists(op) or not f.endswith(".qcow2"):
            continue
        if q[0] != 0 and "check" not in args:
            continue
        if args[:1] != ["check"]:
            r = subprocess.run([QIMG, "check", op], capture_output=True, text=True)
            sgtest.check(r.returncode in (0, 3) if f == "leak.qcow2" else r.returncode == 0,
                         f"{what}: qemu-img check {f}: {r.stdout}")
        sgtest.check_eq(image_facts(op), image_facts(qp), f"{what}: {f} as qemu-img sees it")
print(f"snapgate-img vs qemu-img: {same} cases identical, {diff} documented differences")

#!/usr/bin/env python3
"""The check before a change (sg_block_check_touched) sees a refcount too
low because of a snapshot the command does not walk (issue 17's blind spot).

Image (qemu-img, 4 KiB clusters): 0x11 written at 0 (cluster X), snapshot
s2, 0x22 written over it (the active image gets cluster Y, X is left to s2
alone), snapshot s1.  X's refcount is then set to 0 on disk: only s2's L1
tree reaches X.  `snapshot -c new` walks the active tree only, `-a s1` and
`-d s1` the active tree and s1's: none walks s2's, and a change could reuse
X (refcount 0) and overwrite s2's data.  Each must refuse (Image is corrupt,
the file byte for byte unchanged), as `qemu-img check` and our full check
find the error.  A second case lowers a cluster shared by the active image,
s1 and s2 (refcount 3 -> 2): too low only because of s2's reference; the
same commands refuse.  The uncorrupted image: all three work and check
clean by qemu-img."""
import os
import shutil
import struct

import sgtest
from sg_qcow2_util import file_sha as sha, header, refcount16 as rc_at, run, tools

IMG, IO, QIMG, QIO = tools()
D = sgtest.tmpdir("sg-qcow2-precheck-")
CS = 4096


def p(name):
    return os.path.join(D, name)


def l2_entry(path, guest_off, l1_offset):
    with open(path, "rb") as f:
        f.seek(l1_offset)
        l2 = struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00
        f.seek(l2 + 8 * (guest_off // CS))
        return struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00


base = p("base.qcow2")
run([QIMG, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", base, "4M"])
run([QIO, "-f", "qcow2", "-c", "write -P 0x11 0 4k", "-c", "write -P 0x33 8k 4k", base])
run([QIMG, "snapshot", "-c", "s2", base])
run([QIO, "-f", "qcow2", "-c", "write -P 0x22 0 4k", base])
run([QIMG, "snapshot", "-c", "s1", base])
run([QIMG, "check", base], rc=0)
h = header(base)
x = l2_entry(base, 0, h["l1_offset"])      # active's cluster at 0 is Y
shared = l2_entry(base, 8192, h["l1_offset"]) // CS
# s2's L1 table: the second snapshot-table entry is s1, the first s2
with open(base, "rb") as f:
    f.seek(h["snapshots_offset"])
    s2_l1 = struct.unpack(">Q", f.read(8))[0]
only_s2 = l2_entry(base, 0, s2_l1) // CS
sgtest.check(only_s2 != x // CS, "s2's cluster at 0 is the active one")
sgtest.check_eq(rc_at(base, only_s2), 1, "refcount of the cluster only s2 reaches")
sgtest.check_eq(rc_at(base, shared), 3, "refcount of the cluster all three share")

CMDS = (["-c", "new"], ["-a", "s1"], ["-d", "s1"])
for name, cl, value in (("only-s2", only_s2, 0), ("shared", shared, 2)):
    bad = p(f"{name}.qcow2")
    shutil.copyfile(base, bad)
    rc_at(bad, cl, value)
    run([QIMG, "check", bad], rc=2)
    run([IMG, "check", bad], rc=2)
    before = sha(bad)
    for argv in CMDS:
        r = run([IMG, "snapshot"] + argv + [bad], rc=1)
        sgtest.check("Image is corrupt" in r.stderr, f"{name}: snapshot {argv}: {r.stderr}")
        sgtest.check_eq(sha(bad), before, f"{name}: snapshot {argv} changed a corrupt image")
    print(f"{name}: refcount of cluster {cl} set to {value}: -c/-a/-d refused, file unchanged")

for argv in CMDS:
    good = p("good.qcow2")
    shutil.copyfile(base, good)
    run([IMG, "snapshot"] + argv + [good])
    run([QIMG, "check", good], rc=0)
print("uncorrupted: -c/-a/-d work, qemu-img check clean")

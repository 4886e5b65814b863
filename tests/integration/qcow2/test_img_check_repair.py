#!/usr/bin/env python3
"""snapgate-img check -r leaks|all against qemu-img check -r leaks:

1. leaks made the real way: sg_crashdrv (tests/reliability/qcow2) is SIGKILLed
   at many points of random snapshot/write work; one copy is repaired by us,
   one by qemu-img; both must then check clean (by both checkers), with the
   same leak count found, the same image end and identical guest content and
   snapshot lists.
2. synthetic leaks (refcount 1, no reference) in a qemu-img image: repaired,
   and so is a refcount 2 / reference 1 leak on a cluster only a snapshot
   reaches (COPIED means nothing there; a crash inside an in-place snapshot
   apply leaves such leaks).  Only one the active tables reach would need
   OFLAG_COPIED and is left alone.
3. an image with a corruption (refcount too low) plus a leak: -r leaks
   writes nothing at all (the file stays byte-identical), exit 2; -r all
   raises the refcount and lowers the leak, as qemu-img check -r all."""
import hashlib
import os
import shutil
import struct
import subprocess

import sgtest
from sg_qcow2_util import ENV, header, run, tools

IMG, IO, QIMG, QIO = tools()
D = sgtest.tmpdir("sg-qcow2-repair-")


def p(name):
    return os.path.join(D, name)


def leak_count(out):
    for line in out.splitlines():
        if line.endswith("leaked clusters were found on the image."):
            return int(line.split()[0])
    return 0


def end_offset(out):
    for line in out.splitlines():
        if line.startswith("Image end offset:"):
            return int(line.split(":")[1])
    sgtest.fail(f"no image end offset in:\n{out}")


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def both_clean(path):
    r = run([IMG, "check", path], rc=0)
    sgtest.check("No errors were found" in r.stdout, r.stdout)
    q = run([QIMG, "check", path], rc=0)
    sgtest.check("No errors were found" in q.stdout, q.stdout)
    return end_offset(r.stdout), end_offset(q.stdout)


# ---- usage ----------------------------------------------------------------
run([QIMG, "create", "-q", "-f", "qcow2", p("u.qcow2"), "1M"])
r = run([IMG, "check", "-r", "bogus", p("u.qcow2")], rc=1)
sgtest.check("leaks" in r.stderr and "all" in r.stderr, r.stderr)
run([IMG, "check", "-r", p("u.qcow2")], rc=1)
r = run([IMG, "check", "-r", "all", p("u.qcow2")], rc=0)
sgtest.check("No errors were found" in r.stdout and "repaired" not in r.stdout, r.stdout)

# ---- 1. leaks from killed writers ------------------------------------------
drv = os.path.join(sgtest.BUILD, "tests", "sg_crashdrv")
if os.access(drv, os.X_OK):
    img = p("crash.qcow2")
    run([drv, "create", img, str(64 << 20), "16"])
    kills = 0
    for k in range(7, 600, 13):
        r = subprocess.run([drv, "run", img, p("journal"), str(k), str(k * 100), str(k), "200",
                            "--kill-at", str(k)], capture_output=True, env=ENV)
        kills += r.returncode == -9
        if kills >= 20 and leak_count(run([QIMG, "check", img], rc=None).stdout) >= 5:
            break
    q = run([QIMG, "check", img], rc=3)
    nleaks = leak_count(q.stdout)
    sgtest.check(nleaks > 0, f"no leaks after {kills} kills:\n{q.stdout}")
    ours, theirs = p("ours.qcow2"), p("theirs.qcow2")
    shutil.copyfile(img, ours)
    shutil.copyfile(img, theirs)
    r = run([IMG, "check", ours], rc=3)
    sgtest.check_eq(leak_count(r.stdout), nleaks, "leaks found by snapgate-img check")
    r = run([IMG, "check", "-r", "leaks", ours], rc=0)
    sgtest.check(f"    {nleaks} leaked clusters\n    0 corruptions" in r.stdout, r.stdout)
    sgtest.check_eq(r.stderr.count("Repairing cluster"), nleaks, "clusters repaired (stderr, as qemu-img)")
    sgtest.check("Double checking the fixed image now...\nNo errors were found" in r.stdout,
                 r.stdout)
    run([QIMG, "check", "-r", "leaks", theirs], rc=0)
    e_ours, e_q = both_clean(ours)
    both_clean(theirs)
    sgtest.check_eq(e_ours, e_q, "image end offset (ours vs qemu-img on our repair)")
    run([QIMG, "compare", "-q", ours, theirs], rc=0)
    sgtest.check_eq(run([QIMG, "snapshot", "-l", ours]).stdout.replace(ours, "X"),
                    run([QIMG, "snapshot", "-l", theirs]).stdout.replace(theirs, "X"),
                    "snapshot lists after the two repairs")
    # The freed clusters are reused: a write after the repair keeps it clean.
    run([QIO, "-f", "qcow2", "-c", "write -P 0x5a 0 1M", ours])
    both_clean(ours)
    print(f"crash leaks: {kills} kills, {nleaks} leaked clusters repaired, qemu-img agrees")
else:
    print(f"{drv} not built: the killed-writer case is skipped")


# ---- 2. synthetic leaks ---------------------------------------------------
def rb_entry(path):
    """(file offset of refcount block 0, cluster size) for 16-bit refcounts."""
    h = header(path)
    with open(path, "rb") as f:
        raw = f.read(104)
        cbits = struct.unpack(">I", raw[20:24])[0]
        f.seek(h["rt_offset"])
        rb0 = struct.unpack(">Q", f.read(8))[0]
    return rb0, 1 << cbits


def set_rc(path, cluster, value):
    rb0, _ = rb_entry(path)
    with open(path, "r+b") as f:
        f.seek(rb0 + 2 * cluster)
        f.write(struct.pack(">H", value))


def get_rc(path, cluster):
    rb0, _ = rb_entry(path)
    with open(path, "rb") as f:
        f.seek(rb0 + 2 * cluster)
        return struct.unpack(">H", f.read(2))[0]


syn = p("syn.qcow2")
run([QIMG, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", syn, "4M"])
run([QIO, "-f", "qcow2", "-c", "write -P 0x11 0 4k", syn])
_, cs = rb_entry(syn)
data_cl = os.path.getsize(syn) // cs - 1   # the data cluster just written
run([QIMG, "snapshot", "-c", "s1", syn])
run([QIO, "-f", "qcow2", "-c", "write -P 0x11 0 64k", syn])   # data_cl: snapshot only now
size = os.path.getsize(syn)
first_free = size // cs
with open(syn, "ab") as f:
    f.write(b"\0" * (3 * cs))
for cl in range(first_free, first_free + 3):
    set_rc(syn, cl, 1)
sgtest.check_eq(get_rc(syn, data_cl), 1, "refcount of the snapshot's data cluster")
set_rc(syn, data_cl, 2)      # a refcount-2 / reference-1 leak
run([QIMG, "check", syn], rc=None)
r = run([IMG, "check", syn], rc=None)
sgtest.check("Leaked cluster" in r.stderr, r.stderr)
before = leak_count(r.stdout)
r = run([IMG, "check", "-r", "leaks", syn], rc=None)
sgtest.check("    4 leaked clusters" in r.stdout, r.stdout)
for cl in range(first_free, first_free + 3):
    sgtest.check_eq(get_rc(syn, cl), 0, f"refcount of repaired cluster {cl}")
sgtest.check_eq(before, 4, "synthetic leaks found")
sgtest.check("would need an OFLAG_COPIED repair" not in r.stdout, r.stdout)
sgtest.check_eq(r.returncode, 0, "exit code with every leak repaired")
sgtest.check_eq(get_rc(syn, data_cl), 1, "refcount of the snapshot-only cluster")
q = run([QIMG, "check", syn], rc=0)
sgtest.check_eq(leak_count(q.stdout), 0, "leaks left (qemu-img)")
run([QIO, "-f", "qcow2", "-c", "read -P 0x11 0 64k", syn])

# ---- 3. corruption: nothing is written --------------------------------------
bad = p("bad.qcow2")
run([QIMG, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", bad, "4M"])
run([QIO, "-f", "qcow2", "-c", "write -P 0x22 0 8k", bad])
size = os.path.getsize(bad)
with open(bad, "ab") as f:
    f.write(b"\0" * cs)
set_rc(bad, size // cs, 1)          # a leak
set_rc(bad, size // cs - 1, 0)      # and a data cluster with refcount 0
digest = sha(bad)
r = run([IMG, "check", "-r", "leaks", bad], rc=2)
sgtest.check("not repaired while the image has errors" in r.stdout, r.stdout)
sgtest.check("Repairing" not in r.stdout, r.stdout)
sgtest.check_eq(sha(bad), digest, "image bytes after a refused repair")
# -r all raises a refcount too low when that is the only corruption (then
# lowers the leak), as qemu-img check -r all does.
theirs = p("bad-qemu.qcow2")
shutil.copyfile(bad, theirs)
r = run([IMG, "check", "-r", "all", bad], rc=0)
sgtest.check("    1 leaked clusters\n    1 corruptions" in r.stdout, r.stdout)
q = run([QIMG, "check", "-r", "all", theirs], rc=0)
sgtest.check("    1 leaked clusters\n    1 corruptions" in q.stdout, q.stdout)
both_clean(bad)
sgtest.check_eq(get_rc(bad, size // cs - 1), get_rc(theirs, size // cs - 1), "raised refcount")
run([QIO, "-f", "qcow2", "-c", "read -P 0x22 0 8k", bad])
print("ok")

#!/usr/bin/env python3
"""snapgate-img check -r on images with compressed clusters, against qemu-img.

A qemu-img image (4 KiB clusters, written with `convert -c`, so compressed
clusters straddle host clusters and several descriptors share one host
cluster; a snapshot shares them all, refcount 2) gets its refcounts
corrupted on disk in several ways:

  leak       a cluster past the data with refcount 1 and no reference
  too-high   a compressed host cluster's refcount raised by one
  too-low    a shared compressed host cluster lowered by one, another to 0
  all        the three at once

For each, one copy is repaired by `snapgate-img check -r all`, another by
`qemu-img check -r all`.  Before: both checkers find the same numbers of
errors and leaks.  After: both copies check clean by both checkers, both
report the same repaired counts, every compressed host cluster's refcount is
the same in both (and right), and
the guest content (active image and the snapshot, read back with
`qemu-img convert`) is what it was before the corruption.  `-r leaks` on a
too-low case writes nothing (file unchanged, exit 2); qemu-img's -r leaks
repairs no corruption either (it exits 1: "need to rebuild refcount
structures").

qemu-img rebuilds the whole refcount structure when a referenced cluster
has refcount 0; we raise the entries in place, so the two refcount blocks
differ in where they are, not in what they say."""
import os
import random
import re
import shutil
import struct

import sgtest
from sg_qcow2_util import file_sha as sha, header, refcount16, run, tools

IMG, IO, QIMG, QIO = tools()
D = sgtest.tmpdir("sg-qcow2-repair-comp-")
CS = 4096


def p(name):
    return os.path.join(D, name)


def get_rc(path, cl):
    return refcount16(path, cl)


def set_rc(path, cl, v):
    refcount16(path, cl, v)


def compressed_hosts(path):
    """{host cluster: number of compressed descriptors touching it} (active L1)."""
    h = header(path)
    shift = 62 - (12 - 8)
    out = {}
    with open(path, "rb") as f:
        f.seek(h["l1_offset"])
        l1 = struct.unpack(f">{h['l1_size']}Q", f.read(8 * h["l1_size"]))
        for e in l1:
            l2off = e & 0x00FFFFFFFFFFFE00
            if not l2off:
                continue
            f.seek(l2off)
            for le in struct.unpack(f">{CS // 8}Q", f.read(CS)):
                if not le & (1 << 62):
                    continue
                coff = le & ((1 << shift) - 1)
                nsec = ((le >> shift) & 0xF) + 1
                end = (coff & ~511) + nsec * 512 - 1
                for cl in range(coff // CS, end // CS + 1):
                    out[cl] = out.get(cl, 0) + 1
    return out


def guest(path):
    """sha of the active image's and snapshot s1's guest content."""
    a = p("guest.raw")
    run([QIMG, "convert", "-U", "-O", "raw", path, a])
    b = p("guest-s1.raw")
    run([QIMG, "convert", "-U", "-O", "raw", "-l", "snapshot.name=s1", path, b])
    return sha(a), sha(b)


def counts(out):
    errs = leaks = 0
    m = re.search(r"^(\d+) errors were found", out, re.M)
    if m:
        errs = int(m.group(1))
    m = re.search(r"^(\d+) leaked clusters were found", out, re.M)
    if m:
        leaks = int(m.group(1))
    return errs, leaks


def repaired(out):
    m = re.search(r"found and repaired:\s+(\d+) leaked clusters\s+(\d+) corruptions", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def clean(path, who):
    for tool in (IMG, QIMG):
        r = run([tool, "check", path], rc=None)
        sgtest.check(r.returncode == 0 and "No errors were found" in r.stdout,
                     f"{os.path.basename(tool)} check after the {who} repair exited "
                     f"{r.returncode}:\n{r.stdout}{r.stderr}")


# ---- the image ---------------------------------------------------------------
rnd = random.Random(17)
raw = p("data.raw")
with open(raw, "wb") as f:
    for i in range(1200):   # 4.7 MiB: compressible text with random runs
        blk = (b"cluster %d " % i) * rnd.randint(1, 300)
        blk += bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 3000)))
        f.write(blk[:CS].ljust(CS, b"\0"))
base = p("base.qcow2")
run([QIMG, "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", raw, base])
run([QIMG, "snapshot", "-c", "s1", base])
run([QIO, "-f", "qcow2", "-c", "write -P 0x5c 64k 8k", base])   # two normal clusters too
run([QIMG, "check", base], rc=0)
hosts = compressed_hosts(base)
shared = sorted(cl for cl, n in hosts.items() if n >= 2)
sgtest.check(len(shared) >= 3, f"compressed layout: {len(shared)} shared host clusters")
sgtest.check(os.path.getsize(base) < 2048 * CS, "image beyond refcount block 0")
want_guest = guest(base)
base_rc = {cl: get_rc(base, cl) for cl in hosts}
end_cl = os.path.getsize(base) // CS
for cl in shared[:3]:
    # descriptors touching it, times 2 (the snapshot shares every one)
    sgtest.check(get_rc(base, cl) >= 2 * hosts[cl], f"refcount of compressed host cluster {cl}")


def leak(path):
    with open(path, "r+b") as f:
        f.truncate((end_cl + 1) * CS)
    set_rc(path, end_cl, 1)


def too_high(path):
    set_rc(path, shared[2], get_rc(path, shared[2]) + 1)


def too_low(path):
    set_rc(path, shared[0], get_rc(path, shared[0]) - 1)
    set_rc(path, shared[1], 0)


CASES = {
    "leak": [leak],
    "too-high": [too_high],
    "too-low": [too_low],
    "all": [leak, too_high, too_low],
}
for name, fns in CASES.items():
    bad = p(f"{name}.qcow2")
    shutil.copyfile(base, bad)
    for fn in fns:
        fn(bad)
    ours_before = run([IMG, "check", bad], rc=None)
    theirs_before = run([QIMG, "check", bad], rc=None)
    sgtest.check_eq(ours_before.returncode, theirs_before.returncode, f"{name}: check exit code")
    sgtest.check_eq(counts(ours_before.stdout), counts(theirs_before.stdout),
                    f"{name}: (errors, leaks) found")
    mine, qemu = p(f"{name}-ours.qcow2"), p(f"{name}-qemu.qcow2")
    shutil.copyfile(bad, mine)
    shutil.copyfile(bad, qemu)
    r = run([IMG, "check", "-r", "all", mine], rc=0)
    q = run([QIMG, "check", "-r", "all", qemu], rc=0)
    sgtest.check_eq(repaired(r.stdout), repaired(q.stdout), f"{name}: repaired (leaks, corruptions)")
    sgtest.check(repaired(r.stdout) != (0, 0), f"{name}: nothing repaired:\n{r.stdout}")
    clean(mine, "snapgate-img")
    clean(qemu, "qemu-img")
    # qemu-img rebuilds the whole refcount structure when a referenced
    # cluster has refcount 0 (new table and blocks at the end), we raise in
    # place: the refcount blocks differ in where they are, not in what they
    # say of the compressed clusters.
    diff = [(cl, get_rc(mine, cl), get_rc(qemu, cl), base_rc[cl]) for cl in sorted(hosts)
            if not get_rc(mine, cl) == get_rc(qemu, cl) == base_rc[cl]]
    sgtest.check(not diff, f"{name}: compressed host clusters' refcounts (cluster, ours, "
                 f"qemu-img's, want): {diff[:8]}\n{r.stdout}{r.stderr}\n{q.stdout}{q.stderr}")
    sgtest.check_eq(guest(mine), want_guest, f"{name}: guest content after our repair")
    print(f"{name}: found {counts(ours_before.stdout)} (errors, leaks), repaired "
          f"{repaired(r.stdout)} (leaks, corruptions), as qemu-img")

# -r leaks repairs no corruption: nothing written.
bad = p("too-low.qcow2")
before = sha(bad)
r = run([IMG, "check", "-r", "leaks", bad], rc=2)
sgtest.check_eq(sha(bad), before, "-r leaks on a too-low refcount changed the file")
cp = p("too-low-copy.qcow2")
shutil.copyfile(bad, cp)
q = run([QIMG, "check", "-r", "leaks", cp], rc=None)
sgtest.check(q.returncode != 0, f"qemu-img check -r leaks repaired a too-low refcount:\n{q.stdout}")
run([QIMG, "check", cp], rc=2)
print(f"-r leaks on a too-low refcount: refused, file unchanged (qemu-img -r leaks: exit "
      f"{q.returncode}, not repaired either)")

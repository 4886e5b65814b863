#!/usr/bin/env python3
"""Round trips between snapgate's qcow2 engine and QEMU's tools, both ways.

1. snapgate-img create + our writes, snapshots and vmstate -> qemu-img check clean,
   qemu-img snapshot -l identical to ours, qemu-io read -P sees our data (active and
   every snapshot), qemu-img compare agrees.
2. qemu-img create + qemu-io writes + qemu-img snapshot -c -> we list, apply and delete;
   qemu-img check stays clean and qemu-img compare confirms what we applied.
3. Images QEMU makes with other layouts: version 2, 512-byte clusters, 64-bit and 1-bit
   refcounts, and a QEMU savevm (its vmstate sits where we look for it).
"""
import os
import shutil
import subprocess
import sys

import sgtest
from sg_qcow2_util import ENV, header, qemu_check_clean, qemu_read, run, tools

IMG, IO, QIMG, QIO = tools()
D = sgtest.tmpdir("sg-qcow2-rt-")
M = 1 << 20


def listing_same(path):
    ours = run([IMG, "snapshot", "-l", path]).stdout
    theirs = run([QIMG, "snapshot", "-l", path]).stdout
    sgtest.check_eq(ours, theirs, f"snapshot -l of {path}")
    return ours


def ours_to_qemu():
    a = os.path.join(D, "ours.qcow2")
    run([IMG, "create", a, "64M"])
    run([IO, a, "write", "0x11", "0", str(3 * M + 123), "--", "write", "0x22", str(10 * M), "4096"])
    s1 = run([IO, a, "snap", "first"]).stdout.strip()
    sgtest.check_eq(s1, "1", "first snapshot ID")
    run([IO, a, "write", "0x33", str(M), str(M), "--", "discard", str(10 * M), str(65536)])
    # a snapshot with VM state (1.5 MiB + a bit, zero pages in it) and a VM clock
    run([IO, a, "vmwrite", "0x5a", "0", str(M + 512 * 1024), "--", "vmwrite", "0", str(2 * M), "65536",
         "--", "snap", "with vmstate", str(2 * M + 65536), "3723456000000", "1700003600"])
    run([IO, a, "write", "0x44", str(60 * M), str(2 * M)])
    run([IO, a, "snap", "third", "0", "0", "1700007200"])
    run([IO, a, "write", "0x55", "0", "512"])
    qemu_check_clean(a)
    out = listing_same(a)
    sgtest.check("with vmstate" in out and "2.06 MiB" in out and "01:02:03.456" in out,
                 f"listing lacks vmstate snapshot details:\n{out}")
    # active data
    qemu_read(a, "0x55", 0, 512)
    qemu_read(a, "0x11", 512, M - 512)
    qemu_read(a, "0x33", M, M)
    qemu_read(a, "0x11", 2 * M, M + 123)
    qemu_read(a, "0", 10 * M, 65536)
    qemu_read(a, "0x44", 60 * M, 2 * M)
    # each snapshot, reverted by QEMU
    qemu_read(a, "0x11", 0, 3 * M + 123, snapshot="first")
    qemu_read(a, "0x22", 10 * M, 4096, snapshot="first")
    qemu_read(a, "0x33", M, M, snapshot="with vmstate")
    qemu_read(a, "0", 60 * M, 2 * M, snapshot="with vmstate")
    # applying with us and with QEMU gives identical disks
    b = os.path.join(D, "ours-applied-by-us.qcow2")
    c = os.path.join(D, "ours-applied-by-qemu.qcow2")
    shutil.copyfile(a, b)
    shutil.copyfile(a, c)
    run([IMG, "snapshot", "-a", "first", b])
    run([QIMG, "snapshot", "-a", "first", c])
    r = run([QIMG, "compare", b, c])
    sgtest.check("Images are identical" in r.stdout, f"compare: {r.stdout}")
    qemu_check_clean(b)
    qemu_check_clean(c)
    # QEMU writes and deletes in an image whose snapshots we made
    run([QIO, "-c", "write -P 0x66 0 3M", c])
    run([QIMG, "snapshot", "-d", "with vmstate", c])
    qemu_check_clean(c)
    run([IMG, "check", c])
    run([IO, c, "read", "0x66", "0", str(3 * M), "--", "goto", "3", "--", "read", "0x44", str(60 * M), str(2 * M)])
    qemu_check_clean(c)
    # our vmstate reads back
    run([IO, a, "vmread", "2", "0x5a", "0", str(M + 512 * 1024), "--",
         "vmread", "2", "0", str(M + 512 * 1024), str(M // 2 + 65536)])
    # delete everything with us; QEMU agrees the image is clean
    for sid in ("2", "1", "3"):
        run([IMG, "snapshot", "-d", "-i", sid, a])
        qemu_check_clean(a)
        listing_same(a)
    qemu_read(a, "0x55", 0, 512)
    sgtest.check_eq(header(a)["nb_snapshots"], 0, "snapshots left")


def qemu_to_ours():
    q = os.path.join(D, "qemu.qcow2")
    run([QIMG, "create", "-f", "qcow2", q, "64M"])
    run([QIO, "-c", "write -P 0xa1 0 2M", "-c", "write -P 0xa2 30M 100k", q])
    run([QIMG, "snapshot", "-c", "s1", q])
    run([QIO, "-c", "write -P 0xb1 1M 2M", "-c", "write -z 30M 64k", q])
    run([QIMG, "snapshot", "-c", "s2", q])
    run([QIO, "-c", "write -P 0xc1 0 4k", "-c", "discard 1M 1M", q])
    listing_same(q)
    ref = os.path.join(D, "qemu-ref.qcow2")
    shutil.copyfile(q, ref)
    run([QIMG, "snapshot", "-a", "s1", ref])
    # apply s1 with us
    run([IMG, "snapshot", "-a", "s1", q])
    qemu_check_clean(q)
    r = run([QIMG, "compare", q, ref])
    sgtest.check("Images are identical" in r.stdout, f"compare after apply: {r.stdout}")
    qemu_read(q, "0xa1", 0, 2 * M)
    qemu_read(q, "0xa2", 30 * M, 100 * 1024)
    # write after apply (COW away from the snapshot), then delete s2 with us
    run([IO, q, "write", "0xd1", str(M // 2), str(M)])
    run([IMG, "snapshot", "-d", "s2", q])
    qemu_check_clean(q)
    out = listing_same(q)
    sgtest.check("s2" not in out and "s1" in out, f"listing after delete:\n{out}")
    qemu_read(q, "0xd1", M // 2, M)
    qemu_read(q, "0xa1", 0, M // 2, snapshot="s1")
    # QEMU can still snapshot and apply what we wrote
    run([QIMG, "snapshot", "-c", "after", q])
    run([IO, q, "write", "0xe1", "0", str(M)])
    run([QIMG, "snapshot", "-a", "after", q])
    qemu_read(q, "0xd1", M // 2, M)
    qemu_check_clean(q)
    ours_list = run([IMG, "snapshot", "-l", q]).stdout
    sgtest.check("after" in ours_list, f"we do not list QEMU's new snapshot:\n{ours_list}")
    # our checker agrees with QEMU's
    run([IMG, "check", q])


def other_layouts():
    for opts, name in (("compat=0.10", "v2"), ("cluster_size=512", "c512"),
                       ("refcount_bits=64", "r64"), ("refcount_bits=8", "r8"),
                       ("cluster_size=2M", "c2m")):
        p = os.path.join(D, f"{name}.qcow2")
        run([QIMG, "create", "-f", "qcow2", "-o", opts, p, "16M"])
        run([QIO, "-c", "write -P 0x71 0 1M", p])
        run([QIMG, "snapshot", "-c", "q1", p])
        run([IO, p, "write", "0x72", "4096", str(M), "--", "snap", "ours"])
        run([IO, p, "write", "0x73", "0", "512"])
        qemu_check_clean(p)
        listing_same(p)
        qemu_read(p, "0x73", 0, 512)
        qemu_read(p, "0x72", 4096, M)
        qemu_read(p, "0x71", 0, 4096, snapshot="ours")
        run([IMG, "snapshot", "-a", "q1", p])
        qemu_read(p, "0x71", 0, M)
        run([IMG, "snapshot", "-d", "ours", p])
        qemu_check_clean(p)
        run([IMG, "check", p])


def one_bit_refcounts():
    """1-bit refcounts cannot share clusters: QEMU refuses snapshots, so do we, cleanly."""
    p = os.path.join(D, "r1.qcow2")
    run([QIMG, "create", "-f", "qcow2", "-o", "refcount_bits=1", p, "16M"])
    run([IO, p, "write", "0x61", "0", str(M)])
    r = run([IO, p, "snap", "nope"], rc=1)
    sgtest.check("refcount overflow" in r.stderr, f"snapshot on 1-bit refcounts: {r.stderr}")
    qemu_check_clean(p)
    qemu_read(p, "0x61", 0, M)
    run([IO, p, "write", "0x62", "4096", "4096"])
    qemu_check_clean(p)


def qemu_savevm():
    """A snapshot QEMU saves with VM state: we find its vmstate where QEMU put it."""
    if not shutil.which("qemu-system-x86_64"):
        print("qemu-system-x86_64 absent: savevm part skipped")
        return
    p = os.path.join(D, "vm.qcow2")
    run([QIMG, "create", "-f", "qcow2", p, "32M"])
    proc, sock = sgtest.start_qemu([f"file={p},if=none,id=drive0,node-name=disk0"], D)
    q = sgtest.QMP(sock)
    out = q.hmp("savevm vm1")
    sgtest.check(out == "", f"savevm: {out!r}")
    q.cmd("quit")
    proc.wait(timeout=30)
    qemu_check_clean(p)
    listing_same(p)
    head = run([IO, p, "vmhead", "1", "4"]).stdout.strip()
    sgtest.check_eq(head, "5145564d", "vmstate magic (QEVM) of QEMU's snapshot")
    run([IMG, "snapshot", "-d", "vm1", p])
    qemu_check_clean(p)


ours_to_qemu()
qemu_to_ours()
other_layouts()
one_bit_refcounts()
qemu_savevm()
print("PASS")

#!/usr/bin/env python3
"""Corrupted qcow2 images passed to snapgate-img and snapgate-vmm.

A valid image (guest data, a QEMU-made snapshot and a snapshot with VM state
saved by snapgate-vmm) is damaged in targeted ways (every header field set to
absurd values, tables pointing past the end or into the header, snapshot table
entries with impossible sizes, the VM state header flipped) and by random byte
flips in its metadata.  Every run must end within its time limit, without a
signal or sanitizer report, with exit 0 or a clear message on stderr (exit 1,
or 2/3 for `check`); snapgate-vmm either refuses the image with exit 1 and a
message naming it, or runs and keeps answering QMP.

SG_LONG=1 tries 2000 random corruptions instead of 150; SG_SEED=N replays.
"""
import json
import os
import random
import shutil
import struct
import subprocess
import time

import sgtest
from sg_vmm_util import VMM

qemu_img = sgtest.require_tool("qemu-img")
qemu_io = sgtest.require_tool("qemu-io")
simg = sgtest.binary("snapgate-img")
have_vmm = os.path.exists(os.path.join(sgtest.BUILD, "snapgate-vmm")) and os.access("/dev/kvm", os.W_OK)
seed = int(os.environ.get("SG_SEED") or random.SystemRandom().randrange(1 << 30))
n_random = 2000 if os.environ.get("SG_LONG") else 150
print(f"seed {seed} (SG_SEED={seed} replays), {n_random} random corruptions", flush=True)
rng = random.Random(seed)
work = sgtest.tmpdir("sg-badimg-")
SANITIZER = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "Segmentation fault")

# ---- the valid base image --------------------------------------------------
base = os.path.join(work, "base.qcow2")
sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", base, "4M"])
sgtest.run([qemu_io, "-f", "qcow2", "-c", "write -P 0x5a 0 200k", "-c", "write -P 0x33 1M 64k",
            base])
sgtest.run([qemu_img, "snapshot", "-c", "qemu-made", base])
sgtest.run([qemu_io, "-f", "qcow2", "-c", "write -P 0x77 0 64k", base])
if have_vmm:
    vm = VMM(work, ["-m", "32M", "-drive", f"file={base}", "-serial", "none"])
    r = vm.qmp.cmd("snapshot-save", {"job-id": "s", "tag": "with-state", "vmstate": "disk0",
                                     "devices": ["disk0"]})
    sgtest.check("return" in r, f"snapshot-save: {r}")
    job = vm.qmp.wait_job("s", 60)
    sgtest.check("error" not in job, f"snapshot-save: {job}")
    vm.quit()
sgtest.run([qemu_img, "check", base])
with open(base, "rb") as f:
    BASE = f.read()


def be(fmt, off, data=BASE):
    return struct.unpack_from(">" + fmt, data, off)[0]


cluster_bits = be("I", 20)
CS = 1 << cluster_bits
disk_size = be("Q", 24)
l1_off, l1_size = be("Q", 40), be("I", 36)
rt_off = be("Q", 48)
nb_snap, snap_off = be("I", 60), be("Q", 64)


def snapshots():
    """[(entry offset, l1 offset, l1 size, id, name, vm_state_size)] of the base image."""
    out, off = [], snap_off
    for _ in range(nb_snap):
        sl1, sl1n = be("Q", off), be("I", off + 8)
        idn, namen = be("H", off + 12), be("H", off + 14)
        extra = be("I", off + 36)
        vs = be("Q", off + 40 + 0) if extra >= 8 else be("I", off + 32)
        p = off + 40 + extra
        sid = BASE[p:p + idn].decode()
        name = BASE[p + idn:p + idn + namen].decode()
        out.append((off, sl1, sl1n, sid, name, vs))
        off = (p + idn + namen + 7) & ~7
    return out


SNAPS = snapshots()


def host_of(l1, guest_off):
    l2_bits = cluster_bits - 3
    l1e = be("Q", l1 + 8 * (guest_off >> (cluster_bits + l2_bits))) & 0x00fffffffffffe00
    if not l1e:
        return 0
    l2e = be("Q", l1e + 8 * ((guest_off >> cluster_bits) & ((1 << l2_bits) - 1)))
    return (l2e & 0x00fffffffffffe00) + (guest_off & (CS - 1)) if l2e & 0x00fffffffffffe00 else 0


def mutate(edits, truncate=None):
    data = bytearray(BASE)
    for off, raw in edits:
        data[off:off + len(raw)] = raw
    if truncate is not None:
        del data[truncate:]
    return bytes(data)


def u32(v):
    return struct.pack(">I", v & 0xffffffff)


def u64(v):
    return struct.pack(">Q", v & 0xffffffffffffffff)


def u16(v):
    return struct.pack(">H", v & 0xffff)


HUGE = 1 << 55
targeted = [
    ("empty file", mutate([], truncate=0)),
    ("magic only", mutate([], truncate=4)),
    ("header cut at 50 bytes", mutate([], truncate=50)),
    ("header cut at 103 bytes", mutate([], truncate=103)),
    ("only the first cluster", mutate([], truncate=CS)),
    ("cut in the middle", mutate([], truncate=len(BASE) // 2)),
    ("version 1", mutate([(4, u32(1))])), ("version 4", mutate([(4, u32(4))])),
    ("version 0xffffffff", mutate([(4, u32(-1))])),
    ("backing file past EOF", mutate([(8, u64(HUGE)), (16, u32(200))])),
    ("backing file name 4 GiB", mutate([(8, u64(512)), (16, u32(-1))])),
    ("cluster_bits 0", mutate([(20, u32(0))])), ("cluster_bits 8", mutate([(20, u32(8))])),
    ("cluster_bits 22", mutate([(20, u32(22))])), ("cluster_bits 63", mutate([(20, u32(63))])),
    ("cluster_bits 2^32-1", mutate([(20, u32(-1))])),
    ("size 0", mutate([(24, u64(0))])), ("size 2^63", mutate([(24, u64(1 << 63))])),
    ("size 2^64-1", mutate([(24, u64(-1))])),
    ("size unaligned", mutate([(24, u64(disk_size + 1))])),
    ("encrypted", mutate([(32, u32(1))])), ("crypt method 7", mutate([(32, u32(7))])),
    ("l1_size 2^32-1", mutate([(36, u32(-1))])), ("l1_size 2^31", mutate([(36, u32(1 << 31))])),
    ("l1_size 0", mutate([(36, u32(0))])),
    ("L1 at 0 (the header)", mutate([(40, u64(0))])),
    ("L1 unaligned", mutate([(40, u64(l1_off + 1))])),
    ("L1 past EOF", mutate([(40, u64(HUGE))])),
    ("refcount table at 0", mutate([(48, u64(0))])),
    ("refcount table unaligned", mutate([(48, u64(rt_off + 8))])),
    ("refcount table past EOF", mutate([(48, u64(HUGE))])),
    ("refcount table 0 clusters", mutate([(56, u32(0))])),
    ("refcount table 2^32-1 clusters", mutate([(56, u32(-1))])),
    ("nb_snapshots 2^32-1", mutate([(60, u32(-1))])),
    ("nb_snapshots 65536", mutate([(60, u32(65536))])),
    ("nb_snapshots +1", mutate([(60, u32(nb_snap + 1))])),
    ("snapshot table at 0", mutate([(64, u64(0))])),
    ("snapshot table past EOF", mutate([(64, u64(HUGE))])),
    ("snapshot table unaligned", mutate([(64, u64(snap_off + 4))])),
    ("all incompatible features", mutate([(72, u64(-1))])),
    ("dirty bit", mutate([(72, u64(1))])), ("corrupt bit", mutate([(72, u64(2))])),
    ("external data file bit", mutate([(72, u64(4))])),
    ("compression type bit", mutate([(72, u64(8))])),
    ("refcount_order 0", mutate([(96, u32(0))])), ("refcount_order 6", mutate([(96, u32(6))])),
    ("refcount_order 7", mutate([(96, u32(7))])), ("refcount_order 255", mutate([(96, u32(255))])),
    ("header_length 0", mutate([(100, u32(0))])), ("header_length 2^31", mutate([(100, u32(1 << 31))])),
    ("header_length 105", mutate([(100, u32(105))])),
    ("header extension of 4 GiB", mutate([(be("I", 100), u32(0x12345678) + u32(-1))])),
    ("L1[0] past EOF", mutate([(l1_off, u64(HUGE | (1 << 63)))])),
    ("L1[0] unaligned", mutate([(l1_off, u64((be("Q", l1_off) + 512) | (1 << 63)))])),
    ("L1[0] -> header", mutate([(l1_off, u64(1 << 63))])),
    ("L1[0] -> refcount table", mutate([(l1_off, u64(rt_off | (1 << 63)))])),
    ("L1[0] -> L1 itself", mutate([(l1_off, u64(l1_off | (1 << 63)))])),
    ("refcount table[0] past EOF", mutate([(rt_off, u64(HUGE))])),
    ("refcount table[0] -> 0", mutate([(rt_off, u64(0))])),
    ("refcount table[0] -> L1", mutate([(rt_off, u64(l1_off))])),
]
l2_0 = be("Q", l1_off) & 0x00fffffffffffe00
if l2_0:
    targeted += [
        ("L2[0] past EOF", mutate([(l2_0, u64(HUGE | (1 << 63)))])),
        ("L2[0] compressed garbage", mutate([(l2_0, u64((1 << 62) | 0x3fffffffffffff))])),
        ("L2[0] -> header", mutate([(l2_0, u64(1 << 63))])),
        ("L2[0] reserved bits", mutate([(l2_0, u64(be("Q", l2_0) | 0x1fe))])),
        ("L2 all ones", mutate([(l2_0, b"\xff" * CS)])),
    ]
for (eoff, sl1, sl1n, sid, name, vs) in SNAPS:
    targeted += [
        (f"snapshot {name}: L1 past EOF", mutate([(eoff, u64(HUGE))])),
        (f"snapshot {name}: L1 at 0", mutate([(eoff, u64(0))])),
        (f"snapshot {name}: L1 size 2^32-1", mutate([(eoff + 8, u32(-1))])),
        (f"snapshot {name}: id size 65535", mutate([(eoff + 12, u16(-1))])),
        (f"snapshot {name}: name size 65535", mutate([(eoff + 14, u16(-1))])),
        (f"snapshot {name}: extra data 2^32-1", mutate([(eoff + 36, u32(-1))])),
        (f"snapshot {name}: vm state size 2^63", mutate([(eoff + 40, u64(1 << 63))])),
        (f"snapshot {name}: disk size 2^63", mutate([(eoff + 48, u64(1 << 63))])),
        (f"snapshot {name}: L1[0] past EOF", mutate([(sl1, u64(HUGE))])),
    ]
    if vs:
        # The VM state header: the first bytes of the area after the disk,
        # which starts at the next L1 entry's range (as in QEMU).
        per_l1 = CS * (CS // 8)
        h = host_of(sl1, (disk_size + per_l1 - 1) // per_l1 * per_l1)
        if h:
            targeted += [(f"snapshot {name}: VM state header zeroed", mutate([(h, b"\0" * 512)])),
                         (f"snapshot {name}: VM state header ones", mutate([(h, b"\xff" * 64)]))]
            for i in range(6):
                # header bytes, then the device-state blob at 4 KiB (own CRC)
                p = h + (rng.randrange(0, 256) if i < 4 else 4096 + rng.randrange(0, 64))
                targeted.append((f"snapshot {name}: VM state byte {p - h} flipped",
                                 mutate([(p, bytes([BASE[p] ^ (1 << rng.randrange(8))]))])))

META = [(0, 4096), (l1_off, 8 * l1_size), (rt_off, 64), (snap_off, 512)]


def random_corruption(i):
    edits = []
    for _ in range(rng.randrange(1, 6)):
        start, length = rng.choice(META)
        p = start + rng.randrange(max(1, length))
        kind = rng.random()
        if kind < 0.5:
            edits.append((p, bytes([BASE[p] ^ (1 << rng.randrange(8))])))
        elif kind < 0.8:
            edits.append((p, bytes([rng.choice([0, 0xff, 0x80, 0x7f, 1])])))
        else:
            edits.append((p & ~7, u64(rng.choice([0, HUGE, 1 << 63, -1, len(BASE), CS - 1]))))
    return (f"random #{i}: " + ", ".join(f"@{o}" for o, _ in edits), mutate(edits))


stats = {"runs": 0, "rc": {}, "vmm_refused": 0, "vmm_ran": 0}


def run_img(label, path, args, allowed):
    stats["runs"] += 1
    t = time.monotonic()
    try:
        r = subprocess.run([simg] + args + [path], capture_output=True, text=True, timeout=20,
                           errors="replace")
    except subprocess.TimeoutExpired:
        sgtest.fail(f"{label}: snapgate-img {' '.join(args)} hung (> 20 s)")
    sgtest.check(r.returncode >= 0, f"{label}: snapgate-img {' '.join(args)} killed by signal "
                 f"{-r.returncode}:\n{r.stderr[-2000:]}")
    for m in SANITIZER:
        sgtest.check(m not in r.stderr, f"{label}: snapgate-img {' '.join(args)}:\n{r.stderr[-3000:]}")
    sgtest.check(r.returncode in allowed, f"{label}: snapgate-img {' '.join(args)} exited "
                 f"{r.returncode}: {r.stderr.strip()[:300]}")
    if r.returncode not in (0, 3):
        # check reports on stdout, as qemu-img does
        sgtest.check(((r.stdout if args[0] == "check" else "") + r.stderr).strip(), f"{label}: snapgate-img {' '.join(args)} exit "
                     f"{r.returncode} without a message")
    key = f"{args[0]}:{r.returncode}"
    stats["rc"][key] = stats["rc"].get(key, 0) + 1
    sgtest.check(time.monotonic() - t < 20, f"{label}: took too long")
    return r


def try_img(label, data):
    path = os.path.join(work, "bad.qcow2")
    with open(path, "wb") as f:
        f.write(data)
    run_img(label, path, ["info"], (0, 1))
    run_img(label, path, ["info", "--output=json"], (0, 1))
    run_img(label, path, ["check"], (0, 1, 2, 3, 63))   # 63: probed raw, as qemu-img
    run_img(label, path, ["snapshot", "-l"], (0, 1))
    for args in (["snapshot", "-c", "new"], ["snapshot", "-a", "qemu-made"],
                 ["snapshot", "-d", "with-state" if have_vmm else "qemu-made"]):
        with open(path, "wb") as f:
            f.write(data)
        run_img(label, path, args, (0, 1))


def try_vmm(label, data):
    path = os.path.join(work, "vmm-bad.qcow2")
    with open(path, "wb") as f:
        f.write(data)
    sock = os.path.join(work, "bad-vmm.qmp")
    if os.path.exists(sock):
        os.unlink(sock)
    load = ["-loadvm", "with-state"] if "with-state" in label else []
    argv = [sgtest.binary("snapgate-vmm"), "-m", "32M", "-drive", f"file={path}", "-serial", "none",
            "-qmp", f"unix:{sock},server=on,wait=off"] + load
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         errors="replace")
    end = time.monotonic() + 20
    while p.poll() is None and not os.path.exists(sock) and time.monotonic() < end:
        time.sleep(0.02)
    ran = False
    if p.poll() is None and os.path.exists(sock):
        # It accepted the image (or the damage is where it does not look yet):
        # it must keep answering, also about the damaged disk.  The socket
        # exists before -loadvm runs, so a refusal can still come now.
        try:
            q = sgtest.QMP(sock, timeout=20)
            for cmd in ("query-status", "query-block", "query-named-block-nodes"):
                r = q.cmd(cmd)
                sgtest.check("return" in r or "error" in r, f"{label}: {cmd}: {r}")
            r = q.cmd("snapshot-save", {"job-id": "x", "tag": "after", "vmstate": "disk0",
                                        "devices": ["disk0"]})
            if "return" in r:
                q.wait_job("x", 60)
            q.cmd("quit")
            q.close()
            ran = True
        except (OSError, EOFError) as e:
            lost = e
        try:
            err = p.communicate(timeout=20)[1]
        except subprocess.TimeoutExpired:
            p.kill()
            sgtest.fail(f"{label}: snapgate-vmm did not exit")
        if ran:
            sgtest.check(p.returncode == 0, f"{label}: snapgate-vmm exit {p.returncode} after quit:\n"
                         f"{err[-2000:]}")
            stats["vmm_ran"] += 1
            if os.environ.get("SG_VERBOSE"):
                print(f"  vmm ran: {label}", flush=True)
        else:
            sgtest.check(p.returncode == 1, f"{label}: snapgate-vmm stopped answering ({lost}); "
                         f"exit {p.returncode}:\n{err[-2000:]}")
    else:
        try:
            err = p.communicate(timeout=max(1, end - time.monotonic()))[1]
        except subprocess.TimeoutExpired:
            p.kill()
            sgtest.fail(f"{label}: snapgate-vmm neither started QMP nor exited in 20 s")
    if not ran:
        sgtest.check(p.returncode == 1, f"{label}: snapgate-vmm exit {p.returncode} "
                     f"(want 1 for a bad image):\n{err[-2000:]}")
        sgtest.check(err.strip() and ("vmm-bad.qcow2" in err or "with-state" in err),
                     f"{label}: snapgate-vmm refused the image without naming it: {err.strip()[:300]}")
        stats["vmm_refused"] += 1
        if os.environ.get("SG_VERBOSE"):
            print(f"  vmm refused: {label}: {err.strip().splitlines()[-1][:150]}", flush=True)
    for m in SANITIZER:
        sgtest.check(m not in err, f"{label}: snapgate-vmm:\n{err[-3000:]}")


t0 = time.monotonic()
for label, data in targeted:
    try_img(label, data)
t_img = time.monotonic() - t0
if have_vmm:
    for label, data in targeted:
        try_vmm(label, data)
t_vmm = time.monotonic() - t0 - t_img
for i in range(n_random):
    label, data = random_corruption(i)
    try_img(label, data)
print(f"{len(targeted)} targeted + {n_random} random corruptions, {stats['runs']} snapgate-img "
      f"runs ({stats['rc']}); snapgate-vmm: {stats['vmm_refused']} refused with exit 1, "
      f"{stats['vmm_ran']} ran and answered{'' if have_vmm else ' (skipped: no /dev/kvm)'}; "
      f"{time.monotonic() - t0:.1f} s (VMM part {t_vmm:.1f} s)", flush=True)
print("PASS", flush=True)

#!/usr/bin/env python3
"""Issue 17, the VMM side: snapgate-vmm protects its images as QEMU does.

- Locks: a second snapgate-vmm on the same image, QEMU on an image
  snapgate-vmm runs, snapgate-vmm on an image QEMU runs, and qemu-img /
  snapgate-img writing into the live image are all refused with QEMU's
  'Failed to get "write" lock'; qemu-img -U still reads.
- Tags: a snapshot qemu-img made with a Latin-1 tag is listed by query-block
  and `info snapshots` (as U+FFFD); a 600-character unicode savevm is refused
  up front as too long (not "out of memory"), and nothing is cut.
- Guest writes into metadata: the active L2 entry of the demo guest's
  sector 0 points at a snapshot's L1 table; the guest's writes are refused
  ("Preventing invalid write on metadata"), the image is marked corrupt, the
  snapshot's L1 is untouched and qemu-img check finds no more errors.
- werror=enospc (QEMU's virtio-blk default): a guest write that finds the
  disk full emits BLOCK_IO_ERROR (action stop, nospace), the VM goes to
  "io-error", and cont after the operator made room retries the write: the
  guest never sees an error, the image checks clean.
- Sockets: `-serial unix:FILE,server=on` (and `-qmp`) on a regular file
  refuse to start and leave the file as it was (the issue's finding: it was
  deleted and replaced by a socket).
"""
import json
import os
import struct
import subprocess
import time

import sgtest
from sg_vmm_util import VMM, run_vmm_fail

sgtest.require_kvm()
QIMG = sgtest.require_tool("qemu-img")
QIO = sgtest.require_tool("qemu-io")
IMG = sgtest.binary("snapgate-img")
work = sgtest.tmpdir("sg-vmm-safety-")
VM_ARGS = ["-m", "64M"]


def be64(path, off):
    with open(path, "rb") as f:
        f.seek(off)
        return struct.unpack(">Q", f.read(8))[0]


def put64(path, off, v):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(struct.pack(">Q", v))


def corruptions(path):
    r = subprocess.run([QIMG, "check", "--output=json", "-U", path], capture_output=True,
                       text=True)
    return json.loads(r.stdout).get("corruptions", 0)


LOCK = 'Failed to get "write" lock'

# ---- locks ---------------------------------------------------------------------
img = os.path.join(work, "disk.qcow2")
sgtest.run([QIMG, "create", "-q", "-f", "qcow2", img, "16M"])
subprocess.run([QIMG, "snapshot", "-c", b"caf\xe9", img], check=True)
vm = VMM(work, VM_ARGS + ["-drive", f"file={img}"])
vm.wait_line(r"^tick 2$", 30)
rc, err = run_vmm_fail(VM_ARGS + ["-drive", f"file={img}"], cwd=work)
sgtest.check(rc != 0 and LOCK in err and f"Is another process using the image [{img}]?" in err,
             f"second snapgate-vmm on the image: rc {rc}: {err}")
r = sgtest.run([QIMG, "snapshot", "-c", "live", img], check_rc=False)
sgtest.check(r.returncode == 1 and LOCK in r.stderr, f"qemu-img into a live image: {r.stderr}")
r = sgtest.run([IMG, "snapshot", "-c", "live", img], check_rc=False)
sgtest.check(r.returncode == 1 and LOCK in r.stderr, f"snapgate-img into a live image: {r.stderr}")
subprocess.run([QIMG, "snapshot", "-l", "-U", img], check=True, capture_output=True)
qemu = sgtest.require_tool("qemu-system-x86_64")
r = subprocess.run([qemu, "-display", "none", "-S", "-nodefaults", "-drive",
                    f"file={img},format=qcow2,if=virtio"], capture_output=True, text=True,
                   timeout=30)
sgtest.check(r.returncode != 0 and LOCK in r.stderr, f"QEMU on snapgate-vmm's image: {r.stderr}")

# ---- tags ----------------------------------------------------------------------
blk = vm.qmp.cmd("query-block")["return"][0]
names = [s["name"] for s in blk["inserted"]["image"].get("snapshots", [])]
sgtest.check_eq(names, ["caf\ufffd"], "query-block lists the Latin-1 tag")
nodes = vm.qmp.cmd("query-named-block-nodes")["return"]
sgtest.check(any(s["name"] == "caf\ufffd" for n in nodes for s in n["image"].get("snapshots", [])),
             f"query-named-block-nodes: {nodes}")
out = vm.qmp.hmp("info snapshots")
sgtest.check("caf" in out, f"info snapshots lacks the Latin-1 tag: {out!r}")
long_tag = "\u00e9t\u00e9" * 200   # 600 characters, 1000 bytes
r = vm.qmp.cmd("snapshot-save", {"job-id": "long", "tag": long_tag, "vmstate": "disk0",
                                 "devices": ["disk0"]})
sgtest.check("error" in r and "too long" in r["error"]["desc"], f"600-char snapshot-save: {r}")
out = vm.qmp.hmp("savevm " + long_tag)
sgtest.check("out of memory" not in out and "too long" in out, f"600-char savevm: {out!r}")
tag255 = "\u00e9" * 127 + "x"
out = vm.qmp.hmp("savevm " + tag255)
sgtest.check(out.strip() == "", f"255-byte savevm: {out!r}")
blk = vm.qmp.cmd("query-block")["return"][0]
names = [s["name"] for s in blk["inserted"]["image"].get("snapshots", [])]
sgtest.check(tag255 in names, f"255-byte tag cut or lost: {names}")
out = vm.qmp.hmp("delvm " + tag255)
sgtest.check(out.strip() == "", f"delvm of the 255-byte tag: {out!r}")
vm.quit()
sgtest.qemu_img_check(img)

# And the other way: QEMU holds the image, snapgate-vmm refuses it.
q = sgtest.spawn([qemu, "-display", "none", "-S", "-nodefaults", "-drive",
                  f"file={img},format=qcow2,if=virtio"], stderr=subprocess.PIPE)
sgtest.wait_for(lambda: subprocess.run([QIMG, "info", img], capture_output=True).returncode != 0
                or q.poll() is not None, 20, "QEMU to lock the image")
rc, err = run_vmm_fail(VM_ARGS + ["-drive", f"file={img}"], cwd=work)
sgtest.check(rc != 0 and LOCK in err, f"snapgate-vmm on QEMU's image: rc {rc}: {err}")
q.kill()
q.wait()

# ---- guest writes aimed at metadata ------------------------------------------
bad = os.path.join(work, "bad.qcow2")
sgtest.run([QIMG, "create", "-q", "-f", "qcow2", bad, "16M"])
sgtest.run([QIO, "-c", "write -P 0x61 0 128k", bad])
sgtest.run([QIMG, "snapshot", "-c", "s1", bad])
sgtest.run([QIO, "-c", "write -P 0x62 0 64k", bad])   # the active L2 is private again
l2 = be64(bad, be64(bad, 40)) & 0x00fffffffffffe00
snap_l1 = be64(bad, be64(bad, 64))
put64(bad, l2, snap_l1 | (1 << 63))   # sector 0 of the guest -> the snapshot's L1
with open(bad, "rb") as f:
    f.seek(snap_l1)
    l1_before = f.read(512)
c0 = corruptions(bad)
vm = VMM(work, VM_ARGS + ["-drive", f"file={bad}"], name="bad")
vm.wait_line(r"^tick 4$", 30)
vm.quit()
with open(bad, "rb") as f:
    f.seek(snap_l1)
    l1_after = f.read(512)
sgtest.check(l1_after == l1_before, f"the guest wrote over the snapshot's L1: {l1_after[:16]!r}")
sgtest.check("Preventing invalid write on metadata (overlaps with inactive L1 table)" in
             vm.stderr(), f"no overlap message: {vm.stderr()}")
sgtest.check(be64(bad, 72) & 2, "corrupt bit not set")
c1 = corruptions(bad)
sgtest.check(c1 <= c0, f"corruptions grew {c0} -> {c1}")
rc, err = run_vmm_fail(VM_ARGS + ["-drive", f"file={bad}"], cwd=work)
sgtest.check(rc != 0 and "Image is corrupt" in err, f"writable open of a corrupt image: {err}")
print(f"metadata write refused: snapshot L1 intact, qemu-img corruptions {c0} -> {c1}")

# ---- save / replace / delete / cancel cycles leave the file as it was ----------
cyc = os.path.join(work, "cycles.qcow2")
sgtest.run([QIMG, "create", "-q", "-f", "qcow2", cyc, "64M"])
vm = VMM(work, ["-m", "96M", "-append", "dirty=48M", "-drive", f"file={cyc}"], name="cycles")
vm.wait_line(r"^tick 3$", 30)
SAVE = {"vmstate": "disk0", "devices": ["disk0"]}


def job(cmd, jid, **args):
    r = vm.qmp.cmd(cmd, dict(args, **{"job-id": jid}))
    sgtest.check(r.get("return") == {}, f"{cmd} {jid}: {r}")
    return jid


def used():
    return os.stat(cyc).st_blocks * 512


before = used()
peak = 0
for i in range(3):
    sgtest.check("error" not in vm.qmp.wait_job(job("snapshot-save", f"s{i}", tag="c", **SAVE)),
                 "save")
    sgtest.check("error" not in vm.qmp.wait_job(job("snapshot-save", f"r{i}", tag="c",
                                                     **{"x-replace": True}, **SAVE)), "replace")
    peak = max(peak, used())
    sgtest.check("error" not in vm.qmp.wait_job(job("snapshot-delete", f"d{i}", tag="c",
                                                     devices=["disk0"])), "delete")
    jid = job("snapshot-save", f"x{i}", tag="cancelled", **SAVE)
    vm.qmp.cmd("job-cancel", {"id": jid})
    info = vm.qmp.wait_job(jid)
    if "error" not in info:   # finished before the cancel arrived
        vm.qmp.wait_job(job("snapshot-delete", f"y{i}", tag="cancelled", devices=["disk0"]))
after = used()
vm.quit()
sgtest.qemu_img_check(cyc)
print(f"cycles: {before >> 10} KiB before, peak {peak >> 10} KiB, {after >> 10} KiB after")
sgtest.check(after <= before * 1.1 + (256 << 10),
             f"save/replace/delete/cancel cycles kept space: {before >> 10} -> {after >> 10} KiB")

# ---- werror=enospc: a full disk stops the VM, cont retries -------------------
mnt = os.path.join(work, "tmpfs")
os.makedirs(mnt)
r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "sg-rl-safety", mnt],
                   capture_output=True, text=True)
if r.returncode != 0:
    print(f"werror phase skipped: cannot mount tmpfs ({r.stderr.strip()})")
else:
    try:
        full = os.path.join(mnt, "full.qcow2")
        sgtest.run([QIMG, "create", "-q", "-f", "qcow2", full, "16M"])
        ballast = os.path.join(mnt, "ballast")
        fd = os.open(ballast, os.O_WRONLY | os.O_CREAT)   # fill it to the last byte
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\xaa" * size)
            except OSError:
                pass
        os.close(fd)
        vm = VMM(work, VM_ARGS + ["-drive", f"file={full}"], name="full")
        ev = vm.qmp.wait_event("BLOCK_IO_ERROR", 30)
        sgtest.check_eq({k: ev["data"].get(k) for k in ("device", "operation", "action", "nospace")},
                        {"device": "drive0", "operation": "write", "action": "stop",
                         "nospace": True}, "BLOCK_IO_ERROR on a full disk")
        vm.qmp.wait_event("STOP", 10)
        st = vm.qmp.cmd("query-status")["return"]
        sgtest.check_eq((st["status"], st["running"]), ("io-error", False), "status after ENOSPC")
        blk = vm.qmp.cmd("query-block")["return"][0]
        sgtest.check_eq(blk["io-status"], "nospace", "query-block io-status after ENOSPC")
        # The cause is kept, as QEMU 7.2 appends it.
        r = vm.qmp.cmd("blockdev-snapshot-internal-sync", {"device": "drive0", "name": "after"})
        sgtest.check("error" in r and r["error"]["desc"] ==
                     "Failed to create snapshot 'after' on device 'drive0': No space left on device",
                     f"internal snapshot on a full disk: {r}")
        n = len(vm.snapshot_lines())
        os.unlink(ballast)   # the operator makes room
        vm.qmp.cmd("cont")
        vm.wait_line(r"^tick 3$", 30, start=0)
        sgtest.check_eq(vm.qmp.cmd("query-block")["return"][0]["io-status"], "ok", "io-status")
        bad = [l for l in vm.snapshot_lines()[n:] if "disk write" in l]
        sgtest.check(not bad, f"the guest saw an error for the held write: {bad}")
        r = vm.qmp.cmd("blockdev-snapshot-internal-sync", {"device": "drive0", "name": "after"})
        sgtest.check(r.get("return") == {}, f"internal snapshot once there is room: {r}")
        vm.quit()
        sgtest.qemu_img_check(full)
        print(f"werror=enospc: BLOCK_IO_ERROR {ev['data']}, io-error, cont retried the write")
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True)
# ---- a listen socket never replaces a regular file ------------------------------
for opt in ("-serial", "-qmp"):
    keep = os.path.join(work, f"precious{opt}")
    with open(keep, "w") as f:
        f.write("precious data\n")
    extra = [] if opt == "-qmp" else ["-qmp", f"unix:{os.path.join(work, 'q2.sock')},server=on,wait=off"]
    rc, err = run_vmm_fail([opt, f"unix:{keep},server=on" + (",wait=off" if opt == "-qmp" else "")]
                           + extra, cwd=work)
    sgtest.check(rc != 0 and "not a socket" in err, f"{opt} unix: on a regular file: rc {rc}: {err}")
    with open(keep) as f:
        sgtest.check_eq(f.read(), "precious data\n", f"{opt}: the regular file after the refusal")
print("listen sockets: a regular file at the path is refused and kept (-serial, -qmp)")
print("PASS")

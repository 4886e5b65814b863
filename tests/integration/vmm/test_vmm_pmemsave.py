#!/usr/bin/env python3
"""QMP pmemsave on snapgate-vmm (the demo guest), QEMU 7.2 as the oracle:
- bad input: the same error class and text as QEMU 7.2's pmemsave for a missing,
  unexpected or mistyped argument, a file that cannot be opened (no such
  directory, a directory) and a write that fails (/dev/full); size 0 makes an
  empty file in both;
- snapgate's own bound (QEMU reads any address, zeros where nothing is, and dies on
  a negative size): a range that is not guest RAM is refused with QEMU's memsave
  text "Invalid addr 0x.../size N specified"; the last byte of RAM is readable;
- the dump is RAM: a part dumped at an offset is the same bytes as that part of a
  dump of all RAM; the stopped guest's x-snapgate-ram-checksum reply has
  "excluded": [] (the demo guest enables no paravirtual MSR);
- lazy load: a dump taken right after snapshot-load is accepted (RAM still filling
  from the snapshot) equals the dump at the save, as does the checksum."""
import os
import subprocess

import sgtest
from sg_vmm_util import VMM

sgtest.require_kvm()
qemu = sgtest.require_tool("qemu-system-x86_64")
qemu_img = sgtest.require_tool("qemu-img")
d = sgtest.tmpdir()
MEM = 128 << 20


def bad_inputs(tag):
    f = os.path.join(d, f"{tag}-out.bin")
    return [
        ("missing filename", {"val": 0, "size": 16}),
        ("missing val", {"size": 16, "filename": f}),
        ("val a string", {"val": "x", "size": 16, "filename": f}),
        ("size a real", {"val": 0, "size": 1.5, "filename": f}),
        ("filename a number", {"val": 0, "size": 16, "filename": 5}),
        ("unexpected member", {"val": 0, "size": 16, "filename": f, "foo": 1}),
        ("no such directory", {"val": 0, "size": 16, "filename": os.path.join(d, "no", "x.bin")}),
        ("a directory", {"val": 0, "size": 16, "filename": d}),
        # 1 MiB: past stdio's buffer, so QEMU's fwrite fails too (below it QEMU
        # ignores the failed flush at fclose and reports success).
        ("/dev/full", {"val": 0, "size": 1 << 20, "filename": "/dev/full"}),
    ]


def strip_id(r):
    return {k: v for k, v in r.items() if k != "id"}


# ---- QEMU 7.2's replies ------------------------------------------------------
qs = os.path.join(d, "qemu.qmp")
qp = sgtest.spawn([qemu, "-accel", "tcg", "-M", "pc", "-m", "16M", "-nodefaults", "-display",
                   "none", "-S", "-qmp", f"unix:{qs},server=on,wait=off"],
                  stderr=subprocess.DEVNULL)
sgtest.wait_for(lambda: os.path.exists(qs), 30, "QEMU's QMP socket")
qq = sgtest.QMP(qs)
want = {what: strip_id(qq.cmd("pmemsave", a)) for what, a in bad_inputs("qemu")}
qzero = os.path.join(d, "qemu-zero.bin")
want["size 0"] = strip_id(qq.cmd("pmemsave", {"val": 0, "size": 0, "filename": qzero}))
sgtest.check_eq(os.path.getsize(qzero), 0, "QEMU: size 0 makes an empty file")
qq.cmd("quit")
qp.wait(30)
for what, r in want.items():
    if what == "size 0":
        sgtest.check_eq(r, {"return": {}}, "QEMU: size 0")
    else:
        sgtest.check("error" in r, f"QEMU: {what}: an error ({r})")

# ---- snapgate-vmm ------------------------------------------------------------
disk = os.path.join(d, "a.qcow2")
sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", disk, "16M"])
vm = VMM(d, ["-m", f"{MEM >> 20}M", "-drive", f"file={disk}", "-append", "dirty=32M"])
q = vm.qmp
vm.wait_line(r"^tick 2$", 60)
for what, a in bad_inputs("vmm"):
    sgtest.check_eq(strip_id(q.cmd("pmemsave", a)), want[what], f"pmemsave, {what}: QEMU's reply")
zero = os.path.join(d, "vmm-zero.bin")
sgtest.check_eq(strip_id(q.cmd("pmemsave", {"val": 0, "size": 0, "filename": zero})), want["size 0"],
                "pmemsave, size 0")
sgtest.check_eq(os.path.getsize(zero), 0, "size 0 makes an empty file")

out = os.path.join(d, "x.bin")
for val, size in ((MEM - 16, 17), (MEM, 1), (1 << 40, 16), (-5, 16), (0, -1), (0xfee00000, 16),
                  ((1 << 63) - 8, 16)):
    r = q.cmd("pmemsave", {"val": val, "size": size, "filename": out})
    sgtest.check_eq(r.get("error"), {"class": "GenericError",
                                     "desc": f"Invalid addr 0x{val & (2**64 - 1):016x}/size {size} specified"},
                    f"pmemsave val={val:#x} size={size}: not RAM")
r = q.cmd("pmemsave", {"val": MEM - 16, "size": 16, "filename": out})
sgtest.check_eq(r.get("return"), {}, "pmemsave of RAM's last 16 bytes")
sgtest.check_eq(os.path.getsize(out), 16, "pmemsave of RAM's last 16 bytes: file size")


def dump(name, val=0, size=MEM):
    f = os.path.join(d, name)
    r = q.cmd("pmemsave", {"val": val, "size": size, "filename": f})
    sgtest.check_eq(r.get("return"), {}, f"pmemsave {name}")
    with open(f, "rb") as fh:
        data = fh.read()
    os.unlink(f)
    sgtest.check_eq(len(data), size, f"pmemsave {name}: size")
    return data


q.cmd("stop")
q.wait_event("STOP", 30)
full = dump("full.bin")
sgtest.check(full.count(0) < len(full) - (16 << 20), "the dump holds the guest's dirty= data")
part = dump("part.bin", 3 << 20, (5 << 20) + 12345)
sgtest.check(part == full[3 << 20:(8 << 20) + 12345], "a part dumped at an offset is that part of RAM")
c0 = q.cmd("x-snapgate-ram-checksum")["return"]
sgtest.check_eq(c0.get("excluded"), [], "the demo guest: nothing excluded from the checksum")
sgtest.check_eq(c0.get("size"), MEM, "checksum size")

spec = {"vmstate": "disk0", "devices": ["disk0"]}
r = q.cmd("snapshot-save", dict(spec, **{"job-id": "sv", "tag": "s"}))
sgtest.check_eq(r.get("return"), {}, "snapshot-save")
info = q.wait_job("sv", 120)
sgtest.check("error" not in info, f"snapshot-save: {info.get('error')}")
q.cmd("job-dismiss", {"id": "sv"})
sgtest.check(dump("saved.bin") == full, "RAM unchanged by the stopped save")

r = q.cmd("snapshot-load", dict(spec, **{"job-id": "ld", "tag": "s"}))
sgtest.check_eq(r.get("return"), {}, "snapshot-load")
status = [j["status"] for j in q.cmd("query-jobs")["return"] if j["id"] == "ld"]
loaded = dump("loaded.bin")          # while the lazy fill may still run
print(f"pmemsave right after snapshot-load: job status {status}", flush=True)
info = q.wait_job("ld", 120)
sgtest.check("error" not in info, f"snapshot-load: {info.get('error')}")
sgtest.check(loaded == full, "a dump during the lazy load is the saved RAM")
sgtest.check(dump("after.bin") == full, "the dump after the load is the saved RAM")
c1 = q.cmd("x-snapgate-ram-checksum")["return"]
sgtest.check_eq(c1, c0, "checksum after the load")
q.cmd("quit")
sgtest.check_eq(vm.proc.wait(30), 0, "snapgate-vmm exit")
r = subprocess.run([qemu_img, "check", disk], capture_output=True, text=True)
sgtest.check(r.returncode == 0, f"qemu-img check: {r.returncode} {r.stdout}{r.stderr}")
print("ok")

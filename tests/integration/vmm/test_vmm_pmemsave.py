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
  from the snapshot) equals the dump at the save, as does the checksum;
- HMP `pmemsave ADDR SIZE FILE` (human-monitor-command, and the gateway's own
  monitor in front of snapgate-vmm): the same lines on QEMU 7.2 and snapgate-vmm
  give the same text byte for byte and files of the same size: QEMU's
  expressions (precedence, octal/hex, character constants, the '/' of an
  unquoted absolute FILE read as a division), its quoting, its errors (missing
  arguments, bad numbers, 32-bit SIZE, extraneous text, unwritable files,
  /dev/full), `help pmemsave`; snapgate's own bound again (QEMU dumps zeros
  outside RAM, snapgate-vmm refuses) and a $register (QEMU reads its vCPU's,
  snapgate-vmm has none to offer: "unknown register")."""
import os
import subprocess

import sg_gateway_util as U
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


# HMP lines run on both, each in its own directory (relative FILEs land
# there): (line, size of the file it makes or None).  The guests differ in
# RAM (16 MiB / 128 MiB): every range here is inside both.
HMP_SAME = [
    ("pmemsave 0 16 a.bin", ("a.bin", 16)),
    ("pmemsave 0x1000 0x100 b.bin", ("b.bin", 256)),
    ("pmemsave (1+2)*4 4*4 c.bin", ("c.bin", 16)),
    ("pmemsave 'a' 1+1&1 d.bin", ("d.bin", 2)),            # & binds tighter than +
    ("pmemsave 0 1|2*2 e.bin", ("e.bin", 5)),              # * tighter than |
    ("pmemsave 0 7-2-1 f.bin", ("f.bin", 4)),
    ("pmemsave 0 2^3 g.bin", ("g.bin", 1)),
    ("pmemsave -(-16) ~0&15 h.bin", ("h.bin", 15)),
    ("pmemsave  010   020   i.bin  ", ("i.bin", 16)),     # octal
    ("pmemsave 0 0 zero.bin", ("zero.bin", 0)),
    ('pmemsave 0 16 "q h.bin"', ("q h.bin", 16)),
    ('pmemsave 0 16 "j\\"k.bin"', ('j"k.bin', 16)),
    ("pmemsave 0 16 'l.bin'", ("'l.bin'", 16)),
    ("pmemsave 0 16abc", ("abc", 16)),                     # SIZE ends at 'a'
    ("pmemsave", None),
    ("pmemsave 0", None),
    ("pmemsave 0 16", None),
    ("pmemsave 0 16 ", None),
    ("pmemsave x 16 m.bin", None),
    ("pmemsave 0 x m.bin", None),
    (f"pmemsave 0 16 {d}/m.bin", None),                    # 16 / tmp...: QEMU's trap
    ("pmemsave 0 0x100000000 m.bin", None),
    ("pmemsave 0 0xffffffff0 m.bin", None),
    ("pmemsave 0 -1 m.bin", None),                         # 0 - 1, then SIZE "m.bin"
    ("pmemsave 99999999999999999999999 16 m.bin", None),
    ("pmemsave 18446744073709551616 16 m.bin", None),
    ("pmemsave 4/0 16 m.bin", None),
    ("pmemsave 16 4%0 m.bin", None),
    ("pmemsave (1 16 m.bin", None),
    ("pmemsave ((((((((((((((((((((((((((((((((((((((((1 16 m.bin", None),
    ("pmemsave 'ab' 16 m.bin", None),
    ("pmemsave 0 ' m.bin", None),
    ("pmemsave 0 '", None),
    ("pmemsave 0x10/ 16 m.bin", None),
    ("pmemsave 0 16 n.bin extra", None),
    ("pmemsave 0 16 n.bin # c", None),
    ("pmemsave 0 08 n.bin", None),
    ('pmemsave 0 16 "unterminated', None),
    ('pmemsave 0 16 "o\\qp.bin"', None),
    ("pmemsave 0 16 nodir/x.bin", None),
    ('pmemsave 0 16 ""', None),
    ('pmemsave 0 16 "."', None),
    ('pmemsave 0 1048576 "/dev/full"', None),
    ("pmemsave $nosuchreg 16 m.bin", None),
    ("help pmemsave", None),
]
# snapgate-vmm's deliberate differences: (line, QEMU 7.2's reply, snapgate's).
HMP_DIFF = [
    ("pmemsave 0x1000000000 16 far.bin", "",
     "Error: Invalid addr 0x0000001000000000/size 16 specified\r\n"),
    ("pmemsave -1 16 neg.bin", "", "Error: Invalid addr 0xffffffffffffffff/size 16 specified\r\n"),
    ("pmemsave $eax 16 reg.bin", "",
     "unknown register\r\nTry \"help pmemsave\" for more information\r\n"),
]
# Only on snapgate-vmm (QEMU would write 4 GiB of zeros).
HMP_VMM_ONLY = [
    ("pmemsave 0 0xffffffff big.bin",
     "Error: Invalid addr 0x0000000000000000/size 4294967295 specified\r\n"),
]


def hmp_run(qmp, wd):
    """Each line's reply text and the size of the file it made (removed)."""
    out = []
    for line, made in HMP_SAME:
        r = qmp.cmd("human-monitor-command", {"command-line": line})
        sgtest.check("return" in r, f"{line!r}: {r}")
        size = None
        if made:
            f = os.path.join(wd, made[0])
            size = os.path.getsize(f) if os.path.exists(f) else None
            if size is not None:
                os.unlink(f)
        out.append((r["return"], size))
    return out


# ---- QEMU 7.2's replies ------------------------------------------------------
qs = os.path.join(d, "qemu.qmp")
qdir = os.path.join(d, "qemu-hmp")
os.makedirs(qdir)
qp = sgtest.spawn([qemu, "-accel", "tcg", "-M", "pc", "-m", "16M", "-nodefaults", "-display",
                   "none", "-S", "-qmp", f"unix:{qs},server=on,wait=off"],
                  stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=qdir)
sgtest.wait_for(lambda: os.path.exists(qs), 30, "QEMU's QMP socket")
qq = sgtest.QMP(qs)
want = {what: strip_id(qq.cmd("pmemsave", a)) for what, a in bad_inputs("qemu")}
qzero = os.path.join(d, "qemu-zero.bin")
want["size 0"] = strip_id(qq.cmd("pmemsave", {"val": 0, "size": 0, "filename": qzero}))
sgtest.check_eq(os.path.getsize(qzero), 0, "QEMU: size 0 makes an empty file")
qemu_hmp = hmp_run(qq, qdir)
for (line, made), (text, size) in zip(HMP_SAME, qemu_hmp):
    if made:   # the oracle itself: the lines meant to work do
        sgtest.check_eq((text, size), ("", made[1]), f"QEMU: {line!r}")
for line, qtext, _ in HMP_DIFF:
    sgtest.check_eq(qq.cmd("human-monitor-command", {"command-line": line}).get("return"), qtext,
                    f"QEMU: {line!r}")
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

# ---- HMP pmemsave, line by line against QEMU 7.2 -----------------------------
for (line, _), want, got in zip(HMP_SAME, qemu_hmp, hmp_run(q, d)):
    sgtest.check_eq(got, want, f"HMP {line!r}: QEMU 7.2's reply and file size")
for line, _, vtext in HMP_DIFF:
    sgtest.check_eq(q.cmd("human-monitor-command", {"command-line": line}).get("return"), vtext,
                    f"HMP {line!r}: snapgate's bound")
for line, vtext in HMP_VMM_ONLY:
    sgtest.check_eq(q.cmd("human-monitor-command", {"command-line": line}).get("return"), vtext,
                    f"HMP {line!r}")
# The file is opened before the range is checked (QEMU's order): left empty.
for f in ("far.bin", "neg.bin", "big.bin"):
    sgtest.check_eq(os.path.getsize(os.path.join(d, f)), 0, f"a refused dump's {f}")
sgtest.check(not os.path.exists(os.path.join(d, "reg.bin")), "the $eax line made a file")
print(f"HMP pmemsave: {len(HMP_SAME)} lines as QEMU 7.2, {len(HMP_DIFF) + len(HMP_VMM_ONLY)} "
      f"deliberate differences", flush=True)

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

# ---- the gateway in front of snapgate-vmm: its monitor and its QMP -----------
t, c = U.gateway_on_vmm(d)
gw_out = os.path.join(d, "gw monitor.bin")
lines = U.monitor_reply(t, f'pmemsave 0x1000 4096 "{gw_out}"')
sgtest.check_eq(lines, [], "pmemsave at the gateway's monitor: no output")
sgtest.check_eq(U.monitor_reply(t, "pmemsave 0 0x100000000 x"),
                ["'pmemsave' has failed: integer is for 32-bit values",
                 'Try "help pmemsave" for more information'], "a bad line at the gateway's monitor")
sgtest.wait_for(lambda: os.path.exists(gw_out) and os.path.getsize(gw_out) == 4096, 10,
                "the gateway monitor's dump")
gw_qmp = os.path.join(d, "gw-qmp.bin")
for line, want_text in ((f'pmemsave 0 16 "{gw_qmp}"', ""),
                        ("pmemsave 0 0x100000000 x", qemu_hmp[[l for l, _ in HMP_SAME].index(
                            "pmemsave 0 0x100000000 m.bin")][0])):
    r = c.cmd("human-monitor-command", {"command-line": line})
    sgtest.check_eq(r.get("return"), want_text, f"gateway QMP: HMP {line!r}")
sgtest.check_eq(os.path.getsize(gw_qmp), 16, "the gateway QMP's dump")
print("gateway: pmemsave at its monitor and through its human-monitor-command", flush=True)
t.send("quit\r")
sgtest.check_eq(t.wait(30), 0, "gateway exit after quit")
p = os.path.join(d, "state", "disk0.qcow2")
if os.path.exists(p):
    sgtest.qemu_img_check(p)
print("ok")

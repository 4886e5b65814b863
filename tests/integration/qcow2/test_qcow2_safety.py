#!/usr/bin/env python3
"""Issue 17, the image side: what keeps an image from being damaged.

- QEMU's image locks both ways: a qemu-io holding an image makes snapgate-img
  refuse it with QEMU's message; an image our block layer holds makes
  qemu-img refuse it; -U / --force-share reads anyway; two of ours refuse.
- A failed command leaves the file byte for byte as it was (no header write,
  autoclear bits kept: a bitmap made by qemu-img stays consistent).
- snapgate-img refuses to change an image its check finds corrupt.
- Crafted images whose pointers aim at metadata (active L2 entry -> a
  snapshot's L1, L2 -> itself, snapshot L1 == active L1, refcount table
  entry -> the table): the write is refused with QEMU's "Preventing invalid
  write on metadata", the corrupt bit is set, qemu-img check finds no more
  errors than before.
- Compressed images are refused at a writable open with a message naming
  where the compressed clusters are and what to do; read-only, snapgate-img
  info, check (exit 0, qemu-img's counts: allocated, fragmented, compressed)
  and snapshot -l work on them as qemu-img's do, and nothing is written.
- Tags: one made by qemu-img in Latin-1 is listed, escaped (`"caf\\xe9"`:
  a raw byte 0x80-0x9f is a C1 control on a Latin-1 terminal; qemu-img
  prints it raw, the rest of the listing is identical); 256 bytes
  or non-UTF-8 refused up front; 255 bytes of multi-byte UTF-8 kept whole.
- The check before a change is targeted: it reads the trees the command
  walks, not every snapshot's (counted in pread calls under strace: 20
  snapshots sharing 256 L2 tables, as qemu-img makes them, cost the full
  check ~10,000 table reads, the targeted one a few hundred).
- Space goes back to the host: snapshot -d shrinks the file as qemu-img's
  does, and save/delete/cancel cycles come back within 10% of before.
"""
import json
import os
import shutil
import struct
import subprocess
import time

import sgtest
from sg_qcow2_util import ENV, run, tools

IMG, IO, QIMG, QIO = tools()
D = sgtest.tmpdir("sg-qcow2-safety-")
CS = 65536
LONG = bool(os.environ.get("SG_LONG"))


def p(name):
    return os.path.join(D, name)


def rd(path, off, n):
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(n)


def be64(path, off):
    return struct.unpack(">Q", rd(path, off, 8))[0]


def put64(path, off, v):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(struct.pack(">Q", v))


def digest(path):
    with open(path, "rb") as f:
        return f.read()


def qcheck(path):
    """(exit code, corruptions) of qemu-img check."""
    r = subprocess.run([QIMG, "check", "--output=json", path], capture_output=True, text=True)
    try:
        return r.returncode, json.loads(r.stdout).get("corruptions", 0)
    except ValueError:
        sgtest.fail(f"qemu-img check {path}: {r.stdout}{r.stderr}")


def qemu_clean(path):
    rc, c = qcheck(path)
    sgtest.check(rc == 0 and c == 0, f"qemu-img check {path}: exit {rc}, {c} corruptions")


def hold(argv, env=None):
    """A process holding an image open until its stdin closes."""
    h = sgtest.spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, env=env)
    return h


def release(h):
    h.stdin.close()
    h.wait(timeout=10)


# ---- locks --------------------------------------------------------------------
img = p("lock.qcow2")
run([QIMG, "create", "-f", "qcow2", img, "64M"], rc=0)
run([QIO, "-c", "write -P 0x11 0 64k", img])

# qemu-io (read-write) holds it: snapgate-img refuses to write, and to read
# without -U, with QEMU's words.
q = hold([QIO, "-f", "qcow2", img])
q.stdin.write(b"read 0 512\n")
q.stdin.flush()
line = q.stdout.readline().decode()
sgtest.check("read 512/512 bytes" in line, f"qemu-io did not open the image: {line!r}")
r = run([IMG, "snapshot", "-c", "x", img], rc=1)
sgtest.check('Failed to get "write" lock' in r.stderr and
             f"Is another process using the image [{img}]?" in r.stderr, r.stderr)
r = run([IMG, "info", img], rc=1)
sgtest.check('Failed to get shared "write" lock' in r.stderr, r.stderr)
run([IMG, "info", "-U", img])
run([IMG, "snapshot", "--force-share", "-l", img])
run([IMG, "check", "-U", img])
r = run([IMG, "snapshot", "-U", "-c", "x", img], rc=1)
sgtest.check("force-share=on can only be used with read-only images" in r.stderr, r.stderr)
release(q)
run([IMG, "snapshot", "-c", "x", img])

# Our block layer holds it (read-write): qemu-img and a second opener refuse.
h = hold([IO, img, "hold"], env=ENV)
sgtest.check_eq(h.stdout.readline().decode().strip(), "holding", "sg_qcow2_io hold")
r = run([QIMG, "snapshot", "-c", "y", img], rc=1)
sgtest.check('Failed to get "write" lock' in r.stderr, f"qemu-img over ours: {r.stderr}")
r = run([QIMG, "info", img], rc=1)
sgtest.check('Failed to get shared "write" lock' in r.stderr, r.stderr)
run([QIMG, "info", "-U", img])
r = run([IO, img, "write", "0x22", "0", "512"], rc=1)
sgtest.check('Failed to get "write" lock' in r.stderr, f"two writers of ours: {r.stderr}")
r = run([IMG, "snapshot", "-d", "x", img], rc=1)
sgtest.check('Failed to get "write" lock' in r.stderr, r.stderr)
release(h)

# A read-only holder of ours shares reading, refuses writers.
h = hold([IO, img, "hold"], env=dict(ENV, SG_IO_RDONLY="1"))
h.stdout.readline()
run([QIMG, "info", img])
r = run([QIMG, "snapshot", "-c", "y", img], rc=1)
sgtest.check('Failed to get "write" lock' in r.stderr, r.stderr)
release(h)
run([QIMG, "snapshot", "-c", "y", img])
qemu_clean(img)

# ---- a failed command writes nothing -------------------------------------------
img = p("bitmap.qcow2")
run([QIMG, "create", "-f", "qcow2", img, "64M"])
run([QIMG, "bitmap", "--add", img, "b0"])   # sets an autoclear bit
run([QIMG, "snapshot", "-c", "s1", img])
before = digest(img)
run([IMG, "snapshot", "-a", "no-such-name", img], rc=1)
run([IMG, "snapshot", "-d", "no-such-name", img], rc=1)
run([IMG, "snapshot", "-c", "t" * 256, img], rc=1)
run([IMG, "check", img], rc=None)   # (counts the bitmap clusters as leaks)
run([IMG, "info", img])
sgtest.check(digest(img) == before, "a failed or read-only snapgate-img command changed the file")
r = run([QIMG, "info", img])
sgtest.check("inconsistent" not in r.stdout + r.stderr, r.stdout + r.stderr)

# ---- crafted pointers into metadata ------------------------------------------
def base(name, size="64M"):
    path = p(name)
    run([QIMG, "create", "-f", "qcow2", path, size])
    run([QIO, "-c", "write -P 0x61 0 128k", path])
    run([QIMG, "snapshot", "-c", "s1", path])
    run([QIO, "-c", "write -P 0x62 0 64k", path])   # COW: the active L2 is private again
    return path


def active_l2(path):
    return be64(path, be64(path, 40)) & 0x00fffffffffffe00


def snap_l1(path):
    return be64(path, be64(path, 64))   # first snapshot entry: l1_table_offset


def craft_case(name, patch, write, what):
    path = base(name + ".qcow2", "1G")
    patch(path)
    rc0, c0 = qcheck(path)
    sgtest.check(c0 > 0, f"{name}: crafted image not corrupt for qemu-img ({rc0})")
    snapshot_l1 = rd(path, snap_l1(path), CS)
    r = run([IO, path] + write, rc=None)
    out = r.stdout + r.stderr
    sgtest.check(r.returncode == 1 and "Preventing invalid write on metadata (overlaps with "
                 f"{what})" in out, f"{name}: write not refused as QEMU does:\n{out}")
    sgtest.check(be64(path, 72) & 2, f"{name}: corrupt bit not set")
    rc1, c1 = qcheck(path)
    sgtest.check(c1 <= c0, f"{name}: corruptions grew {c0} -> {c1}")
    if what != "inactive L1 table":
        sgtest.check(rd(path, snap_l1(path), CS) == snapshot_l1, f"{name}: snapshot L1 changed")
    r = run([IMG, "snapshot", "-c", "z", path], rc=1)
    sgtest.check("corrupt" in r.stderr, f"{name}: writable open of a corrupt image: {r.stderr}")
    print(f"{name}: refused ({what}), qemu-img corruptions {c0} -> {c1}")


craft_case("l2-to-snapshot-l1",
           lambda f: put64(f, active_l2(f) + 8, snap_l1(f) | (1 << 63)),
           ["write", "0x74", str(CS), "512"], "inactive L1 table")
craft_case("l2-to-itself",
           lambda f: put64(f, active_l2(f) + 8, active_l2(f) | (1 << 63)),
           ["write", "0x74", str(CS), "512"], "active L2 table")
craft_case("snapshot-l1-is-active-l1",
           lambda f: put64(f, be64(f, 64), be64(f, 40)),
           ["write", "0x74", str(600 << 20), "512", "--", "flush"], "inactive L1 table")
craft_case("refcount-entry-to-table",
           lambda f: put64(f, be64(f, 48), be64(f, 48)),
           ["write", "0x74", str(8 << 20), "512", "--", "flush"], "refcount table")

# snapgate-img refuses an image its check finds corrupt (no corrupt bit set).
path = base("corrupt.qcow2")
put64(path, active_l2(path) + 8, active_l2(path) | (1 << 63))
before = digest(path)
for argv in (["-c", "new"], ["-a", "s1"], ["-d", "s1"]):
    r = run([IMG, "snapshot"] + argv + [path], rc=1)
    sgtest.check("Image is corrupt" in r.stderr, f"snapshot {argv}: {r.stderr}")
sgtest.check(digest(path) == before, "a refused command changed a corrupt image")
run([IMG, "check", path], rc=2)

# ---- compressed clusters: refused at a writable open --------------------------
raw = p("data.raw")
with open(raw, "wb") as f:
    f.write(b"compress me " * 100000)
comp = p("comp.qcow2")
run([QIMG, "convert", "-c", "-f", "raw", "-O", "qcow2", raw, comp])
run([QIMG, "snapshot", "-c", "packed", comp])
run([QIO, "-f", "qcow2", "-c", "write -P 0x33 1M 64k", comp])   # one normal cluster too
before = digest(comp)
for argv, where in ((["-c", "x"], "in the active image"), (["-a", "packed"], "in the active image"),
                    (["-d", "packed"], "in the active image")):
    r = run([IMG, "snapshot"] + argv + [comp], rc=1)
    sgtest.check("unsupported qcow2 feature: compressed clusters (" + where + "); convert the "
                 "image with 'qemu-img convert -O qcow2', or open it read-only" in r.stderr,
                 f"compressed image, snapshot {argv}: {r.stderr}")
r = run([IO, comp, "write", "1", "0", "512"], rc=1)
sgtest.check("compressed clusters" in r.stderr, r.stderr)
# Read-only, everything qemu-img does works (issue 17: refused at open only when writable).
ours, theirs = run([IMG, "check", comp], rc=0), run([QIMG, "check", comp], rc=0)
sgtest.check_eq(ours.stdout, theirs.stdout, "check of a compressed image (text)")
ours = json.loads(run([IMG, "check", "--output=json", comp], rc=0).stdout)
theirs = json.loads(run([QIMG, "check", "--output=json", comp], rc=0).stdout)
for k in ("compressed-clusters", "fragmented-clusters", "allocated-clusters", "total-clusters",
          "image-end-offset"):
    sgtest.check_eq(ours.get(k), theirs.get(k), f"check --output=json {k} of a compressed image")
sgtest.check(theirs.get("compressed-clusters", 0) > 0, f"not compressed after all: {theirs}")
ours = run([IMG, "snapshot", "-l", comp]).stdout
sgtest.check_eq(ours, run([QIMG, "snapshot", "-l", comp]).stdout, "snapshot -l of a compressed image")
info = json.loads(run([IMG, "info", "--output=json", comp]).stdout)
sgtest.check_eq([x["name"] for x in info.get("snapshots", [])], ["packed"], "info of a compressed image")
run([IMG, "info", comp])
sgtest.check(digest(comp) == before, "compressed image changed")
print(f"compressed image: refused writable, read-only info/check/snapshot -l as qemu-img "
      f"({theirs.get('compressed-clusters')} compressed clusters)")

# ---- tags ---------------------------------------------------------------------
img = p("tags.qcow2")
run([QIMG, "create", "-f", "qcow2", img, "64M"])
subprocess.run([QIMG, "snapshot", "-c", b"caf\xe9", img], check=True)
ours = subprocess.run([IMG, "snapshot", "-l", img], capture_output=True).stdout
theirs = subprocess.run([QIMG, "snapshot", "-l", img], capture_output=True).stdout
sgtest.check(b'"caf\\xe9"' in ours, f"Latin-1 tag not listed, escaped: {ours!r}")
# The same listing but for the escaped tag (and the padding it takes).
sgtest.check_eq(ours.replace(b'"caf\\xe9"', b"caf\xe9").split(), theirs.split(),
                "snapshot -l with a Latin-1 tag")
info = json.loads(run([IMG, "info", "--output=json", img]).stdout)
sgtest.check_eq([s["name"] for s in info.get("snapshots", [])], ["caf\ufffd"], "info json tag")
r = run([IMG, "snapshot", "-c", "\u00e9" * 128, img], rc=1)   # 256 bytes
sgtest.check("too long" in r.stderr and "255" in r.stderr, r.stderr)
r = subprocess.run([IMG, "snapshot", "-c", b"bad\xff", img], capture_output=True, text=True,
                   errors="replace")
sgtest.check(r.returncode == 1 and "UTF-8" in r.stderr, r.stderr)
tag = "\u00e9" * 127 + "x"   # 255 bytes
run([IMG, "snapshot", "-c", tag, img])
r = run([IMG, "snapshot", "-d", tag, img])
qemu_clean(img)

# ---- the check before a change is targeted --------------------------------------
strace = shutil.which("strace")
if not strace:
    print("targeted-check case skipped: strace not installed")
else:
    many = p("many.qcow2")
    run([QIMG, "create", "-q", "-f", "qcow2", many, "128G"])
    cmds = []
    for i in range(256):   # one cluster under each of 256 L2 tables
        cmds += ["-c", f"write -q -P {i % 250 + 1} {i * 512}M 64k"]
    run([QIO, "-f", "qcow2"] + cmds + [many])
    for i in range(20):
        run([QIMG, "snapshot", "-c", f"s{i}", many])
    reads = {}
    for argv in (["-c", "new"], ["-a", "s10"], ["-d", "s10"]):
        log = p("strace.log")
        # LeakSanitizer cannot run under ptrace: leaks are looked for everywhere else
        run([strace, "-f", "-qq", "-E", "ASAN_OPTIONS=detect_leaks=0:abort_on_error=1",
             "-e", "trace=pread64", "-o", log, IMG, "snapshot"] + argv + [many])
        with open(log) as f:
            reads[argv[0]] = sum(1 for ln in f if ", 65536, " in ln)
    # Walking 21 trees of 256 tables through a 128-table cache: ~10,000 reads.
    for op, n in reads.items():
        sgtest.check(n < 4000, f"snapshot {op}: {n} table reads (a full walk of every tree?)")
    qemu_clean(many)
    print(f"targeted check: 64 KiB table reads per command {reads} (21 trees x 256 tables)")

# ---- space goes back to the host ----------------------------------------------
def blocks(path):
    return os.stat(path).st_blocks * 512


mb = 400 if LONG else 64
a = p("space.qcow2")
run([QIMG, "create", "-f", "qcow2", a, f"{mb + 64}M"])
run([QIO, "-c", f"write -P 0x33 0 {mb // 2}M", a])
run([QIMG, "snapshot", "-c", "s1", a])
run([QIO, "-c", f"write -P 0x34 0 {mb // 2}M", a])
b = p("space-qemu.qcow2")
shutil.copyfile(a, b)
full = blocks(a)
run([IMG, "snapshot", "-d", "s1", a])
run([QIMG, "snapshot", "-d", "s1", b])
print(f"snapshot -d: {full >> 20} MiB -> snapgate-img {blocks(a) >> 20} MiB, "
      f"qemu-img {blocks(b) >> 20} MiB")
sgtest.check(blocks(a) <= blocks(b) * 1.1 + CS * 4, "snapgate-img snapshot -d kept the space")
qemu_clean(a)

# save / replace / delete / cancel cycles through the block layer
c = p("cycles.qcow2")
run([IMG, "create", c, "64M"])
run([IO, c, "write", "0x41", "0", str(16 << 20)])
start = blocks(c)
vm = str(32 << 20)
for i in range(4):
    out = run([IO, c, "vmwrite", "0x55", "0", vm, "--", "snap", f"s{i}", vm]).stdout.split()
    run([IO, c, "write", str(0x42 + i), "0", str(8 << 20)])
    run([IO, c, "vmwrite", "0x56", "0", vm, "--", "vmdiscard"])   # a cancelled save
    run([IO, c, "del", out[-1]])
print(f"cycles: {start >> 20} MiB before, {blocks(c) >> 20} MiB after")
sgtest.check(blocks(c) <= start * 1.1 + CS * 8, "cycles did not return the space")
qemu_clean(c)
print("PASS")

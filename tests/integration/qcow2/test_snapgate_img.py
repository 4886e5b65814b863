#!/usr/bin/env python3
"""snapgate-img as a user sees it: --help, create, info (text and JSON, against
qemu-img info), check exit codes (0 clean, 2 corruption, 3 leaks, like qemu-img),
snapshot -l byte for byte as qemu-img prints it, -a/-d name resolution with -i/-t
and duplicate tags, errors naming unsupported features, and the man page."""
import json
import os
import shutil
import struct
import subprocess

import sgtest
from sg_qcow2_util import ENV, run, tools

IMG, IO, QIMG, QIO = tools()
D = sgtest.tmpdir("sg-qcow2-cli-")


def p(name):
    return os.path.join(D, name)


# --help and usage errors
r = run([IMG, "--help"])
for word in ("create", "info", "check", "-l FILE", "-a [-i|-t] NAME", "-U"):
    sgtest.check(word in r.stdout, f"--help lacks {word!r}")
r = run([IMG, "frobnicate"], rc=1)
sgtest.check("Command not found" in r.stderr, r.stderr)
run([IMG], rc=1)
run([IMG, "snapshot", "-a", p("missing.qcow2")], rc=1)

# create
r = run([IMG, "create", p("a.qcow2"), "64M"])
sgtest.check("Formatting" in r.stdout, r.stdout)
r = run([IMG, "create", p("a.qcow2"), "64M"], rc=1)
sgtest.check("File exists" in r.stderr, f"create over an existing file: {r.stderr}")
run([IMG, "create", p("bad.qcow2"), "12Q"], rc=1)

# info vs qemu-img info
ours = json.loads(run([IMG, "info", "--output=json", p("a.qcow2")]).stdout)
theirs = json.loads(run([QIMG, "info", "--output=json", p("a.qcow2")]).stdout)
for key in ("virtual-size", "cluster-size", "format", "format-specific", "dirty-flag"):
    sgtest.check_eq(ours.get(key), theirs.get(key), f"info json {key}")
text = run([IMG, "info", p("a.qcow2")]).stdout
for line in ("file format: qcow2", "virtual size: 64 MiB (67108864 bytes)", "cluster_size: 65536",
             "compat: 1.1", "refcount bits: 16"):
    sgtest.check(line in text, f"info lacks {line!r}:\n{text}")
qtext = run([QIMG, "info", p("a.qcow2")]).stdout
sgtest.check_eq([l for l in text.splitlines() if "disk size" not in l],
                [l for l in qtext.splitlines() if "disk size" not in l], "info text")

# snapshot -l: nothing for no snapshots, then exactly qemu-img's table
sgtest.check_eq(run([IMG, "snapshot", "-l", p("a.qcow2")]).stdout, "", "empty list")
run([IMG, "snapshot", "-c", "first", p("a.qcow2")])
run([QIMG, "snapshot", "-c", "a tag longer than sixteen", p("a.qcow2")])
run([IO, p("a.qcow2"), "vmwrite", "1", "0", "1000", "--", "snap", "vm", "1536", "86399999000000", "0"])
run([IO, p("a.qcow2"), "snap", "big", str(5 << 30), "1000000", "1800000000"])
ours_l = run([IMG, "snapshot", "-l", p("a.qcow2")]).stdout
sgtest.check_eq(ours_l, run([QIMG, "snapshot", "-l", p("a.qcow2")]).stdout, "snapshot -l")
sgtest.check("1.5 KiB" in ours_l and "5 GiB" in ours_l and "23:59:59.999" in ours_l, ours_l)
for tz in ("Asia/Kolkata", "America/New_York"):
    e = dict(ENV, TZ=tz)
    a = subprocess.run([IMG, "snapshot", "-l", p("a.qcow2")], capture_output=True, text=True, env=e)
    b = subprocess.run([QIMG, "snapshot", "-l", p("a.qcow2")], capture_output=True, text=True, env=e)
    sgtest.check_eq(a.stdout, b.stdout, f"snapshot -l in TZ={tz}")
info = json.loads(run([IMG, "info", "--output=json", p("a.qcow2")]).stdout)
qinfo = json.loads(run([QIMG, "info", "--output=json", p("a.qcow2")]).stdout)
sgtest.check_eq(info["snapshots"], qinfo["snapshots"], "info json snapshots")
sgtest.check(run([IMG, "info", p("a.qcow2")]).stdout.count("\n") > 12, "info lists snapshots")

# name resolution (INTERFACES.md section 3)
n = p("names.qcow2")
run([QIMG, "create", "-f", "qcow2", n, "1M"])
run([QIO, "-c", "write -P 1 0 4k", n])
run([QIMG, "snapshot", "-c", "2", n])       # ID 1, tag "2"
run([QIO, "-c", "write -P 2 0 4k", n])
run([QIMG, "snapshot", "-c", "dup", n])     # ID 2
run([QIO, "-c", "write -P 3 0 4k", n])
run([QIMG, "snapshot", "-c", "dup", n])     # ID 3 (QEMU allows duplicate tags)
run([QIO, "-c", "write -P 4 0 4k", n])
# "2" is snapshot 1's tag and snapshot 2's ID: qemu-img -a takes the ID, -d
# the tag, rule 2 the tag; snapgate-img refuses and names both.
for act, verb, qemu in (("-a", "apply", "ID"), ("-d", "delete", "tag")):
    r = run([IMG, "snapshot", act, "2", n], rc=1)
    sgtest.check_eq(r.stderr, f"snapgate-img: Could not {verb} snapshot '2': '2' is the tag of "
                    "snapshot ID 1 and the ID of snapshot 'dup'; say which with -t 2 (the tag) "
                    f"or -i 2 (the ID; qemu-img takes the {qemu})\n", f"snapshot {act} 2")
run([QIO, "-c", "read -P 4 0 4k", n])       # nothing was applied
run([IMG, "snapshot", "-a", "-t", "2", n])  # -t: the tag
run([QIO, "-c", "read -P 1 0 4k", n])
run([IMG, "snapshot", "-a", "-i", "2", n])  # -i: the ID
run([QIO, "-c", "read -P 2 0 4k", n])
r = run([IMG, "snapshot", "-a", "dup", n], rc=1)
sgtest.check("Snapshot tag 'dup' is ambiguous: IDs 2, 3" in r.stderr, r.stderr)
run([IMG, "snapshot", "-a", "3", n])        # no tag "3": the ID
run([QIO, "-c", "read -P 3 0 4k", n])
r = run([IMG, "snapshot", "-a", "-t", "3", n], rc=1)
sgtest.check("Snapshot '3' does not exist" in r.stderr, r.stderr)
r = run([IMG, "snapshot", "-d", "nothing", n], rc=1)
sgtest.check("Snapshot 'nothing' does not exist" in r.stderr, r.stderr)
run([IMG, "snapshot", "-d", "-i", "3", n])
run([IMG, "snapshot", "-d", "dup", n])      # now unique
run([IMG, "snapshot", "-c", "new", n])
ids = [l.split()[0] for l in run([IMG, "snapshot", "-l", n]).stdout.splitlines()[2:]]
sgtest.check_eq(ids, ["1", "2"], "IDs after deletes and a create (max + 1)")
run([QIMG, "check", n])

# check: exit codes like qemu-img (0, 3 leaks, 2 corruption)
c = p("c.qcow2")
run([IMG, "create", c, "8M"])
run([IO, c, "write", "7", "0", "200000", "--", "snap", "s"])
r = run([IMG, "check", c])
sgtest.check("No errors were found on the image." in r.stdout, r.stdout)
def refcount_pos(path):
    """File offset of the refcount of the cluster holding the refcount table."""
    with open(path, "rb") as f:
        f.seek(48)
        rt = struct.unpack(">Q", f.read(8))[0]
        cl = rt >> 16
        f.seek(rt + 8 * (cl >> 15))
        rb = struct.unpack(">Q", f.read(8))[0]
        return cl, rb + 2 * (cl & 0x7fff)


cl, pos = refcount_pos(c)
with open(c, "r+b") as f:
    f.seek(pos)
    f.write(struct.pack(">H", 4))
r = run([IMG, "check", c], rc=3)
sgtest.check(f"Leaked cluster {cl} refcount=4 reference=1" in r.stderr and "1 leaked clusters" in r.stdout,
             r.stdout + r.stderr)
run([QIMG, "check", c], rc=3)
with open(c, "r+b") as f:
    f.seek(pos)
    f.write(struct.pack(">H", 0))
r = run([IMG, "check", c], rc=2)
sgtest.check(f"ERROR cluster {cl} refcount=0 reference=1" in r.stderr and "1 errors were found" in r.stdout,
             r.stdout + r.stderr)
run([QIMG, "check", c], rc=2)

# unsupported features are named
b = p("backing.qcow2")
run([QIMG, "create", "-f", "qcow2", "-b", p("a.qcow2"), "-F", "qcow2", b])
r = run([IMG, "snapshot", "-l", b], rc=1)
sgtest.check("unsupported qcow2 feature: backing file" in r.stderr, r.stderr)
z = p("zstd.qcow2")
run([QIMG, "create", "-f", "qcow2", "-o", "compression_type=zstd", z, "1M"], rc=None)
if os.path.exists(z):
    r = run([IMG, "snapshot", "-c", "x", z], rc=1)
    sgtest.check("unsupported qcow2 feature: compression type" in r.stderr, r.stderr)
cz = p("compressed.qcow2")
raw = p("src.raw")
with open(raw, "wb") as f:
    f.write(b"\x42" * 65536 * 4)
run([QIMG, "convert", "-c", "-O", "qcow2", raw, cz])
r = run([IO, cz, "read", "0x42", "0", "4096"], rc=1)
sgtest.check("unsupported qcow2 feature: compressed clusters" in r.stderr, r.stderr)
r = run([IMG, "snapshot", "-c", "x", cz], rc=1)
sgtest.check("compressed clusters" in r.stderr, r.stderr)
run([QIMG, "check", cz])

# raw images: no snapshots
with open(raw, "r+b"):
    pass
r = run([IMG, "snapshot", "-l", raw])      # as qemu-img: no snapshots to list
sgtest.check_eq((r.stdout, r.stderr), ("", ""), "snapshot -l of a raw image")
r = run([IMG, "snapshot", "-c", "x", raw], rc=1)
sgtest.check("does not support snapshots" in r.stderr, r.stderr)
r = run([IMG, "info", raw])
sgtest.check("file format: raw" in r.stdout, r.stdout)

# the man page renders without warnings
if shutil.which("groff"):
    man = os.path.join(sgtest.SRC, "man", "snapgate-img.1")
    r = subprocess.run(["groff", "-ww", "-man", "-Tutf8", "-z", man], capture_output=True, text=True,
                       env=dict(ENV, LC_ALL="C.UTF-8"))
    sgtest.check_eq(r.stderr, "", "groff -ww warnings")
print("PASS")

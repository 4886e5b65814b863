#!/usr/bin/env python3
"""The gateway in front of a real QEMU 7.2 (qemu-system-x86_64 -S, qcow2
disks): the same HMP lines are sent to one QEMU directly and, through
snapgate --qmp human-monitor-command (--compat-profile qemu-7.2, the
default), to a second QEMU with identical images.  The replies must be equal
byte for byte once dates, VM state sizes and VM clocks are blanked; the
images must stay clean and carry the same snapshot tags."""
import os
import re
import shutil
import subprocess

import sgtest

qemu_img = sgtest.require_tool("qemu-img")
sgtest.require_tool("qemu-system-x86_64")
gw_bin = sgtest.binary("snapgate")
root = sgtest.tmpdir()

LINES = [
    "info snapshots",
    "savevm s1",
    "info snapshots",
    "savevm s2",
    "loadvm s1",
    "loadvm nosuch",
    "delvm s2",
    "delvm nosuch",
    "info snapshots",
    "loadvm old",          # only on drive0: not loadable
    "savevm s1",           # over an existing tag
    "info snapshots",
    "delvm s1",
    "info snapshots",
    "delvm old",
    "info snapshots",
]

DATE = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def normalize(text):
    """Blanks the VM SIZE, DATE and VM CLOCK columns of snapshot tables
    (columns 26..67 of the rows QEMU prints with %-9s %-16s %8s%20s%13s)."""
    out = []
    for line in text.encode().split(b"\r\n"):
        if DATE.search(line) and len(line) >= 67:
            line = line[:26] + b"<size/date/clock>" + line[67:]
        out.append(line)
    return b"\r\n".join(out).decode()


# Every bad qmp_capabilities form, before and after the negotiation: the
# gateway's replies (sg_qmp_negotiation, shared with snapgate-vmm) are QEMU's.
CAPS_BAD = [
    '{"execute": "query-status", "id": 1}',
    '{"execute": "qmp_capabilities", "arguments": {"enable": 5}, "id": 2}',
    '{"execute": "qmp_capabilities", "arguments": {"enable": "oob"}, "id": 3}',
    # (["oob"]: QEMU offers OOB on its socket and accepts; snapgate offers
    # none and answers "Capability oob not available", as QEMU does without.)
    '{"execute": "qmp_capabilities", "arguments": {"enable": ["nosuch"]}, "id": 4}',
    '{"execute": "qmp_capabilities", "arguments": {"x": 1}, "id": 5}',
    '{"execute": "qmp_capabilities", "arguments": [], "id": 6}',
]
CAPS_OK = '{"execute": "qmp_capabilities", "id": 7}'
CAPS_AFTER = [
    '{"execute": "qmp_capabilities", "id": 8}',
    '{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": 9}',
    '{"execute": "qmp_capabilities", "arguments": {"enable": 5}, "id": 10}',
]


def negotiation_replies(sock):
    q = sgtest.QMP(sock, negotiate=False)
    out = []
    for line in CAPS_BAD + [CAPS_OK] + CAPS_AFTER:
        q.send_raw(line + "\r\n")
        out.append(q.recv())
    q.close()
    return out


def make_images(d):
    os.makedirs(d)
    for name in ("a.qcow2", "b.qcow2"):
        sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", os.path.join(d, name), "16M"])
    # A snapshot only on the first disk: listed as partial, not loadable.
    sgtest.run([qemu_img, "snapshot", "-c", "old", os.path.join(d, "a.qcow2")])


DRIVES = ["file=a.qcow2,if=none,id=drive0,node-name=disk0",
          "file=b.qcow2,if=none,id=drive1,node-name=disk1"]

# 1. QEMU alone.
direct_dir = os.path.join(root, "direct")
make_images(direct_dir)
q1, q1_sock = sgtest.start_qemu(DRIVES, direct_dir)
want_caps = negotiation_replies(q1_sock)
m = sgtest.QMP(q1_sock)
want = [m.hmp(line) for line in LINES]
m.close()
q1.kill()
q1.wait()

# 2. A second QEMU behind the gateway.
gw_dir = os.path.join(root, "gw")
make_images(gw_dir)
q2, q2_sock = sgtest.start_qemu(DRIVES, gw_dir)
gw_sock = os.path.join(gw_dir, "gw.sock")
gw = sgtest.spawn([gw_bin, "--connect", "unix:" + q2_sock, "--qmp", "unix:" + gw_sock,
                   "--no-monitor"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
sgtest.wait_for(lambda: os.path.exists(gw_sock) or gw.poll() is not None, 10, "--qmp socket")
if gw.poll() is not None:
    sgtest.fail(f"gateway exited {gw.returncode}: {gw.stderr.read()!r}")
got_caps = negotiation_replies(gw_sock)
for line, w, g in zip(CAPS_BAD + [CAPS_OK] + CAPS_AFTER, want_caps, got_caps):
    sgtest.check_eq(g, w, f"negotiation reply to {line}")
c = sgtest.QMP(gw_sock)
sgtest.check_eq(c.greeting["QMP"]["version"]["qemu"]["minor"], 2, "greeting is QEMU's version")
got = [c.hmp(line) for line in LINES]

bad = []
for line, w, g in zip(LINES, want, got):
    if normalize(w) != normalize(g):
        bad.append(f"  {line!r}:\n    qemu:     {w!r}\n    snapgate: {g!r}")
if bad:
    sgtest.fail("replies differ from QEMU 7.2's:\n" + "\n".join(bad))

# The snapshot lines really became QMP jobs (their events reach the client).
job_ids = {e["data"]["id"] for e in c.events if e["event"] == "JOB_STATUS_CHANGE"}
for kind in ("savevm", "loadvm", "delvm"):
    sgtest.check(any(j.startswith(f"hmp-{kind}-") for j in job_ids),
                 f"no hmp-{kind}-N job seen among {sorted(job_ids)}")

# The gateway's jobs were dismissed: nothing left behind in QEMU.
sgtest.check_eq(c.cmd("query-jobs")["return"], [], "no jobs left after the HMP commands")
c.close()
gw.terminate()
sgtest.check_eq(gw.wait(10), 0, "gateway exit code on SIGTERM with --connect")
q2.kill()
q2.wait()

# Same snapshot tags on disk, images clean.
for name in ("a.qcow2", "b.qcow2"):
    lists = []
    for d in (direct_dir, gw_dir):
        p = os.path.join(d, name)
        sgtest.qemu_img_check(p)
        r = sgtest.run([qemu_img, "snapshot", "-l", p])
        lists.append([ln.split()[1] for ln in r.stdout.splitlines()[2:] if ln.strip()])
    sgtest.check_eq(lists[1], lists[0], f"snapshot tags of {name}")
print(f"ok: {len(LINES)} HMP lines identical to QEMU 7.2")

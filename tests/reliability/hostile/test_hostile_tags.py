#!/usr/bin/env python3
"""Snapshot tags with any bytes (issue 17): qemu-img writes whatever tag it is
given (escape sequences, newlines, BEL, Latin-1, C1 controls), and every
snapshot must still be listed, one row each, with nothing of the tag reaching
the terminal as a control character:

- `snapgate-img snapshot -l` and `snapgate-img info`: a plain tag prints as
  qemu-img prints it (the row is byte-identical); any other is quoted and
  escaped (`"esc\\x1b[31mred"`, `"nl\\nline"`, `"caf\\xe9"`, `"c1\\u0085x"`).
- the gateway's readline monitor (snapgate profile, on a pseudo-terminal) and
  its tree: the same escapes; the tag's raw bytes never appear.
- the qemu-7.2 profile (`human-monitor-command` on the gateway's --qmp) keeps
  QEMU 7.2's raw bytes (compat), and each snapshot is still there.
Every image is checked with qemu-img check at the end.
"""
import os
import re
import subprocess

import sg_gateway_util as U
import sgtest

qemu_img = sgtest.require_tool("qemu-img")
img_bin = sgtest.binary("snapgate-img")
d = sgtest.tmpdir("sg-tags-")

TAGS = [
    (b"plain", "plain"),
    (b"esc\x1b[31mred", '"esc\\x1b[31mred"'),
    (b"nl\nline", '"nl\\nline"'),
    (b"caf\xe9", '"caf\\xe9"'),
    (b"c1\xc2\x85x", '"c1\\u0085x"'),
    (b"bs\\q\"\x07", '"bs\\\\q\\"\\x07"'),
    (b"tab\there", '"tab\\there"'),
    (b"del\x7f", '"del\\x7f"'),
]


def make_image(path, size="16M"):
    sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", path, size])
    for raw, _ in TAGS:
        subprocess.run([qemu_img, "snapshot", "-c", raw, path], check=True)


def no_controls(data, what):
    """Only newlines (line ends) may be control bytes in a listing."""
    bad = sorted({b for b in data if (b < 0x20 and b != 0x0a) or b == 0x7f})
    sgtest.check(not bad, f"{what}: control bytes {[hex(b) for b in bad]} in {data!r}")
    sgtest.check(b"\xc2\x85" not in data, f"{what}: a C1 control reached the output: {data!r}")


def rows(text):
    return [ln for ln in text.split("\n") if re.match(r"^\d+\s", ln)]


# ---- snapgate-img ---------------------------------------------------------------
img = os.path.join(d, "tags.qcow2")
checked = [img]
make_image(img)
ours = subprocess.run([img_bin, "snapshot", "-l", img], capture_output=True, timeout=30)
sgtest.check_eq(ours.returncode, 0, f"snapgate-img snapshot -l exit ({ours.stderr!r})")
no_controls(ours.stdout, "snapgate-img snapshot -l")
text = ours.stdout.decode()
sgtest.check_eq(len(rows(text)), len(TAGS), f"snapshot rows in:\n{text}")
for _, shown in TAGS:
    sgtest.check(any(ln.split(None, 1)[1].startswith(shown + " ") for ln in rows(text)),
                 f"tag {shown} not listed as such:\n{text}")
theirs = subprocess.run([qemu_img, "snapshot", "-l", img], capture_output=True, timeout=30)
plain_q = [ln for ln in theirs.stdout.split(b"\n") if re.match(rb"^1\s+plain ", ln)]
plain_o = [ln for ln in ours.stdout.split(b"\n") if re.match(rb"^1\s+plain ", ln)]
sgtest.check(plain_q and plain_q == plain_o,
             f"a plain tag's row differs from qemu-img's: {plain_o} vs {plain_q}")
info = subprocess.run([img_bin, "info", img], capture_output=True, timeout=30)
sgtest.check_eq(info.returncode, 0, "snapgate-img info exit")
no_controls(info.stdout, "snapgate-img info")
sgtest.check_eq(len(rows(info.stdout.decode())), len(TAGS), "rows in snapgate-img info")
print(f"snapgate-img: {len(TAGS)} hostile tags listed, escaped", flush=True)

# ---- the gateway: readline monitor (snapgate profile) and qemu-7.2 profile -------
if not os.path.exists("/dev/kvm") or not os.access("/dev/kvm", os.R_OK | os.W_OK):
    print("gateway part skipped: no usable /dev/kvm", flush=True)
else:
    gw_bin = sgtest.binary("snapgate")
    sgtest.binary("snapgate-vmm")
    state = os.path.join(d, "state")
    os.makedirs(state)
    make_image(os.path.join(state, "disk0.qcow2"), "64M")
    gw_sock = os.path.join(d, "gw.sock")
    PROMPT = rb"\(snapgate\) "
    t = U.Terminal([gw_bin, "--state-dir", state, "--qmp", "unix:" + gw_sock, "--vmm", "-m",
                    "64", "--"], env=U.gateway_env(d))
    t.expect(PROMPT, 30)
    t.send("info snapshots\r")
    t.expect(rb"info snapshots", 10)
    begin = t.pos
    m = t.expect(PROMPT, 30)
    raw = t.out[begin:m.start()]
    for tag, _ in TAGS[1:]:
        sgtest.check(tag not in raw, f"monitor: raw tag {tag!r} reached the terminal: {raw!r}")
    shown = raw.decode(errors="replace").replace("\r", "")
    for tag, esc in TAGS:
        if tag == b"caf\xe9":
            esc = "caf\ufffd"   # QMP carries it as U+FFFD (as QEMU's JSON does)
        sgtest.check(esc in shown, f"monitor: {esc} not listed:\n{shown}")
    # Nothing of a tag may move the cursor or colour the screen: the only
    # escape sequences left are readline's own, outside the listing.
    listing = shown.split("\n")
    sgtest.check(len([ln for ln in listing if re.match(r"^\d+\s", ln)]) >= len(TAGS),
                 f"monitor: a row per snapshot:\n{shown}")
    q = sgtest.QMP(gw_sock)
    out = q.cmd("human-monitor-command", {"command-line": "info snapshots"})["return"]
    for tag, _ in TAGS:
        want = tag.decode("utf-8", errors="replace").replace("\n", "\r\n")   # as QEMU's monitor
        sgtest.check(want in out, f"qemu-7.2 profile: raw tag {want!r} missing: {out!r}")
    q.close()
    t.send("quit\r")
    sgtest.check_eq(t.wait(30), 0, "gateway exit status")
    checked.append(os.path.join(state, "disk0.qcow2"))
    print("gateway: the readline monitor escapes every hostile tag; the qemu-7.2 profile "
          "prints them raw", flush=True)

for path in checked:
    r = subprocess.run([qemu_img, "check", path], capture_output=True, text=True)
    sgtest.check_eq(r.returncode, 0, f"qemu-img check {path}: {r.stdout}{r.stderr}")
print("PASS", flush=True)

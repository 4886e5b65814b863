#!/usr/bin/env python3
"""Live, incremental and lazy snapshots on the demo guest (dirty= area that
churn= keeps rewriting and checking, so the guest itself proves that a
snapshot is RAM at one instant):
- a save while the guest runs: STOP/RESUME around a short pause, the guest
  running meanwhile, and after loading it the guest's own check passes for
  a whole cycle over its area;
- the next save writes only what changed (bytes from /proc/PID/io), shares
  the rest through refcounts: qemu-img check clean, deleting either of two
  snapshots leaves the other loadable and whole;
- a system_reset while a save still reads RAM leaves that save whole;
- a lazy load restores RAM exactly (x-snapgate-ram-checksum equal to the
  one at save time);
- the snapshot tree (x-snapgate-query-snapshot-tree): parents and the
  current position;
- writes between the protection and the instant (a second VMM: 200 ms
  between them, the writer held 1.5 s so the guest rewrites its area
  meanwhile): the regions lifted then are protected again at the instant."""
import json
import os
import re
import subprocess
import time

import sgtest
from sg_vmm_util import VMM

# This guest touches under half of its RAM, which would get the fork
# (snapshot_save.c); the write-protect instant is the one under test here
# (the other snapshot tests and the crash harnesses run the fork).
os.environ["SNAPGATE_VMM_LIVE"] = "wp"
sgtest.require_kvm()
qemu_img = sgtest.require_tool("qemu-img")
d = sgtest.tmpdir()
a = os.path.join(d, "a.qcow2")
sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", a, "16M"])
spec = {"vmstate": "disk0", "devices": ["disk0"]}
AREA = 64 << 20
vm = VMM(d, ["-m", "256M", "-drive", f"file={a}", "-append", "dirty=64M,churn=64M"])
q = vm.qmp
vm.wait_line(r"^tick 3$", 60)
seq = [0]


def job(cmd, tag):
    seq[0] += 1
    jid = f"j{seq[0]}"
    q.events.clear()
    args = dict(spec, **{"job-id": jid, "tag": tag})
    if cmd == "snapshot-delete":
        del args["vmstate"]
    r = q.cmd(cmd, args)
    sgtest.check_eq(r.get("return"), {}, f"{cmd} {tag}")
    info = q.wait_job(jid, 120)
    sgtest.check("error" not in info, f"{cmd} {tag}: {info.get('error')}")
    q.cmd("job-dismiss", {"id": jid})
    return [e["event"] for e in q.events if e["event"] in ("STOP", "RESUME")]


def save(tag):
    before = vm.io_written()
    t0 = vm.last_tick()
    ev = job("snapshot-save", tag)
    sgtest.check_eq(ev, ["STOP", "RESUME"], f"save {tag}: events")
    return vm.io_written() - before, t0


def cycle_ok(label, v=None, start=None):
    """The guest checks every window of its area once per second (churn=64M):
    no complaint in its lines from `start` (default: now) to a whole cycle on."""
    v = v or vm
    n = len(v.snapshot_lines()) if start is None else start
    v.wait_line(r"^churn: ", 10, start=len(v.snapshot_lines()))
    v.wait_line(r"^churn: ", 10, start=len(v.snapshot_lines()))
    bad = [ln for ln in v.snapshot_lines()[n:] if "RAM CHECK FAILED" in ln]
    sgtest.check(not bad, f"{label}: guest reported {bad[:2]}")


def load_ok(tag, label):
    """A lazy load, then the guest's check: its lines from before the load on,
    as the guest runs (and checks) while the load still fills RAM."""
    n = len(vm.snapshot_lines())
    job("snapshot-load", tag)
    cycle_ok(label, start=n)


def check_live_image():
    """qemu-img check while the VMM holds the image (its lock): -U."""
    r = subprocess.run([qemu_img, "check", "-U", a], capture_output=True, text=True)
    sgtest.check(r.returncode == 0, f"qemu-img check -U exited {r.returncode}: {r.stdout}{r.stderr}")


def tree():
    return q.cmd("x-snapgate-query-snapshot-tree")["return"]


# ---- live save, then its incremental successor ------------------------------
full, _ = save("s1")
sgtest.check(full >= AREA // 2, f"first save wrote only {full} bytes")
time.sleep(0.3)
save("s2")
check_live_image()
t = tree()
by = {s["name"]: s for s in t["snapshots"]}
sgtest.check("parent" not in by["s1"], f"s1 has no parent: {t}")
sgtest.check_eq(by["s2"].get("parent"), by["s1"]["id"], "s2's parent")
sgtest.check_eq(t.get("current"), by["s2"]["id"], "current after saving s2")

# ---- incremental: what changed in 0.3 s of running, measured between two
# saves of a stopped guest (so how long a save takes does not count) -------
q.cmd("stop")
q.wait_event("STOP")
job("snapshot-save", "i1")
q.cmd("cont")
time.sleep(0.3)
q.cmd("stop")
before = vm.io_written()
job("snapshot-save", "i2")
inc = vm.io_written() - before
q.cmd("cont")
print(f"full save wrote {full >> 20} MiB, an incremental one after 0.3 s {inc >> 20} MiB",
      flush=True)
sgtest.check(inc < full // 2, f"incremental save wrote {inc} bytes, the full one {full}")
job("snapshot-delete", "i1")
job("snapshot-delete", "i2")
check_live_image()

# ---- loads (lazy): the guest's check holds for a whole cycle -----------------
load_ok("s1", "after loading s1")
sgtest.check_eq(tree().get("current"), by["s1"]["id"], "current after loading s1")
save("s3")   # incremental on top of s1
sgtest.check_eq({s["name"]: s.get("parent") for s in tree()["snapshots"]}["s3"], by["s1"]["id"],
                "s3's parent")

# ---- deleting either of two sharing snapshots leaves the other whole ---------
job("snapshot-delete", "s1")
check_live_image()
load_ok("s3", "s3 after deleting s1")
load_ok("s2", "s2 after deleting s1")
job("snapshot-delete", "s2")
check_live_image()
load_ok("s3", "s3 after deleting s2")

# ---- a reset while the save still reads RAM: under write-protect the regions
# not yet copied are copied before the reset drops RAM, so the snapshot is
# still the instant (the guest's own check after loading it) ---------------
seq[0] += 1
jid = f"j{seq[0]}"
r = q.cmd("snapshot-save", dict(spec, **{"job-id": jid, "tag": "reset"}))
sgtest.check_eq(r.get("return"), {}, "snapshot-save reset")
sgtest.check_eq(q.cmd("system_reset").get("return"), {}, "system_reset during the save")
info = q.wait_job(jid, 120)
sgtest.check("error" not in info, f"save across a reset: {info.get('error')}")
q.cmd("job-dismiss", {"id": jid})
vm.wait_line(r"^churn: ", 30, start=len(vm.snapshot_lines()))
load_ok("reset", "the save a reset ran into")
job("snapshot-delete", "reset")

# ---- a lazy load gives back exactly the RAM that was saved -------------------
q.cmd("stop")
q.wait_event("STOP")
want = q.cmd("x-snapgate-ram-checksum")["return"]["fnv1a64"]
job("snapshot-save", "exact")
q.cmd("cont")
time.sleep(0.5)
q.cmd("stop")
sgtest.check(q.cmd("x-snapgate-ram-checksum")["return"]["fnv1a64"] != want, "RAM changed after cont")
job("snapshot-load", "exact")
got = q.cmd("x-snapgate-ram-checksum")["return"]["fnv1a64"]
sgtest.check_eq(got, want, "RAM checksum after the lazy load")
q.cmd("cont")
cycle_ok("after the exact load")
vm.quit()
sgtest.qemu_img_check(a)
info = json.loads(sgtest.run([qemu_img, "info", "--output=json", a]).stdout)
sgtest.check_eq(sorted(s["name"] for s in info["snapshots"]), ["exact", "s3"], "qemu-img lists")

# ---- writes between the protection and the instant ---------------------------
# The protection is set just before the pause, and a write in between only
# lifts its region; the pause must protect those again.  Here 200 ms lie
# between the two (the guest lifts its current windows and the page of
# their generations), and the writer waits 1.5 s before it reads RAM, so the
# guest rewrites windows after the instant: had a lifted region stayed open,
# the snapshot would hold it as rewritten and other windows as at the
# instant, and the guest's check after the load fails.  The writer also goes
# at 128 MiB/s (SNAPGATE_VMM_SAVE_RATE): 256 MiB of RAM take it 2 s, during
# which the guest goes on rewriting regions the writer has not reached.
b = os.path.join(d, "b.qcow2")
sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", b, "16M"])
os.environ.update(SNAPGATE_VMM_WP_EARLY_MS="200", SNAPGATE_VMM_SAVE_STALL="1500",
                  SNAPGATE_VMM_SAVE_RATE="128", SNAPGATE_VMM_TRACE="1")
vm = VMM(d, ["-m", "256M", "-drive", f"file={b}", "-append", "dirty=64M,churn=64M"], name="early")
q = vm.qmp
vm.wait_line(r"^churn: ", 30)
for k in (1, 2):
    t0 = time.monotonic()
    save(f"e{k}")
    wall = time.monotonic() - t0
    print(f"save e{k} at 128 MiB/s after a 1.5 s stall: {wall:.2f} s", flush=True)
    sgtest.check(wall >= 1.5 + 2.0, f"save e{k}: {wall:.2f} s, faster than the stall and the rate allow")
    load_ok(f"e{k}", f"e{k}: written before the instant")
early = [int(m) for m in re.findall(r"(\d+) regions written before the instant", vm.stderr())]
print(f"regions written between the protection and the instant: {early}", flush=True)
sgtest.check(len(early) == 2 and all(early), f"each save had regions to protect again: {early}")
# The copy buffers are faulted in before the pause (the burst of first
# writes after the instant would otherwise wait on fresh memory), and the
# handler's copies go into them: 256 MiB of RAM, the stock is 32.
stocked = [int(m) for m in re.findall(r"(\d+) copy buffers faulted in before the pause", vm.stderr())]
copies = [tuple(map(int, m)) for m in re.findall(
    r"wp: (\d+) faults served, [0-9.]+ ms in the handler, (\d+) copied ahead, (\d+) into fresh memory",
    vm.stderr())]
print(f"copy buffers stocked before each pause: {stocked}; (faults, ahead, fresh): {copies}", flush=True)
sgtest.check_eq(stocked, [32, 32], "copy buffers faulted in before each pause")
sgtest.check(len(copies) == 2 and all(f + a > 0 and n < f + a for f, a, n in copies),
             f"the handler's copies went into the stock: {copies}")
vm.quit()
sgtest.qemu_img_check(b)
print("PASS")

#!/usr/bin/env python3
"""snapshot-save/load/delete round trips on the demo guest (tick, sector 0,
RAM pattern), event order, two disks, QEMU's error texts, the internal
snapshot commands and transaction, -loadvm; qemu-img check after each."""
import os
import re
import subprocess
import time

import sgtest
from sg_vmm_util import VMM

sgtest.require_kvm()
qemu_img = sgtest.require_tool("qemu-img")
qemu_io = sgtest.require_tool("qemu-io")
d = sgtest.tmpdir()
a = os.path.join(d, "a.qcow2")
b = os.path.join(d, "b.qcow2")
raw = os.path.join(d, "r.raw")
sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", a, "16M"])
sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", b, "8M"])
with open(raw, "wb") as f:
    f.truncate(1 << 20)


def sector0(path):
    r = sgtest.run([qemu_io, "-U", "-r", "-f", "qcow2", "-c", "read -v 0 16", path])
    m = re.search(r"tick\.(\d+)\.", r.stdout)
    return int(m.group(1)) if m else None


def job(q, cmd, args, want_error=None):
    """Runs a snapshot job; checks its reply, events and outcome."""
    q.events.clear()
    r = q.cmd(cmd, args)
    sgtest.check_eq(r.get("return"), {}, f"{cmd} reply")
    info = q.wait_job(args["job-id"])
    # wait_job consumed the "concluded" event it waited for
    states = [e["data"]["status"] for e in q.events
              if e["event"] == "JOB_STATUS_CHANGE" and e["data"]["id"] == args["job-id"]] + ["concluded"]
    sgtest.check_eq(info["type"], cmd, "job type")
    sgtest.check_eq(info["status"], "concluded", "job status")
    if want_error is None:
        sgtest.check("error" not in info, f"{cmd} failed: {info.get('error')}")
        sgtest.check_eq(states, ["created", "running", "waiting", "pending", "concluded"],
                        f"{cmd} events")
        sgtest.check_eq(info["current-progress"], info["total-progress"], "progress")
    else:
        sgtest.check_eq(info.get("error"), want_error, f"{cmd} error")
        sgtest.check_eq(states, ["created", "running", "aborting", "concluded"], f"{cmd} events")
    q.wait_event("JOB_STATUS_CHANGE", 5, lambda e: e["data"] == {"id": args["job-id"], "status": "null"})
    return info


def tags(path):
    return re.findall(r"^\d+\s+(\S+)", sgtest.run([qemu_img, "snapshot", "-l", "-U", path]).stdout, re.M)


both = {"vmstate": "disk0", "devices": ["disk0", "disk1"]}
vm = VMM(d, ["-m", "128M", "-drive", f"file={a}", "-drive", f"file={b}",
             "-drive", f"file={raw},format=raw,readonly=on", "-append", "dirty=24M"])
q = vm.qmp
vm.wait_line(r"^tick 3$", 30)

# ---- save a stopped VM: stays stopped, no STOP/RESUME -----------------------
q.cmd("stop")
q.wait_event("STOP")
time.sleep(0.2)
t_saved = vm.last_tick()
info = job(q, "snapshot-save", dict(both, **{"job-id": "s1", "tag": "t1"}))
sgtest.check_eq(info["total-progress"], (1 << 20) + (128 << 20), "vmstate size in bytes")
sgtest.check(not [e for e in q.events if e["event"] in ("STOP", "RESUME")], "no STOP/RESUME")
sgtest.check_eq(q.cmd("query-status")["return"]["status"], "paused", "still paused")
for p in (a, b):
    sgtest.check_eq(tags(p), ["t1"], f"qemu-img snapshot -l {p}")
snaps = q.cmd("query-named-block-nodes")["return"][0]["image"]["snapshots"]
sgtest.check_eq(snaps[0]["vm-state-size"], info["total-progress"], "vm-state-size")
q.cmd("cont")
vm.wait_line(rf"^tick {t_saved + 12}$", 5)

# ---- load into a running VM: STOP, RESUME; the guest goes on from the save --
q.cmd("stop")
q.wait_event("STOP")
n_lines = len(vm.snapshot_lines())
info = job(q, "snapshot-load", dict(both, **{"job-id": "l1", "tag": "t1"}))
sgtest.check_eq(sector0(a), t_saved, "sector 0 after load")
q.cmd("cont")
i, _ = vm.wait_line(r"^tick \d+$", 5, start=n_lines)
sgtest.check_eq(vm.snapshot_lines()[i], f"tick {t_saved + 1}", "first tick after load")
# a running VM: the job pauses and resumes it
q.events.clear()
info = job(q, "snapshot-load", dict(both, **{"job-id": "l2", "tag": "t1"}))
ev = [e["event"] for e in q.events if e["event"] in ("STOP", "RESUME")]
sgtest.check_eq(ev, ["STOP", "RESUME"], "STOP/RESUME around a load")
vm.wait_line(rf"^tick {t_saved + 30}$", 6)   # 24 windows: every one verified
vm.check_no_ram_failure()

# ---- QEMU's error texts ---------------------------------------------------------
job(q, "snapshot-save", dict(both, **{"job-id": "e1", "tag": "t1"}),
    "Snapshot 't1' already exists in one or more devices")
job(q, "snapshot-load", dict(both, **{"job-id": "e2", "tag": "nope"}),
    "Snapshot 'nope' does not exist in one or more devices")
job(q, "snapshot-save", {"job-id": "e3", "tag": "t2", "vmstate": "nosuchnode", "devices": ["disk0"]},
    "vmstate block device 'nosuchnode' does not exist")
job(q, "snapshot-save", {"job-id": "e4", "tag": "t2", "vmstate": "disk1", "devices": ["disk0"]},
    "vmstate block device 'disk1' does not exist")
job(q, "snapshot-save", {"job-id": "e5", "tag": "t2", "vmstate": "disk0", "devices": ["disk0", "zz"]},
    "No block device node 'zz'")
job(q, "snapshot-save", {"job-id": "e6", "tag": "t2", "vmstate": "disk0", "devices": ["disk0", "disk2"]},
    "Device 'drive2' is writable but does not support snapshots")
job(q, "snapshot-delete", {"job-id": "e7", "tag": "nope", "devices": ["disk0"]})
r = q.cmd("snapshot-save", dict(both, **{"job-id": "1bad", "tag": "x"}))
sgtest.check_eq(r.get("error"), {"class": "GenericError", "desc": "Invalid job ID '1bad'"}, "bad id")
r = q.cmd("snapshot-save", dict(both, **{"job-id": "dup", "tag": "t1"}))
q.wait_event("JOB_STATUS_CHANGE", 10, lambda e: e["data"] == {"id": "dup", "status": "concluded"})
r = q.cmd("snapshot-delete", {"job-id": "dup", "tag": "t1", "devices": ["disk0"]})
sgtest.check_eq(r.get("error", {}).get("desc"), "Job ID 'dup' already in use", "duplicate id")
q.cmd("job-dismiss", {"id": "dup"})
r = q.cmd("job-dismiss", {"id": "dup"})
sgtest.check_eq(r.get("error", {}).get("desc"), "Job not found", "dismiss twice")
r = q.cmd("snapshot-save", {"job-id": "m", "tag": "x", "devices": ["disk0"]})
sgtest.check_eq(r.get("error", {}).get("desc"), "Parameter 'vmstate' is missing", "schema")

# ---- internal snapshots and transaction (transcript texts) ---------------------
sgtest.check_eq(q.cmd("blockdev-snapshot-internal-sync", {"device": "drive0", "name": "int1"}),
                {"return": {}, "id": f"t{q._id}"}, "internal-sync")
r = q.cmd("blockdev-snapshot-internal-sync", {"device": "drive0", "name": "int1"})
sgtest.check_eq(r["error"]["desc"], "Snapshot with name 'int1' already exists on device 'drive0'", "dup int1")
r = q.cmd("blockdev-snapshot-delete-internal-sync", {"device": "drive0", "id": "999"})
sgtest.check_eq(r["error"]["desc"],
                "Snapshot with id '999' and name 'null' does not exist on device 'drive0'", "del 999")
r = q.cmd("blockdev-snapshot-delete-internal-sync", {"device": "drive0", "name": "int1"})
sgtest.check_eq(sorted(r["return"].keys()), ["date-nsec", "date-sec", "id", "name", "vm-clock-nsec",
                                             "vm-clock-sec", "vm-state-size"], "SnapshotInfo")
sgtest.check_eq(r["return"]["name"], "int1", "deleted name")
r = q.cmd("blockdev-snapshot-internal-sync", {"device": "drive2", "name": "x"})
sgtest.check_eq(r["error"]["desc"], "Device 'drive2' is read only", "ro internal")
act = lambda dev, name: {"type": "blockdev-snapshot-internal-sync", "data": {"device": dev, "name": name}}
r = q.cmd("transaction", {"actions": [act("drive0", "x1"), act("drive1", "t1")]})
sgtest.check_eq(r["error"]["desc"], "Snapshot with name 't1' already exists on device 'drive1'", "txn")
sgtest.check_eq(tags(a), ["t1"], "failed transaction left nothing")
r = q.cmd("transaction", {"actions": [act("drive0", "x1"), act("disk1", "x1")]})
sgtest.check("return" in r, f"transaction: {r}")
sgtest.check_eq((tags(a), tags(b)), (["t1", "x1"], ["t1", "x1"]), "transaction made both")
# a disk-only snapshot cannot be loaded
job(q, "snapshot-load", dict(both, **{"job-id": "e8", "tag": "x1"}),
    "This is a disk-only snapshot. Revert to it  offline using qemu-img")

# ---- x-replace (snapgate extension): an existing tag is replaced ------------------------
old_ids = re.findall(r"^(\d+)\s+x1", sgtest.run([qemu_img, "snapshot", "-l", "-U", a]).stdout, re.M)
job(q, "snapshot-save", dict(both, **{"job-id": "r1", "tag": "x1", "x-replace": True}))
new = re.findall(r"^(\d+)\s+x1\s+(\S+)", sgtest.run([qemu_img, "snapshot", "-l", "-U", a]).stdout, re.M)
sgtest.check(len(new) == 1 and new[0][0] not in old_ids and new[0][1] != "0", f"replaced x1: {new}")

# ---- delete -----------------------------------------------------------------------
job(q, "snapshot-delete", {"job-id": "d1", "tag": "x1", "devices": ["disk0", "disk1"]})
sgtest.check_eq((tags(a), tags(b)), (["t1"], ["t1"]), "after delete")
vm.quit()
for p in (a, b):
    sgtest.qemu_img_check(p)

# ---- -loadvm, config mismatch, a swapped disk ---------------------------------------
ro = ["-drive", f"file={raw},format=raw,readonly=on"]
r = subprocess.run([sgtest.binary("snapgate-vmm"), "-m", "128M", "-drive", f"file={a}",
                    "-drive", f"file={b}", "-loadvm", "t1", "-serial", "none"],
                   capture_output=True, text=True, timeout=30)
sgtest.check_eq((r.returncode, r.stderr),
                (1, "snapgate-vmm: -loadvm t1: Snapshot 't1' needs device virtio-blk2 (virtio-blk), "
                    "this VM lacks it\n"), "-loadvm into another configuration")
vm = VMM(d, ["-m", "128M", "-drive", f"file={a}", "-drive", f"file={b}", *ro, "-loadvm", "t1", "-S",
             "-append", "dirty=24M"])
sgtest.check_eq(sector0(a), t_saved, "sector 0 after -loadvm")
vm.qmp.cmd("cont")
i, _ = vm.wait_line(r"^tick \d+$", 5)
sgtest.check_eq(vm.snapshot_lines()[i], f"tick {t_saved + 1}", "first tick after -loadvm")
vm.quit()

vm = VMM(d, ["-m", "96M", "-drive", f"file={a}", "-drive", f"file={b}", *ro])
vm.wait_line(r"^tick 2$", 30)
job(vm.qmp, "snapshot-load", dict(both, **{"job-id": "c1", "tag": "t1"}),
    "Snapshot 't1' needs 128 MiB of RAM, this VM has 96 MiB")
sgtest.check_eq(vm.qmp.cmd("query-status")["return"]["status"], "running", "still running")
n = vm.last_tick()
vm.wait_line(rf"^tick {n + 2}$", 5)
# b replaced by another image that also has a 't1' snapshot
vm.quit()
b2 = os.path.join(d, "b2.qcow2")
sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", b2, "8M"])
sgtest.run([qemu_img, "snapshot", "-c", "t1", b2])
vm = VMM(d, ["-m", "128M", "-drive", f"file={a}", "-drive", f"file={b2}", *ro])
vm.wait_line(r"^tick 2$", 30)
job(vm.qmp, "snapshot-load", dict(both, **{"job-id": "c2", "tag": "t1"}),
    "Snapshot 't1' on disk 'disk1' is not the one saved with the VM state (expected ID 1)")
# a writable disk that was not saved
job(vm.qmp, "snapshot-load", {"job-id": "c3", "tag": "t1", "vmstate": "disk0", "devices": ["disk0"]},
    "Snapshot 't1' includes disk 'disk1', which is not among the devices of this VM")
sgtest.check_eq(vm.qmp.cmd("query-status")["return"]["status"], "running", "running after refusals")
vm.quit()
for p in (a, b, b2):
    sgtest.qemu_img_check(p)
print("ok")

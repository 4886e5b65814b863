#!/usr/bin/env python3
"""A 4 GiB guest: RAM above the 32-bit PCI hole (3 GiB below 4 GiB, 1 GiB
from 4 GiB up).  The demo guest dirties 16 MiB straddling the split (RAM
index 3064-3080 MiB: half at guest physical 3064 MiB, half at 4 GiB), the
VM saves, loads in place and loads into a fresh process; the guest checks
its pattern after each load.  RAM is otherwise untouched, so the save
writes ~16 MiB (never-touched RAM is skipped) and the test is quick.
A 3 GiB VM refuses the snapshot before changing anything."""
import json
import os
import re

import sgtest
from sg_vmm_util import VMM

sgtest.require_kvm()
qemu_img = sgtest.require_tool("qemu-img")
d = sgtest.tmpdir()
a = os.path.join(d, "a.qcow2")
sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", a, "64M"])
args = {"vmstate": "disk0", "devices": ["disk0"]}
guest = ["-drive", f"file={a}", "-append", "dirty=16M dirty-base=3064M"]
WINDOWS = 16   # the guest checks one 1 MiB window per 100 ms tick


def actual_size():
    info = json.loads(sgtest.run([qemu_img, "info", "-U", "--output=json", a]).stdout)
    return info["actual-size"]


def snapshots():
    out = sgtest.run([qemu_img, "snapshot", "-l", "-U", a]).stdout
    return re.findall(r"^\d+\s+(\S+)\s+(\S+ \S+)", out, re.M)


def checked_windows(vm):
    """Waits until the guest has verified every dirty window once more."""
    n = vm.last_tick()
    vm.wait_line(rf"^tick {n + WINDOWS + 1}$", 15)
    vm.check_no_ram_failure()


vm = VMM(d, ["-m", "4G"] + guest)
q = vm.qmp
vm.wait_line(r"^dirty: 16 MiB filled$", 60)
vm.wait_line(r"^snapgate demo guest ready$", 30)
vm.wait_line(r"^tick 3$", 5)

before = actual_size()
q.cmd("snapshot-save", dict(args, **{"job-id": "s1", "tag": "big4g"}))
j = q.wait_job("s1")
sgtest.check("error" not in j, f"save failed: {j}")
sgtest.check_eq(j["total-progress"], (1 << 20) + (4 << 30), "job total = header area + 4 GiB")
growth = actual_size() - before
# 16 MiB of pattern, plus metadata; untouched RAM stays unallocated
sgtest.check(16 << 20 <= growth < 48 << 20, f"image grew by {growth} bytes")
snaps = snapshots()
sgtest.check_eq([t for t, _ in snaps], ["big4g"], "snapshot list")
print(f"save of a 4 GiB guest with 16 MiB dirty: image +{growth >> 20} MiB")

# in place: the guest has moved on (windows re-filled with new generations)
checked_windows(vm)
q.cmd("snapshot-load", dict(args, **{"job-id": "l1", "tag": "big4g"}))
j = q.wait_job("l1")
sgtest.check("error" not in j, f"load failed: {j}")
sgtest.check_eq(q.cmd("query-status")["return"]["status"], "running", "running after load")
checked_windows(vm)
vm.quit()

# a fresh process never touched those windows: only the snapshot can fill them
vm = VMM(d, ["-m", "4G", "-loadvm", "big4g"] + guest, name="fresh")
vm.wait_line(r"^tick \d+$", 30)
checked_windows(vm)
sgtest.check(not [l for l in vm.snapshot_lines() if l.startswith("dirty:")],
             "the loaded guest did not boot again")
vm.quit()

# the RAM layout is part of the configuration: a 3 GiB VM refuses it
vm = VMM(d, ["-m", "3G"] + guest[:2], name="small")
vm.qmp.cmd("snapshot-load", dict(args, **{"job-id": "l2", "tag": "big4g"}))
j = vm.qmp.wait_job("l2")
sgtest.check_eq(j.get("error"), "Snapshot 'big4g' needs 4096 MiB of RAM, this VM has 3072 MiB",
                "load into a 3 GiB VM")
sgtest.check_eq(vm.qmp.cmd("query-status")["return"]["status"], "running", "still running")
vm.quit()
sgtest.qemu_img_check(a)
print("ok")

#!/usr/bin/env python3
"""The active vmstate area (after the virtual disk) holds a copy of the
snapshot the VM stands at only while it is the next save's base:
- deleting another snapshot keeps it (the next save is still incremental);
- deleting that snapshot empties it: the space goes, the next save is full;
- quit empties it, and a VMM killed with one leaves it to the next start;
- with no area left, `qemu-img resize` of a disk whose snapshots are gone
  grows it with zeros, not with guest RAM (what a left area would show).
`qemu-img check` is clean throughout.  Its "N/M allocated" counts the active
L1 table's clusters, area included: N <= M means the area is empty."""
import os
import re
import signal
import subprocess

import sgtest
from sg_vmm_util import VMM

sgtest.require_kvm()
qemu_img = sgtest.require_tool("qemu-img")
qemu_io = sgtest.require_tool("qemu-io")
d = sgtest.tmpdir()
a = os.path.join(d, "a.qcow2")
sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", a, "16M"])
ARGS = ["-m", "256M", "-drive", f"file={a}", "-append", "dirty=96M"]


def area_clusters(locked=True):
    """Clusters of the active L1 beyond the disk's own (qemu-img check)."""
    r = subprocess.run([qemu_img, "check"] + (["-U"] if locked else []) + [a],
                       capture_output=True, text=True)
    sgtest.check(r.returncode == 0, f"qemu-img check exited {r.returncode}: {r.stdout}{r.stderr}")
    m = re.search(r"(\d+)/(\d+) = [0-9.]+% allocated", r.stdout)
    sgtest.check(m is not None, f"no allocation line in: {r.stdout}")
    return max(0, int(m.group(1)) - int(m.group(2)))


def start(name):
    vm = VMM(d, ARGS, name=name)
    vm.wait_line(r"^tick 3$", 60)
    return vm


def hmp(vm, line):
    r = vm.qmp.cmd("human-monitor-command", {"command-line": line})
    sgtest.check_eq(r.get("return"), "", line)


def written(vm, line):
    before = vm.io_written()
    hmp(vm, line)
    return vm.io_written() - before


vm = start("v1")
full = written(vm, "savevm s1")
sgtest.check(full >= 64 << 20, f"the first save wrote only {full} bytes")
sgtest.check(area_clusters() > 1000, "after a save the area shares the snapshot's RAM")
hmp(vm, "stop")
written(vm, "savevm s2")
hmp(vm, "delvm s1")            # not the base: the area stays
inc = written(vm, "savevm s3")
print(f"full save {full >> 20} MiB, after deleting another snapshot {inc >> 20} MiB", flush=True)
sgtest.check(inc < full // 4, f"deleting s1 made the next save write {inc} bytes (full: {full})")
hmp(vm, "delvm s3")            # the base: the area goes
sgtest.check_eq(area_clusters(), 0, "area clusters after deleting the current snapshot")
again = written(vm, "savevm s4")
sgtest.check(again >= 64 << 20, f"the save after the base went wrote {again} bytes: not full")
hmp(vm, "cont")
sgtest.check_eq(vm.quit(), 0, "quit")
sgtest.check_eq(area_clusters(False), 0, "area clusters after quit")

# Killed while the area shares s4: the next start empties it.
vm = start("v2")
hmp(vm, "savevm s5")
vm.proc.send_signal(signal.SIGKILL)
vm.proc.wait(10)
sgtest.check(area_clusters(False) > 1000, "a killed VMM leaves its area")
vm = start("v3")
sgtest.check_eq(area_clusters(), 0, "area clusters after the next start")
for t in ("s2", "s4", "s5"):
    hmp(vm, f"delvm {t}")
sgtest.check_eq(vm.quit(), 0, "quit")

# No snapshot left: growing the disk shows zeros past the old end.
sgtest.run([qemu_img, "resize", "-q", a, "+1G"])
r = subprocess.run([qemu_io, "-c", "read -P 0 16M 1008M", a], capture_output=True, text=True)
sgtest.check(r.returncode == 0 and "verification failed" not in r.stdout,
             f"the grown disk does not read as zeros: {r.stdout}{r.stderr}")
area_clusters(False)
print("ok: the area follows the base; quit, start and delete leave no RAM behind", flush=True)

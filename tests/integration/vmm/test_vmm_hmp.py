#!/usr/bin/env python3
"""human-monitor-command in snapgate-vmm: the shared HMP engine (QEMU 7.2
profile) driving the VMM's own snapshot jobs."""
import os

import sgtest
from sg_vmm_util import VMM

sgtest.require_kvm()
qemu_img = sgtest.require_tool("qemu-img")
d = sgtest.tmpdir()
a = os.path.join(d, "a.qcow2")
sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", a, "16M"])
vm = VMM(d, ["-drive", f"file={a}", "-m", "64M"])
q = vm.qmp
names = [c["name"] for c in q.cmd("query-commands")["return"]]
if "human-monitor-command" not in names:
    sgtest.skip("snapgate-vmm was built without gateway/hmp")
vm.wait_line(r"^tick 2$", 30)
sgtest.check_eq(q.hmp("info snapshots"), "There is no snapshot available.\r\n", "empty list")
sgtest.check_eq(q.hmp("savevm s1"), "", "savevm")
out = q.hmp("info snapshots")
sgtest.check(out.startswith("List of snapshots present on all disks:\r\n") and " s1 " in out, out)
sgtest.check_eq(q.hmp("savevm s1"), "", "savevm over an existing tag")
sgtest.check_eq(q.hmp("loadvm s1"), "", "loadvm")
sgtest.check_eq(q.hmp("loadvm x"), "Error: Snapshot 'x' does not exist in one or more devices\r\n",
                "loadvm missing")
sgtest.check_eq(q.hmp("delvm x"), "", "delvm missing")
sgtest.check_eq(q.hmp("delvm s1"), "", "delvm")
sgtest.check_eq(q.hmp("info snapshots"), "There is no snapshot available.\r\n", "empty again")
sgtest.check_eq(q.hmp("info status"), "VM status: running\r\n", "info status")
sgtest.check_eq(q.hmp("nosuchcmd 1"), "unknown command: 'nosuchcmd'\r\n", "unknown command")
vm.check_no_ram_failure()
vm.quit()
sgtest.qemu_img_check(a)
print("ok")

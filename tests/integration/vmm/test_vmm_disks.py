#!/usr/bin/env python3
"""snapgate-vmm disks: two drives in query-block / query-named-block-nodes,
the guest's sector 0 visible with qemu-io after quit and qemu-img check
clean, a readonly first drive refuses the guest's writes unchanged."""
import hashlib
import os

import sgtest
from sg_vmm_util import VMM

sgtest.require_kvm()
qemu_img = sgtest.require_tool("qemu-img")
qemu_io = sgtest.require_tool("qemu-io")
d = sgtest.tmpdir()
a = os.path.join(d, "a.qcow2")
b = os.path.join(d, "b.raw")
sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", a, "16M"])
with open(b, "wb") as f:
    f.truncate(4 << 20)

vm = VMM(d, ["-drive", f"file={a}", "-drive", f"file={b},format=raw,node-name=data"])
vm.wait_line(r"^snapgate demo guest ready$", 30)
vm.wait_line(r"^tick 5$", 5)

blk = vm.qmp.cmd("query-block")["return"]
sgtest.check_eq([x["device"] for x in blk], ["drive0", "drive1"], "query-block devices")
ins0, ins1 = blk[0]["inserted"], blk[1]["inserted"]
sgtest.check_eq((ins0["node-name"], ins0["drv"], ins0["ro"], ins0["file"]),
                ("disk0", "qcow2", False, a), "drive0 inserted")
sgtest.check_eq((ins1["node-name"], ins1["drv"], ins1["ro"]), ("data", "raw", False), "drive1")
sgtest.check_eq(ins0["image"]["virtual-size"], 16 << 20, "drive0 virtual-size")
sgtest.check_eq(ins0["image"]["format"], "qcow2", "drive0 image format")
sgtest.check_eq(ins0["image"]["cluster-size"], 65536, "drive0 cluster-size")
nodes = vm.qmp.cmd("query-named-block-nodes")["return"]
sgtest.check_eq([n["node-name"] for n in nodes], ["disk0", "data"], "named nodes")
sgtest.check_eq(nodes[1]["image"]["virtual-size"], 4 << 20, "data virtual-size")
sgtest.check("snapshots" not in nodes[0]["image"], "no snapshots listed yet")

# an internal snapshot made with qemu-img shows up with SnapshotInfo names
vm.quit()
sgtest.run([qemu_img, "snapshot", "-c", "before", a])
vm = VMM(d, ["-drive", f"file={a}"])
vm.wait_line(r"^tick 3$", 30)
snaps = vm.qmp.cmd("query-named-block-nodes")["return"][0]["image"].get("snapshots")
sgtest.check(snaps and snaps[0]["name"] == "before", f"snapshots {snaps}")
# qemu-img writes icount 0, which QEMU (and we) show; -1 means absent
sgtest.check_eq(sorted(k for k in snaps[0].keys() if k != "icount"),
                sorted(["id", "name", "vm-state-size", "date-sec", "date-nsec",
                        "vm-clock-sec", "vm-clock-nsec"]), "SnapshotInfo members")
sgtest.check("return" in vm.qmp.cmd("stop"), "stop")
vm.qmp.wait_event("STOP")
last = vm.last_tick()
sgtest.check_eq(vm.quit(), 0, "exit code")

# the guest's last tick is in sector 0, readable by QEMU's own tools
r = sgtest.run([qemu_io, "-f", "qcow2", "-c", "read -v 0 16", a])
sgtest.check(f"tick.{last}." in r.stdout,
             f"sector 0 via qemu-io does not show tick {last}:\n{r.stdout}")
sgtest.qemu_img_check(a)

# ---- readonly=on: writes refused, image untouched ------------------------
before = hashlib.sha256(open(a, "rb").read()).hexdigest()
vm = VMM(d, ["-drive", f"file={a},readonly=on"])
vm.wait_line(r"^disk write failed$", 30)
vm.wait_line(r"^tick 4$", 5)
blk = vm.qmp.cmd("query-block")["return"]
sgtest.check_eq(blk[0]["inserted"]["ro"], True, "ro in query-block")
vm.quit()
sgtest.check_eq(hashlib.sha256(open(a, "rb").read()).hexdigest(), before, "readonly image bytes")
sgtest.qemu_img_check(a)
print("ok")

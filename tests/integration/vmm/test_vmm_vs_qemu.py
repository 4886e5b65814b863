#!/usr/bin/env python3
"""snapgate-vmm against the oracle: the same QMP inputs to QEMU 7.2 and to
snapgate-vmm give the same schemas (member names) and the same error texts."""
import os

import sgtest
from sg_vmm_util import VMM

sgtest.require_kvm()
qemu_img = sgtest.require_tool("qemu-img")
sgtest.require_tool("qemu-system-x86_64")
d = sgtest.tmpdir()


def images(tag):
    a = os.path.join(d, f"{tag}-a.qcow2")
    r = os.path.join(d, f"{tag}-r.raw")
    sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", a, "16M"])
    sgtest.run([qemu_img, "create", "-q", "-f", "raw", r, "1M"])
    return a, r


def keys(obj):
    return sorted(k for k in obj.keys() if k != "icount")


def scenario(q):
    """Runs the inputs; returns what must match between the two back ends."""
    out = {}
    st = q.cmd("query-status")["return"]
    out["status-keys"] = sorted(st.keys())
    blk = q.cmd("query-block")["return"]
    out["block-device"] = [b["device"] for b in blk]
    out["inserted-keys"] = keys(blk[0]["inserted"])
    out["image-keys"] = keys(blk[0]["inserted"]["image"])
    nodes = {n["node-name"]: n for n in q.cmd("query-named-block-nodes")["return"]}
    out["node-keys"] = keys(nodes["disk0"])
    out["node-drv"] = (nodes["disk0"]["drv"], nodes["disk1"]["drv"])

    def job(cmd, args):
        r = q.cmd(cmd, args)
        if "error" in r:
            return ("reply-error", r["error"]["class"], r["error"]["desc"])
        j = q.wait_job(args["job-id"])
        return (j["type"], j["status"], j.get("error"))

    dev = ["disk0"]
    out["save"] = job("snapshot-save", {"job-id": "j1", "tag": "t1", "vmstate": "disk0", "devices": dev})
    out["save-again"] = job("snapshot-save", {"job-id": "j2", "tag": "t1", "vmstate": "disk0",
                                              "devices": dev})
    out["load-missing"] = job("snapshot-load", {"job-id": "j3", "tag": "nope", "vmstate": "disk0",
                                                "devices": dev})
    out["vmstate-missing"] = job("snapshot-save", {"job-id": "j4", "tag": "t2",
                                                   "vmstate": "nosuchnode", "devices": dev})
    out["node-missing"] = job("snapshot-save", {"job-id": "j5", "tag": "t2", "vmstate": "disk0",
                                                "devices": ["disk0", "zz"]})
    out["raw-device"] = job("snapshot-save", {"job-id": "j6", "tag": "t2", "vmstate": "disk0",
                                              "devices": ["disk0", "disk1"]})
    out["delete-missing"] = job("snapshot-delete", {"job-id": "j7", "tag": "nope", "devices": dev})
    out["bad-id"] = job("snapshot-delete", {"job-id": "9x", "tag": "nope", "devices": dev})
    out["int-sync"] = q.cmd("blockdev-snapshot-internal-sync", {"device": "drive0", "name": "int1"})
    out["int-sync-dup"] = q.cmd("blockdev-snapshot-internal-sync", {"device": "drive0", "name": "int1"})
    out["int-sync-raw"] = q.cmd("blockdev-snapshot-internal-sync", {"device": "drive1", "name": "x"})
    out["int-del-999"] = q.cmd("blockdev-snapshot-delete-internal-sync", {"device": "drive0", "id": "999"})
    out["int-del-none"] = q.cmd("blockdev-snapshot-delete-internal-sync", {"device": "drive0"})
    out["load-disk-only"] = job("snapshot-load", {"job-id": "j8", "tag": "int1", "vmstate": "disk0",
                                                  "devices": dev})
    snaps = nodes = {n["node-name"]: n for n in q.cmd("query-named-block-nodes")["return"]}
    out["snap-keys"] = [keys(s) for s in snaps["disk0"]["image"]["snapshots"]]
    out["snap-names"] = [s["name"] for s in snaps["disk0"]["image"]["snapshots"]]
    r = q.cmd("blockdev-snapshot-delete-internal-sync", {"device": "drive0", "name": "int1"})
    out["int-del"] = keys(r["return"])
    out["job-dismiss-missing"] = q.cmd("job-dismiss", {"id": "nope"})["error"]
    out["job-cancel-missing"] = q.cmd("job-cancel", {"id": "nope"})["error"]
    for k, v in out.items():
        if isinstance(v, dict):
            v.pop("id", None)
    return out


# ---- QEMU 7.2 ------------------------------------------------------------------
a, r = images("qemu")
proc, sock = sgtest.start_qemu([f"file={a},if=none,id=drive0,node-name=disk0",
                                f"file={r},format=raw,if=none,id=drive1,node-name=disk1"], d)
q = sgtest.QMP(sock)
want = scenario(q)
q.cmd("quit")
proc.wait(20)

# ---- snapgate-vmm ----------------------------------------------------------------
a, r = images("vmm")
vm = VMM(d, ["-S", "-m", "64M", "-drive", f"file={a}", "-drive", f"file={r},format=raw"])
got = scenario(vm.qmp)
vm.quit()

if os.environ.get("SGTEST_VERBOSE"):
    for k in want:
        print(k, want[k], got.get(k))
bad = [k for k in want if want[k] != got.get(k)]
for k in bad:
    print(f"{k}:\n  qemu: {want[k]!r}\n  vmm:  {got.get(k)!r}")
sgtest.check(not bad, f"{len(bad)} differences from QEMU 7.2")
sgtest.qemu_img_check(a)
print("ok")

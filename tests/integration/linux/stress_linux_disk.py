#!/usr/bin/env python3
"""stress_linux_disk: is the Linux guest's rare self-reboot a disk-path defect of
snapgate-vmm, or the bed's?  The same guest on snapgate-vmm and on QEMU 7.2
-accel kvm, one after the other in one bed, each running STRESS_ROUNDS (8)
boots, alternating, of linux_guest's disk phase: a fresh VM and a fresh 64 MiB qcow2
disk, mke2fs, mount, write, sync (fresh clusters: the first write after boot).  A boot whose shell stops answering (a reboot or a hang) counts as failed.  No snapshot is taken.  Not in the default
suite: a diagnosis tool.

    tests/integration/linux/stress_linux_disk.py      # in the bed on kvm_pvm
"""
import os
import sys

import sgtest
from linux_util import Console, enter_bed_or_here

guest = enter_bed_or_here(__file__, bed_timeout=1700)
rounds = int(os.environ.get("STRESS_ROUNDS", "8"))
img = sgtest.binary("snapgate-img")
d = sgtest.tmpdir("sgdisk-")


def one_boot(impl, n):
    """A fresh disk and VM: linux_guest's disk phase once (fresh qcow2 clusters)."""
    disk = os.path.join(d, f"{impl}-{n}.qcow2")
    sgtest.run([img, "create", disk, "64M"])
    ssock, qsock = os.path.join(d, f"{impl}-{n}-serial.sock"), os.path.join(d, f"{impl}-{n}-qmp.sock")
    boot = ["-kernel", os.path.join(guest, "vmlinuz"), "-initrd", os.path.join(guest, "initrd.img"),
            "-append", "console=ttyS0 quiet", "-m", "512M"]
    if impl == "qemu":
        argv = ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-nodefaults", "-display", "none",
                "-drive", f"file={disk},format=qcow2,if=virtio",
                "-serial", f"unix:{ssock},server=on,wait=off"]
    else:
        argv = [sgtest.binary("snapgate-vmm"), "-drive", f"file={disk},format=qcow2",
                "-serial", f"unix:{ssock},server=on"]
    errlog = open(os.path.join(d, f"{impl}-{n}-stderr.log"), "ab")
    p = sgtest.spawn(argv + boot + ["-qmp", f"unix:{qsock},server=on,wait=off"], stderr=errlog)
    ok = True
    try:
        con = Console(ssock)
        con.boot(300)
        con.sh("mke2fs /dev/vda >/dev/null 2>&1 || echo mkfs failed; mkdir -p /mnt; "
               "mount -t ext2 /dev/vda /mnt && echo one > /mnt/f && sync", 120)
        up = con.sh("cut -d' ' -f1 /proc/uptime")
        print(f"{impl} boot {n}: whole, uptime {up}", flush=True)
    except SystemExit:
        ok = False
        with open(errlog.name, "rb") as f:
            print(f"{impl} boot {n}: FAILED; stderr: {f.read().decode(errors='replace')[-400:]}", flush=True)
    p.kill()
    p.wait(30)
    return ok


failed = {"qemu": 0, "snapgate": 0}
for n in range(1, rounds + 1):
    for impl in ("qemu", "snapgate"):
        failed[impl] += not one_boot(impl, n)
print("failed boots:", failed, flush=True)
sys.exit(1 if any(failed.values()) else 0)

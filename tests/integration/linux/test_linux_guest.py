#!/usr/bin/env python3
"""A Debian Linux guest on snapgate-vmm: boot to a shell on ttyS0, two virtio
disks (one read-only), savevm/loadvm while the guest runs (file contents, a
memory-dirtying loop, a RAM checksum, clocks, no soft lockup), -loadvm into a
fresh VMM, info snapshots, the configuration check, qemu-img check.

One guest boot carries every check: in the nested test bed a boot costs
tens of seconds.  Where it runs:
  * /dev/kvm is a conventional KVM (kvm_intel/kvm_amd): here, directly;
  * /dev/kvm is kvm_pvm and tests/kvm-bed/run.sh exists: inside the bed;
  * otherwise: SKIP.
The guest (vmlinuz + initrd.img) comes from $SNAPGATE_LINUX_GUEST, or is
built by scripts/make-linux-guest.sh into a cache directory.
"""
import os
import re
import subprocess
import time

import sgtest
from linux_util import Console, enter_bed_or_here, show_log_on_failure, show_vm_state_on_failure

guest = enter_bed_or_here(__file__)

# ---- inside a host with a conventional KVM -------------------------------------
vmm = sgtest.binary("snapgate-vmm")
img = sgtest.binary("snapgate-img")
d = sgtest.tmpdir("sglinux-")
disk0 = os.path.join(d, "disk0.qcow2")
disk1 = os.path.join(d, "ro.qcow2")
sgtest.run([img, "create", disk0, "64M"])
sgtest.run([img, "create", disk1, "16M"])
qio = sgtest.require_tool("qemu-io")
sgtest.run([qio, "-f", "qcow2", "-c", "write -P 0x5a 0 64k", disk1])
MEM = "512M"


def vmm_argv(mem=MEM, drives=(disk0, disk1), extra=()):
    a = [vmm, "-m", mem, "-kernel", os.path.join(guest, "vmlinuz"),
         "-initrd", os.path.join(guest, "initrd.img"), "-append", "console=ttyS0 quiet",
         "-serial", f"unix:{ssock},server=on", "-qmp", f"unix:{qsock},server=on,wait=off"]
    for i, f in enumerate(drives):
        a += ["-drive", f"file={f},format=qcow2" + (",readonly=on" if f == disk1 else "")]
    return a + list(extra)


ssock = os.path.join(d, "serial.sock")
qsock = os.path.join(d, "qmp.sock")

t0 = time.monotonic()
# stderr to a file: a pipe nobody reads would stop the VMM once it is full
errlog = open(os.path.join(d, "vmm-stderr.log"), "ab")
# On a failure: the VM's run state and interrupt state, then the VMM's stderr.
os.environ["SNAPGATE_VMM_IRQ_TRACE"] = "1"
os.environ["SNAPGATE_VMM_TRACE"] = "1"
vm_now = {}
show_vm_state_on_failure(vm_now)
show_log_on_failure(errlog.name, lines=80)
p = sgtest.spawn(vmm_argv(), stderr=errlog)
con = Console(ssock)
con.boot(300)
boot_s = time.monotonic() - t0
print(f"boot to shell prompt: {boot_s:.1f} s", flush=True)
q = sgtest.QMP(qsock, timeout=300)
vm_now["qmp"] = q

# ---- console input and the disks -------------------------------------------------
sgtest.check_eq(con.sh("echo input-$((6*7))"), "input-42", "input reaches the UART")

# ---- clocks at boot: the CMOS RTC (rtc_cmos binds to it, rtc0), the guest's
# date the host's (QEMU gives both), no clocksource or RTC complaint --------------
boot_bad = con.sh("dmesg | grep -i -E 'clocksource.*unstable|Marking clocksource|rtc_cmos.*(broken|not accessible)|"
                  "TSC.*unstable' | head -5")
sgtest.check_eq(boot_bad, "", "kernel clock complaints at boot")
sgtest.check_eq(con.sh("cat /sys/class/rtc/rtc0/name 2>&1 | cut -d' ' -f1"), "rtc_cmos", "rtc0 is the CMOS RTC")
host_s = time.time()
guest_s = int(con.sh("date +%s"))
sgtest.check(abs(guest_s - host_s) <= 5, f"guest date {guest_s} vs host {host_s:.0f}")
rtc_s = int(con.sh("cat /sys/class/rtc/rtc0/since_epoch"))
sgtest.check(abs(rtc_s - time.time()) <= 5, f"RTC {rtc_s} vs host {time.time():.0f}")
disks = con.sh("cat /sys/block/vda/ro /sys/block/vdb/ro /sys/block/vda/size")
sgtest.check_eq(disks.split(), ["0", "1", "131072"], "vda rw, vdb ro, vda size")
sgtest.check_eq(con.sh("dd if=/dev/vdb bs=4 count=1 2>/dev/null | od -An -tx1 | tr -d ' '"),
                "5a5a5a5a", "read-only disk content")
out = con.sh("mke2fs /dev/vda >/dev/null 2>&1 || echo mkfs failed; mkdir -p /mnt; "
             "mount -t ext2 /dev/vda /mnt && echo one > /mnt/f && sync", 120)
sgtest.check_eq(out, "", "mkfs.ext2, mount, write")
sgtest.check_eq(con.sh("cat /mnt/f"), "one", "file written")

# A RAM checksum (32 MiB of random bytes in tmpfs) and a loop that dirties
# memory and counts while the snapshot is taken.
con.sh("mkdir -p /shm && mount -t tmpfs -o size=64m tmpfs /shm && "
       "dd if=/dev/urandom of=/shm/r bs=1M count=32 2>/dev/null", 120)
sum_before = con.sh("md5sum /shm/r | cut -d' ' -f1")
# (the count goes through a rename: a reader never sees the file half written)
con.sh("(i=0; while :; do i=$((i+1)); echo $i > /shm/cnt.new; mv /shm/cnt.new /shm/cnt; "
       "dd if=/dev/zero of=/shm/dirty bs=64k count=16 2>/dev/null; done) &")
time.sleep(2)
c_before = int(con.sh("cat /shm/cnt"))

# Boot-time messages are the kernel's view of the nested bed; what matters is
# what the guest logs after the snapshot was taken.
dmesg_lines = int(con.sh("dmesg | wc -l"))
print("guest uptime at savevm:", con.sh("cat /proc/uptime"), "dmesg lines", dmesg_lines, flush=True)
t = time.monotonic()
r = q.hmp("savevm s1")
save_s = time.monotonic() - t
sgtest.check("Error" not in r, f"savevm s1: {r!r}")
print(f"savevm of a {MEM} guest: {save_s:.2f} s", flush=True)
c_after_save = int(con.sh("cat /shm/cnt"))
con.sh("echo two > /mnt/f && sync")
sgtest.check_eq(con.sh("cat /mnt/f"), "two", "file changed")
time.sleep(3)
c_changed = int(con.sh("cat /shm/cnt"))
sgtest.check(c_changed > c_after_save >= c_before, f"loop runs: {c_before} {c_after_save} {c_changed}")

t = time.monotonic()
r = q.hmp("loadvm s1")
load_s = time.monotonic() - t
sgtest.check("Error" not in r, f"loadvm s1: {r!r}")
print(f"loadvm of a {MEM} guest: {load_s:.2f} s", flush=True)
con.buf = b""
sgtest.check_eq(con.sh("cat /mnt/f", 60), "one", "file content after loadvm")
c_loaded = int(con.sh("cat /shm/cnt"))
sgtest.check(c_before <= c_loaded < c_changed,
             f"the loop resumed from the save: before {c_before}, changed {c_changed}, loaded {c_loaded}")
time.sleep(1)
sgtest.check(int(con.sh("cat /shm/cnt")) > c_loaded, "the loop keeps running after loadvm")
sgtest.check_eq(con.sh("md5sum /shm/r | cut -d' ' -f1"), sum_before, "RAM checksum after loadvm")
d1 = int(con.sh("date +%s"))
time.sleep(3)
d2 = int(con.sh("date +%s"))
sgtest.check(2 <= d2 - d1 <= 6, f"guest clock advances normally after loadvm: {d1} -> {d2}")
r1 = int(con.sh("cat /sys/class/rtc/rtc0/since_epoch"))
sgtest.check(abs(r1 - time.time()) <= 5, f"RTC after loadvm {r1} vs host {time.time():.0f}")
bad = con.sh(f"dmesg | tail -n +{dmesg_lines + 1} | grep -i -E 'soft lockup|hung task|clocksource.*unstable|"
             "Marking clocksource|watchdog: BUG' | head -5")
if bad:
    print(con.sh(f"cat /proc/uptime; dmesg | tail -n +{dmesg_lines - 3}"))
sgtest.check_eq(bad, "", "kernel complaints after loadvm")
info = q.hmp("info snapshots")
sgtest.check(re.search(r"\bs1\b", info) is not None, f"info snapshots lists s1: {info!r}")
con.sh("kill %1; umount /mnt; sync")
q.cmd("quit")
sgtest.check_eq(p.wait(30), 0, "VMM exit code")

# ---- -loadvm into a fresh VMM: the guest goes on where it was saved -------------
for f in (ssock, qsock):     # the first VMM's sockets must not be mistaken for the new ones
    if os.path.exists(f):
        os.unlink(f)
p = sgtest.spawn(vmm_argv(extra=["-loadvm", "s1"]), stderr=errlog)
con = Console(ssock)
q = sgtest.QMP(qsock, timeout=300)
vm_now["qmp"] = q
sgtest.check_eq(con.sh("cat /mnt/f", 60), "one", "file content after -loadvm")
sgtest.check_eq(con.sh("md5sum /shm/r | cut -d' ' -f1"), sum_before, "RAM checksum after -loadvm")
sgtest.check_eq(con.sh("dmesg | grep -i -c 'soft lockup'"), "0", "no soft lockup after -loadvm")
# system_reset: the kernel boots again from the start (whole machine state reset)
r = q.cmd("system_reset")
sgtest.check("return" in r, f"system_reset: {r}")
con.boot(300)
sgtest.check_eq(con.sh("echo again-$((2+3)); cat /sys/block/vda/ro"), "again-5\n0", "shell after system_reset")
q.cmd("quit")
sgtest.check_eq(p.wait(30), 0, "VMM exit code after -loadvm")

# ---- the configuration check refuses before anything changes --------------------
for what, argv, want in [
        ("different RAM size", vmm_argv(mem="768M", extra=["-loadvm", "s1"]), "needs 512 MiB of RAM"),
        ("a disk missing", vmm_argv(drives=(disk0,), extra=["-loadvm", "s1"]), "lacks it"),
        ("another guest kind", [vmm, "-m", MEM, "-serial", "none", "-drive", f"file={disk0}",
                                "-drive", f"file={disk1},readonly=on", "-loadvm", "s1"],
         "holds a 'linux' guest")]:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    sgtest.check(r.returncode == 1 and want in r.stderr, f"{what}: rc {r.returncode} {r.stderr!r}")

for f in (disk0, disk1):
    sgtest.qemu_img_check(f)
print("ok")

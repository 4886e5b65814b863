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
import socket
import subprocess
import sys
import time

import sgtest

HERE = os.path.abspath(__file__)
INNER = "--inner" in sys.argv


def host_is_pvm():
    return os.path.exists("/sys/module/kvm_pvm") and not (
        os.path.exists("/sys/module/kvm_intel") or os.path.exists("/sys/module/kvm_amd"))


def guest_dir():
    g = os.environ.get("SNAPGATE_LINUX_GUEST")
    if g:
        sgtest.check(os.path.exists(os.path.join(g, "vmlinuz")), f"{g}/vmlinuz missing")
        return g
    mk = os.path.join(sgtest.SRC, "scripts", "make-linux-guest.sh")
    if not os.path.exists(mk):
        sgtest.skip("no Linux guest: set SNAPGATE_LINUX_GUEST=DIR (vmlinuz, initrd.img) or "
                    "add scripts/make-linux-guest.sh")
    g = os.path.join(sgtest.BUILD, "linux-guest")
    if not os.path.exists(os.path.join(g, "initrd.img")):
        r = subprocess.run([mk, g], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            sgtest.skip(f"make-linux-guest.sh failed ({r.returncode}): {r.stderr.strip()[-300:]}")
    return g


if not INNER:
    guest = guest_dir()
    sgtest.require_kvm()
    if host_is_pvm():
        bed = os.path.join(sgtest.SRC, "tests", "kvm-bed", "run.sh")
        if not os.path.exists(bed):
            sgtest.skip("/dev/kvm is kvm_pvm (no Linux guest in useful time) and there is no "
                        "test bed (tests/kvm-bed/run.sh)")
        env = dict(os.environ, SNAPGATE_LINUX_GUEST=guest)
        r = subprocess.run([bed, "--share", guest, "--timeout", "900", "--",
                            sys.executable, HERE, "--inner"], env=env, timeout=1000)
        sys.exit(r.returncode)
    os.environ["SNAPGATE_LINUX_GUEST"] = guest

# ---- inside a host with a conventional KVM -------------------------------------
sgtest.require_kvm()
guest = os.environ["SNAPGATE_LINUX_GUEST"]
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


class Console:
    """The guest's ttyS0 over -serial unix:...,server=on."""

    def __init__(self, path):
        sgtest.wait_for(lambda: os.path.exists(path), 20, "serial socket")
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.buf = b""
        self.n = 0

    def expect(self, pattern, timeout):
        end = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.buf)
            if m:
                out = self.buf[:m.end()]
                self.buf = self.buf[m.end():]
                return out, m
            left = end - time.monotonic()
            if left <= 0:
                sgtest.fail(f"guest console: no {pattern!r} within {timeout}s; last output: "
                            f"{self.buf[-600:]!r}")
            self.s.settimeout(left)
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                sgtest.fail(f"guest console closed; last output {self.buf[-600:]!r}")
            self.buf += chunk

    def sh(self, cmd, timeout=60):
        """Runs one shell line; returns its output (the echoed line removed)."""
        self.n += 1
        # The echo of the line shows @@"N"@@, only the output has @@N@@.
        sep = " " if cmd.endswith("&") else "; "
        self.s.sendall(f'{cmd}{sep}echo "@@"{self.n}"@@"\n'.encode())
        out, _ = self.expect(rb"\r?\n@@%d@@\r?\n" % self.n, timeout)
        text = out.decode(errors="replace").replace("\r", "")
        after = text[text.rfind(f'"@@"{self.n}"@@"'):]
        after = after[after.find("\n") + 1:]
        return after[:after.rfind(f"@@{self.n}@@")].strip()

ssock = os.path.join(d, "serial.sock")
qsock = os.path.join(d, "qmp.sock")

t0 = time.monotonic()
p = sgtest.spawn(vmm_argv(), stderr=subprocess.PIPE)
con = Console(ssock)
con.expect(rb"SNAPGATE-GUEST-READY", 300)
con.expect(rb"# ", 60)
boot_s = time.monotonic() - t0
print(f"boot to shell prompt: {boot_s:.1f} s", flush=True)
q = sgtest.QMP(qsock)
con.sh("stty cols 1000")   # no line wrapping in the echo of long commands

# ---- console input and the disks -------------------------------------------------
sgtest.check_eq(con.sh("echo input-$((6*7))"), "input-42", "input reaches the UART")
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
con.sh("(i=0; while :; do i=$((i+1)); echo $i > /shm/cnt; "
       "dd if=/dev/zero of=/shm/dirty bs=64k count=16 2>/dev/null; done) &")
time.sleep(2)
c_before = int(con.sh("cat /shm/cnt"))

# Boot-time messages are the kernel's view of the nested bed; what matters is
# what the guest logs after the snapshot was taken.
dmesg_lines = int(con.sh("dmesg | wc -l"))
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
bad = con.sh(f"dmesg | tail -n +{dmesg_lines + 1} | grep -i -E 'soft lockup|hung task|clocksource.*unstable|"
             "Marking clocksource|watchdog: BUG' | head -5")
sgtest.check_eq(bad, "", "kernel complaints after loadvm")
info = q.hmp("info snapshots")
sgtest.check(re.search(r"\bs1\b", info) is not None, f"info snapshots lists s1: {info!r}")
con.sh("kill %1; umount /mnt; sync")
q.cmd("quit")
sgtest.check_eq(p.wait(30), 0, "VMM exit code")

# ---- -loadvm into a fresh VMM: the guest goes on where it was saved -------------
p = sgtest.spawn(vmm_argv(extra=["-loadvm", "s1"]), stderr=subprocess.PIPE)
con = Console(ssock)
q = sgtest.QMP(qsock)
sgtest.check_eq(con.sh("cat /mnt/f", 60), "one", "file content after -loadvm")
sgtest.check_eq(con.sh("md5sum /shm/r | cut -d' ' -f1"), sum_before, "RAM checksum after -loadvm")
sgtest.check_eq(con.sh("dmesg | grep -i -c 'soft lockup'"), "0", "no soft lockup after -loadvm")
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

#!/usr/bin/env python3
"""snapgate-qemu under real libvirt 9.0 and QEMU 7.2 (snapgate-qemu(1)).

Two TCG domains run the same small Linux guest (a counter on disk and on the serial
console): "sg" with <emulator> = the built snapgate-qemu, "direct" with plain QEMU, the
oracle.  Private virtlogd + libvirtd in their own mount namespace (sg_libvirt.py)."""
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sg_libvirt  # noqa: E402
import sgtest  # noqa: E402
from sg_libvirt import disk_counter, img_check, ticks  # noqa: E402
from sgtest import check, check_eq, fail  # noqa: E402

QEMU = "/usr/bin/qemu-system-x86_64"
for tool in ("qemu-img", "qemu-io"):
    sgtest.require_tool(tool)
if not os.access(QEMU, os.X_OK):
    sgtest.skip(f"{QEMU} not installed")
sg_libvirt.enter_namespace()

SGQ = sgtest.binary("snapgate-qemu")
sgtest.binary("snapgate")
work = sgtest.tmpdir("sglibvirt-")
kernel, initrd = sg_libvirt.build_guest(os.path.join(sgtest.BUILD, "libvirt-guest"))
lv = sg_libvirt.Libvirt(work)
lv.start()
xfails = []


def step(msg):
    print(f"== {msg}", flush=True)


class Dom:
    def __init__(self, name, emulator):
        self.name = name
        self.disk = os.path.join(work, name + ".qcow2")
        self.serial = os.path.join(work, name + ".serial")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", self.disk, "64M"], check=True)
        xml = os.path.join(work, name + ".xml")
        with open(xml, "w") as f:
            f.write(sg_libvirt.domain_xml(name, emulator, kernel, initrd, self.disk, self.serial))
        lv.virsh("define", xml)

    def virsh(self, cmd, *args, **kw):
        return lv.virsh(cmd, self.name, *args, **kw)

    def state(self):
        return self.virsh("domstate", check_rc=False).stdout.strip()

    def wait_ticks(self, more=3, timeout=120):
        """Waits until the guest printed `more` new ticks; returns the last one."""
        base = len(ticks(self.serial))
        sgtest.wait_for(lambda: len(ticks(self.serial)) >= base + more, timeout,
                        f"{self.name}: guest ticks")
        return ticks(self.serial)[-1]

    def snapshot(self, tag):
        self.virsh("snapshot-create-as", tag)
        # the counter value around the save: the tick before it is in the snapshot
        return ticks(self.serial)[-1]

    def check_images(self):
        """qemu-img check on a stopped (flushed) or shut-off domain's image."""
        running = self.state() == "running"
        if running:
            self.virsh("suspend")
        img_check(self.disk)
        if running:
            self.virsh("resume")

    def info_snapshots(self):
        return self.virsh("qemu-monitor-command", "--hmp", "info snapshots").stdout

    def log(self):
        return lv.domain_log(self.name)


def masked(table):
    """info snapshots with what differs between two runs (sizes, dates, clocks) masked."""
    out = []
    for line in table.splitlines():
        m = re.match(r"^(\S+\s+\S+\s+)(.*)$", line)
        out.append(m.group(1) + re.sub(r"[0-9.]", "9", m.group(2)) if m and "TAG" not in line
                   and ":" in line else line)
    return "\n".join(out)


sg = Dom("sg", SGQ)
direct = Dom("direct", QEMU)

step("virsh start")
for d in (sg, direct):
    d.virsh("start")
    check_eq(d.state(), "running", f"{d.name} state after start")
for d in (sg, direct):
    d.wait_ticks()
    d.check_images()
check(re.search(r"snapgate[^\n]*: connected to (?i:qemu) 7\.2", sg.log()),
      f"the gateway is not in front:\n{sg.log()}")

step("snapshot-create-as x3, snapshot-list")
saved = {}
for d in (sg, direct):
    for tag in ("s1", "s2", "s3"):
        d.wait_ticks(3)
        saved[(d.name, tag)] = d.snapshot(tag)
    lst = d.virsh("snapshot-list", "--name").stdout.split()
    check_eq(lst, ["s1", "s2", "s3"], f"{d.name} snapshot-list")
    d.check_images()

step("snapshot-revert: the counter on disk and in RAM goes back")
for d in (sg, direct):
    before = d.wait_ticks(10)
    d.virsh("snapshot-revert", "s1", "--paused")
    check_eq(d.state(), "paused", f"{d.name} state after revert --paused")
    on_disk = disk_counter(d.disk)
    s1 = saved[(d.name, "s1")]
    check(on_disk is not None and on_disk <= s1 + 1 and on_disk < before,
          f"{d.name}: disk counter {on_disk} after revert to s1 (saved at ~{s1}, was {before})")
    n = len(ticks(d.serial))
    d.virsh("resume")
    sgtest.wait_for(lambda: len(ticks(d.serial)) > n + 2, 60, f"{d.name} ticks after revert")
    first = ticks(d.serial)[n]
    check(first <= s1 + 2 and first < before,
          f"{d.name}: first tick after revert {first} (s1 saved at ~{s1}, was {before})")
    d.check_images()

step("snapshot-delete")
for d in (sg, direct):
    d.virsh("snapshot-delete", "s2")
    check_eq(d.virsh("snapshot-list", "--name").stdout.split(), ["s1", "s3"],
             f"{d.name} snapshot-list after delete")
    d.check_images()

step("qemu-monitor-command --hmp 'info snapshots' as on QEMU")
a, b = sg.info_snapshots(), direct.info_snapshots()
check_eq(masked(a), masked(b), "info snapshots through snapgate-qemu vs direct (masked)")
check("s1" in a and "s3" in a and "s2" not in a, f"info snapshots: {a!r}")

step("restart libvirtd while the domain runs")
lv.stop_libvirtd()
sg.wait_ticks(3)
lv.start_libvirtd()
check_eq(sg.state(), "running", "sg after libvirtd restart")
sg.snapshot("s4")
check("s4" in sg.info_snapshots(), "snapshot after libvirtd restart")
sg.check_images()

step("virsh save + restore (fd passing)")
state_file = os.path.join(work, "sg.save")
r = sg.virsh("save", state_file, check_rc=False)
if r.returncode != 0:
    xfails.append(f"virsh save: {r.stderr.strip()}")
else:
    check_eq(sg.state(), "shut off", "sg after save")
    img_check(sg.disk)
    lv.virsh("restore", state_file)
    check_eq(sg.state(), "running", "sg after restore")
    sg.wait_ticks(3)
    sg.check_images()

step("the ID trap: tag '1' while snapshot s1 is ID 1")
results = {}
for d in (direct, sg):
    d.wait_ticks(5)
    trap_tick = d.snapshot("1")
    later = d.wait_ticks(10)
    r = d.virsh("snapshot-revert", "1", "--paused", check_rc=False)
    results[d.name] = r
    if d is direct:
        # the oracle: QEMU 7.2 reports success and restores s1's data
        check(r.returncode == 0, f"direct revert to '1' failed: {r.stderr}")
        got = disk_counter(d.disk)
        s1 = saved[(d.name, "s1")]
        check(got is not None and got <= s1 + 1,
              f"direct QEMU: expected the wrong data (s1 ~{s1}), disk holds {got} "
              f"(tag '1' saved at ~{trap_tick})")
        print(f"oracle: direct QEMU 7.2 restored s1's counter {got} for tag '1' "
              f"(saved at ~{trap_tick})")
        d.virsh("destroy")
    else:
        check(r.returncode != 0, "snapgate-qemu accepted the ambiguous revert")
        msg = r.stderr + d.log()
        check("is also the ID of snapshot 's1'" in msg,
              f"no clear refusal:\n{r.stderr}\n{d.log()[-2000:]}")
        print("snapgate-qemu refused:", r.stderr.strip().splitlines()[0][:300])
        check(d.state() == "shut off", f"sg state after the refused revert: {d.state()}")
        got = disk_counter(d.disk)
        check(got is not None and got >= trap_tick,
              f"snapgate-qemu: the disk changed after the refusal: {got} < {trap_tick}")
    img_check(d.disk)

step("start again, --memspec snapshot, destroy")
sg.virsh("start")
sg.wait_ticks(3)
mem = os.path.join(work, "sg.mem")
overlay = os.path.join(work, "sg-ext.qcow2")
r = sg.virsh("snapshot-create-as", "ext1", "--memspec", f"file={mem},snapshot=external",
             "--diskspec", f"vda,snapshot=external,file={overlay}", check_rc=False)
if r.returncode != 0:
    xfails.append(f"snapshot-create-as --memspec: {r.stderr.strip()}")
else:
    check(os.path.getsize(mem) > 0, "--memspec wrote no memory file")
    sg.wait_ticks(3)
    img_check(overlay)
n_exits = sg.log().count("gateway exited")
sg.virsh("destroy")
sgtest.wait_for(lambda: sg.log().count("gateway exited") > n_exits, 30, "the gateway to leave")
log = sg.log()
check("snapgate-qemu: gateway exited with status 0" in log.splitlines()[-5:] or
      log.rstrip().endswith("gateway exited with status 0") or
      "gateway exited with status 0" in log.split("snapgate: the back end ended")[-1],
      f"the gateway did not leave cleanly:\n{log[-1500:]}")
check("back end died" not in log, f"'back end died' in the domain log:\n{log[-1500:]}")
for p in (sg.disk, direct.disk, overlay):
    if os.path.exists(p):
        img_check(p)

lv.stop()
for x in xfails:
    print(f"XFAIL: {x}")
print("PASS" + (f" ({len(xfails)} expected failure(s))" if xfails else ""))

#!/usr/bin/env python3
"""Power events of a Debian Linux guest on snapgate-vmm, with QEMU 7.2 as the oracle,
and a SIGKILL during a save of that guest.  One run (in the nested bed on kvm_pvm):

snapgate-vmm, -kernel boot (ACPI tables, acpi-pm device):
  1. boot; the kernel runs on ACPI (FACP/DSDT/APIC tables, S5 supported, reboot type acpi);
     the power button (system_powerdown, QMP and HMP), see power_button() below: the
     kernel's fixed-event counter /sys/firmware/acpi/interrupts/ff_pwr_btn and its EN/STS
     flags, before and after the button driver is loaded, the POWERDOWN events and the
     replies must be QEMU's, one count per press, the guest runs on; then (snapgate-vmm
     only) a press while paused is saved with `savevm pd` and delivered after `cont` and
     again after `loadvm pd`, whose PM1 enable bit still works;
  2. `reboot -f` (Linux writes the FADT's reset register, port 0xCF9): the QMP events
     until RESET, which must be QEMU's; the kernel is loaded again from -kernel (the
     ready line again, uptime restarted) and the VM runs on;
  3. after the reboot: `savevm s1`; then RAM is dirtied and a snapshot-save job `s2` is
     started and snapgate-vmm is killed with SIGKILL while it runs;
  4. qemu-img check finds no errors; every snapshot listed (s1, and s2 only if its job
     had concluded) loads with -loadvm: the shell answers with the marker and the RAM
     checksum of the save;
  5. in the last loaded VM, RAM dirtied again, a snapshot-save job `s3` and at once
     `poweroff -f`: the power-off is held (VM paused) until the save concludes, then
     SHUTDOWN and exit 0; s3 is listed;
  6. -loadvm s3 (its RAM checksum); with SG_LONG=1 also reboots through the 8042
     and by a triple fault (the same RESET); `poweroff -f` (Linux writes SLP_TYP=S5|SLP_EN
     to PM1a_CNT): the QMP events until the socket closes and the exit status, which
     must be QEMU's.
qemu-system-x86_64 -accel kvm, same kernel, initrd and command line: boot, the power
button, `reboot -f`, boot, `poweroff -f`, the same records (SeaBIOS's own extra reset on a reboot, which its
debug port shows, is told apart).  QEMU runs after snapgate-vmm: with both nested guests
at once the bed's level-1 kernel crashed twice (stack overflow in kvm_amd under TCG).
"""
import glob
import os
import signal
import socket
import subprocess
import sys
import time

import sg_bed_util
import sgtest
from linux_util import Console, enter_bed_or_here


# ---- the guest's initrd plus the ACPI button driver ------------------------------
# The Debian kernel has the button driver as a module (CONFIG_ACPI_BUTTON=m) and the
# shared guest's initrd does not hold it: without it the kernel installs no handler for
# the fixed power button, never sets PWRBTN_EN and so never counts a press.  The test
# boots the guest's initrd with a second cpio archive appended (the kernel unpacks
# both) that holds button.ko from the guest's own kernel package at /lib/sg-power, and
# loads it in the middle of power_button().  Made on the host, before the bed (the
# build tree is visible there): BUILD/linux-power/initrd.img.
def newc(entries):
    """A cpio "newc" archive of (name, mode, data) entries."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], 1):
        nb = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + nb
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def initrd_with_button(guest_dir):
    out_dir = os.path.join(sgtest.BUILD, "linux-power")
    out = os.path.join(out_dir, "initrd.img")
    base = os.path.join(guest_dir, "initrd.img")
    if "--inner" in sys.argv:               # made on the host side
        sgtest.check(os.path.exists(out), f"{out} missing in the bed")
        return out
    kver = open(os.path.join(guest_dir, "kernel-version")).read().strip()
    stamp = f"{base} {os.path.getsize(base)} {os.path.getmtime(base)} {kver}\n"
    try:
        if open(out + ".stamp").read() == stamp:
            return out
    except OSError:
        pass
    os.makedirs(out_dir, exist_ok=True)
    debs = [f for dd in (os.path.join(guest_dir, ".debs"), os.path.join(sgtest.BUILD, "kvm-bed", "debs"),
                         out_dir)
            for f in glob.glob(os.path.join(dd, f"linux-image-{kver}_*.deb"))]
    if not debs:
        r = subprocess.run(["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download",
                            f"linux-image-{kver}"], cwd=out_dir, capture_output=True, text=True)
        debs = glob.glob(os.path.join(out_dir, f"linux-image-{kver}_*.deb"))
        if not debs:
            sgtest.skip(f"no package linux-image-{kver} for button.ko: {r.stderr.strip()[-200:]}")
    tmp = sgtest.tmpdir("sglinuxpw-deb-")
    ko = f"./lib/modules/{kver}/kernel/drivers/acpi/button.ko"
    sgtest.run(["sh", "-c", f"dpkg-deb --fsys-tarfile '{debs[0]}' | tar -x -C '{tmp}' '{ko}'"])
    with open(os.path.join(tmp, ko), "rb") as f:
        module = f.read()
    with open(base, "rb") as f:
        img = f.read()
    img += b"\0" * (-len(img) % 512)       # the next archive starts 4-byte aligned
    img += newc([("lib", 0o40755, b""), ("lib/sg-power", 0o40755, b""),
                 ("lib/sg-power/button.ko", 0o100644, module)])
    with open(out + ".tmp", "wb") as f:
        f.write(img)
    os.replace(out + ".tmp", out)
    with open(out + ".stamp", "w") as f:
        f.write(stamp)
    return out


sgtest.require_kvm()
INITRD = initrd_with_button(sg_bed_util.linux_guest())
guest = enter_bed_or_here(__file__)

# ---- inside a host with a conventional KVM -------------------------------------
vmm = sgtest.binary("snapgate-vmm")
qemu = sgtest.require_tool("qemu-system-x86_64")
qemu_img = sgtest.require_tool("qemu-img")
d = sgtest.tmpdir("sglinuxpw-")
disk = os.path.join(d, "disk0.qcow2")
sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", disk, "64M"])
MEM = "512M"
BOOT = ["-m", MEM, "-kernel", os.path.join(guest, "vmlinuz"), "-initrd", INITRD,
        "-append", "console=ttyS0 quiet"]
T0 = time.monotonic()


def log(who, msg):
    print(f"[{time.monotonic() - T0:6.1f} s] {who}: {msg}", flush=True)


class Machine:
    """A VMM (snapgate-vmm or QEMU) with its console and QMP on unix sockets."""

    def __init__(self, who, argv_of):
        self.who = who
        self.ssock = os.path.join(d, f"{who}-serial.sock")
        self.qsock = os.path.join(d, f"{who}-qmp.sock")
        for f in (self.ssock, self.qsock):     # a killed VMM leaves its sockets
            if os.path.exists(f):
                os.unlink(f)
        # stderr to a file: a pipe nobody reads would stop the VM once it is full
        self.errlog = open(os.path.join(d, f"{who}-stderr.log"), "ab")
        self.p = sgtest.spawn(argv_of(self.ssock, self.qsock), stderr=self.errlog)
        self.con = Console(self.ssock)
        self.q = sgtest.QMP(self.qsock, timeout=300)

    def boot(self):
        t = time.monotonic()
        self.con.boot(300)
        log(self.who, f"boot to shell prompt {time.monotonic() - t:.1f} s")

    def action(self, line, until, timeout=300):
        """Types line; returns the QMP events (no timestamps) up to and including until."""
        self.q.events.clear()
        self.con.send(line)
        e = self.q.wait_event(until, timeout)
        evs = [{"event": m["event"], "data": m.get("data")} for m in self.q.events + [e]]
        self.q.events.clear()
        return evs

    def pending_events(self, wait=0.5):
        """Events that arrived meanwhile (QMP was not read while the guest booted)."""
        evs = []
        self.q.sock.settimeout(wait)
        try:
            while True:
                m = self.q.recv()
                if "event" in m:
                    evs.append({"event": m["event"], "data": m.get("data")})
        except socket.timeout:
            pass
        self.q.sock.settimeout(300)
        return evs

    def poweroff(self):
        """poweroff -f: the events until QMP closes, and the exit status."""
        evs = self.action("poweroff -f", "SHUTDOWN")
        more, rc = self.poweroff_rest()
        return evs + more, rc

    def poweroff_rest(self):
        """The events until QMP closes, and the exit status."""
        evs = []
        self.q.sock.settimeout(30)
        try:
            while True:
                m = self.q.recv()
                if "event" in m:
                    evs.append({"event": m["event"], "data": m.get("data")})
        except (EOFError, OSError):
            pass
        return evs, self.p.wait(60)


def reboot_and_check(m):
    """reboot -f; returns its events once the rebooted guest's shell answers."""
    t = time.monotonic()
    evs = m.action("reboot -f", "RESET")
    m.boot()
    evs += m.pending_events()
    up = float(m.con.sh("cut -d' ' -f1 /proc/uptime"))
    sgtest.check(up <= time.monotonic() - t + 5,
                 f"{m.who}: uptime {up} s after a reboot {time.monotonic() - t:.0f} s ago")
    log(m.who, f"reboot -f to shell prompt {time.monotonic() - t:.1f} s, events {evs}")
    return evs


def acpi_in_use(m):
    out = m.con.sh("ls /sys/firmware/acpi/tables; cat /sys/kernel/reboot/type; "
                   "dmesg | grep -c 'ACPI: PM: (supports S0.*S5'")
    words = out.split()
    for t in ("FACP", "DSDT", "APIC"):
        sgtest.check(t in words, f"{m.who}: ACPI table {t} not seen by the guest: {out!r}")
    sgtest.check("acpi" in words, f"{m.who}: the kernel would not reboot through ACPI: {out!r}")
    sgtest.check(words[-1] != "0", f"{m.who}: the kernel does not support S5: {out!r}")


FF_PWR_BTN = "/sys/firmware/acpi/interrupts/ff_pwr_btn"


def pwr_btn(m):
    """The kernel's line for the fixed power button: count, EN / STS (the PM1 bits as
    it reads them), whether it has a handler ("invalid": none)."""
    words = m.con.sh(f"cat {FF_PWR_BTN}").split()
    sgtest.check(words and words[0].isdigit(), f"{m.who}: {FF_PWR_BTN}: {words}")
    return words


def press(m, how, count=None):
    """system_powerdown by QMP or HMP: the reply and the events until POWERDOWN; then,
    when count is given, waits until the kernel has counted that many presses."""
    m.q.events.clear()
    r = (m.q.cmd("system_powerdown") if how == "qmp" else
         m.q.cmd("human-monitor-command", {"command-line": "system_powerdown"}))
    r.pop("id", None)
    m.q.wait_event("POWERDOWN", 30)
    evs = [{"event": e["event"], "data": e.get("data")} for e in m.q.events]
    m.q.events.clear()
    return r, evs, (pwr_btn(m) if count is None else press_wait(m, count))


def power_button(m):
    """The power button on a booted guest; returns what must be QEMU's."""
    t = time.monotonic()
    rec = {"idle": pwr_btn(m)}
    # No handler yet, so no PWRBTN_EN: QEMU 7.2 drops the press (no PM1_STS bit, no SCI).
    rec["no-driver"] = press(m, "qmp")
    # The button driver installs the handler: ACPICA clears the status, sets PWRBTN_EN.
    out = m.con.sh("insmod /lib/sg-power/button.ko && dmesg | grep -c 'Power Button \\[PWRF\\]'")
    rec["driver"] = (out, pwr_btn(m))
    # Each press: POWERDOWN, one SCI, one count; busybox has no acpid, nobody powers off.
    n = int(rec["driver"][1][0])
    rec["presses"] = [press(m, how, n + i) for i, how in enumerate(("qmp", "hmp", "qmp"), 1)]
    rec["alive"] = m.con.sh("echo alive-$((6*7))")
    st = m.q.cmd("query-status")["return"]["status"]
    for i, (_, _, words) in enumerate(rec["presses"], 1):
        sgtest.check_eq(int(words[0]), n + i, f"{m.who}: {FF_PWR_BTN} count after press {i}")
    sgtest.check_eq((rec["alive"], st), ("alive-42", "running"), f"{m.who}: the guest after the presses")
    log(m.who, f"power button {time.monotonic() - t:.1f} s: {rec}")
    return rec


def power_button_snapshot(m):
    """snapgate-vmm: a press while paused is saved with the machine and delivered after
    cont; after loadvm it is delivered again (the SCI re-driven from the loaded PM1 state)
    and the enable bit still works."""
    t = time.monotonic()
    n = int(pwr_btn(m)[0])
    m.q.cmd("stop")
    r = m.q.cmd("system_powerdown")
    sgtest.check("return" in r, f"system_powerdown while paused: {r}")
    r = m.q.hmp("savevm pd")
    sgtest.check_eq(r, "", "savevm pd with a press pending")
    m.q.cmd("cont")
    words = press_wait(m, n + 1)
    sgtest.check_eq(int(words[0]), n + 1, "the press made while paused is counted after cont")
    r = m.q.hmp("loadvm pd")
    sgtest.check_eq(r, "", "loadvm pd")
    words = press_wait(m, n + 1)
    sgtest.check_eq(int(words[0]), n + 1, "the pending press of pd is counted after its load")
    sgtest.check("EN" in words, f"PWRBTN_EN after loadvm: {words}")
    _, evs, words = press(m, "qmp", n + 2)
    sgtest.check_eq(int(words[0]), n + 2, "a press after loadvm is counted")
    sgtest.check_eq(m.q.hmp("delvm pd"), "", "delvm pd")
    m.pending_events(1.0)               # the delvm job's last events
    log(m.who, f"power button with savevm/loadvm {time.monotonic() - t:.1f} s: {words}")


def press_wait(m, count):
    """The counter's line once it reads count (30 s at most)."""
    words = pwr_btn(m)
    end = time.monotonic() + 30
    while int(words[0]) != count and time.monotonic() < end:
        time.sleep(0.5)
        words = pwr_btn(m)
    return words


# ---- QEMU, the oracle (run after snapgate-vmm's part) ------------------------------
fwlog = os.path.join(d, "seabios.log")   # SeaBIOS's debug port: its own resets


def run_qemu():
    qm = Machine("qemu", lambda s, q: [qemu, "-accel", "kvm", "-nodefaults", "-display", "none"]
                 + BOOT + ["-serial", f"unix:{s},server=on,wait=off",
                           "-qmp", f"unix:{q},server=on,wait=off",
                           "-chardev", f"file,id=fw,path={fwlog}",
                           "-device", "isa-debugcon,iobase=0x402,chardev=fw"])
    qm.boot()
    acpi_in_use(qm)
    button = power_button(qm)
    reboot = reboot_and_check(qm)
    with open(fwlog, errors="replace") as f:
        fw_resets = f.read().count("Attempting a hard reboot")
    poweroff = qm.poweroff()
    log("qemu", f"poweroff -f: {poweroff}")
    return {"reboot": reboot, "fw_resets": fw_resets, "poweroff": poweroff, "button": button}


def sg_argv(extra=()):
    return lambda s, q: [vmm] + BOOT + ["-serial", f"unix:{s},server=on",
                                        "-qmp", f"unix:{q},server=on,wait=off",
                                        "-drive", f"file={disk},format=qcow2"] + list(extra)


# ---- snapgate-vmm: boot, reboot, savevm, SIGKILL during a save ----------------------
sm = Machine("snapgate", sg_argv())
sm.boot()
acpi_in_use(sm)
sg_button = power_button(sm)
power_button_snapshot(sm)
sg_reboot = reboot_and_check(sm)
st = sm.q.cmd("query-status")["return"]
sgtest.check_eq(st["status"], "running", "run state after the guest's reboot")

marker = sm.con.sh("mkdir -p /shm && mount -t tmpfs -o size=192m tmpfs /shm && "
                   "echo m-$$-$RANDOM | tee /shm/m")
sm.con.sh("dd if=/dev/urandom of=/shm/r bs=1M count=32 2>/dev/null", 180)
ram_sum = sm.con.sh("md5sum /shm/r | cut -d' ' -f1")
t = time.monotonic()
r = sm.q.hmp("savevm s1")
sgtest.check("Error" not in r, f"savevm s1 after the reboot: {r!r}")
log("snapgate", f"savevm s1 after the reboot: {time.monotonic() - t:.1f} s")

# More changed RAM than s1 holds, so that the (incremental) save of s2 lasts.
sm.con.sh("dd if=/dev/urandom of=/shm/r2 bs=1M count=48 2>/dev/null", 300)
sm.q.events.clear()
r = sm.q.cmd("snapshot-save", {"job-id": "kill", "tag": "s2", "vmstate": "disk0",
                               "devices": ["disk0"]})
sgtest.check(r.get("return") == {}, f"snapshot-save s2: {r}")
concluded = False
progress = None
end = time.monotonic() + 120
while time.monotonic() < end:
    job = [j for j in sm.q.cmd("query-jobs")["return"] if j["id"] == "kill"]
    sgtest.check(job, "snapshot-save job missing from query-jobs")
    if job[0]["status"] == "concluded":
        concluded = "error" not in job[0]
        break
    if job[0]["status"] == "running" and job[0].get("current-progress", 0) > 0:
        progress = (job[0]["current-progress"], job[0]["total-progress"])
        break
    time.sleep(0.05)
os.kill(sm.p.pid, signal.SIGKILL)
sgtest.check_eq(sm.p.wait(30), -signal.SIGKILL, "snapgate-vmm killed")
log("snapgate", f"SIGKILL during the save of s2: progress {progress}, concluded {concluded}")
sgtest.check(progress is not None or concluded, "the save of s2 never ran")

r = subprocess.run([qemu_img, "check", "--output=json", disk], capture_output=True, text=True)
sgtest.check(r.returncode in (0, 3), f"qemu-img check after the kill: {r.returncode} {r.stdout}{r.stderr}")
log("snapgate", f"qemu-img check after the kill: exit {r.returncode} (3 = leaks only)")
r = sgtest.run([qemu_img, "snapshot", "-l", disk])
tags = [l.split()[1] for l in r.stdout.splitlines()[2:] if l.split()]
want = ["s1", "s2"] if concluded else ["s1"]
sgtest.check_eq(sorted(tags), want, "snapshots after the kill")

# ---- every concluded snapshot loads ------------------------------------------------
def load_and_check(tag, files):
    m = Machine("snapgate", sg_argv(["-loadvm", tag]))
    sgtest.check_eq(m.con.sh("cat /shm/m", 120), marker, f"-loadvm {tag}: the shell answers")
    for f, want in files.items():
        sgtest.check_eq(m.con.sh(f"md5sum /shm/{f} | cut -d' ' -f1", 120), want,
                        f"-loadvm {tag}: RAM checksum of /shm/{f}")
    log("snapgate", f"-loadvm {tag}: shell answers, RAM checksums equal")
    return m


for i, tag in enumerate(tags):
    sm = load_and_check(tag, {"r": ram_sum})
    if i < len(tags) - 1:
        sm.q.cmd("quit")
        sgtest.check_eq(sm.p.wait(30), 0, "snapgate-vmm exit after quit")

# ---- poweroff while a save runs: held, the save completes, then SHUTDOWN --------------
sm.con.sh("dd if=/dev/urandom of=/shm/r3 bs=1M count=64 2>/dev/null", 300)
sum3 = sm.con.sh("md5sum /shm/r3 | cut -d' ' -f1")
sm.q.events.clear()
r = sm.q.cmd("snapshot-save", {"job-id": "held", "tag": "s3", "vmstate": "disk0",
                               "devices": ["disk0"]})
sgtest.check(r.get("return") == {}, f"snapshot-save s3: {r}")
# Typed only after the save's instant (RESUME), or s3 would hold the typed line.
sm.q.wait_event("RESUME", 120)
sm.con.send("poweroff -f")
held, job = False, None
end = time.monotonic() + 300
try:
    while time.monotonic() < end:
        job = [j for j in sm.q.cmd("query-jobs")["return"] if j["id"] == "held"][0]
        if job["status"] == "concluded":
            break
        if sm.q.cmd("query-status")["return"]["status"] == "paused":
            held = True        # the guest has powered off, the save still runs
        time.sleep(0.1)
except (EOFError, OSError):
    pass                       # SHUTDOWN came and the VMM is gone
evs = [{"event": m["event"], "data": m.get("data")} for m in sm.q.events]
sm.q.events.clear()
more, rc = sm.poweroff_rest()
evs += more
names = [e["event"] if e["event"] != "JOB_STATUS_CHANGE" else e["data"]["status"] for e in evs]
log("snapgate", f"poweroff -f during a save: held {held}, events {names}, exit {rc}")
sgtest.check(held, "the guest's power-off was not held while the save ran")
sgtest.check("concluded" in names and "SHUTDOWN" in names and
             names.index("concluded") < names.index("SHUTDOWN"),
             f"the save concludes before the VM shuts down: {names}")
sgtest.check(job is None or "error" not in job, f"the held save failed: {job}")
sg_held_poweroff = (evs[names.index("concluded") + 1:], rc)
r = sgtest.run([qemu_img, "snapshot", "-l", disk])
sgtest.check(" s3 " in r.stdout, f"s3 listed after the held power-off: {r.stdout}")

# ---- the held save loads; a plain poweroff ends that VM ---------------------------
sm = load_and_check("s3", {"r3": sum3})
if os.environ.get("SG_LONG"):
    # Linux's other ways: the 8042's reset line, and a triple fault (KVM_EXIT_SHUTDOWN).
    for how in ("kbd", "triple"):
        sm.con.sh(f"echo {how} > /sys/kernel/reboot/type")
        sgtest.check_eq(reboot_and_check(sm), sg_reboot, f"events of a reboot={how}")
sg_poweroff = sm.poweroff()
log("snapgate", f"poweroff -f: {sg_poweroff}")
r = subprocess.run([qemu_img, "check", disk], capture_output=True, text=True)
sgtest.check(r.returncode in (0, 3), f"qemu-img check at the end: {r.returncode} {r.stdout}{r.stderr}")

# ---- the same as QEMU -----------------------------------------------------------
oracle = run_qemu()
# QEMU resets twice for one reboot: SeaBIOS, entered again with its shadowed
# image already initialised, resets the machine once more ("Attempting a hard
# reboot" on its debug port), which QEMU reports as a second, identical RESET.
# snapgate-vmm runs no firmware: the guest's own reset is the one to compare.
q_reboot, fw = oracle["reboot"], oracle["fw_resets"]
log("qemu", f"SeaBIOS hard reboots: {fw}")
sgtest.check(fw < len(q_reboot) and q_reboot[len(q_reboot) - fw:] == q_reboot[:1] * fw,
             f"QEMU's reboot events {q_reboot} with {fw} firmware reset(s)")
sgtest.check_eq(sg_reboot, q_reboot[:len(q_reboot) - fw],
                "QMP events of the guest's reboot (snapgate vs QEMU without SeaBIOS's own reset)")
sgtest.check_eq(sg_button, oracle["button"],
                "the power button: replies, events, the kernel's counter and flags (snapgate vs QEMU)")
sgtest.check_eq(sg_poweroff, oracle["poweroff"],
                "QMP events and exit status of the guest's poweroff (snapgate vs QEMU)")
sgtest.check_eq(sg_held_poweroff, oracle["poweroff"],
                "QMP events after the save and exit status of a poweroff held by a save")
sgtest.check_eq(sg_reboot, [{"event": "RESET", "data": {"guest": True, "reason": "guest-reset"}}],
                "reboot events")
print("ok")

"""Section 6 of bench.py: a Linux guest (scripts/make-linux-guest.sh) on
snapgate-vmm and on QEMU 7.2 -accel kvm, same kernel and initramfs, same run:
boot to the shell prompt, then snapshot-save and snapshot-load of the 512 MiB
guest (a RAM filler makes most of it non-zero), each followed by a shell line
that must answer.  A Linux guest needs a conventional KVM: on kvm_pvm the
section runs itself inside the kvm bed (tests/kvm-bed), whose timing is
emulated (nested TCG): only the ratios mean something there.  Method in
bench/README.md."""
import os
import re
import select
import socket
import struct
import subprocess
import sys
import time

import bench as B

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))
from sg_bed_util import kvm_is_pvm  # noqa: E402  (the tests' own check, not a copy)
MEM = 512
FILL = 256                          # MiB of random bytes written into a tmpfs
READY = b"sg-guest: ready"
# ash asks the terminal where the cursor is after its prompt (ESC [6n).
PROMPT = re.compile(rb"\n[^\n]*# (?:\x1b\[6n)?$")
SAVE = {"vmstate": "disk0", "devices": ["disk0"], "tag": "b1"}
LOAD = {"vmstate": "disk0", "devices": ["disk0"], "tag": "b1"}


def guest_dir(build):
    g = os.environ.get("SNAPGATE_LINUX_GUEST") or os.path.join(build, "linux-guest")
    if not os.path.isfile(os.path.join(g, "initrd.img")):
        r = subprocess.run([os.path.join(SRC, "scripts", "make-linux-guest.sh"), g],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode:
            raise B.Unavailable(f"make-linux-guest.sh failed: {r.stdout.strip()[-200:]}")
    return g


class Console:
    """The guest's ttyS0 on a unix socket (both VMs are its server)."""

    def __init__(self, path, proc):
        self.buf = b""
        B.wait_until(lambda: os.path.exists(path) or proc.poll() is not None, 60,
                     "the serial socket")
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)

    def wait(self, pred, timeout, what):
        end = time.monotonic() + timeout
        while not pred(self.buf):
            if time.monotonic() > end:
                raise B.Unavailable(f"no {what} within {timeout:.0f} s: {self.buf[-200:]!r}")
            if not select.select([self.s], [], [], 0.5)[0]:
                continue
            data = self.s.recv(1 << 16)
            if not data:
                raise B.Unavailable(f"console closed waiting for {what}")
            self.buf += data.replace(b"\r", b"")

    def prompt(self, timeout):
        self.wait(lambda b: PROMPT.search(b), timeout, "shell prompt")

    def sh(self, line, want, timeout=600):
        """Types a line; waits for `want` (bytes, not in the typed line) and the prompt."""
        self.buf = b""
        self.s.sendall(line.encode() + b"\n")
        self.wait(lambda b: want in b and PROMPT.search(b[b.index(want):]), timeout,
                  repr(want.strip().decode()))


def start(impl, build, guest, d):
    """(process, console, qmp) of a VM booting the guest; process start is t0."""
    for f in ("serial.sock", "qmp.sock"):
        if os.path.exists(os.path.join(d, f)):
            os.unlink(os.path.join(d, f))
    disk = os.path.join(d, "disk.qcow2")
    B.fresh_disk(disk)
    ser, qsock = os.path.join(d, "serial.sock"), os.path.join(d, "qmp.sock")
    boot = ["-kernel", os.path.join(guest, "vmlinuz"), "-initrd", os.path.join(guest, "initrd.img"),
            "-append", "console=ttyS0 quiet"]
    if impl == "qemu":
        exe = "qemu-system-x86_64"
        argv = [exe, "-accel", "kvm", "-cpu", "host", "-nodefaults", "-display", "none",
                "-m", f"{MEM}M", "-drive", f"file={disk},if=none,id=drive0,node-name=disk0",
                "-serial", f"unix:{ser},server=on,wait=off"]
    else:
        exe = os.path.join(build, "snapgate-vmm")
        argv = [exe, "-m", f"{MEM}M", "-drive", f"file={disk},format=qcow2,node-name=disk0",
                "-serial", f"unix:{ser},server=on"]
    argv += boot + ["-qmp", f"unix:{qsock},server=on,wait=off"]
    t0 = time.monotonic()
    proc = B.spawn(argv, stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "stderr"), "wb"),
                   cwd=d)
    con = Console(ser, proc)
    return t0, proc, con, qsock


CHANGE = 5                          # MiB rewritten between two saves: ~1% of RAM
KEYS = ("boot", "uptime", "save", "load", "pause", "running", "stamped", "second", "rate0",
        "rate1", "rate2", "growth", "rate_cpu", "rate_dd", "running2",
        "dirtied", "thp")

# The machine's limit for a save's writer, which takes a CPU of its own:
# the guest's loop while a process beside the VM (no save) keeps a CPU busy
# -- a shell loop, or dd writing into a file as the writer does.
HOGS = (("rate_cpu", "while :; do :; done"),
        ("rate_dd", "while :; do dd if=/dev/zero of=hog bs=256K count=2048 2>/dev/null; done"))


def written(pid):
    """write_bytes of /proc/PID/io, or wchar where the file system does no block
    accounting (the bed's tmpfs scratch: write_bytes stays 0)."""
    return B.io_written(pid) or next(
        (int(l.split()[1]) for l in open(f"/proc/{pid}/io") if l.startswith("wchar:")), 0)


def guest_ram(pid):
    """(start, end) of the VM process's largest private read-write anonymous
    mapping: guest RAM, in both VMMs."""
    best = (0, 0)
    for line in open(f"/proc/{pid}/maps"):
        f = line.split()
        if len(f) == 5 and f[1].startswith("rw"):
            a, b = (int(x, 16) for x in f[0].split("-"))
            if b - a > best[1] - best[0]:
                best = (a, b)
    return best


def soft_dirty_clear(pid):
    """Clears the process's soft-dirty bits (proc(5), clear_refs 4); False
    where the kernel has none."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("4")
        return True
    except OSError:
        return False


def soft_dirty_bytes(pid):
    """Bytes of guest RAM written since soft_dirty_clear (pagemap bit 55, per
    4 KiB page; a 2 MiB huge page counts whole)."""
    a, b = guest_ram(pid)
    n = 0
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        for off in range(a, b, 64 << 20):
            f.seek(off // 4096 * 8)
            raw = f.read(min(b - off, 64 << 20) // 4096 * 8)
            n += sum(1 for (e,) in struct.iter_unpack("<Q", raw) if e >> 55 & 1)
    return n * 4096


def ram_thp_bytes(pid):
    """Bytes of guest RAM mapped by transparent huge pages (smaps AnonHugePages):
    soft-dirty counts those 2 MiB at a time."""
    a, _ = guest_ram(pid)
    inside = False
    for line in open(f"/proc/{pid}/smaps"):
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            inside = int(line.split("-")[0], 16) == a
        elif inside and line.startswith("AnonHugePages:"):
            return int(line.split()[1]) * 1024
    return 0


def count(con):
    """The loop's count and when it was read.  The loop rewrites the file in
    place (`echo $i > f`: truncate, then write), so a read can find it empty:
    read again (a rename per count would slow the loop down to its forks)."""
    for _ in range(20):
        con.sh("cat /shm/cnt; echo cnt-done", b"\ncnt-done\n")
        m = re.search(rb"\n(\d+)\ncnt-done", con.buf)
        if m:
            return int(m.group(1)), time.monotonic()
    raise B.Unavailable(f"the loop's count did not read as a number: {con.buf[-100:]!r}")


def hog_rate(con, d, script):
    """The loop's rate (counts/s) for 3 s while `script` runs beside the VM."""
    (ca, ta) = count(con)
    hog = subprocess.Popen(["sh", "-c", script], cwd=d, start_new_session=True)
    try:
        time.sleep(3)
        (cb, tb) = count(con)
    finally:
        os.killpg(hog.pid, 9)
        hog.wait()
        if os.path.exists(os.path.join(d, "hog")):
            os.unlink(os.path.join(d, "hog"))
    return (cb - ca) / (tb - ta)


def one_run(impl, build, guest, d):
    """Boot s, the guest's uptime at its prompt s, save wall s, load wall s, save pause s,
    load sent -> RESUME arrived s, -> RESUME stamped s, second save MiB written, loop
    rate before / through / after the save, image growth MiB, the two limit rates, and
    load sent -> RESUME arrived s of a second load of the first snapshot in the same boot,
    MiB of guest RAM written between the first load and the second save (None: no
    soft-dirty bits) and MiB of RAM in huge pages then."""
    t0, proc, con, qsock = start(impl, build, guest, d)
    vm = B.Backend()
    vm.proc, vm.sock = proc, qsock
    try:
        vm.qmp = q = B.QMP(qsock)
        con.wait(lambda b: READY in b, 900, "ready marker")
        con.s.sendall(b"\n")
        con.prompt(300)
        boot = time.monotonic() - t0
        con.sh("cut -d' ' -f1 /proc/uptime; echo up-done", b"\nup-done\n")
        uptime = float(re.search(rb"\n(\d+\.\d+)\n", con.buf).group(1))
        con.sh(f"mkdir -p /shm && mount -t tmpfs -o size={FILL + 32}m tmpfs /shm && "
               f"dd if=/dev/urandom of=/shm/r bs=1M count={FILL} 2>/dev/null; echo fill-done", b"\nfill-done\n")
        # The guest's loop: a busybox shell counting into a tmpfs file.
        con.sh("(i=0; while :; do i=$((i+1)); echo $i > /shm/cnt; done) & sleep 1; echo loop-on",
               b"\nloop-on\n")
        (ca, ta) = count(con)
        time.sleep(3)
        (cb, tb) = count(con)
        rate0 = (cb - ca) / (tb - ta)
        save, pause, err = q.run_job("snapshot-save", SAVE, "bsave")
        if err:
            raise B.Unavailable(f"snapshot-save: {err}")
        (cc, tc) = count(con)
        rate1 = (cc - cb) / (tc - tb)       # through the save (and two console reads)
        time.sleep(3)
        (cd, td) = count(con)
        rate2 = (cd - cc) / (td - tc)       # after it: the bed's own drift shows here
        hogs = [hog_rate(con, d, script) for _, script in HOGS]
        con.sh("echo after-save-$((2*3))", b"\nafter-save-6\n", 300)
        con.sh("rm /shm/r; echo changed", b"\nchanged\n")
        load, _, err = q.run_job("snapshot-load", LOAD, "bload")
        if err:
            raise B.Unavailable(f"snapshot-load: {err}")
        running, stamped = q.resume_after, q.resume_stamped
        con.s.sendall(b"\n")
        con.sh("ls /shm/r && kill %1 && echo loaded-$((3*3))", b"\nloaded-9\n", 300)
        # What the guest writes from here to the next save's instant (the
        # load has concluded: RAM is all in), which that save compares with.
        tracked = soft_dirty_clear(proc.pid)
        con.sh(f"dd if=/dev/urandom of=/shm/r bs=1M count={CHANGE} conv=notrunc 2>/dev/null;"
               " echo ch-done", b"\nch-done\n")
        disk = os.path.join(d, "disk.qcow2")
        dirtied = soft_dirty_bytes(proc.pid) / B.MiB if tracked else None
        thp = ram_thp_bytes(proc.pid) / B.MiB
        w0, g0 = written(proc.pid), B.allocated(disk)
        _, _, err = q.run_job("snapshot-save", dict(SAVE, tag="b2"), "bsave2")
        if err:
            raise B.Unavailable(f"second snapshot-save: {err}")
        second = (written(proc.pid) - w0) / B.MiB
        growth = (B.allocated(disk) - g0) / B.MiB
        # The same load again in the same boot: its code has run once before
        # (under the bed's TCG, code run for the first time is translated).
        _, _, err = q.run_job("snapshot-load", LOAD, "bload2")
        if err:
            raise B.Unavailable(f"second snapshot-load: {err}")
        running2 = q.resume_after
        con.s.sendall(b"\n")
        con.sh("ls /shm/r && echo again-$((2*5))", b"\nagain-10\n", 300)
        return (boot, uptime, save, load, pause, running, stamped, second, rate0, rate1, rate2,
                growth, *hogs, running2, dirtied, thp)
    finally:
        vm.close()
        con.s.close()


def run_in_bed(cfg, build, guest):
    bed = os.path.join(SRC, "tests", "kvm-bed", "run.sh")
    print("(6) /dev/kvm is kvm_pvm: running the section in the kvm bed (emulated timing)",
          flush=True)
    argv = [bed, "--share", guest, "--timeout", "3000", "--", "/usr/bin/python3",
            os.path.join(HERE, "bench.py"), "--build", build, "--only", "6",
            "--reps", str(cfg["reps"])]
    env = dict(os.environ, SNAPGATE_LINUX_GUEST=guest, SNAPGATE_BUILD=build)
    r = subprocess.run(argv, env=env)
    if r.returncode:
        print(f"(6) n/a: the kvm bed exited {r.returncode}", flush=True)


UNITS = {"second": "MiB", "dirtied": "MiB", "thp": "MiB", "growth": "MiB", "rate0": "counts/s",
         "rate1": "counts/s", "rate2": "counts/s", "rate_cpu": "counts/s", "rate_dd": "counts/s"}


def trace_lines(d):
    """The trace lines snapgate-vmm wrote to its stderr (SNAPGATE_VMM_TRACE:
    "trace:" per phase, "live: ... pause:" per pause): printed with the run,
    so a bed run keeps them."""
    try:
        with open(os.path.join(d, "stderr"), "rb") as f:
            return [l.decode(errors="replace").rstrip() for l in f
                    if l.startswith((b"trace:", b"live:"))]
    except OSError:
        return []


def section6(cfg, build, work, results):
    guest = guest_dir(build)
    if kvm_is_pvm() and not os.environ.get("SG_BED"):
        run_in_bed(cfg, build, guest)
        return
    reps = cfg["reps"]
    data, rows = {}, []
    impls = ("qemu", "snapgate")
    for impl in impls:
        data[impl] = dict({k: [] for k in KEYS}, error=None, errors=[])
    # The two sides alternate, repetition by repetition: a host whose load
    # changes during the run (the bed's timing follows it) shifts both alike.
    for i in range(reps):
        for impl in impls:
            d = os.path.join(work, "linux-" + impl)
            os.makedirs(d, exist_ok=True)
            try:
                r = dict(zip(KEYS, one_run(impl, build, guest, d)))
            except Exception as e:   # noqa: BLE001  (a side's failure is its table cell)
                data[impl]["errors"].append(f"run {i + 1}: {e}")
                data[impl]["error"] = data[impl]["errors"][0]
                print(f"  {impl} run {i + 1} failed: {e}", flush=True)
                r = None
            if impl == "snapgate":
                for line in trace_lines(d):
                    print(f"    {line}", flush=True)
            if r is None:
                continue
            print(f"  {impl} run {i + 1}: " + ", ".join(
                f"{k} {v:.3f} {UNITS.get(k, 's')}" for k, v in r.items() if v is not None),
                flush=True)
            for k, v in r.items():
                data[impl][k].append(v)
            data[impl].setdefault("speed", []).append(
                r["rate1"] / r["rate0"] * 100 if r["rate0"] else None)
            around = (r["rate0"] + r["rate2"]) / 2
            data[impl].setdefault("speed2", []).append(
                r["rate1"] / around * 100 if around else None)
            data[impl].setdefault("per_dirtied", []).append(
                r["second"] / r["dirtied"] if r["dirtied"] else None)
            for key, _ in HOGS:
                data[impl].setdefault(key + "%", []).append(
                    r[key] / around * 100 if around else None)
    results["linux"] = data

    def cells(impl, key, fmt="{:.3f}"):
        if data[impl]["error"] and not data[impl].get(key):
            return "n/a: " + data[impl]["error"][:60]
        return B.cell(data[impl].get(key, []), fmt)

    def ms(impl, key):
        xs = [x for x in data[impl][key] if x is not None]
        if not xs:
            return "-"
        # p99 of fewer than 100 samples (nearest rank) is the maximum.
        return f"{max(xs) * 1e3:.1f} / {B.med(xs) * 1e3:.1f}"

    for key, what in (("boot", "boot to shell prompt, s"), ("uptime", "  of it, guest uptime, s"),
                      ("save", "snapshot-save wall, s"), ("pause", "snapshot-save pause, s"),
                      ("load", "snapshot-load wall, s"), ("running", "snapshot-load sent -> running, s"),
                      ("stamped", "  sent -> RESUME's own timestamp, s"),
                      ("rate0", "guest loop, counts/s before the save"),
                      ("rate1", "guest loop, counts/s through the save"),
                      ("rate2", "guest loop, counts/s after the save")):
        q, s = data["qemu"][key], data["snapgate"][key]
        fmt = "{:.0f}" if key.startswith("rate") else "{:.3f}"
        rows.append([what, cells("qemu", key, fmt), cells("snapgate", key, fmt),
                     B.ratio(B.med(s), B.med(q)) if q and s else "-"])
    # Issue 19's four goals, as its rows.
    rows.append(["pause p99 / median, ms (goal <= 10)", ms("qemu", "pause"), ms("snapgate", "pause"), "-"])
    rows.append(["load sent -> running p99 / median, ms (goal <= 10)", ms("qemu", "running"),
                 ms("snapgate", "running"), "-"])
    rows.append(["  by RESUME's timestamp, p99 / median, ms", ms("qemu", "stamped"),
                 ms("snapgate", "stamped"), "-"])
    rows.append(["  the same load again in the same boot, p99 / median, ms", ms("qemu", "running2"),
                 ms("snapgate", "running2"), "-"])
    rows.append([f"2nd save after {CHANGE} MiB changed, MiB (goal <= {2 * CHANGE})",
                 cells("qemu", "second", "{:.1f}"), cells("snapgate", "second", "{:.1f}"),
                 B.ratio(B.med(data["snapgate"]["second"]), B.med(data["qemu"]["second"]))
                 if data["qemu"]["second"] and data["snapgate"]["second"] else "-"])
    rows.append(["  the guest wrote since the load (soft-dirty pages), MiB",
                 cells("qemu", "dirtied", "{:.1f}"), cells("snapgate", "dirtied", "{:.1f}"), "-"])
    rows.append(["    of RAM then in 2 MiB pages (counted whole), MiB",
                 cells("qemu", "thp", "{:.0f}"), cells("snapgate", "thp", "{:.0f}"), "-"])
    rows.append(["  2nd save / what the guest wrote (goal <= 2)",
                 cells("qemu", "per_dirtied", "{:.2f}"), cells("snapgate", "per_dirtied", "{:.2f}"),
                 "-"])
    rows.append(["  the image grew by, MiB", cells("qemu", "growth", "{:.1f}"),
                 cells("snapgate", "growth", "{:.1f}"),
                 B.ratio(B.med(data["snapgate"]["growth"]), B.med(data["qemu"]["growth"]))
                 if data["qemu"]["growth"] and data["snapgate"]["growth"] else "-"])
    rows.append(["loop rate through the save, % of before (goal >= 80)",
                 cells("qemu", "speed", "{:.0f}"), cells("snapgate", "speed", "{:.0f}"), "-"])
    rows.append(["  % of the mean of before and after",
                 cells("qemu", "speed2", "{:.0f}"), cells("snapgate", "speed2", "{:.0f}"), "-"])
    rows.append(["  limit: no save, a busy shell loop beside the VM, %",
                 cells("qemu", "rate_cpu%", "{:.0f}"), cells("snapgate", "rate_cpu%", "{:.0f}"), "-"])
    rows.append(["  limit: no save, dd into a file beside the VM, %",
                 cells("qemu", "rate_dd%", "{:.0f}"), cells("snapgate", "rate_dd%", "{:.0f}"), "-"])
    bed = os.environ.get("SG_BED") == "1"
    B.table(f"(6) Linux guest ({MEM} MiB, {FILL} MiB of it random), median [min-max] of {reps}"
            + (" -- IN THE KVM BED: EMULATED TIMING, compare the ratios only" if bed else ""),
            ["what", "QEMU 7.2 -accel kvm", "snapgate-vmm", "sg/QEMU"], rows,
            ["boot: process start -> shell prompt on ttyS0 (QEMU: SeaBIOS + its",
             "linuxboot ROM; snapgate-vmm: direct 64-bit entry); save/load: snapshot-save",
             "/-load sent -> JOB_STATUS_CHANGE concluded, pause: STOP -> RESUME event",
             "timestamps; the shell answers after each.  guest uptime: /proc/uptime at the",
             "prompt (the kernel's own time; the rest of the boot is the VMM, firmware, loader).",
             "running: snapshot-load sent -> RESUME event arrived (by its timestamp: the",
             "server's clock, without the client reading the messages before it; in the bed",
             "python's parsing is emulated too; again: after the 2nd save, the first",
             "snapshot loaded once more, code paths run before -- the bed's TCG translates",
             "code at its first run in each process); 2nd save: /proc/PID/io",
             f"write_bytes (wchar in the bed) of a save after a load and {CHANGE} MiB rewritten,",
             "what the guest wrote: its RAM pages soft-dirty (/proc/PID/clear_refs 4 after",
             "the load concluded, then /proc/PID/pagemap bit 55) just before that save;",
             "image growth: the qcow2 file's allocated bytes over that save;",
             "loop: a busybox shell loop counting into tmpfs, read over the console",
             "(rate through the save: from 3 s before it to just after it concluded;",
             "after: the 3 s after that -- the bed's rate drifts by up to 2x between runs);",
             "limits: the loop for 3 s, no save, while a process beside the VM keeps one",
             "CPU busy (a shell loop; dd writing 512 MiB into a file over and over, as a",
             "save's writer does), % of the mean of before and after the save;",
             "the two sides alternate, repetition by repetition."]
            + [f"{i}: {e}" for i in data for e in data[i]["errors"]])

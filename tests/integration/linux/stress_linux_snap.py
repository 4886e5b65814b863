#!/usr/bin/env python3
"""stress_linux_snap: one Linux guest boot, then STRESS_CYCLES (12) rounds of
HMP savevm / loadvm (the guest idle at its prompt, as bench_linux.py
saves; STRESS_BUSY=1: while a loop dirties memory), each answered by the shell
within 40 s; the lazy load and, with STRESS_EAGER=1, SNAPGATE_VMM_LAZY=0.
Every state capture and load is traced (SNAPGATE_VMM_IRQ_TRACE: LAPIC
IRR/ISR, vCPU events, IOAPIC, PIC, UART); on a stuck guest the trace of the
load that preceded it and of a capture of the stuck state are printed.
STRESS_BENCH=1: bench_linux.py's save, load and write, repeated.
STRESS_SAVES=1: live saves only
(with STRESS_BUSY=1, the linux_guest scenario): the guest must not reboot.
Not in the default suite: a diagnosis tool (in the bed ~20 s a cycle).

    tests/integration/linux/stress_linux_snap.py      # in the bed on kvm_pvm
"""
import os
import sys
import time

import sgtest
from linux_util import Console, enter_bed_or_here, show_log_on_failure

guest = enter_bed_or_here(__file__, bed_timeout=1500)
cycles = int(os.environ.get("STRESS_CYCLES", "12"))
os.environ["SNAPGATE_VMM_IRQ_TRACE"] = "1"
if os.environ.get("STRESS_EAGER") == "1":
    os.environ["SNAPGATE_VMM_LAZY"] = "0"
vmm = sgtest.binary("snapgate-vmm")
img = sgtest.binary("snapgate-img")
d = sgtest.tmpdir("sgstress-")
disk0 = os.path.join(d, "disk0.qcow2")
sgtest.run([img, "create", disk0, "64M"])
ssock, qsock = os.path.join(d, "serial.sock"), os.path.join(d, "qmp.sock")
errpath = os.path.join(d, "vmm-stderr.log")
errlog = open(errpath, "ab")
holder = {}


def capture_stuck():
    """On any failure (a command the shell never answered, in every mode): the
    guest's state captured twice, 5 s apart (does its RIP move?), before the
    VMM's stderr is printed."""
    if holder.get("qmp"):
        holder["qmp"].sock.settimeout(60)
        print("query-status at the failure:", holder["qmp"].cmd("query-status"), flush=True)
        for k in (1, 2):
            print(f"savevm diag{k}:", holder["qmp"].hmp(f"savevm diag{k}"), flush=True)
            time.sleep(5)


sgtest.on_failure(capture_stuck)
show_log_on_failure(errpath, lines=60)
p = sgtest.spawn([vmm, "-m", "512M", "-kernel", os.path.join(guest, "vmlinuz"),
                  "-initrd", os.path.join(guest, "initrd.img"), "-append", "console=ttyS0 quiet",
                  "-serial", f"unix:{ssock},server=on", "-qmp", f"unix:{qsock},server=on,wait=off",
                  "-drive", f"file={disk0},format=qcow2"], stderr=errlog)
con = Console(ssock)
con.boot(300)
q = sgtest.QMP(qsock, timeout=300)
holder["qmp"] = q
con.sh("mkdir -p /shm && mount -t tmpfs -o size=300m tmpfs /shm")
if os.environ.get("STRESS_BUSY") == "1":   # else idle at the prompt, as bench_linux.py saves
    con.sh("(i=0; while :; do i=$((i+1)); echo $i > /shm/cnt; "
           "dd if=/dev/zero of=/shm/dirty bs=64k count=16 2>/dev/null; done) &")


def trace_tail(n):
    with open(errpath, "rb") as f:
        lines = [ln for ln in f.read().decode(errors="replace").splitlines() if "irq-trace" in ln]
    return "\n".join(lines[-n:])


def saves_only():
    """STRESS_BENCH=1: bench_linux.py's save, load and write, repeated.
STRESS_SAVES=1: live saves only, while the loop dirties memory; after each
    the guest must not have rebooted (uptime), the RAM file must be whole."""
    con.sh("dd if=/dev/urandom of=/shm/r bs=1M count=32 2>/dev/null", 120)
    want = con.sh("md5sum /shm/r | cut -d' ' -f1")
    up = 0.0
    for i in range(1, cycles + 1):
        r = q.hmp(f"savevm c{i}")
        sgtest.check("Error" not in r, f"savevm c{i}: {r!r}")
        now = float(con.sh("cut -d' ' -f1 /proc/uptime", 60))
        with open(errpath, "rb") as f:
            tf = [ln for ln in f.read().decode(errors="replace").splitlines() if "triple fault" in ln]
        print(f"save {i}: uptime {now}, triple faults {len(tf)}", flush=True)
        sgtest.check(now > up and not tf, f"save {i}: the guest rebooted: uptime {up} -> {now}; {tf}")
        sgtest.check_eq(con.sh("md5sum /shm/r | cut -d' ' -f1", 60), want, f"RAM file after save {i}")
        up = now
        if i % 4 == 0:
            for j in range(i - 3, i + 1):
                q.hmp(f"delvm c{j}")
    q.cmd("quit")
    p.wait(30)
    sgtest.qemu_img_check(disk0)
    sys.exit(0)


def load_timed(tag, i):
    """STRESS_LOAD_QMP=1: the load as bench_linux.py sends it (QMP snapshot-load), split:
    sent -> RESUME's server timestamp, and that -> RESUME read here (same clock, the bed's
    time.time()); with SNAPGATE_VMM_TRACE=1 the VMM's trace of it follows."""
    q.events.clear()
    t0 = time.time()
    r = q.cmd("snapshot-load", {"job-id": f"l{i}", "tag": tag, "vmstate": "disk0", "devices": ["disk0"]})
    sgtest.check("return" in r, f"snapshot-load {tag}: {r}")
    e = q.wait_event("RESUME", 300)
    t2 = time.time()
    ts = e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6
    q.wait_job(f"l{i}", 300)
    print(f"load {i}: sent -> RESUME stamped {1e3 * (ts - t0):.1f} ms, -> read here "
          f"{1e3 * (t2 - t0):.1f} ms", flush=True)
    with open(errpath, "rb") as f:
        tr = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.startswith("live: load")]
    for ln in tr[-1:]:
        print("  " + ln, flush=True)


def bench_cycles():
    """STRESS_BENCH=1: bench_linux.py's scenario over and over in one boot: 256 MiB
    of random bytes in tmpfs and a counting loop; save, rm the file, load, then
    rewrite 5 MiB of it: the guest must answer and must not have rebooted."""
    con.sh("dd if=/dev/urandom of=/shm/r bs=1M count=256 2>/dev/null", 600)
    con.sh("(i=0; while :; do i=$((i+1)); echo $i > /shm/cnt; done) &")
    for i in range(1, cycles + 1):
        r = q.hmp(f"savevm b{i}")
        sgtest.check("Error" not in r, f"savevm b{i}: {r!r}")
        con.sh("rm /shm/r", 300)
        if os.environ.get("STRESS_LOAD_QMP") == "1":
            load_timed(f"b{i}", i)
        else:
            r = q.hmp(f"loadvm b{i}")
            sgtest.check("Error" not in r, f"loadvm b{i}: {r!r}")
        con.buf = b""
        up = con.sh("ls /shm/r >/dev/null && cut -d' ' -f1 /proc/uptime", 300)
        out = con.sh("dd if=/dev/urandom of=/shm/r bs=1M count=5 conv=notrunc 2>/dev/null; "
                     "cut -d' ' -f1 /proc/uptime", 300)
        with open(errpath, "rb") as f:
            tf = [ln for ln in f.read().decode(errors="replace").splitlines() if "triple fault" in ln]
        print(f"cycle {i}: uptime after load {up}, after the write {out}, triple faults {len(tf)}",
              flush=True)
        sgtest.check(not tf and float(out) >= float(up), f"cycle {i}: the guest rebooted: {tf}")
        q.hmp(f"delvm b{i}")
    q.cmd("quit")
    p.wait(30)
    sgtest.qemu_img_check(disk0)
    sys.exit(0)


if os.environ.get("STRESS_SAVES") == "1":
    saves_only()
if os.environ.get("STRESS_BENCH") == "1":
    bench_cycles()
stuck = 0
for i in range(1, cycles + 1):
    con.sh(f"echo before-{i}")            # the save follows the prompt at once
    r = q.hmp(f"savevm c{i}")
    sgtest.check("Error" not in r, f"savevm c{i}: {r!r}")
    con.sh(f"echo between-{i}; touch /shm/x{i}")
    r = q.hmp(f"loadvm c{i}")
    sgtest.check("Error" not in r, f"loadvm c{i}: {r!r}")
    con.buf = b""
    t = time.monotonic()
    con.n += 1
    con.s.sendall(b"\n")
    con.s.sendall(f'echo "@@"{con.n}"@@"\n'.encode())
    try:
        con.s.settimeout(1)
        end = time.monotonic() + 40
        while b"\n@@%d@@" % con.n not in con.buf.replace(b"\r", b""):
            if time.monotonic() > end:
                raise TimeoutError
            try:
                chunk = con.s.recv(65536)
            except OSError:
                continue
            con.buf += chunk
        print(f"cycle {i}: answered in {time.monotonic() - t:.1f} s", flush=True)
        con.buf = b""
    except TimeoutError:
        stuck += 1
        print(f"cycle {i}: STUCK; console {con.buf[-300:]!r}", flush=True)
        print("trace of the save and load:\n" + trace_tail(4), flush=True)
        q.hmp("savevm stuck1")
        time.sleep(5)
        q.hmp("savevm stuck2")
        print("trace of the stuck guest (twice, 5 s apart):\n" + trace_tail(4), flush=True)
        break
    if i % 4 == 0:
        for j in range(1, i + 1):
            q.hmp(f"delvm c{j}")

print(f"cycles {i}, stuck {stuck}", flush=True)
q.cmd("quit")
p.wait(30)
sgtest.qemu_img_check(disk0)
sys.exit(1 if stuck else 0)

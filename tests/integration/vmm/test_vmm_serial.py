#!/usr/bin/env python3
"""-serial file: with -daemonize/-pidfile, and -serial unix:PATH,server=on."""
import atexit
import os
import signal
import socket
import subprocess
import time

import sgtest

sgtest.require_kvm()
d = sgtest.tmpdir()
vmm = sgtest.binary("snapgate-vmm")
qsock = os.path.join(d, "q.sock")
out = os.path.join(d, "serial.txt")
pidf = os.path.join(d, "vmm.pid")

# ---- -daemonize: the parent exits 0 once set-up worked --------------------------
t = time.monotonic()
r = subprocess.run([vmm, "-daemonize", "-pidfile", pidf, "-serial", f"file:{out}",
                    "-qmp", f"unix:{qsock},server=on,wait=off"], timeout=30,
                   capture_output=True, text=True)
sgtest.check_eq((r.returncode, r.stderr), (0, ""), "daemonize parent")
pid = int(open(pidf).read())


@atexit.register
def _kill_daemon():
    # A failed check below must not leave the daemon running after the test.
    try:
        with open(f"/proc/{pid}/comm") as f:   # still ours, not a reused pid
            if f.read().strip() == "snapgate-vmm":
                os.kill(pid, signal.SIGKILL)
    except (FileNotFoundError, ProcessLookupError):
        pass


sgtest.check(os.path.exists(f"/proc/{pid}"), "daemon runs")
sgtest.wait_for(lambda: "tick 3" in open(out).read(), 30, "ticks in the serial file")
sgtest.check(open(out, "rb").read().startswith(b"no virtio-blk disk found\r\nsnapgate demo guest ready\r\n"),
             "serial file content")
q = sgtest.QMP(qsock)
q.cmd("quit")
sgtest.wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                open(f"/proc/{pid}/stat").read().split()[2] == "Z", 10, "daemon exit")
sgtest.wait_for(lambda: not os.path.exists(pidf), 5, "pidfile removed")

# a daemon that cannot start reports through the parent
r = subprocess.run([vmm, "-daemonize", "-serial", "none", "-drive", "file=/nonexistent.qcow2"],
                   timeout=30, capture_output=True, text=True)
sgtest.check_eq(r.returncode, 1, "failed daemon exit code")
sgtest.check(r.stderr.startswith("snapgate-vmm: ") and "/nonexistent.qcow2" in r.stderr
             and r.stderr.count("\n") == 1, f"failed daemon stderr {r.stderr!r}")

# ---- -serial unix:PATH,server=on --------------------------------------------------
ssock = os.path.join(d, "serial.sock")
p = sgtest.spawn([vmm, "-serial", f"unix:{ssock},server=on", "-qmp", f"unix:{qsock},server=on,wait=off"],
                 stderr=subprocess.PIPE)
sgtest.wait_for(lambda: os.path.exists(ssock), 10, "serial socket")
s = socket.socket(socket.AF_UNIX)
s.connect(ssock)
s.settimeout(10)
buf = b""
end = time.monotonic() + 20
while b"tick 2\r\n" not in buf and time.monotonic() < end:
    buf += s.recv(4096)
sgtest.check(b"tick 2\r\n" in buf, f"ticks over the serial socket: {buf[-100:]!r}")
q = sgtest.QMP(qsock)
q.cmd("quit")
sgtest.check_eq(p.wait(10), 0, "exit code")
print("ok")

#!/usr/bin/env python3
"""The embedded back end's life cycle: the gateway creates the state dir and
disk0.qcow2, starts snapgate-vmm (greeting version reused on --qmp), refuses
a second gateway on the same state dir, passes --vmm arguments through (a bad
one is a start-up error naming the VMM's message), stops the VMM when it ends,
and exits 2 with a message saying how the VMM died when it is killed."""
import os
import signal
import subprocess
import time

import sgtest

sgtest.require_kvm()
gw_bin = sgtest.binary("snapgate")
sgtest.binary("snapgate-vmm")
sgtest.binary("snapgate-img")
d = sgtest.tmpdir()
state = os.path.join(d, "state")
gw_sock = os.path.join(d, "gw.sock")


def start(*extra, sock=gw_sock):
    p = sgtest.spawn([gw_bin, "--state-dir", state, "--no-monitor", "--qmp", "unix:" + sock, *extra],
                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sgtest.wait_for(lambda: os.path.exists(sock) or p.poll() is not None, 30, "--qmp socket")
    return p


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


gw = start()
if gw.poll() is not None:
    sgtest.fail(f"gateway exited {gw.returncode}: {gw.stderr.read()!r}")
sgtest.check(os.path.exists(os.path.join(state, "disk0.qcow2")), "disk0.qcow2 created")
sgtest.check_eq(os.stat(state).st_mode & 0o077, 0, "state dir is private")
c = sgtest.QMP(gw_sock)
sgtest.check(c.greeting["QMP"]["version"].get("package", "").startswith("snapgate"),
             f"greeting is the VMM's: {c.greeting}")
st = c.cmd("query-status")["return"]
sgtest.check(st["status"] in ("running", "paused", "prelaunch"), f"query-status: {st}")

# A second gateway on the same state dir is refused.
r = subprocess.run([gw_bin, "--state-dir", state, "--no-monitor", "--qmp",
                    "unix:" + os.path.join(d, "second.sock")],
                   stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
sgtest.check_eq(r.returncode, 1, "second gateway on the same state dir")
sgtest.check("in use by another snapgate" in r.stderr, r.stderr)

# SIGTERM: the gateway quits the VMM and exits 0.
vmm = children(gw.pid)
sgtest.check(len(vmm) == 1, f"one VMM child: {vmm}")
gw.send_signal(signal.SIGTERM)
sgtest.check_eq(gw.wait(15), 0, "exit code on SIGTERM")
sgtest.wait_for(lambda: not os.path.exists(f"/proc/{vmm[0]}"), 10, "the VMM to end with the gateway")
c.close()

# The VMM killed under the gateway: exit 2 and a message saying so.
gw = start()
c = sgtest.QMP(gw_sock)
vmm = children(gw.pid)
os.kill(vmm[0], signal.SIGKILL)
rc = gw.wait(15)
err = gw.stderr.read().decode()
sgtest.check_eq(rc, 2, f"exit code when the VMM dies ({err!r})")
sgtest.check("back end died" in err and "killed by signal 9" in err, f"message: {err!r}")
try:
    while True:
        c.recv()
except (EOFError, OSError):
    pass

# A bad --vmm argument: start-up error with the VMM's own words.
r = subprocess.run([gw_bin, "--state-dir", state, "--no-monitor", "--qmp", "unix:" + gw_sock,
                    "--vmm", "-no-such-option", "--"],
                   stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
sgtest.check_eq(r.returncode, 1, "exit code for a bad VMM argument")
sgtest.check("snapgate-vmm exited with status" in r.stderr and "no-such-option" in r.stderr,
             f"message: {r.stderr!r}")
print("ok")

#!/usr/bin/env python3
"""One unix-socket listen helper (qmp_unix.c) for every listener: the
gateway's --qmp, snapgate-vmm's -qmp and -serial unix:PATH,server=on.
It replaces only a stale socket: a regular file at the path is an error and
stays as it was (snapgate-vmm -serial unix:FILE,server=on used to delete
it), a socket somebody listens on is refused, a stale one is replaced; the
new socket is mode 0600 and accepts connections as soon as its name exists;
at exit only the socket made is removed, never what replaced it."""
import os
import socket
import stat
import subprocess

import sg_gateway_util
import sgtest

gw_bin = sgtest.binary("snapgate")
d = sgtest.tmpdir()
be_sock = os.path.join(d, "be.sock")
be = sg_gateway_util.FakeBackend(be_sock)


def gateway(qmp_path):
    return subprocess.run([gw_bin, "--connect", "unix:" + be_sock, "--qmp", "unix:" + qmp_path,
                           "--no-monitor"], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=15)


# A regular file: refused, untouched.
precious = os.path.join(d, "precious.txt")
with open(precious, "w") as f:
    f.write("keep me\n")
r = gateway(precious)
sgtest.check_eq(r.returncode, 1, "--qmp on a regular file: exit code")
sgtest.check("exists and is not a socket" in r.stderr, f"--qmp on a regular file: {r.stderr!r}")
sgtest.check_eq(open(precious).read(), "keep me\n", "the regular file is untouched")

# A live socket: refused, still served by its owner.
live = os.path.join(d, "live.sock")
owner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
owner.bind(live)
owner.listen(4)
r = gateway(live)
sgtest.check_eq(r.returncode, 1, "--qmp on a live socket: exit code")
sgtest.check("another program is listening there" in r.stderr, f"live socket: {r.stderr!r}")
probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
probe.connect(live)
probe.close()
owner.close()

# A stale socket (its owner is gone): replaced; mode 0600; no temporary left.
stale = os.path.join(d, "stale.sock")
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(stale)
s.close()
gw = sgtest.spawn([gw_bin, "--connect", "unix:" + be_sock, "--qmp", "unix:" + stale,
                   "--no-monitor"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
def accepts(path):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        c.connect(path)
        return True
    except OSError:
        return False
    finally:
        c.close()


# The name appears only once the socket listens: the first connect succeeds.
sgtest.wait_for(lambda: gw.poll() is not None or accepts(stale), 10, "--qmp over a stale socket")
sgtest.check(gw.poll() is None, "the gateway replaced the stale socket")
sgtest.check_eq(stat.S_IMODE(os.stat(stale).st_mode), 0o600, "socket mode")
q = sgtest.QMP(stale)
sgtest.check_eq(q.cmd("query-status")["return"]["status"], "running", "served")
sgtest.check_eq(sorted(n for n in os.listdir(d) if n.startswith(".sg-")), [], "no temporary name left")
# At exit only the socket the gateway made is removed: a file someone put at
# the path meanwhile stays.
os.unlink(stale)
with open(stale, "w") as f:
    f.write("mine now\n")
gw.terminate()
gw.wait(10)
sgtest.check_eq(open(stale).read(), "mine now\n", "a file put at the --qmp path survives the exit")
gw = sgtest.spawn([gw_bin, "--connect", "unix:" + be_sock, "--qmp", "unix:" + os.path.join(d, "own.sock"),
                   "--no-monitor"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
sgtest.wait_for(lambda: accepts(os.path.join(d, "own.sock")), 10, "--qmp own.sock")
gw.terminate()
gw.wait(10)
sgtest.check(not os.path.exists(os.path.join(d, "own.sock")), "its own socket is removed at exit")

# snapgate-vmm -serial unix:FILE,server=on and -qmp on a regular file.
vmm = sgtest.binary("snapgate-vmm")
try:
    os.close(os.open("/dev/kvm", os.O_RDWR))
    kvm = True
except OSError:
    kvm = False
if kvm and os.access(vmm, os.X_OK):
    for opt in (["-serial", f"unix:{precious},server=on"], ["-qmp", f"unix:{precious},server=on"]):
        r = subprocess.run([vmm, "-m", "32M"] + opt, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=30)
        sgtest.check(r.returncode != 0, f"snapgate-vmm {opt}: refused (rc {r.returncode})")
        sgtest.check("exists and is not a socket" in r.stderr, f"snapgate-vmm {opt}: {r.stderr!r}")
        sgtest.check_eq(open(precious).read(), "keep me\n", f"snapgate-vmm {opt}: file untouched")
else:
    print("note: snapgate-vmm part not run (no usable /dev/kvm or not built)")
print("ok")

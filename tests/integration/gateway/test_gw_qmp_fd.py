#!/usr/bin/env python3
"""--qmp fd:N: the gateway serves QMP on a listening socket it inherits (as
libvirt passes one, and as systemd socket activation does with LISTEN_FDS),
against a scripted back end (no KVM needed).  Checks: a client connecting to
the inherited socket gets the greeting and query-status through the gateway;
several clients in turn; the gateway never unlinks the socket file it did not
create; a descriptor that is not a
listening socket is a start-up error (exit 1) naming it; under systemd
semantics (LISTEN_PID = the gateway, LISTEN_FDS = 1) fd 3 is served and an fd
outside the passed range is refused."""
import os
import socket
import subprocess

import sg_gateway_util
import sgtest

gw_bin = sgtest.binary("snapgate")
d = sgtest.tmpdir()
be_sock = os.path.join(d, "be.sock")
be = sg_gateway_util.FakeBackend(be_sock, package="fake-fd")


def listener(name):
    path = os.path.join(d, name)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(8)
    return s, path


def check_serves(path, what):
    q = sgtest.QMP(path)
    sgtest.check_eq(q.greeting["QMP"]["version"]["package"], "fake-fd", f"{what}: greeting")
    r = q.cmd("query-status", id="st")
    sgtest.check_eq(r, {"return": {"status": "running", "singlestep": False, "running": True},
                        "id": "st"}, f"{what}: query-status")
    q.close()


def stop(gw, what):
    gw.terminate()
    sgtest.check_eq(gw.wait(10), 0, f"{what}: exit code after SIGTERM")


# 1. libvirt style: any descriptor number, passed with the fd kept open.
srv, path = listener("libvirt.sock")
fd = srv.fileno()
gw = sgtest.spawn([gw_bin, "--connect", "unix:" + be_sock, "--qmp", f"fd:{fd}", "--no-monitor"],
                  stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(fd,))
srv.close()  # only the gateway holds it now: connections must reach the gateway
check_serves(path, "fd:N")
check_serves(path, "fd:N, second client")
# Pipelined clients at once.
qs = [sgtest.QMP(path) for _ in range(5)]
for i, q in enumerate(qs):
    sgtest.check_eq(q.cmd("echo", {"n": i}, id=i), {"return": {"n": i}, "id": i}, f"client {i}")
for q in qs:
    q.close()
# The gateway's children (none here with --connect) and the file: the socket
# file stays, since the gateway did not create it.
stop(gw, "fd:N")
sgtest.check(os.path.exists(path), "the inherited socket's file is left alone at exit")

# 2. systemd socket activation: the socket is fd 3, LISTEN_PID is the gateway's
# own pid (the shell that sets it execs the gateway), LISTEN_FDS=1.


def activated(srv, qmp_arg, fds="1"):
    fd = srv.fileno()
    script = (f'LISTEN_PID=$$ LISTEN_FDS={fds} LISTEN_FDNAMES=qmp exec "$@" 3<&{fd} {fd}<&-'
              if fd != 3 else f'LISTEN_PID=$$ LISTEN_FDS={fds} LISTEN_FDNAMES=qmp exec "$@"')
    return sgtest.spawn(["sh", "-c", script, "sh", gw_bin, "--connect", "unix:" + be_sock,
                         "--qmp", qmp_arg, "--no-monitor"],
                        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(fd,))


srv, path = listener("systemd.sock")
gw = activated(srv, "fd:3")
srv.close()
check_serves(path, "systemd fd:3")
stop(gw, "systemd fd:3")

# An fd outside the activated range is refused before anything starts.
srv, path = listener("systemd2.sock")
gw = activated(srv, "fd:4")
rc = gw.wait(10)
err = gw.stderr.read().decode()
sgtest.check_eq(rc, 1, "fd outside LISTEN_FDS: exit code")
sgtest.check("--qmp fd:4" in err and "systemd passed" in err, f"fd outside LISTEN_FDS: {err!r}")
srv.close()

# 3. Descriptors that cannot be served: exit 1 with a message naming them.
r = subprocess.run([gw_bin, "--connect", "unix:" + be_sock, "--qmp", "fd:0", "--no-monitor"],
                   stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
sgtest.check_eq(r.returncode, 1, "fd:0 (not a socket): exit code")
sgtest.check("--qmp fd:0: fd 0 is not a socket" in r.stderr, f"fd:0 message: {r.stderr!r}")
conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)   # not listening
cfd = conn.fileno()
r = subprocess.run([gw_bin, "--connect", "unix:" + be_sock, "--qmp", f"fd:{cfd}", "--no-monitor"],
                   stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10,
                   pass_fds=(cfd,))
sgtest.check_eq(r.returncode, 1, "unbound socket: exit code")
sgtest.check("is not a listening stream socket" in r.stderr, f"unbound socket message: {r.stderr!r}")
r = subprocess.run([gw_bin, "--connect", "unix:" + be_sock, "--qmp", "fd:77", "--no-monitor"],
                   stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
sgtest.check_eq(r.returncode, 1, "closed fd: exit code")
sgtest.check("fd 77" in r.stderr and "Bad file descriptor" in r.stderr, f"closed fd: {r.stderr!r}")
r = subprocess.run([gw_bin, "--qmp", "fd:x"], capture_output=True, text=True, timeout=10)
sgtest.check_eq(r.returncode, 1, "fd:x: exit code")
sgtest.check("expected fd:N" in r.stderr, f"fd:x message: {r.stderr!r}")
print("ok")

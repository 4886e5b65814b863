#!/usr/bin/env python3
"""--connect back end restarts, against a scripted back end (no KVM):

- the back end vanishes while a --qmp client waits for a reply: that command
  gets a GenericError "back end connection lost ...", the gateway says
  "back end connection lost (...); reconnecting to PATH for up to N s" and
  keeps its front ends: the client stays connected, its commands during the
  outage get GenericError "back end not connected (...)", human-monitor-command
  says so too, and a new client still gets a greeting;
- a back end started again on the same path is found: "back end reconnected",
  the greeting version is the new one, commands, events and HMP work again on
  the same client connection, and nothing reached the new back end before its
  negotiation;
- the interactive monitor: a line waiting on the lost back end ends with an
  error and the prompt comes back, lines during the outage say "not
  connected", after the restart they work;
- a back end that does not come back within --reconnect: exit 2 with a
  message saying so (INTERFACES.md 1.1); --reconnect needs --connect."""
import os
import socket
import subprocess
import time

import sg_gateway_util as U
import sgtest

gw_bin = sgtest.binary("snapgate")
d = sgtest.tmpdir()
be_sock = os.path.join(d, "be.sock")
gw_sock = os.path.join(d, "gw.sock")
log_path = os.path.join(d, "gw.log")
PROMPT = rb"\(snapgate\) "


class Backend(U.FakeBackend):
    def die(self):
        """Really gone: a listening socket only closed while its accept()
        still blocks in another thread would go on accepting."""
        try:
            self.srv.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        super().die()


def restart_backend(path, package):
    """A new back end on the same path (the old one left its socket file)."""
    if os.path.exists(path):
        os.unlink(path)
    return Backend(path, package=package)


def log():
    with open(log_path, errors="replace") as f:
        return f.read()


be = Backend(be_sock, package="fake-first")
logf = open(log_path, "w")
gw = sgtest.spawn([gw_bin, "--connect", "unix:" + be_sock, "--qmp", "unix:" + gw_sock,
                   "--no-monitor", "--reconnect", "20"], stdin=subprocess.DEVNULL,
                  stdout=subprocess.DEVNULL, stderr=logf)
sgtest.wait_for(lambda: os.path.exists(gw_sock) or gw.poll() is not None, 10, "--qmp socket")
sgtest.check(gw.poll() is None, f"gateway exited: {log()!r}")
c = sgtest.QMP(gw_sock)
sgtest.check_eq(c.greeting["QMP"]["version"]["package"], "fake-first", "first greeting")
sgtest.check_eq(c.cmd("echo", {"n": 1})["return"], {"n": 1}, "before the outage")

# The back end vanishes while a command waits for its reply.
c.send_raw('{"execute": "hang", "id": "inflight"}\r\n')
sgtest.wait_for(lambda: "hang" in be.commands(), 5, "hang to reach the back end")
be.die()
r = c.recv()
sgtest.check_eq(r.get("id"), "inflight", f"reply to the command in flight: {r}")
sgtest.check_eq(r.get("error", {}).get("class"), "GenericError", f"class: {r}")
sgtest.check(r["error"]["desc"].startswith("back end connection lost"), f"desc: {r}")
sgtest.wait_for(lambda: "reconnecting to" in log(), 5, "the reconnect message")
msg = log()
sgtest.check(f"snapgate: back end connection lost (" in msg and
             f"); reconnecting to {be_sock} for up to 20 s" in msg, f"message: {msg!r}")

# During the outage: the gateway and its clients stay, commands are refused clearly.
time.sleep(0.5)   # a few reconnection attempts fail meanwhile
sgtest.check(gw.poll() is None, f"the gateway must wait for the back end: {log()!r}")
r = c.cmd("query-status", id="during")
sgtest.check_eq(r.get("id"), "during", "id of a refused command")
sgtest.check_eq(r.get("error", {}).get("class"), "GenericError", f"outage reply: {r}")
sgtest.check(r["error"]["desc"].startswith("back end not connected (") and be_sock in r["error"]["desc"],
             f"outage desc: {r}")
out = c.hmp("info status")
sgtest.check(out.startswith("Error: back end not connected"), f"HMP during the outage: {out!r}")
late = sgtest.QMP(gw_sock)        # front ends still accept clients
sgtest.check_eq(late.greeting["QMP"]["version"]["package"], "fake-first",
                "greeting during the outage (last known version)")

# The back end comes back on the same path.
be2 = restart_backend(be_sock, "fake-second")
sgtest.wait_for(lambda: "back end reconnected" in log(), 10, "the reconnected message")
sgtest.check(f"snapgate: back end reconnected to {be_sock} (QEMU 7.2.0)" in log(), log())
cmds = be2.commands()
sgtest.check(cmds and cmds[0] == "qmp_capabilities", f"negotiation first on the new back end: {cmds}")
sgtest.check_eq(c.cmd("echo", {"n": 2})["return"], {"n": 2}, "same client after the restart")
sgtest.check_eq(c.cmd("query-version")["return"]["package"], "fake-second", "talking to the new back end")
c.cmd("emit", {"event": "STOP"})
c.wait_event("STOP", 5)
late.wait_event("STOP", 5)
sgtest.check_eq(c.hmp("info status"), "VM status: running\r\n", "HMP after the restart")
fresh = sgtest.QMP(gw_sock)
sgtest.check_eq(fresh.greeting["QMP"]["version"]["package"], "fake-second", "greeting after the restart")
fresh.close()
late.close()

# Not coming back in time: exit 2, and the message says why.
be2.die()
t0 = time.monotonic()
sgtest.wait_for(lambda: log().count("reconnecting to") == 2, 5, "second reconnect message")
c.close()
gw.kill()   # (20 s is too long to wait here: a short --reconnect follows)
gw.wait()

be3 = Backend(os.path.join(d, "be3.sock"))
p = subprocess.Popen([gw_bin, "--connect", "unix:" + os.path.join(d, "be3.sock"), "--qmp",
                      "unix:" + os.path.join(d, "gw3.sock"), "--no-monitor", "--reconnect", "1"],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
sgtest.wait_for(lambda: os.path.exists(os.path.join(d, "gw3.sock")) or p.poll() is not None, 10,
                "--qmp socket")
c3 = sgtest.QMP(os.path.join(d, "gw3.sock"))
t0 = time.monotonic()
be3.die()
rc = p.wait(15)
took = time.monotonic() - t0
err = p.stderr.read().decode()
sgtest.check_eq(rc, 2, f"exit code when the back end does not come back ({err!r})")
sgtest.check(0.9 <= took < 6, f"gave up after {took:.1f} s (--reconnect 1)")
sgtest.check("reconnecting to" in err and "the back end died" in err and "within 1 s" in err
             and "last attempt:" in err, f"message: {err!r}")
c3.close()

# --reconnect is about --connect only, and takes seconds.
r = subprocess.run([gw_bin, "--reconnect", "5", "--no-monitor", "--qmp", "unix:" + gw_sock],
                   capture_output=True, text=True, timeout=10)
sgtest.check(r.returncode == 1 and "--reconnect needs --connect" in r.stderr, r.stderr)
r = subprocess.run([gw_bin, "--connect", "unix:" + be_sock, "--reconnect", "-1"],
                   capture_output=True, text=True, timeout=10)
sgtest.check(r.returncode == 1 and "--reconnect: bad number of seconds" in r.stderr, r.stderr)

# The interactive monitor through an outage.
be4_sock = os.path.join(d, "be4.sock")
be4 = Backend(be4_sock)
t = U.Terminal([gw_bin, "--connect", "unix:" + be4_sock], env=U.gateway_env(d))
t.expect(PROMPT, 20)
t.send("hang\r")     # an HMP line the back end never answers
sgtest.wait_for(lambda: any(m.get("arguments", {}).get("command-line") == "hang"
                            for m in be4.received), 10, "the line to reach the back end")
be4.die()
t.expect(rb"back end connection lost \(.*\); reconnecting to .* for up to 30 s", 10)
t.expect(rb"Error: back end connection lost \(the back end closed the QMP connection\)\r\n", 10)
t.expect(PROMPT, 10)
t.send("info status\r")
t.expect(rb"Error: back end not connected", 10)
t.expect(PROMPT, 10)
be5 = restart_backend(be4_sock, "fake-again")
t.expect(rb"back end reconnected", 10)
t.send("info status\r")
t.expect(rb"VM status: running", 10)
t.expect(PROMPT, 10)
t.send("\x04")
sgtest.check_eq(t.wait(10), 0, "exit code at end of input after a reconnection")
print("ok")

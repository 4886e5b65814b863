#!/usr/bin/env python3
"""An interactive shell in a Linux guest through both consoles of the gateway:
`snapgate --serial-to-terminal --web 0 --vmm -kernel ...` on a pseudo-terminal
starts on the guest's serial console (a Linux guest), `echo hello-$RANDOM`
typed there is run by the guest's shell (the expanded number comes back),
Ctrl-C interrupts the guest's foreground command, Ctrl-A c goes to the
monitor (`info status`) and back; the same `echo web-$RANDOM` typed through
the web console's /serial WebSocket runs too, its output seen on the
WebSocket and on the terminal; Ctrl-A x ends the gateway and the VM (exit 0,
clean image).  One guest boot; inside the kvm bed on kvm_pvm."""
import os
import re
import time

import sg_bed_util
import sgtest

guest = sg_bed_util.linux_guest()
sg_bed_util.linux_here_or_bed(__file__, guest, timeout=600)

# ---- with a conventional KVM (here or in the bed) -----------------------------
import sg_gateway_util as U   # noqa: E402
from sg_web_util import WS, URL_RE   # noqa: E402

CA = b"\x01"
PROMPT = rb"\r\n[^\r\n]*# "   # the shell's prompt
d = sgtest.tmpdir("sg-linux-console-")
state = os.path.join(d, "state")   # disk0.qcow2 made by the gateway (snapgate-img)
gw_bin, _, _ = (sgtest.binary(b) for b in ("snapgate", "snapgate-vmm", "snapgate-img"))

t0 = time.monotonic()
t = U.Terminal([gw_bin, "--state-dir", state, "--serial-to-terminal", "--web", "0",
                "--vmm", "-m", "512", "-kernel", os.path.join(guest, "vmlinuz"),
                "-initrd", os.path.join(guest, "initrd.img"), "-append", "console=ttyS0 quiet",
                "--"], env=U.gateway_env(d))
t.expect(rb"This terminal is on the guest's serial console: C-a c switches the terminal to the "
         rb"monitor and back", 60)
url = URL_RE.search(t.out.decode(errors="replace"))
sgtest.check(url, f"web console URL printed: {t.out[-600:]!r}")
t.expect(rb"sg-guest: ready", 400)
t.drain(3)   # the shell's prompt (job control: cttyhack sh -l)
t.send("\r")
t.expect(PROMPT, 60)
print(f"boot to shell prompt through the gateway: {time.monotonic() - t0:.1f} s", flush=True)


def shell(line, want, timeout=60):
    """Types a line at the guest's shell on the terminal; returns the match of `want`
    (a regex for the output, which the echo of the typed line does not match)."""
    t.send(line + "\r")
    return t.expect(want, timeout)


m = shell("echo hello-$RANDOM", rb"\r\nhello-(\d+)\r*\n")
print("terminal: the guest ran echo hello-$RANDOM:", m.group(0).decode().strip(), flush=True)
# Ctrl-C is the guest's: it ends the shell's foreground sleep.
t.send("sleep 300\r")
t.expect(rb"sleep 300\r*\n", 30)
time.sleep(1)
t.send(b"\x03")
t.expect(PROMPT, 60)   # within the sleep's 300 s: Ctrl-C reached the guest's shell
shell("echo after-$((6*7))", rb"\r\nafter-42\r*\n")

# Over to the monitor and back.
t.send(CA + b"c")
t.expect(rb"\(snapgate\) ", 30)
t.send("info status\r")
t.expect(rb"VM status: running", 60)
t.expect(rb"\(snapgate\) ", 30)
t.send(CA + b"c")
t.send("\r")
t.expect(PROMPT, 30)
m = shell("echo back-$((1+2))", rb"\r\nback-3\r*\n")

# The web console's /serial: the same shell.
status, ws = WS.open(url.group(2), "/serial", token=url.group(3), protocol="serial")
sgtest.check_eq(status, 101, "/serial upgrade")
ws.sock.settimeout(60)
pos = len(t.out)
ws.send(b"echo web-$RANDOM\r", binary=True)
got, end = b"", time.monotonic() + 60
rx = re.compile(rb"\r\nweb-(\d+)\r*\n")
while not rx.search(got):
    sgtest.check(time.monotonic() < end, f"web-$RANDOM output on /serial: {got[-600:]!r}")
    op, data = ws.recv()
    got += data
web = rx.search(got).group(1)
print(f"web /serial: the guest ran echo web-$RANDOM: web-{web.decode()}", flush=True)
t.expect(rb"web-" + web, 30)
sgtest.check(t.pos > pos, "the terminal shows what the web console typed")
ws.close()

# Ctrl-A x: the gateway and the VM end.
t.send(CA + b"x")
t.expect(rb"snapgate: terminated \(C-a x\)", 30)
rc = t.wait(60)
sgtest.check_eq(rc, 0, "exit code after C-a x")
sgtest.qemu_img_check(os.path.join(state, "disk0.qcow2"), allow_leaks=True)
print("ok")

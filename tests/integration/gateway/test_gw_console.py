#!/usr/bin/env python3
"""The terminal shared between the guest's serial console and the monitor
(--serial-to-terminal on a tty, QEMU's "-serial mon:stdio" keys): with the
demo guest it starts on the monitor; Ctrl-A h lists the keys; Ctrl-A c
attaches the terminal to the guest console, where typed keys reach the
guest's UART (the demo guest answers a line with "serial input: LINE",
control keys as ^X) and not the monitor (a typed "quit" does not quit),
Ctrl-C is a key for the guest (not SIGINT), Ctrl-A Ctrl-A sends one Ctrl-A
and the tty is raw (no ISIG, no ICRNL); Ctrl-A c again gives the prompt back
with the line that was being typed; switching while a savevm runs; the web
console's /serial input reaches the same UART; Ctrl-A x quits with exit 0 and
a clean image.  QEMU 7.2's -serial mon:stdio is the oracle for the keys and
the console's tty mode."""
import os
import random
import re
import shutil
import termios

import sg_gateway_util as U
import sgtest
from sg_web_util import URL_RE, WS

sgtest.require_kvm()
gw_bin = sgtest.binary("snapgate")
sgtest.binary("snapgate-vmm")
sgtest.binary("snapgate-img")
d = sgtest.tmpdir("sg-console-")
state = os.path.join(d, "state")
PROMPT = rb"\(snapgate\) "
CA = b"\x01"
# The tty bits that decide who gets a key: compared with QEMU's console.
TTY_BITS = ((0, termios.ICRNL, "ICRNL"), (0, termios.IXON, "IXON"), (1, termios.OPOST, "OPOST"),
            (3, termios.ISIG, "ISIG"), (3, termios.ICANON, "ICANON"), (3, termios.ECHO, "ECHO"),
            (3, termios.IEXTEN, "IEXTEN"))


def tty_bits(fd):
    a = termios.tcgetattr(fd)
    return {name: bool(a[i] & bit) for i, bit, name in TTY_BITS}


def help_keys(text):
    return re.findall(rb"C-a (\S+) +\S", text)


# QEMU 7.2's -serial mon:stdio, the oracle: its keys, its tty on the console.
qemu = shutil.which("qemu-system-x86_64")
q_keys = q_tty = None
if qemu:
    q = U.Terminal([qemu, "-S", "-nodefaults", "-display", "none", "-serial", "mon:stdio"],
                   env=U.gateway_env(d))
    q.drain(0.5)
    q.send(CA + b"h")
    q.expect(rb"C-a C-a  sends C-a", 20)
    q_keys = help_keys(q.out)
    q_tty = tty_bits(q.fd)        # QEMU starts on the guest console
    print("QEMU 7.2 mux keys", q_keys, "console tty", q_tty)
    q.send(CA + b"c")
    q.expect(rb"\(qemu\) ", 20)
    q.send(CA + b"x")
    q.expect(rb"QEMU: Terminated", 20)
    sgtest.check_eq(q.wait(20), 0, "QEMU's exit code after C-a x")
else:
    print("note: no qemu-system-x86_64: the comparison with QEMU's mux is left out")

# A guest that keeps 256 MiB dirty (as test_gw_vmm_monitor.py): a save lasts
# long enough to switch consoles while it runs.
t = U.Terminal([gw_bin, "--state-dir", state, "--serial-to-terminal", "--web", "0",
                "--vmm", "-m", "512", "-append", "dirty=256M,churn=512M", "--"], env=U.gateway_env(d))
t.expect(rb"The guest's console output is shown above the prompt: C-a c switches the terminal "
         rb"to the guest's serial console \(its keyboard\) and back, C-a h lists the keys", 30)
t.expect(PROMPT, 30)
t.expect(rb"tick 3\b", 60)


def lflag():
    return termios.tcgetattr(t.fd)[3]


def iflag():
    return termios.tcgetattr(t.fd)[0]


sgtest.check(lflag() & termios.ISIG, "at the prompt Ctrl-C is a signal (cancels, clears the line)")

# Ctrl-A h: the keys, above the prompt.
t.send(CA + b"h")
m = t.expect(rb"C-a h    print this help\r?\nC-a x    exit snapgate[^\n]*\nC-a c    switch between "
             rb"the guest's serial console and the monitor\r?\nC-a C-a  sends C-a", 10)
if q_keys:
    ours = help_keys(m.group(0))
    sgtest.check(set(ours) <= set(q_keys), f"our keys {ours} are QEMU's ({q_keys})")

# A half-typed line, then over to the guest console.
t.send("info sta")
t.expect(rb"info sta", 5)
t.send(CA + b"c")
sgtest.wait_for(lambda: not lflag() & termios.ISIG, 5, "raw tty on the guest console")
sgtest.check(not lflag() & (termios.ICANON | termios.ECHO), "no canonical mode, no echo on the console")
sgtest.check(not iflag() & termios.ICRNL, "Enter reaches the guest as CR")
if q_tty:
    sgtest.check_eq(tty_bits(t.fd), q_tty, "the console's tty mode is QEMU's")
word = f"hello-{random.randrange(10**6)}"
t.send(word + "\r")
t.expect(rb"serial input: " + word.encode() + rb"\r*\n", 10)
# Output goes on byte for byte: the guest's ticks keep coming.
m = t.expect(rb"tick (\d+)\r*\n", 10)
t.expect(rb"tick %d\r*\n" % (int(m.group(1)) + 1), 10)
# Keys are the guest's: "quit" does not quit, Ctrl-C is a key, C-a C-a one C-a,
# a C-a followed by another key is dropped (as QEMU's mux does).
t.send("quit\r")
t.expect(rb"serial input: quit\r*\n", 10)
t.send(b"a\x03b" + CA + CA + b"c" + CA + b"zd\r")
t.expect(rb"serial input: a\^Cb\^Acd\r*\n", 10)
sgtest.check(t.status is None and os.waitpid(t.pid, os.WNOHANG) == (0, 0),
             "the gateway still runs after 'quit' and Ctrl-C typed on the guest console")
# Ctrl-A h works there too.
t.send(CA + b"h")
t.expect(rb"C-a c    switch between the guest's serial console and the monitor", 10)

# Back to the monitor: the prompt with the half-typed line; finish it.
t.send(CA + b"c")
t.expect(PROMPT + rb"info sta", 10)
sgtest.wait_for(lambda: lflag() & termios.ISIG, 5, "the monitor's tty mode is back")
t.send("tus\r")
t.expect(rb"tus\r?\n", 10)
t.expect(rb"VM status: running", 10)
t.expect(PROMPT, 10)
# While at the prompt the guest's lines are shown above it again.
t.expect(rb"tick \d+\r?\n", 10)



def round_trip(typed, timeout, line, want):
    """C-a c to the guest console, a line for the guest, C-a c back, a monitor line."""
    t.send(CA + b"c")
    sgtest.wait_for(lambda: not lflag() & termios.ISIG, 5, "raw tty on the guest console")
    t.send(typed + "\r")
    t.expect(rb"serial input: " + typed.encode() + rb"\r*\n", timeout)
    t.send(CA + b"c")
    t.expect(PROMPT, 60)
    t.send(line + "\r")
    t.expect(want, 10)
    t.expect(PROMPT, 10)


# A second round trip from an empty line: nothing is left over from the first.
round_trip("again", 10, "info status", rb"VM status: running")
# Switching while a line runs: its progress bar goes, the guest console
# works, and back on the monitor the bar (then the prompt) returns.
t.send("savevm busy\r")
t.expect(rb"hmp-savevm-\d+ \[[# ]+\] +\d+%", 30)
round_trip("during-save", 30, "info snapshots", rb"busy")

# The web console's /serial types into the same UART (one input path): the
# guest's answer reaches the WebSocket and the terminal.
url = URL_RE.search(t.out.decode(errors="replace"))
sgtest.check(url, "web console URL printed")
st, ws = WS.open(url.group(2), "/serial", token=url.group(3), protocol="serial")
sgtest.check_eq(st, 101, "/serial upgrade")
ws.sock.settimeout(20)
ws.send(b"from-the-web\r", binary=True)
got = b""
while b"serial input: from-the-web" not in got:
    got += ws.recv()[1]
t.expect(rb"serial input: from-the-web", 10)
ws.close()

# Ctrl-A x: the gateway and its VMM end, exit 0.
t.send(CA + b"x")
t.expect(rb"snapgate: terminated \(C-a x\)", 10)
rc = t.wait(30)
sgtest.check_eq(rc, 0, "exit code after C-a x")
sgtest.check(not re.search(rb"back end died", t.out), f"orderly end: {t.out[-400:]!r}")
sgtest.qemu_img_check(os.path.join(state, "disk0.qcow2"), allow_leaks=True)
print("ok")

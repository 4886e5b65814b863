#!/usr/bin/env python3
"""The interactive monitor on a pseudo-terminal, against a scripted back end
(no KVM): prompt, a command's output, Tab completion of command names, an
event printed above the prompt while a line is being typed (the typed text
survives), Ctrl-C clearing the line, history file, end of input leaving a
--connect back end running (exit 0), `quit` quitting the back end (exit 0), the back end dying while a line
waits for it (message, exit 2),
and the prompt-less line mode when stdin is not a terminal."""
import os
import re
import subprocess
import time

import sg_gateway_util as U
import sgtest

gw_bin = sgtest.binary("snapgate")
d = sgtest.tmpdir()
be_sock = os.path.join(d, "be.sock")
gw_sock = os.path.join(d, "gw.sock")
be = U.FakeBackend(be_sock)
PROMPT = rb"\(snapgate\) "

t = U.Terminal([gw_bin, "--connect", "unix:" + be_sock, "--qmp", "unix:" + gw_sock],
               env=U.gateway_env(d))
t.expect(PROMPT, 20)
t.send("info status\r")
t.expect(rb"VM status: running", 10)
t.expect(PROMPT, 10)

# Tab completes a command name.
t.send("system_r\t")
t.expect(rb"system_reset", 5)
t.send("\x15")  # kill the line

# An event arrives while "info st" is typed: printed above, the line survives.
t.send("info st")
t.expect(rb"info st", 5)
q = sgtest.QMP(gw_sock)
q.cmd("emit", {"event": "STOP"})
m = t.expect(rb"\[event\] STOP", 5)
t.expect(PROMPT + rb"info st", 5)
t.send("atus\r")
t.expect(rb"VM status: running", 10)
t.expect(PROMPT, 10)

# Ctrl-C drops the line being typed.
t.send("delvm something")
t.expect(rb"delvm something", 5)
time.sleep(0.2)
t.send("\x03")
t.expect(rb"\^C", 5)
t.expect(PROMPT, 5)
t.send("\r")
t.expect(PROMPT, 5)
sgtest.check(b"does not exist" not in t.out and "delvm" not in " ".join(be.commands()),
             "the cleared line was not executed")

# End of input: the gateway leaves, the attached back end is not told to quit.
t.send("\x04")
sgtest.check_eq(t.wait(10), 0, "exit code at end of input")
sgtest.check("quit" not in be.commands(), f"EOF must not quit a --connect back end: {be.commands()}")
hist = open(os.path.join(d, ".snapgate_history")).read().split("\n")
sgtest.check("info status" in hist, f"history file: {hist}")
q.close()

# `quit` quits the back end and the gateway.
t = U.Terminal([gw_bin, "--connect", "unix:" + be_sock], env=U.gateway_env(d))
t.expect(PROMPT, 20)
t.send("quit\r")
sgtest.check_eq(t.wait(10), 0, "exit code after quit")
sgtest.check("quit" in be.commands(), "quit reached the back end")

# With --reconnect 0, the back end dying while a line waits for it: a clear
# message, exit 2 (the default, reconnecting, is in test_gw_reconnect.py).
be2 = U.FakeBackend(os.path.join(d, "be2.sock"))
t = U.Terminal([gw_bin, "--connect", "unix:" + os.path.join(d, "be2.sock"), "--reconnect", "0"],
               env=U.gateway_env(d))
t.expect(PROMPT, 20)
t.send("some_qemu_command\r")
t.expect(rb"fake: some_qemu_command", 10)   # unknown lines go to the back end's HMP
t.expect(PROMPT, 10)
t.send("hang\r")
sgtest.wait_for(lambda: any(m.get("arguments", {}).get("command-line") == "hang"
                            for m in be2.received), 10, "the line to reach the back end")
be2.die()
t.expect(rb"the back end died", 10)
sgtest.check_eq(t.wait(10), 2, "exit code when the back end dies mid-command")

# No terminal: lines run in order without prompt.
r = subprocess.run([gw_bin, "--connect", "unix:" + be_sock], input="info status\nhelp info\n",
                   capture_output=True, text=True, timeout=20)
sgtest.check_eq(r.returncode, 0, f"line mode exit code ({r.stderr!r})")
sgtest.check(r.stdout.startswith("VM status: running\n"), f"line mode output: {r.stdout!r}")
sgtest.check("(snapgate)" not in r.stdout, f"no prompt in line mode: {r.stdout!r}")
print("ok")

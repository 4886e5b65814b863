#!/usr/bin/env python3
"""The interactive monitor as an operator meets it (issue 18), with the
bundled VMM on a pseudo-terminal:

- the banner names snapgate's own version and the QEMU version the VMM
  imitates, as such;
- lines typed while a save runs are shown after the progress bar (" | 2
  queued", "> info sta"), never glued onto it; Ctrl-C cancels the save and
  drops them, naming them: `delvm keep` does not run;
- a line that fails drops the lines typed behind it, naming them;
- Tab completes a tag with a space without typing its quote;
- `loadvm -i ID` says which tag it loads, before the job runs;
- `help` and an unknown command in the snapgate profile are clear;
- over --qmp (qemu-7.2 profile), `help`, `?`, `help savevm`, `help nosuch`,
  `info`, `info nosuch`, `nosuch` are byte for byte what the live QEMU 7.2
  answers (when qemu-system-x86_64 is installed);
- a gateway that leaves while a line runs (the VMM killed during a save)
  exits 2 and gives the terminal its echo back."""
import fcntl
import os
import re
import signal
import struct
import termios
import time

import sg_gateway_util as U
import sgtest

sgtest.require_kvm()
gw_bin = sgtest.binary("snapgate")
sgtest.binary("snapgate-vmm")
d = sgtest.tmpdir("sg-monitor-op-")
state = os.path.join(d, "state")
gw_sock = os.path.join(d, "gw.sock")
PROMPT = rb"\(snapgate\) "
BAR = rb"hmp-savevm-\d+ \[[# ]+\] +\d+%"

# 512 MiB the guest keeps dirty and rewrites (churn=: an incremental save
# writes only what changed since the last one): every save lasts long enough
# (about 2 s) to type behind it.
t = U.Terminal([gw_bin, "--state-dir", state, "--serial-to-terminal", "--qmp", "unix:" + gw_sock,
                "--vmm", "-m", "1024", "-append", "dirty=512M,churn=512M", "--"], env=U.gateway_env(d))
fcntl.ioctl(t.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
m = t.expect(rb"snapgate 0\.1\.0 monitor \(back end: snapgate-vmm 0\.1\.0, answering QMP as "
             rb"QEMU 7\.2\.0\) - type 'help' for more information", 30)
t.expect(PROMPT, 30)
t.expect(rb"tick 40\b", 60)   # the guest has dirtied its 512 MiB by now


def clean(b):
    """Text without escapes, \r, the guest's tick lines and events."""
    s = b.decode(errors="replace")
    s = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", s)
    return "\n".join(ln for ln in s.replace("\r", "").split("\n")
                     if ln.strip() and not re.fullmatch(r"tick \d+|\[event\] .*", ln.strip()))


def command(line, timeout=120):
    t.send(line + "\r")
    t.expect(re.escape(line.encode()), 10)
    begin = t.pos
    m = t.expect(PROMPT, timeout)
    return clean(t.out[begin:m.start()]).strip()


def wait_jobs_done(timeout=60):
    """Until the back end runs no job (the monitor's line behind it may still
    be drawing its bar): query-jobs over the gateway's --qmp."""
    qj = sgtest.QMP(gw_sock)
    end = time.monotonic() + timeout
    while any(j["status"] != "concluded" for j in qj.cmd("query-jobs")["return"]):
        sgtest.check(time.monotonic() < end, "a job still runs after 60 s")
        time.sleep(0.05)
    qj.close()


out = command("savevm keep")
sgtest.check("Error" not in out, f"savevm keep: {out!r}")

# ---- typed ahead during a save, then Ctrl-C ---------------------------------
# Typed at once behind the save :
# the lines wait, the bar shows them, Ctrl-C comes at the first bar.
t.send("savevm big\r")
t.send("delvm keep\r")
t.send("info status\r")
t.send("info sta")
t.expect(BAR + rb"[^|\r]* \| 2 queued \| > info sta", 60)
t.send("\x03")
seen = t.out[t.pos - 400:]
sgtest.check(not re.search(rb"(Ctrl-C cancels|MiB)[a-z]", t.out[t.out.find(b"savevm big"):]),
             f"typed text glued onto the bar: {seen!r}")
t.expect(rb"\^C: cancelling the running job", 10)
t.expect(rb"\(\^C: dropped 2 typed-ahead lines: 'delvm keep', 'info status'\)", 10)
m = t.expect(PROMPT, 60)
out = command("info snapshots")
sgtest.check("keep" in out and "big" not in out,
             f"after Ctrl-C: keep still there, big not saved: {out!r}")

# ---- a failed line drops what was typed behind it ---------------------------
t.send("savevm big2\r")
t.send("loadvm nosuch\r")
t.send("delvm keep\r")
t.expect(rb"\| 2 queued", 60)
t.expect(rb"Error: Snapshot 'nosuch' does not exist", 120)
t.expect(rb"\(the command failed: dropped 1 typed-ahead line: 'delvm keep'\)", 10)
t.expect(PROMPT, 30)
out = command("info snapshots")
sgtest.check("keep" in out and "big2" in out, f"delvm keep must not have run: {out!r}")

# ---- Tab completes a tag with a space without its quote ----------------------
out = command('savevm "with space"')
sgtest.check("Error" not in out, f"savevm with space: {out!r}")
time.sleep(0.5)   # the completion cache is refreshed when the job's event arrives
t.send("delvm with sp\t")
t.expect(rb'delvm "with space" ', 10)
t.send("\r")
t.expect(PROMPT, 60)
wait_jobs_done()   # a loaded machine (CI) can still show the delvm's bar here
out = command("info snapshots")
sgtest.check("with space" not in out, f"delvm via completion: {out!r}")

# ---- loadvm -i: which tag, said before the job runs ---------------------------
ids = re.findall(r"^(\d+)\s+keep\s", out, re.M)
sgtest.check(ids, f"ID of keep: {out!r}")
t.send(f"loadvm -i {ids[0]}\r")
note = t.expect(rb"\(snapshot ID %s, tag 'keep'\)" % ids[0].encode(), 30)
m = t.expect(PROMPT, 120)
bar = re.search(rb"hmp-loadvm-\d+ \[", t.out[:m.start()])
sgtest.check(bar is None or bar.start() > note.start(), "the note comes before the job's bar")

# ---- snapgate profile: help and unknown commands ------------------------------
out = command("help")
sgtest.check("loadvm [-t|-i] NAME -- " in out and "info [subcommand] -- " in out, out)
out = command("info registers")
sgtest.check_eq(out, "Error: 'info registers' needs a back end with its own human monitor; "
                "this back end has none ('help' lists the commands snapgate runs itself)",
                "info registers with snapgate-vmm")
out = command("nosuch")
sgtest.check_eq(out, "unknown command: 'nosuch' ('help' lists the commands)", "nosuch")

# ---- qemu-7.2 profile over --qmp: QEMU 7.2's own replies -------------------
q = sgtest.QMP(gw_sock)
lines = ["help", "?", "help savevm", "help nosuch", "info", "info nosuch", "nosuch",
         "help info snapshots", "help info nosuch", "info jobs", "help q"]
ours = {ln: q.hmp(ln) for ln in lines}
sgtest.check(ours["help"].startswith("announce_self [interfaces] [id] -- "), ours["help"][:200])
sgtest.check_eq(ours["help nosuch"], "unknown command: 'nosuch'\r\n", "help nosuch")
sgtest.check_eq(ours["info nosuch"], "unknown command: 'info nosuch'\r\n", "info nosuch")
sgtest.check_eq(ours["info jobs"], "unknown command: 'info jobs'\r\n", "info jobs (qemu-7.2)")
if os.path.exists("/usr/bin/qemu-system-x86_64"):
    img = os.path.join(d, "q.qcow2")
    sgtest.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "16M"])
    proc, qsock = sgtest.start_qemu([f"file={img},if=none,id=drive0,format=qcow2"], d)
    qq = sgtest.QMP(qsock)
    for ln in lines:
        sgtest.check_eq(ours[ln], qq.hmp(ln), f"qemu-7.2 profile with snapgate-vmm: {ln!r}")
    proc.kill()
    proc.wait()
    print(f"qemu-7.2 profile: {len(lines)} help/unknown replies byte-identical to QEMU 7.2")
else:
    print("qemu-system-x86_64 not installed: not compared with the live QEMU")

# ---- the gateway leaving while a line runs gives the terminal back ---------
t.send("savevm last\r")
t.expect(BAR, 60)
lflag = termios.tcgetattr(t.fd)[3]
sgtest.check(not lflag & termios.ECHO, "no tty echo while a line runs (typed text is ours to show)")
for kid in open(f"/proc/{t.pid}/task/{t.pid}/children").read().split():
    os.kill(int(kid), signal.SIGKILL)   # the VMM dies in the middle of the save
sgtest.check_eq(t.wait(60), 2, "exit code when the back end dies")
lflag = termios.tcgetattr(t.fd)[3]
sgtest.check(lflag & termios.ECHO and lflag & termios.ICANON,
             "the terminal has its echo and line editing back after the gateway left")
print("monitor: typed-ahead lines shown and dropped, completion, notes, help all as designed")

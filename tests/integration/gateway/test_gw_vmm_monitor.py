#!/usr/bin/env python3
"""The whole path with the bundled snapgate-vmm (the README's demo): the
gateway starts the VMM itself, the operator types savevm / info snapshots /
loadvm / delvm at the interactive monitor on a pseudo-terminal, and the
guest really goes back (its "tick N" counter on the serial console drops to
the value it had at savevm).  Meanwhile two QMP clients on --qmp both receive
the job events, human-monitor-command answers in the qemu-7.2 profile, Tab
completes command names and snapshot tags, Ctrl-C clears the line, quit ends
the gateway and the VMM with exit 0 and a clean image.  A save in progress
shows a progress bar and Ctrl-C cancels it."""
import os
import re
import time

import sg_gateway_util as U
import sgtest

sgtest.require_kvm()
gw_bin = sgtest.binary("snapgate")
sgtest.binary("snapgate-vmm")
sgtest.binary("snapgate-img")
d = sgtest.tmpdir()
state = os.path.join(d, "state")
gw_sock = os.path.join(d, "gw.sock")
PROMPT = rb"\(snapgate\) "
TICK = re.compile(rb"tick (\d+)")

# 256 MiB of RAM that the guest keeps filled (dirty=, not zero pages, which a
# save skips) and rewrites at 512 MiB/s (churn=: an incremental save writes
# what changed) make a save last long enough to see its progress bar and
# cancel it with Ctrl-C.
t = U.Terminal([gw_bin, "--state-dir", state, "--serial-to-terminal", "--qmp", "unix:" + gw_sock,
                "--vmm", "-m", "512", "-append", "dirty=256M,churn=512M", "--"], env=U.gateway_env(d))
t.expect(PROMPT, 30)
sgtest.check(os.path.exists(os.path.join(state, "disk0.qcow2")), "disk0.qcow2 created on first use")


def last_tick(upto=None):
    ticks = TICK.findall(t.out if upto is None else t.out[:upto])
    return int(ticks[-1]) if ticks else None


def wait_ticks(n, timeout=60):
    """Waits until the guest printed n more ticks."""
    start = last_tick() or 0
    end = time.monotonic() + timeout
    while (last_tick() or 0) < start + n:
        if time.monotonic() > end:
            sgtest.fail(f"guest does not tick: {t.out[-800:]!r}")
        t.drain(0.2)
    return last_tick()


def command(line, timeout=120):
    """Types a line; returns the output between the echoed line and the next prompt,
    with the guest's tick lines left out."""
    t.send(line + "\r")
    t.expect(re.escape(line.encode()), 10)
    begin = t.pos
    m = t.expect(PROMPT, timeout)
    text = t.out[begin:m.start()].decode(errors="replace")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    lines = [ln for ln in text.replace("\r", "").split("\n")
             if ln.strip() and not TICK.fullmatch(ln.strip().encode()) and ln.strip() != "(snapgate)"]
    return "\n".join(lines)


wait_ticks(3)
a = sgtest.QMP(gw_sock)
b = sgtest.QMP(gw_sock)

# savevm at the monitor
before_save = last_tick()
out = command("savevm first")
sgtest.check("Error" not in out, f"savevm first: {out!r}")
after_save = last_tick()
out = command("info snapshots")
sgtest.check("first" in out, f"info snapshots lists 'first': {out!r}")

# let the guest run on, then go back
wait_ticks(20)
before_load = last_tick()
pos = len(t.out)
out = command("loadvm first")
sgtest.check("Error" not in out, f"loadvm first: {out!r}")
t.drain(1.0)
resumed = [int(x) for x in TICK.findall(t.out[pos:])]
sgtest.check(resumed, "the guest ticks after loadvm")
first_after = resumed[-1] if len(resumed) == 1 else min(resumed)
sgtest.check(before_save - 1 <= first_after <= after_save + 15 and first_after < before_load - 10,
             f"guest went back: saved at tick {before_save}..{after_save}, was at {before_load}, "
             f"after loadvm ticks {resumed[:10]}")

# both QMP clients saw the monitor's jobs
for who, cl in (("a", a), ("b", b)):
    for kind in ("savevm", "loadvm"):
        cl.wait_event("JOB_STATUS_CHANGE", 10,
                      lambda e, k=kind: e["data"]["id"].startswith(f"hmp-{k}-")
                      and e["data"]["status"] == "concluded")

# human-monitor-command on --qmp: qemu-7.2 profile
sgtest.check_eq(a.hmp("savevm second"), "", "HMC savevm reply")
sgtest.check("second" in b.hmp("info snapshots"), "HMC info snapshots lists 'second'")
sgtest.check_eq(b.hmp("loadvm nosuch"),
                "Error: Snapshot 'nosuch' does not exist in one or more devices\r\n",
                "HMC loadvm of a missing tag")
sgtest.check_eq(a.hmp("delvm second"), "", "HMC delvm reply")
sgtest.check("second" not in a.hmp("info snapshots"), "'second' deleted")

# Tab completion: command names and snapshot tags
t.send("savev\t")
t.expect(rb"savevm ", 5)
t.send("\x15")            # readline: kill the line
t.send("loadvm fi\t")
t.expect(rb"first", 5)
time.sleep(0.2)
t.send("\x03")            # Ctrl-C clears the line
t.expect(rb"\^C", 5)
t.expect(PROMPT, 5)
out = command("info status")
sgtest.check("running" in out, f"info status after Ctrl-C: {out!r}")

# A running save shows a progress bar; Ctrl-C cancels it and nothing is saved.
t.send("savevm doomed\r")
t.expect(rb"hmp-savevm-\d+ \[[# ]+\] +\d+%", 30)
t.send("\x03")
t.expect(rb"cancelling the running job", 5)
m = t.expect(PROMPT, 60)
tail = t.out[m.start() - 400:m.start()].decode(errors="replace").lower()
sgtest.check("cancel" in tail and "error" in tail, f"cancelled save reports it: {tail!r}")
out = command("info snapshots")
sgtest.check("doomed" not in out, f"a cancelled save leaves no snapshot: {out!r}")
sgtest.check_eq(a.cmd("query-jobs")["return"], [], "no job left after the cancel")

# delvm at the monitor
out = command("delvm first")
sgtest.check("Error" not in out, f"delvm first: {out!r}")
out = command("info snapshots")
sgtest.check("first" not in out, f"'first' is gone: {out!r}")

# quit: the gateway and its VMM end
a.close()
b.close()
t.send("quit\r")
rc = t.wait(30)
sgtest.check_eq(rc, 0, "exit code after quit")
sgtest.check(not os.path.exists(gw_sock), "--qmp socket removed")
sgtest.qemu_img_check(os.path.join(state, "disk0.qcow2"), allow_leaks=True)
hist = open(os.path.join(d, ".snapgate_history")).read()
sgtest.check("savevm first" in hist and "loadvm first" in hist, f"history file: {hist!r}")
print("ok")

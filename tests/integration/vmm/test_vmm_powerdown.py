#!/usr/bin/env python3
"""system_powerdown (the ACPI power button) on the demo guest, with QEMU 7.2 as the oracle:
the same QMP and HMP inputs to `qemu-system-x86_64 -S` (no OS: SeaBIOS finds nothing to
boot) and to snapgate-vmm with the demo guest give the same replies and the same POWERDOWN
events (no data member; QEMU 7.2 sends the event before the reply), in prelaunch, running and paused, and the VM stays
in its run state (neither has an ACPI OS that would act on the button).  snapgate-vmm's demo
guest keeps ticking.  Then the gateway in front of snapgate-vmm: `system_powerdown` typed at
the (snapgate) monitor prints nothing and its QMP clients get POWERDOWN."""
import os
import re
import time

import sg_gateway_util as U
import sgtest
from sg_vmm_util import VMM

sgtest.require_kvm()
sgtest.require_tool("qemu-system-x86_64")
d = sgtest.tmpdir("sgpowerdown-")


def no_id(reply):
    reply = dict(reply)
    reply.pop("id", None)
    return reply


def powerdown(q, how):
    """One press: the reply, the events read before it, the event's shape, what followed
    within 0.3 s, the run state."""
    q.events.clear()
    if how == "qmp":
        reply = no_id(q.cmd("system_powerdown"))
    else:
        reply = no_id(q.cmd("human-monitor-command", {"command-line": "system_powerdown"}))
    early = [e["event"] for e in q.events]
    ev = q.wait_event("POWERDOWN", 10)
    sgtest.check(isinstance(ev.get("timestamp", {}).get("seconds"), int), f"POWERDOWN timestamp: {ev}")
    shape = {"keys": sorted(ev), "event": ev["event"]}
    time.sleep(0.3)          # a second event, or a run-state change, would show now
    q.cmd("query-version")
    later = [e["event"] for e in q.events]
    status = q.cmd("query-status")["return"]
    return {"reply": reply, "before-reply": early, "event": shape, "after": later,
            "status": (status["status"], status["running"])}


def scenario(q, running_check):
    out = {"prelaunch": powerdown(q, "qmp")}
    q.cmd("cont")
    q.wait_event("RESUME", 10)
    out["running-qmp"] = powerdown(q, "qmp")
    running_check()
    out["running-hmp"] = powerdown(q, "hmp")
    out["twice"] = [powerdown(q, "qmp")["reply"], powerdown(q, "qmp")["reply"]]
    running_check()
    out["bad-arg"] = no_id(q.cmd("system_powerdown", {"force": True}))
    out["hmp-extra"] = q.hmp("system_powerdown now")
    out["hmp-help"] = q.hmp("help system_powerdown")
    out["listed"] = "system_powerdown" in [c["name"] for c in q.cmd("query-commands")["return"]]
    q.cmd("stop")
    q.wait_event("STOP", 10)
    out["paused"] = powerdown(q, "qmp")
    out["paused-hmp"] = powerdown(q, "hmp")
    q.cmd("cont")
    q.wait_event("RESUME", 10)
    running_check()
    return out


# ---- QEMU 7.2 --------------------------------------------------------------------
t0 = time.monotonic()
proc, sock = sgtest.start_qemu([], d)
q = sgtest.QMP(sock)
want = scenario(q, lambda: None)
q.cmd("quit")
proc.wait(20)
t_qemu = time.monotonic() - t0

# ---- snapgate-vmm, demo guest ------------------------------------------------------
t0 = time.monotonic()
vm = VMM(d, ["-S", "-m", "64M"])


def ticking():
    """The demo guest runs on: two more ticks on its console."""
    start = vm.last_tick()
    vm.wait_line(rf"^tick {start + 2}$", 20)


got = scenario(vm.qmp, ticking)
vm.check_no_ram_failure()
vm.quit()
t_vmm = time.monotonic() - t0

bad = [k for k in want if want[k] != got.get(k)]
for k in sorted(want):
    print(f"{k}: {'same' if k not in bad else 'DIFFERENT'}\n  qemu: {want[k]!r}\n  vmm:  {got.get(k)!r}")
sgtest.check(not bad, f"{len(bad)} differences from QEMU 7.2: {bad}")
sgtest.check_eq(want["running-qmp"]["reply"], {"return": {}}, "QEMU's reply")
sgtest.check_eq(want["running-hmp"]["reply"], {"return": ""}, "QEMU's HMP reply")
sgtest.check_eq(want["running-qmp"]["event"], {"keys": ["event", "timestamp"], "event": "POWERDOWN"},
                "QEMU's event")
print(f"QEMU part {t_qemu:.1f} s, snapgate-vmm part {t_vmm:.1f} s")

# ---- the gateway's monitor in front of snapgate-vmm ---------------------------------
gw_sock = os.path.join(d, "gw.sock")
PROMPT = rb"\(snapgate\) "
t = U.Terminal([sgtest.binary("snapgate"), "--state-dir", os.path.join(d, "state"),
                "--serial-to-terminal", "--qmp", "unix:" + gw_sock, "--vmm", "-m", "64", "--"],
               env=U.gateway_env(d))
t.expect(PROMPT, 30)
sgtest.wait_for(lambda: os.path.exists(gw_sock), 10, "gateway QMP socket")
c = sgtest.QMP(gw_sock)
t.expect(rb"tick 2\r?\n", 30)
t.send("system_powerdown\r")
t.expect(rb"system_powerdown", 10)
begin = t.pos
m = t.expect(PROMPT, 30)
text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", t.out[begin:m.start()].decode(errors="replace"))
lines = [ln.strip() for ln in text.replace("\r", "").split("\n")
         if ln.strip() and not re.fullmatch(r"tick \d+|\(snapgate\)", ln.strip())]
sgtest.check(not [ln for ln in lines if "rror" in ln or "unknown" in ln],
             f"system_powerdown at the gateway's monitor: {lines!r}")
ev = c.wait_event("POWERDOWN", 10)
sgtest.check("data" not in ev, f"POWERDOWN through the gateway: {ev}")
sgtest.check_eq(no_id(c.cmd("system_powerdown")), {"return": {}}, "QMP system_powerdown through the gateway")
c.wait_event("POWERDOWN", 10)
sgtest.check_eq(c.cmd("query-status")["return"]["status"], "running", "after the gateway's presses")
for _ in range(2):
    t.expect(rb"tick \d+", 20)        # the guest runs on
print(f"gateway monitor: output {lines!r}; POWERDOWN on its QMP; the guest ticks on")
t.send("quit\r")
sgtest.check_eq(t.wait(30), 0, "gateway exit after quit")
for img in ("disk0.qcow2",):
    p = os.path.join(d, "state", img)
    if os.path.exists(p):
        sgtest.qemu_img_check(p)
print("ok")

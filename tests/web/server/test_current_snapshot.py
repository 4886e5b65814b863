#!/usr/bin/env python3
"""The gateway's current snapshot (gateway/gw_current.c) with the bundled VMM:
the last snapshot saved or loaded whose job concluded without error, whoever
started it (human-monitor-command, a raw QMP snapshot-save job), unchanged by
a failed load (resolution error, or a job that aborts), cleared by deleting
it, kept in STATE-DIR/current-snapshot.json across a restart of the gateway;
`info snapshots` naming it in the snapgate profile only; and
x-snapgate-hmp-complete, the HMP engine's completion over QMP."""
import json
import os
import signal
import subprocess

import sgtest
from sgtest import check, check_eq

sgtest.require_kvm()
gw_bin = sgtest.binary("snapgate")
d = sgtest.tmpdir("sgcur-")
state = os.path.join(d, "state")
sock = os.path.join(d, "gw.sock")
CUR = "x-snapgate-query-current-snapshot"


def start(*extra):
    if os.path.exists(sock):
        os.unlink(sock)
    p = sgtest.spawn([gw_bin, "--no-monitor", "--qmp", "unix:" + sock, "--state-dir", state,
                      *extra, "--vmm", "-m", "64M", "--"],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                     text=True)
    sgtest.wait_for(lambda: os.path.exists(sock), 30, "--qmp socket")
    return p, sgtest.QMP(sock)


def stop(p, q):
    q.close()
    p.send_signal(signal.SIGTERM)
    rc = p.wait(30)
    check_eq(rc, 0, f"gateway exit status after SIGTERM (stderr: {p.stderr.read()})")


def current(q):
    r = q.cmd(CUR)
    check("return" in r, f"{CUR}: {r}")
    return r["return"]


def hmp_ok(q, line):
    out = q.hmp(line)
    check("Error" not in out, f"{line!r}: {out!r}")


p, q = start()
check_eq(current(q), {}, "no current snapshot before any save")

hmp_ok(q, 'savevm "a b \\"q\\""')
c = current(q)
check_eq((c.get("tag"), c.get("how")), ('a b "q"', "saved"), "current after savevm (HMP)")
check(isinstance(c.get("time"), int) and c["time"] > 0, f"time: {c}")
hmp_ok(q, "savevm second")
check_eq(current(q).get("tag"), "second", "current moves to the newer save")
hmp_ok(q, 'loadvm "a b \\"q\\""')
check_eq((current(q).get("tag"), current(q).get("how")), ('a b "q"', "loaded"), "current after loadvm")

# Failures move nothing: a name that does not resolve (no job at all) ...
out = q.hmp("loadvm nosuch")
check("Error" in out, f"loadvm nosuch fails: {out!r}")
check_eq(current(q).get("tag"), 'a b "q"', "a failed loadvm leaves the current snapshot")
# ... and a raw job that aborts.
r = q.cmd("snapshot-load", {"job-id": "bad-load", "tag": "nosuch", "vmstate": "disk0",
                            "devices": ["disk0"]})
check("return" in r, f"snapshot-load job starts: {r}")
job = q.wait_job("bad-load")
check(job.get("error"), f"the bad load job failed: {job}")
check_eq(current(q).get("tag"), 'a b "q"', "an aborted snapshot-load job leaves the current snapshot")

# A QMP client's own job counts like any other.
r = q.cmd("snapshot-save", {"job-id": "raw-save", "tag": "raw", "vmstate": "disk0",
                            "devices": ["disk0"]})
check("return" in r, f"snapshot-save job starts: {r}")
job = q.wait_job("raw-save")
check(not job.get("error"), f"raw save: {job}")
check_eq((current(q).get("tag"), current(q).get("how")), ("raw", "saved"), "current after a raw QMP job")
hmp_ok(q, "delvm raw")
check_eq(current(q), {}, "deleting the current snapshot clears it")
hmp_ok(q, "savevm keep")

check("Current snapshot" not in q.hmp("info snapshots"),
      "the qemu-7.2 profile (human-monitor-command's default) prints no such line")
with open(os.path.join(state, "current-snapshot.json")) as f:
    rec = json.load(f)
check_eq((rec.get("tag"), rec.get("how")), ("keep", "saved"), "persisted record")

# Completion: the engine's candidates, as the terminal's Tab gets them.
r = q.cmd("x-snapgate-hmp-complete", {"line": "info snap"})
check_eq(r.get("return"), {"word": "snap", "candidates": ["snapshots"]}, "completion of info snap")
r = q.cmd("x-snapgate-hmp-complete", {"line": "loadvm "})
cands = r.get("return", {}).get("candidates", [])
check('"a b \\"q\\""' in cands and "keep" in cands, f"loadvm completion offers the tags: {cands}")
r = q.cmd("x-snapgate-hmp-complete", {})
check_eq(r.get("error", {}).get("class"), "GenericError", "missing 'line' is an error")
r = q.cmd(CUR, {"x": 1})
check_eq(r.get("error", {}).get("class"), "GenericError", "unexpected argument is an error")
stop(p, q)

# A new gateway on the same state dir knows it, and its HMP engine names it
# in `info snapshots` (snapgate profile).
p, q = start("--compat-profile", "snapgate")
check_eq(current(q).get("tag"), "keep", "current snapshot survives a restart")
out = q.hmp("info snapshots")
check("Current snapshot: 'keep'" in out, f"info snapshots names the current snapshot: {out!r}")
hmp_ok(q, "loadvm second")
check("Current snapshot: 'second'" in q.hmp("info snapshots"), "the line follows a loadvm")
stop(p, q)
sgtest.qemu_img_check(os.path.join(state, "disk0.qcow2"))
print("current_snapshot: all checks passed")

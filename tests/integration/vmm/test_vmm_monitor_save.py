#!/usr/bin/env python3
"""The monitor does not wait for a running save's disk I/O: while a
snapshot-save job runs, query-block, query-named-block-nodes, HMP
`info block` / `info snapshots` (human-monitor-command) and the web
console's x-snapgate-query-snapshot-tree keep answering,
on the save's own connection, and say what QEMU 7.2 says before and after
its save (the snapshot appears once the save commits).

Two saves, asserted structurally (no timing threshold; times go in bench/):
- a 1 GiB guest that has dirtied 960 MiB and keeps rewriting 64 MiB a
  second: every poll reply arrives before the job concludes, at least 10 of
  them, and the slowest takes under a quarter of the job's time;
- SNAPGATE_VMM_SAVE_STALL=3000, two saves: the writer holds the VM state
  disk for 3 s (a stalled disk), so a monitor command that waited for the
  drive lock would take most of the job's time (the tree query did, before
  it read the published list: 2.9-3.0 s); the same assertions hold.
The tree is as before the save or has the new snapshot last, its parent
the snapshot current before, and current.  It runs
  with SNAPGATE_VMM_TRACE=1: the per-phase lines and the pause's summary
  line must list the same phases with the same times.
Afterwards the snapshot list query-named-block-nodes reports equals
qemu-img's (QEMU's own reading of the image), and qemu-img check is clean."""
import json
import os
import re
import subprocess
import time

import sgtest
from sg_vmm_util import VMM

sgtest.require_kvm()
qemu_img = sgtest.require_tool("qemu-img")
d = sgtest.tmpdir()
SPEC = {"vmstate": "disk0", "devices": ["disk0"]}
KEYS = ("id", "name", "vm-state-size", "date-sec", "date-nsec", "vm-clock-sec", "vm-clock-nsec")

POLLS = (
    ("query-block", None),
    ("query-named-block-nodes", None),
    ("human-monitor-command", {"command-line": "info block"}),
    ("human-monitor-command", {"command-line": "info snapshots"}),
    ("x-snapgate-query-snapshot-tree", None),
)
TREE = "x-snapgate-query-snapshot-tree"


def snaps_of_block(ret):
    return [s["name"] for s in ret[0]["inserted"]["image"].get("snapshots", [])]


def snaps_of_nodes(ret):
    return [s["name"] for s in ret[0]["image"].get("snapshots", [])]


def strip_actual(ret):
    """query-block without what changes while the guest or the save writes."""
    out = json.loads(json.dumps(ret))
    for b in out:
        b["inserted"]["image"].pop("actual-size", None)
    return out


def save_polled(vm, tag, label):
    """Runs snapshot-save `tag` while polling the block queries on the same
    connection, one at a time; returns (job seconds, [(cmd, latency, reply)])."""
    q = vm.qmp
    q.events.clear()
    jid = f"mon-{tag}"
    before = q.cmd("query-block")["return"]
    tree_before = q.cmd(TREE)["return"]
    t0 = time.monotonic()
    r = q.cmd("snapshot-save", dict(SPEC, **{"job-id": jid, "tag": tag}))
    sgtest.check_eq(r.get("return"), {}, f"{label}: snapshot-save")
    replies, concluded, i = [], None, 0
    q.sock.settimeout(120)
    while concluded is None:
        name, args = POLLS[i % len(POLLS)]
        i += 1
        mid = f"p{i}"
        msg = {"execute": name, "id": mid}
        if args:
            msg["arguments"] = args
        sent = time.monotonic()
        q.send_raw(json.dumps(msg) + "\r\n")
        while True:
            m = q.recv()
            if "event" in m:
                if (m["event"] == "JOB_STATUS_CHANGE" and m["data"]["id"] == jid
                        and m["data"]["status"] == "concluded"):
                    concluded = time.monotonic()
                q.events.append(m)
                continue
            sgtest.check_eq(m.get("id"), mid, f"{label}: reply order")
            if concluded is None:
                replies.append((name if not args else args["command-line"],
                                time.monotonic() - sent, m))
            break
        if time.monotonic() - t0 > 300:
            sgtest.fail(f"{label}: the save did not conclude in 300 s")
    wall = concluded - t0
    info = [j for j in q.cmd("query-jobs")["return"] if j["id"] == jid]
    sgtest.check(info and "error" not in info[0], f"{label}: job {info}")
    q.cmd("job-dismiss", {"id": jid})

    # Structure: the monitor answered throughout, each reply well within the job.
    sgtest.check(len(replies) >= 10,
                 f"{label}: only {len(replies)} replies while a {wall:.2f} s save ran")
    worst = max(replies, key=lambda x: x[1])
    sgtest.check(worst[1] < wall / 4,
                 f"{label}: {worst[0]} took {worst[1] * 1e3:.0f} ms during a {wall:.2f} s save")
    # Content: what QEMU 7.2 reports before its save, or after it (a query
    # answered between the commit and the concluded event).
    old = snaps_of_block(before)
    for what, _, m in replies:
        sgtest.check("return" in m, f"{label}: {what} failed during the save: {m}")
        ret = m["return"]
        if what == "query-block":
            got = snaps_of_block(ret)
            sgtest.check(got in (old, old + [tag]), f"{label}: query-block listed {got}")
            want = strip_actual(before)
            if got == old:
                sgtest.check_eq(strip_actual(ret), want, f"{label}: query-block during the save")
        elif what == "query-named-block-nodes":
            got = snaps_of_nodes(ret)
            sgtest.check(got in (old, old + [tag]), f"{label}: nodes listed {got}")
        elif what == TREE:
            # As before the save, or with the new snapshot (parent: the
            # snapshot current before, if any) once the save committed.
            if ret != tree_before:
                sgtest.check_eq(ret["snapshots"][:-1], tree_before["snapshots"],
                                f"{label}: tree during the save")
                new = ret["snapshots"][-1]
                sgtest.check_eq(new["name"], tag, f"{label}: tree's new snapshot")
                sgtest.check_eq(new.get("parent"), tree_before.get("current"),
                                f"{label}: tree's new snapshot's parent")
                # The commit (worker) lists it before the job's last step
                # (main loop) makes it current.
                sgtest.check(ret.get("current") in (tree_before.get("current"), new["id"]),
                             f"{label}: tree's current {ret.get('current')}")
        elif what == "info block":
            sgtest.check("disk0" in ret or "drive0" in ret, f"{label}: info block: {ret!r}")
        else:
            sgtest.check(all(s in ret for s in old), f"{label}: info snapshots: {ret!r}")
    after = snaps_of_block(q.cmd("query-block")["return"])
    sgtest.check_eq(after, old + [tag], f"{label}: query-block after the save")
    tree = q.cmd(TREE)["return"]
    sgtest.check_eq([s["name"] for s in tree["snapshots"]], old + [tag], f"{label}: tree after")
    sgtest.check_eq(tree["snapshots"][-1].get("parent"), tree_before.get("current"),
                    f"{label}: the new snapshot's parent")
    sgtest.check_eq(tree.get("current"), tree["snapshots"][-1]["id"], f"{label}: tree's current")
    lat = sorted(x[1] for x in replies)
    tlat = [x[1] for x in replies if x[0] == TREE]
    sgtest.check(len(tlat) >= 2, f"{label}: only {len(tlat)} tree queries answered during the save")
    print(f"{label}: save {wall:.2f} s, {len(replies)} monitor replies during it, "
          f"median {lat[len(lat) // 2] * 1e3:.1f} ms, max {lat[-1] * 1e3:.1f} ms ({worst[0]}); "
          f"{len(tlat)} tree queries, max {max(tlat) * 1e3:.1f} ms", flush=True)
    return wall, replies


def same_as_qemu_img(vm, img, label):
    """The list query-named-block-nodes reports against qemu-img's reading."""
    ours = vm.qmp.cmd("query-named-block-nodes")["return"][0]["image"].get("snapshots", [])
    r = sgtest.run([qemu_img, "info", "-U", "--output=json", img])
    theirs = json.loads(r.stdout).get("snapshots", [])
    pick = lambda lst: [{k: s.get(k) for k in KEYS} for s in lst]
    sgtest.check_eq(pick(ours), pick(theirs), f"{label}: snapshots vs qemu-img info")


# ---- a 1 GiB guest writing while it is saved ---------------------------------
os.environ["SNAPGATE_VMM_LIVE"] = "wp"
big = os.path.join(d, "big.qcow2")
sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", big, "64M"])
vm = VMM(d, ["-m", "1024M", "-drive", f"file={big}", "-append", "dirty=960M,churn=64M"],
         name="big")
vm.wait_line(r"^churn: ", 60)
save_polled(vm, "before", "1 GiB, first save")
time.sleep(0.5)
save_polled(vm, "live", "1 GiB, incremental save")
same_as_qemu_img(vm, big, "1 GiB")
vm.check_no_ram_failure()
vm.quit(30)
sgtest.qemu_img_check(big)

def check_trace(vm, label, saves):
    """SNAPGATE_VMM_TRACE's two kinds of line (what bench/bench_linux.py
    prints): per save, one "trace: save: PHASE MS ms" per phase of the
    pause, then one "live: save pause: PHASE MS ... | total MS ms" with the
    same phases."""
    err = vm.stderr().splitlines()
    per, pauses = [], 0
    for line in err:
        m = re.fullmatch(r"trace: save: (\S+) +([0-9.]+) ms", line)
        if m:
            per.append(m.groups())
            continue
        if not line.startswith("live: save pause:"):
            continue
        pauses += 1
        m = re.fullmatch(r"live: save pause:((?: \S+ [0-9.]+)+) \| total ([0-9.]+) ms, \d+ page faults \(\d+ major\)", line)
        sgtest.check(m, f"{label}: pause line {line!r}")
        toks = m.group(1).split()
        phases = list(zip(toks[::2], toks[1::2]))
        names = [p for p, _ in phases]
        for want in ("kick", "parked", "stop-event", "capture", "locks", "unpark",
                     "resume-event"):
            sgtest.check(want in names, f"{label}: no {want} in {line!r}")
        sgtest.check_eq(per, phases, f"{label}: per-phase lines vs the pause line")
        total = sum(float(ms) for _, ms in phases)
        sgtest.check(total <= float(m.group(2)) + 0.01 * len(phases),
                     f"{label}: phases {total} ms > total {m.group(2)} ms")
        print(f"{label}: trace: {len(phases)} phases, pause {m.group(2)} ms", flush=True)
        per = []
    sgtest.check_eq(pauses, saves, f"{label}: pause lines in stderr")


# ---- a stalled VM state disk (and SNAPGATE_VMM_TRACE) -------------------------
os.environ["SNAPGATE_VMM_SAVE_STALL"] = "3000"
os.environ["SNAPGATE_VMM_TRACE"] = "1"
small = os.path.join(d, "small.qcow2")
sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", small, "16M"])
vm = VMM(d, ["-m", "64M", "-drive", f"file={small}"], name="stall")
vm.wait_line(r"^tick 2$", 60)
wall, _ = save_polled(vm, "stalled", "disk stalled 3 s")
sgtest.check(wall >= 3.0, f"the stall knob had no effect: the save took {wall:.2f} s")
# Again, now with a snapshot listed (and current) while the disk is held.
wall, _ = save_polled(vm, "stalled2", "disk stalled 3 s, 2nd save")
sgtest.check(wall >= 3.0, f"the stall knob had no effect: the save took {wall:.2f} s")
same_as_qemu_img(vm, small, "stalled")
check_trace(vm, "stalled", 2)
vm.quit(30)
del os.environ["SNAPGATE_VMM_SAVE_STALL"]
del os.environ["SNAPGATE_VMM_TRACE"]
# A new process reads the parents from the image once, at start.
vm = VMM(d, ["-m", "64M", "-drive", f"file={small}"], name="restart")
t = vm.qmp.cmd(TREE)["return"]
by = {s["name"]: s for s in t["snapshots"]}
sgtest.check("parent" not in by["stalled"] and "current" not in t, f"tree after a restart: {t}")
sgtest.check_eq(by["stalled2"].get("parent"), by["stalled"]["id"], "parent after a restart")
vm.quit(30)
sgtest.qemu_img_check(small)
print("ok")

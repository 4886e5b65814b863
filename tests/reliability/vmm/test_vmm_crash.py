#!/usr/bin/env python3
"""Crash consistency of snapgate-vmm: the demo guest writes `tick N` to its
disk every 100 ms and rewrites its RAM area (churn=) while snapshot-save
(live, and incremental after the first save or a load) / snapshot-delete /
snapshot-load (lazy: killed while RAM is still filling, too) jobs run; the
VMM is killed with SIGKILL at a random moment of a random job.
After every kill:
- `qemu-img check` finds no errors (leaks allowed, counted);
- every snapshot whose job concluded without error is listed, a snapshot
  whose delete concluded stays gone, and only the interrupted save may add one;
- sector 0 of the disk holds a whole `tick N` line with N no later than the
  last tick the guest printed (or nothing yet);
- a later round starts the VMM with `-loadvm` on a random surviving snapshot,
  which must resume the guest near the tick it was saved at; at the end every
  surviving snapshot is loaded once.
Then a full disk: the image on a tiny tmpfs (when we may mount one) makes
snapshot-save fail as a job error while the VM keeps running, nothing lost;
then the file system is filled to the last byte and snapshot-load must still
work (issue 17: a load needs no new cluster), the VM running after it.

10 kills by default; SG_LONG=1 runs 200 (SG_KILLS=N any number); SG_SEED=N replays.
"""
import os
import random
import re
import subprocess
import time

import sgtest
import sg_reliability_util as rl
from sg_vmm_util import VMM

sgtest.require_kvm()
qemu_img = sgtest.require_tool("qemu-img")
qemu_io = sgtest.require_tool("qemu-io")
kills_wanted = int(os.environ.get("SG_KILLS") or (200 if os.environ.get("SG_LONG") else 10))
seed = int(os.environ.get("SG_SEED") or random.SystemRandom().randrange(1 << 30))
print(f"seed {seed} (SG_SEED={seed} replays the choices), {kills_wanted} kills", flush=True)
rng = random.Random(seed)
work = sgtest.tmpdir("sg-vmmcrash-")
img = os.path.join(work, "disk.qcow2")
sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", img, "16M"])
# churn=: the guest rewrites (and checks) its area while a live save runs.
VM_ARGS = ["-m", "128M", "-append", "dirty=32M,churn=32M"]
SPEC = {"vmstate": "disk0", "devices": ["disk0"]}

known = {}        # tag -> last tick the guest printed when its save concluded
deleted = set()   # tags whose delete concluded
stats = {"leaks_max": 0, "leaky": 0, "loads": 0, "inflight": {}, "saves_survived": 0}
job_seq = [0]


def sector0(path):
    r = sgtest.run([qemu_io, "-r", "-f", "qcow2", "-c", "read -v 0 16", path])
    raw = "".join(re.findall(r"^[0-9a-f]+:\s+((?:[0-9a-f]{2}\s)+)", r.stdout, re.M))
    data = bytes(int(x, 16) for x in raw.split())
    if not data.strip(b"\0"):
        return None
    m = re.match(rb"tick (\d+)\n", data)
    sgtest.check(m, f"sector 0 holds neither zeroes nor a whole tick line: {data!r}")
    return int(m.group(1))


def tags():
    r = sgtest.run([qemu_img, "info", "--output=json", img])
    import json
    return [s["name"] for s in json.loads(r.stdout).get("snapshots", [])]


def check_image(label):
    r = subprocess.run([qemu_img, "check", "--output=json", img], capture_output=True, text=True)
    import json
    try:
        j = json.loads(r.stdout)
    except ValueError:
        sgtest.fail(f"{label}: qemu-img check exited {r.returncode}: {r.stdout}{r.stderr}")
    errs = [ln for ln in r.stderr.splitlines() if not ln.startswith("Leaked")]
    sgtest.check(r.returncode in (0, 3) and not j.get("corruptions") and not j.get("check-errors"),
                 f"{label}: qemu-img check exit {r.returncode}, corruptions {j.get('corruptions')}:"
                 f"\n  " + "\n  ".join(errs[:8]))
    leaks = int(j.get("leaks", 0))
    stats["leaks_max"] = max(stats["leaks_max"], leaks)
    stats["leaky"] += 1 if leaks else 0


def start(loadtag=None):
    args = VM_ARGS + ["-drive", f"file={img}"] + (["-loadvm", loadtag] if loadtag else [])
    vm = VMM(work, args)
    i, m = vm.wait_line(r"^tick (\d+)$", 30)
    if loadtag:
        first = int(m.group(1))
        sgtest.check(first <= known[loadtag] + 2,
                     f"-loadvm {loadtag}: guest resumed at tick {first}, saved at <= {known[loadtag]}")
        stats["loads"] += 1
    vm.check_no_ram_failure()
    return vm


def submit(vm, op, tag):
    job_seq[0] += 1
    jid = f"j{job_seq[0]}"
    args = {"job-id": jid, "tag": tag, "devices": ["disk0"]}
    if op != "snapshot-delete":
        args["vmstate"] = "disk0"
    r = vm.qmp.cmd(op, args)
    sgtest.check(r.get("return") == {}, f"{op} {tag}: {r}")
    return jid


durations = {"snapshot-save": 0.1, "snapshot-load": 0.1, "snapshot-delete": 0.01}


def complete(vm, op, tag):
    t = time.monotonic()
    jid = submit(vm, op, tag)
    info = vm.qmp.wait_job(jid, 60)
    # Kills are spread over the time this kind of job really takes.
    durations[op] = max(durations[op] * 0.7, time.monotonic() - t)
    sgtest.check("error" not in info, f"{op} {tag} failed: {info.get('error')}")
    if op == "snapshot-save":
        known[tag] = vm.last_tick() + 1
    elif op == "snapshot-delete":
        del known[tag]
        deleted.add(tag)


t0 = time.monotonic()
tagno = 0
max_tick = 0
for rnd in range(kills_wanted):
    label = f"round {rnd + 1} (seed {seed})"
    loadtag = rng.choice(sorted(known)) if known and rng.random() < 0.3 else None
    vm = start(loadtag)
    for _ in range(rng.randrange(0, 3)):
        if len(known) > 4:
            complete(vm, "snapshot-delete", rng.choice(sorted(known)))
        else:
            tagno += 1
            complete(vm, "snapshot-save", f"v{tagno}")
    ops = ["snapshot-save"] * 3 + (["snapshot-delete", "snapshot-load"] if known else [])
    op = rng.choice(ops)
    if op == "snapshot-save":
        tagno += 1
        tag = f"v{tagno}"
    else:
        tag = rng.choice(sorted(known))
    submit(vm, op, tag)
    time.sleep(rng.uniform(0, 1.3 * durations[op]))
    vm.proc.kill()
    vm.proc.wait()
    last_tick = vm.last_tick()
    stats["inflight"][op] = stats["inflight"].get(op, 0) + 1

    check_image(label)
    now = tags()
    for t in known:
        sgtest.check(t in now or (op == "snapshot-delete" and t == tag),
                     f"{label}: snapshot {t} was saved (job concluded) but is gone; list {now}")
    for t in deleted:
        sgtest.check(t not in now, f"{label}: snapshot {t} was deleted but is listed again")
    extra = [t for t in now if t not in known]
    sgtest.check(extra in ([], [tag]) and (not extra or op == "snapshot-save"),
                 f"{label}: unexpected snapshots {extra} (interrupted: {op} {tag})")
    if op == "snapshot-save" and tag in now:
        known[tag] = last_tick + 1
        stats["saves_survived"] += 1
    if op == "snapshot-delete" and tag not in now:
        del known[tag]
        deleted.add(tag)
    # The guest never flushes, so sector 0 may lag (e.g. a copy-on-write
    # after a snapshot whose L2 update died with the VMM); it must still be a
    # whole line that some run of the guest really wrote.
    max_tick = max(max_tick, last_tick)
    s0 = sector0(img)
    sgtest.check(s0 is None or s0 <= max_tick + 1,
                 f"{label}: sector 0 says tick {s0}, no guest run got past {max_tick}")
    fresh = s0 is not None and last_tick - 2 <= s0 <= last_tick + 1
    stats["sector0_fresh"] = stats.get("sector0_fresh", 0) + (1 if fresh else 0)

# Every survivor must load, and be one instant of RAM (the guest's own
# check over a whole cycle of its area: 32 MiB at 32 MiB/s).
for t in sorted(known):
    vm = start(t)
    n = len(vm.snapshot_lines())
    vm.wait_line(r"^churn: ", 10, start=n)
    vm.wait_line(r"^churn: ", 10, start=len(vm.snapshot_lines()))
    vm.check_no_ram_failure()
    vm.quit()
check_image("after loading every survivor")
took = time.monotonic() - t0
print(f"VMM kills survived: {kills_wanted} ({stats['inflight']}), snapshots loaded after crashes: "
      f"{stats['loads']}, interrupted saves that survived: {stats['saves_survived']}, "
      f"kills leaving leaks: {stats['leaky']} (max {stats['leaks_max']} clusters), sector 0 "
      f"current after {stats.get('sector0_fresh', 0)} kills, {took:.1f} s",
      flush=True)

# ---- a full disk during snapshot-save ------------------------------------
mnt = os.path.join(work, "tmpfs")
os.makedirs(mnt)
r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "sg-rl-vmm", mnt],
                   capture_output=True, text=True)
if r.returncode != 0:
    print(f"full-disk phase skipped: cannot mount tmpfs ({r.stderr.strip()})", flush=True)
else:
    try:
        img = os.path.join(mnt, "small.qcow2")
        sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", img, "16M"])
        known.clear()
        deleted.clear()
        vm = VMM(work, ["-m", "128M", "-append", "dirty=8M", "-drive", f"file={img}"],
                 name="full")
        vm.wait_line(r"^tick 2$", 30)
        complete(vm, "snapshot-save", "small")   # disk-only state fits; RAM is mostly zero
        used_before = os.stat(img).st_blocks * 512
        failed = None
        # Saves after the first write only what changed (incremental): give
        # the guest time to rewrite its 8 MiB between them.
        for i in range(12):
            time.sleep(1)
            used_before = os.stat(img).st_blocks * 512
            jid = submit(vm, "snapshot-save", f"big{i}")
            info = vm.qmp.wait_job(jid, 60)
            if "error" in info:
                failed = info["error"]
                break
            known[f"big{i}"] = vm.last_tick() + 1
        sgtest.check(failed, "snapshot-save never ran out of space on a 24 MiB tmpfs")
        sgtest.check("No space left on device" in failed,
                     f"snapshot-save error does not name the cause: {failed!r}")
        st = vm.qmp.cmd("query-status")["return"]["status"]
        sgtest.check_eq(st, "running", "VM status after the failed save")
        t = vm.last_tick()
        vm.wait_line(rf"^tick {t + 3}$", 10)
        # Issue 17: the failed save gave back what it wrote (punched), so the
        # disk is no longer full and the good snapshot loads.
        used_after = os.stat(img).st_blocks * 512
        sgtest.check(used_after <= used_before * 1.1 + (1 << 20),
                     f"full disk: the failed save kept its clusters ({used_before >> 10} KiB "
                     f"before, {used_after >> 10} KiB after)")
        complete(vm, "snapshot-load", "small")
        st = vm.qmp.cmd("query-status")["return"]["status"]
        sgtest.check_eq(st, "running", "VM status after loading on the full disk")
        print(f"full disk: snapshot-save failed with {failed!r}; VM still running; image "
              f"{used_before >> 10} KiB before, {used_after >> 10} KiB after; 'small' loaded",
              flush=True)
        # Not a byte left (issue 17): loading still works, the VM runs on.
        sgtest.check_eq(rl.fill_up(mnt), 0, "free bytes on the filled tmpfs")
        good = max(known, key=known.get)
        n = len(vm.snapshot_lines())
        complete(vm, "snapshot-load", good)
        st = vm.qmp.cmd("query-status")["return"]["status"]
        sgtest.check_eq(st, "running", "VM status after loading on the 100 % full disk")
        vm.wait_line(r"^tick \d+$", 10, start=n)
        vm.wait_line(r"^tick \d+$", 10, start=len(vm.snapshot_lines()))
        st = vm.qmp.cmd("query-status")["return"]["status"]
        sgtest.check_eq(st, "running", "VM status after the guest wrote on the full disk")
        print(f"full disk: '{good}' loaded with 0 bytes free; the guest runs on", flush=True)
        os.unlink(os.path.join(mnt, "ballast"))
        vm.quit()
        check_image("full disk")
        now = tags()
        for t in known:
            sgtest.check(t in now, f"full disk: snapshot {t} lost; list {now}")
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True)
print("PASS", flush=True)

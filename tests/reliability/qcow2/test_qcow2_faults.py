#!/usr/bin/env python3
"""Write errors in the qcow2 engine must surface as errors, corrupt nothing,
and leave an image that works again once the fault is gone.

sg_crashdrv's write-class syscalls are wrapped (rl_fault.c), so faults land at
an exact call inside any operation:
- transient EIO at call N (one failure, later calls succeed: close re-flushes);
- sticky EIO from call N on (a dead disk: close fails too);
- a failed fdatasync at sync call N: the error, then no flush succeeds and no
  pwrite reaches the file (the engine's error state), reopening recovers;
- ENOSPC once the file would grow past a limit (a full file system, with the
  short write a real one gives);
- and, when we may mount one, a real tmpfs that fills up;
- full-disk loads (issue 17): snapshot apply with not one byte to spare (no
  write past the end of the file, then a real tmpfs filled to 100 %, by
  sg_crashdrv and by `snapgate-img snapshot -a`) must succeed.
After each: exit 1 with a message naming the errno (no signal, no sanitizer
report), `qemu-img check` without errors, snapshots and flushed data intact
(the checker of test_qcow2_crash.py), then a fault-free run that must succeed.

SG_LONG=1 runs more fault points; SG_SEED=N replays a run.
"""
import os
import random
import subprocess
import sys
import time

import sgtest
import sg_reliability_util as rl

sgtest.require_tool("qemu-img")
drv = rl.drv_path()
long_run = bool(os.environ.get("SG_LONG"))
seed = int(os.environ.get("SG_SEED") or random.SystemRandom().randrange(1 << 30))
print(f"seed {seed} (SG_SEED={seed} replays this run)", flush=True)
rng = random.Random(seed)
work = sgtest.tmpdir("sg-faults-")
SIZE = 8 << 20
MESSAGES = {"EIO": "Input/output error", "ENOSPC": "No space left on device"}
counters = {"gen": 0, "tag": 0}
stats = {}
figures = {}


def scan(lines):
    for ln in lines:
        w = ln.split()
        if w[0] == "W":
            counters["gen"] = max(counters["gen"], int(w[2]))
        elif w[0] == "C":
            counters["tag"] = max(counters["tag"], int(w[1][1:]))


def run_driver(img, label, ops, extra, want_rc):
    journal = os.path.join(work, "journal")
    if os.path.exists(journal):
        os.unlink(journal)
    argv = [drv, "run", img.path, journal, str(rng.randrange(1 << 30)),
            str(counters["gen"]), str(counters["tag"]), str(ops)] + extra
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        sgtest.fail(f"{label}: driver hung: {' '.join(argv)}")
    with open(journal) as f:
        lines = [ln for ln in f.read().splitlines() if ln]
    scan(lines)
    sgtest.check(r.returncode == want_rc,
                 f"{label}: driver exited {r.returncode}, want {want_rc}: {r.stderr.strip()}\n"
                 f"argv: {' '.join(argv)}")
    problems = rl.check_round(img, lines, work, stats, label)
    if problems:
        print("journal tail:\n  " + "\n  ".join(lines[-10:]), flush=True)
        sgtest.fail(f"{label}: {problems[0]}\nargv: {' '.join(argv)}")
    return r, lines


def fresh(name, size=SIZE, directory=None):
    path = os.path.join(directory or work, name)
    sgtest.run([drv, "create", path, str(size), "0"])
    return rl.Image(path)


def fault_round(kind, i):
    """Grows some history on a fresh image, then runs one faulty round."""
    label = f"{kind} #{i} (seed {seed})"
    img = fresh(f"{kind}{i}.qcow2")
    run_driver(img, label + " warm-up", rng.randrange(5, 60), [], 0)
    if kind == "enospc":
        # Room for a few clusters more than the image has now.
        limit = os.path.getsize(img.path) + rng.randrange(0, 24) * 65536 + rng.randrange(4096)
        extra = ["--enospc-above", str(limit)]
        err = "ENOSPC"
    elif kind == "fsync":
        # A failed fdatasync (issue 17): the handle enters its error state.
        err = "EIO"
        extra = ["--fail-sync-at", str(rng.randrange(1, 12)), "--errno", err,
                 "--probe-after-error"]
    else:
        err = rng.choice(["EIO", "ENOSPC"])
        extra = ["--fail-at", str(rng.randrange(1, 400)), "--errno", err]
        if kind == "sticky":
            extra.append("--sticky")
    r, lines = run_driver(img, label, 1000000, extra, 1)
    errs = [ln for ln in lines if ln.startswith("ERR")]
    sgtest.check(errs, f"{label}: no ERR line in the journal")
    sgtest.check(MESSAGES[err] in errs[0],
                 f"{label}: error does not name the cause ({MESSAGES[err]}): {errs[0]}")
    if kind == "fsync":
        sgtest.check("pwrite calls after the fault: 0\n" in r.stderr,
                     f"{label}: the image was written after a failed sync:\n{r.stderr}")
        # Outside a snapshot transaction the handle must refuse every later
        # flush; inside one the abort restores the old state (nothing of it
        # was unsynced), so later flushes may succeed.
        sgtest.check("error state on, 0 of 8 flushes succeeded" in r.stderr or
                     "error state off" in r.stderr,
                     f"{label}: a flush after the failed sync succeeded:\n{r.stderr}")
        stats["fsync_error_state"] = stats.get("fsync_error_state", 0) + (
            "error state on" in r.stderr)
    what = next((ln.split()[0] for ln in reversed(lines) if ln[0] in "WZSCDA"), "-")
    figures.setdefault(kind, {}).setdefault(what, 0)
    figures[kind][what] += 1
    # The fault is gone: the same image must work and check clean again.
    run_driver(img, label + " recovery", rng.randrange(10, 40), [], 0)
    os.unlink(img.path)


def with_snapshots(img, label):
    """Random history until the image holds a snapshot."""
    for _ in range(20):
        run_driver(img, label + " warm-up", rng.randrange(20, 60), [], 0)
        if img.snaps:
            return
    sgtest.fail(f"{label}: no snapshot after 20 warm-up runs")


def full_load_round(i):
    """Applying a snapshot needs no new cluster: nothing may be written past
    the end of the file (before issue 17 the apply wrote its new tables
    there and failed with ENOSPC)."""
    label = f"full-disk load #{i} (seed {seed})"
    img = fresh(f"fullload{i}.qcow2")
    with_snapshots(img, label)
    limit = os.path.getsize(img.path)
    _, lines = run_driver(img, label, rng.randrange(1, 4), ["--apply-only", "--enospc-above",
                                                           str(limit)], 0)
    sgtest.check(any(ln.startswith("AD ") for ln in lines), f"{label}: no apply ran: {lines}")
    sgtest.check(os.path.getsize(img.path) <= limit,
                 f"{label}: the file grew from {limit} to {os.path.getsize(img.path)}")
    os.unlink(img.path)


def tmpfs_round():
    """A real file system that fills up (needs mount rights; skipped otherwise)."""
    mnt = os.path.join(work, "tmpfs")
    os.makedirs(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "sg-rl-tmpfs", mnt],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(f"tmpfs round skipped: cannot mount tmpfs ({r.stderr.strip()})", flush=True)
        return False
    try:
        img = fresh("full.qcow2", directory=mnt)
        label = f"tmpfs (seed {seed})"
        r2, lines = run_driver(img, label, 1000000, [], 1)
        errs = [ln for ln in lines if ln.startswith("ERR")]
        sgtest.check(errs and MESSAGES["ENOSPC"] in errs[0],
                     f"{label}: a full tmpfs did not give ENOSPC: {errs or r2.stderr}")
        print(f"tmpfs: image filled the 3 MiB file system after {len(lines)} journal lines: "
              f"{errs[0]}", flush=True)
        # Not a byte left: loading a snapshot must still work (issue 17).
        sgtest.check_eq(rl.fill_up(mnt), 0, "free bytes on the filled tmpfs")
        if img.snaps:
            run_driver(img, label + " full-disk load", 2, ["--apply-only"], 0)
            tag = sorted(img.snaps)[0]
            r3 = subprocess.run([sgtest.binary("snapgate-img"), "snapshot", "-a", tag, img.path],
                                capture_output=True, text=True)
            sgtest.check(r3.returncode == 0,
                         f"{label}: snapgate-img snapshot -a on a full disk: {r3.stderr.strip()}")
            img.active = list(img.snaps[tag]["data"])
            problems = rl.check_round(img, [], work, stats, label + " snapgate-img -a")
            sgtest.check(not problems, f"{label}: after snapgate-img -a: {problems[:1]}")
            print(f"tmpfs: loaded snapshots on the 100 % full file system (driver and "
                  f"snapgate-img snapshot -a {tag})", flush=True)
        else:
            print("tmpfs: no snapshot was made before the disk filled; full-disk load not run",
                  flush=True)
        os.unlink(os.path.join(mnt, "ballast"))
        # Make room (as an operator would), then the image must work again.
        with open(os.path.join(mnt, "ballast"), "wb"):
            pass
        subprocess.run(["mount", "-o", "remount,size=64m", mnt], check=True)
        run_driver(img, label + " recovery", 30, [], 0)
    finally:
        subprocess.run(["umount", mnt], capture_output=True)
    return True


t0 = time.monotonic()
n_transient, n_sticky, n_enospc = (60, 30, 30) if long_run else (8, 4, 4)
n_fsync = 30 if long_run else 6
for i in range(n_fsync):
    fault_round("fsync", i)
for i in range(n_transient):
    fault_round("transient", i)
for i in range(n_sticky):
    fault_round("sticky", i)
for i in range(n_enospc):
    fault_round("enospc", i)
n_full_load = 16 if long_run else 4
for i in range(n_full_load):
    full_load_round(i)
tmpfs = tmpfs_round()
print(f"fault rounds: {n_transient} transient EIO/ENOSPC, {n_sticky} sticky, {n_enospc} full-disk, "
      f"{n_fsync} failed fdatasync, {n_full_load} full-disk loads"
      f"{', 1 real tmpfs' if tmpfs else ''}; {time.monotonic() - t0:.1f} s", flush=True)
print(f"faults hit during (last journal op): {figures}", flush=True)
print(f"leaks after faults: max {stats.get('leaks_max', 0)} clusters; failed fdatasync rounds "
      f"that left the handle in its error state: {stats.get('fsync_error_state', 0)} of {n_fsync} "
      f"(the rest failed inside a snapshot transaction and were rolled back)", flush=True)
print("PASS", flush=True)
sys.exit(0)

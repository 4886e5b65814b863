"""Section 5 of bench.py: live save, lazy load, incremental save, guest
speed during a save and query-block during a save (issue 19), snapgate-vmm
and QEMU 7.2 side by side in one run.  Method in bench/README.md."""
import json
import os
import re
import shutil
import statistics
import subprocess
import time

import bench as B


def job(vm, name, args, job_id):
    """(wall s, pause s, cmd sent -> RESUME event arrived s)."""
    wall, pause, err = vm.qmp.run_job(name, args, job_id)
    if err:
        raise B.Unavailable(f"{name}: {err}")
    return wall, pause, vm.qmp.resume_after


SAVE = {"vmstate": "disk0", "devices": ["disk0"]}
DEL = {"devices": ["disk0"]}


def churn_rates(vm):
    """The demo guest's per-second lines: (MiB/s achieved, MiB/s while writing)."""
    with open(vm.serial, errors="replace") as f:
        return [(int(m.group(1)), int(m.group(2))) for m in
                re.finditer(r"churn: (\d+) MiB/s, (\d+) MiB/s writing", f.read())]


def speed(before, after, wall):
    """Guest speed during a save of `wall` s: the seconds reported after it
    began against the median of the 3 before; worst second and average over
    the save, for the achieved rate and for the rate while writing."""
    during = after[len(before):][: max(1, int(wall) + 1)]
    if len(before) < 3 or not during:
        return None
    out = {}
    for k, key in ((0, "rate"), (1, "writing")):
        base = statistics.median(r[k] for r in before[-3:])
        out[key] = dict(base=base, worst=min(r[k] for r in during) / base,
                        avg=statistics.mean(r[k] for r in during) / base)
    return out


def speed_probe(mib, build, d, disk, churn):
    """One save of a guest with churn=`churn`: (speed, save wall, query-block latencies)."""
    B.fresh_disk(disk)
    vm = B.SnapVMM(d, mib, disk, build, append=f"dirty={mib - 64}M,churn={churn}")
    try:
        time.sleep(3.5)
        before = churn_rates(vm)
        lat, wall = B.monitor_during_save(vm, cmd="query-block")
        time.sleep(1.2)
        return speed(before, churn_rates(vm), wall), wall, lat
    finally:
        vm.close()


def measure(impl, mib, reps, build, d, disk):
    out = dict(pause=[], to_running=[], second_written=None, dirtied=None, speed=None, qb=[])
    if impl == "qemu":
        ram = os.path.join(d, "ram.bin")
        B.make_ram_file(ram, mib)
        vm = B.Qemu(d, mib, disk, ram_file=ram)
        try:
            out["qb"], out["first_save"] = B.monitor_during_save(vm, cmd="query-block")
        finally:
            vm.close()
        out["speed"] = out["speed64"] = 0.0   # QEMU 7.2 stops the guest for the whole save
    else:
        # Guest speed and query-block during the first (full) save.  churn=100G:
        # the guest rewrites and checks its area flat out; churn=64M: its ticks
        # rewrite 64 MiB a second (6 % of RAM), idle in between.
        out["speed"], out["first_save"], out["qb"] = speed_probe(mib, build, d, disk, "100G")
        out["speed64"], _, _ = speed_probe(mib, build, d, disk, "64M")
    # Pause and time to running: a busy guest (churn=64M: 6% of RAM per
    # second), not one that rewrites all of it flat out.
    B.fresh_disk(disk)
    if impl == "qemu":
        vm = B.Qemu(d, mib, disk, ram_file=os.path.join(d, "ram.bin"))
    else:
        vm = B.SnapVMM(d, mib, disk, build, append=f"dirty={mib - 64}M,churn=64M")
    try:
        for r in range(reps):
            _, pause, _ = job(vm, "snapshot-save", dict(SAVE, tag=f"p{r}"), f"bench-s{r}")
            out["pause"].append(pause)
            _, _, run = job(vm, "snapshot-load", dict(SAVE, tag=f"p{r}"), f"bench-l{r}")
            out["to_running"].append(run)
            time.sleep(0.5)
    finally:
        vm.close()
    # Incremental: a quiet guest (one 1 MiB window per 100 ms tick) changes
    # 1% of RAM between two saves.
    B.fresh_disk(disk)
    if impl == "qemu":
        vm = B.Qemu(d, mib, disk, ram_file=os.path.join(d, "ram.bin"))
    else:
        vm = B.SnapVMM(d, mib, disk, build, append=f"dirty={mib - 64}M")
    try:
        t1 = time.monotonic()
        job(vm, "snapshot-save", dict(SAVE, tag="i1"), "bench-i1")
        pct = max(1, mib // 100)
        time.sleep(pct * 0.1)
        w0 = B.io_written(vm.proc.pid)
        # What changed since the first save's instant (its start): one 1 MiB
        # window per 100 ms tick, including the ticks during that save.
        dirtied = (time.monotonic() - t1) * 10
        job(vm, "snapshot-save", dict(SAVE, tag="i2"), "bench-i2")
        out["second_written"] = (B.io_written(vm.proc.pid) - w0) / B.MiB
        out["dirtied"] = round(dirtied) if impl == "snapgate" else None
    finally:
        vm.close()
    return out


def p99(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))] if xs else None


def limits(build, work, mib):
    """bench-limits in the scratch directory: memcpy and write bandwidth."""
    exe = os.path.join(build, "bench", "bench-limits")
    if not os.access(exe, os.X_OK):
        return None
    out = subprocess.run([exe, "--size", str(min(mib, 1024)), "--dir", work, "--json"],
                         capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else None


# snapgate's two ways of keeping a save's instant (gateway/vmm/README.md):
# write-protect (the default) and fork (SNAPGATE_VMM_LIVE=fork).
IMPLS = (("qemu", None), ("snapgate", None), ("snapgate-fork", "fork"))


def wp_limit(build, work, mib):
    """The write-protect mechanism's own cost to the guest: RAM protected, each
    region lifted at its first write, no copy, no writer (SNAPGATE_VMM_LIVE=
    wp-limit, which makes no snapshot)."""
    d = os.path.join(work, "s5-limit")
    os.makedirs(d, exist_ok=True)
    old = os.environ.get("SNAPGATE_VMM_LIVE")
    os.environ["SNAPGATE_VMM_LIVE"] = "wp-limit"
    try:
        disk = os.path.join(d, "disk.qcow2")
        return {c: speed_probe(mib, build, d, disk, c)[0] for c in ("100G", "64M")}
    except B.Unavailable:
        return None
    finally:
        if old is None:
            os.environ.pop("SNAPGATE_VMM_LIVE", None)
        else:
            os.environ["SNAPGATE_VMM_LIVE"] = old
        shutil.rmtree(d, ignore_errors=True)


def section5(cfg, build, work, results):
    mib = cfg.get("live_size", cfg["mon_size"])
    reps = max(5, cfg["reps"])
    lim = limits(build, work, mib)
    results["live_limits"] = lim
    per = {}
    for impl, live in IMPLS:
        d = os.path.join(work, f"s5-{impl}")
        os.makedirs(d, exist_ok=True)
        disk = os.path.join(d, "disk.qcow2")
        B.fresh_disk(disk)
        old = os.environ.pop("SNAPGATE_VMM_LIVE", None)
        if live:
            os.environ["SNAPGATE_VMM_LIVE"] = live
        try:
            per[impl] = measure(impl.split("-")[0], mib, reps, build, d, disk)
        except B.Unavailable as e:
            per[impl] = str(e)
        finally:
            os.environ.pop("SNAPGATE_VMM_LIVE", None)
            if old is not None:
                os.environ["SNAPGATE_VMM_LIVE"] = old
            shutil.rmtree(d, ignore_errors=True)
    results["live"] = per
    wpl = wp_limit(build, work, mib)
    results["live_wp_limit"] = wpl

    def val(impl, f):
        r = per[impl]
        return f"n/a: {r}"[:60] if isinstance(r, str) else f(r)

    ms = lambda x: "-" if x is None else f"{x * 1e3:.1f}"
    gib = mib / 1024
    cp = f"{gib / lim['memcpy-gbs'] * 1e3:.0f} ms" if lim else "n/a"
    wr = f"{gib / lim['write-fsync-end-gbs']:.2f} s" if lim else "n/a"

    def sp(x, key):
        if x == 0.0:
            return "0% (stopped)"
        if not x:
            return "-"
        v = x[key]
        return f"{v['worst'] * 100:.0f}% / {v['avg'] * 100:.0f}% of {v['base']:.0f} MiB/s"

    def row(what, f, limit):
        return [what] + [val(impl, f) for impl, _ in IMPLS] + [limit]

    rows = [
        row("guest pause during save, p99 of %d (ms)" % reps, lambda r: ms(p99(r["pause"])),
            f"0 (stop-and-copy of {mib} MiB: {cp}; of disk: {wr})"),
        row("guest pause during save, median (ms)",
            lambda r: ms(statistics.median(r["pause"])), "-"),
        row("snapshot-load sent -> guest running, p99 (ms)",
            lambda r: ms(p99(r["to_running"])), f"0 (eager read: {cp} from cache)"),
        row("snapshot-load sent -> guest running, median (ms)",
            lambda r: ms(statistics.median(r["to_running"])), "-"),
        row("2nd save after ~1% of RAM changed: written MiB",
            lambda r: f"{r['second_written']:.0f}" + (
                f" (guest dirtied ~{r['dirtied']})" if r.get("dirtied") else ""),
            "what the guest changed"),
        row("guest speed, flat-out writer: worst second / save average",
            lambda r: sp(r["speed"], "rate"), sp(wpl and wpl["100G"], "rate") + " (write-protect only)"),
        row("guest speed, churn=64M ticks: MiB/s done, worst / average",
            lambda r: sp(r["speed64"], "rate"), sp(wpl and wpl["64M"], "rate") + " (write-protect only)"),
        row("guest speed, churn=64M: MiB/s while writing, worst / average",
            lambda r: sp(r["speed64"], "writing"),
            sp(wpl and wpl["64M"], "writing") + " (write-protect only)"),
        row("query-block every 20 ms during a save: p99 / max (ms)",
            lambda r: f"{ms(p99(r['qb']))} / {ms(max(r['qb']))}", "-"),
        row("first (full) save wall (s)", lambda r: f"{r['first_save']:.2f}",
            f"{wr} (write {mib} MiB, fsync)"),
    ]
    return B.table(f"(5) live save, lazy load, incremental save: {mib} MiB of random RAM",
                   ["what", "QEMU 7.2", "snapgate", "snapgate, fork", "machine limit"], rows,
                   ["pause: STOP -> RESUME event timestamps; load: command sent -> RESUME arrived;",
                    "written: /proc/PID/io write_bytes of the VM process during the second save;",
                    "speed: the demo guest's own churn: lines during the save against the 3 s before",
                    "  (MiB/s done, and MiB/s while writing: its speed when churn=64M leaves it idle);",
                    "machine limit of speed: SNAPGATE_VMM_LIVE=wp-limit, same run (protect, lift, no copy);",
                    "snapgate: write-protect instant (default); snapgate, fork: SNAPGATE_VMM_LIVE=fork;",
                    "machine limit: from bench-limits now" + (
                        f" (memcpy {lim['memcpy-gbs']:.2f} GB/s, write+fsync "
                        f"{lim['write-fsync-end-gbs']:.2f} GB/s)" if lim else ": n/a")])

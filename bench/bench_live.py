"""Section 5 of bench.py: live save, lazy load, incremental save, guest
speed during a save and query-block during a save (issue 19), snapgate-vmm
and QEMU 7.2 side by side in one run.  Method in bench/README.md."""
import os
import re
import shutil
import statistics
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
    with open(vm.serial, errors="replace") as f:
        return [(i, int(m.group(1))) for i, m in
                enumerate(re.finditer(r"churn: (\d+) MiB/s", f.read()))]


def measure(impl, mib, reps, build, d, disk):
    out = dict(pause=[], to_running=[], second_written=None, dirtied=None, speed=None, qb=[])
    if impl == "qemu":
        ram = os.path.join(d, "ram.bin")
        B.make_ram_file(ram, mib)
        vm = B.Qemu(d, mib, disk, ram_file=ram)
    else:
        # churn=100G: the guest rewrites and checks its area flat out, so its
        # achieved MiB/s is its speed; incremental rows use a quiet guest.
        vm = B.SnapVMM(d, mib, disk, build, append=f"dirty={mib - 64}M,churn=100G")
    try:
        # Guest speed and query-block during the first (full) save.
        time.sleep(3.5)
        before = churn_rates(vm) if impl == "snapgate" else []
        t0 = time.monotonic()
        lat, wall = B.monitor_during_save(vm, cmd="query-block")
        out["qb"] = lat
        out["first_save"] = wall
        if impl == "snapgate":
            time.sleep(1.2)
            after = churn_rates(vm)
            base = statistics.median(r for _, r in before[-3:]) if before else None
            during = [r for i, r in after[len(before):]][: max(1, int(wall) + 1)]
            if base and during:
                out["speed"] = min(during) / base
                out["speed_base"] = base
        else:
            out["speed"] = 0.0   # QEMU 7.2 stops the guest for the whole save
    finally:
        vm.close()
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


def section5(cfg, build, work, results):
    mib = cfg.get("live_size", cfg["mon_size"])
    reps = max(5, cfg["reps"])
    per = {}
    for impl in ("qemu", "snapgate"):
        d = os.path.join(work, f"s5-{impl}")
        os.makedirs(d, exist_ok=True)
        disk = os.path.join(d, "disk.qcow2")
        B.fresh_disk(disk)
        try:
            per[impl] = measure(impl, mib, reps, build, d, disk)
        except B.Unavailable as e:
            per[impl] = str(e)
        finally:
            shutil.rmtree(d, ignore_errors=True)
    results["live"] = per

    def val(impl, f):
        r = per[impl]
        return f"n/a: {r}"[:60] if isinstance(r, str) else f(r)

    ms = lambda x: "-" if x is None else f"{x * 1e3:.1f}"
    rows = [
        ["guest pause during save, p99 of %d (ms)" % reps,
         val("qemu", lambda r: ms(p99(r["pause"]))), val("snapgate", lambda r: ms(p99(r["pause"])))],
        ["guest pause during save, median (ms)",
         val("qemu", lambda r: ms(statistics.median(r["pause"]))),
         val("snapgate", lambda r: ms(statistics.median(r["pause"])))],
        ["snapshot-load sent -> guest running, p99 (ms)",
         val("qemu", lambda r: ms(p99(r["to_running"]))),
         val("snapgate", lambda r: ms(p99(r["to_running"])))],
        ["snapshot-load sent -> guest running, median (ms)",
         val("qemu", lambda r: ms(statistics.median(r["to_running"]))),
         val("snapgate", lambda r: ms(statistics.median(r["to_running"])))],
        ["2nd save after ~1% of RAM changed: written MiB",
         val("qemu", lambda r: f"{r['second_written']:.0f}"),
         val("snapgate", lambda r: f"{r['second_written']:.0f} (guest dirtied ~{r['dirtied']})")],
        ["guest speed during the first save (vs before)",
         val("qemu", lambda r: "0% (stopped)"),
         val("snapgate", lambda r: "-" if r["speed"] is None else
             f"{r['speed'] * 100:.0f}% of {r['speed_base']} MiB/s")],
        ["query-block every 20 ms during a save: p99 / max (ms)",
         val("qemu", lambda r: f"{ms(p99(r['qb']))} / {ms(max(r['qb']))}"),
         val("snapgate", lambda r: f"{ms(p99(r['qb']))} / {ms(max(r['qb']))}")],
        ["first (full) save wall (s)",
         val("qemu", lambda r: f"{r['first_save']:.2f}"),
         val("snapgate", lambda r: f"{r['first_save']:.2f}")],
    ]
    return B.table(f"(5) live save, lazy load, incremental save: {mib} MiB of random RAM",
                   ["what", "QEMU 7.2", "snapgate"], rows,
                   ["pause: STOP -> RESUME event timestamps; load: command sent -> RESUME arrived;",
                    "written: /proc/PID/io write_bytes of the VM process during the second save;",
                    "speed: the demo guest's own churn: MiB/s lines (flat out) during the save."])

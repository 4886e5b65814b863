#!/usr/bin/env python3
"""snapgate-img's writable snapshot commands vs qemu-img's on a large image
with many snapshots (issue 17: the check that runs before a change).

The image: 256 GiB virtual, one 64 KiB cluster under each of its 512 L2
tables, then N snapshots made by qemu-img (sharing the L2 tables, as QEMU's
snapshots do).  Each command runs on a fresh copy; median [min-max] of REPS.

    SNAPGATE_BUILD=build bench/bench_img_precheck.py [--snapshots 100] [--reps 3] [--dir DIR]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

ap = argparse.ArgumentParser()
ap.add_argument("--snapshots", type=int, default=100)
ap.add_argument("--reps", type=int, default=3)
ap.add_argument("--dir")
a = ap.parse_args()
build = os.environ.get("SNAPGATE_BUILD", "build")
ours = os.path.join(build, "snapgate-img")
work = tempfile.mkdtemp(prefix="sg-bench-img-", dir=a.dir)
base = os.path.join(work, "base.qcow2")
subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base, "256G"], check=True)
cmds = []
for i in range(512):
    cmds += ["-c", f"write -q -P {i % 250 + 1} {i * 512}M 64k"]
subprocess.run(["qemu-io", "-f", "qcow2"] + cmds + [base], check=True)
for i in range(a.snapshots):
    subprocess.run(["qemu-img", "snapshot", "-c", f"s{i}", base], check=True)
mid = f"s{a.snapshots // 2}"


def timed(tool, argv):
    samples = []
    for _ in range(a.reps):
        img = os.path.join(work, "run.qcow2")
        shutil.copyfile(base, img)
        t = time.monotonic()
        subprocess.run([tool, "snapshot"] + argv + [img], check=True, capture_output=True)
        samples.append(time.monotonic() - t)
    return statistics.median(samples), min(samples), max(samples)


print(f"image: 256 GiB, 512 L2 tables, {a.snapshots} snapshots by qemu-img; "
      f"median [min-max] of {a.reps}")
print(f"{'command':<16}{'snapgate-img':>26}{'qemu-img 7.2':>26}{'ratio':>8}")
for argv in (["-c", "new"], ["-a", mid], ["-d", mid]):
    o, q = timed(ours, argv), timed("qemu-img", argv)
    print(f"{' '.join(argv):<16}{o[0]:>9.3f} s [{o[1]:.3f}-{o[2]:.3f}]"
          f"{q[0]:>11.3f} s [{q[1]:.3f}-{q[2]:.3f}]{o[0] / q[0]:>8.1f}")
t = time.monotonic()
subprocess.run([ours, "check", base], check=True, capture_output=True)
print(f"snapgate-img check (the full check, for reference): {time.monotonic() - t:.3f} s")
shutil.rmtree(work)

#!/usr/bin/env python3
"""Reproduces the level-1 hang of the kvm bed: creates and closes KVM VMs in a loop (each
first VM and each last close flips KVM's preempt_notifier_key, patching `__schedule`)
while a second process context-switches on the other vCPU.  Run it in the bed:

    tests/kvm-bed/run.sh --no-retry --no-kvm-hold -- python3 tests/kvm-bed/churn_vms.py 300
    tests/kvm-bed/run.sh --no-retry -- python3 tests/kvm-bed/churn_vms.py 300

Without the held VM the bed is expected to hang (exit 124) within minutes; with it (the
default) the loop runs to its end and prints how many VMs it created.  kvm_bed_self runs it
for 20 s; longer runs are a diagnosis, like tests/integration/linux/stress_linux_disk.py."""
import fcntl
import os
import sys
import time

KVM_CREATE_VM = 0xAE01


def main(argv):
    seconds = float(argv[1]) if len(argv) > 1 else 120
    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:                      # the other vCPU: switch tasks as fast as possible
        os.setpgid(0, 0)
        r, w = os.pipe()
        if os.fork() == 0:
            while True:
                os.read(r, 1)
        while True:
            os.write(w, b"x")
    n, t0, last = 0, time.monotonic(), time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            os.close(fcntl.ioctl(kvm, KVM_CREATE_VM, 0))
            n += 1
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                print(f"churn: {n} VMs in {last - t0:.0f} s", flush=True)
    finally:
        os.killpg(pid, 9)           # the writer and the reader (own process group)
    print(f"churn: done, {n} VMs created and closed in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

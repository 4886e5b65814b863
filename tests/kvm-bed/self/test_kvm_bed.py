#!/usr/bin/env python3
"""The kvm bed's own test: it boots, /dev/kvm inside is kvm_amd (and kvm_pvm is absent),
a command's output and exit status come back (a failing command fails), and a hung command
is killed at its idle timeout, reported with the guest's last output and CPU state, retried
once and then failed with 124.  VMs created and closed in a loop for 20 s do not hang the
level-1 guest (they did within 10-20 s before kvm_hold.py: see there)."""
import os

import sg_bed_util
import sgtest

work = sgtest.tmpdir("sg-bed-self-")

# 1. kvm_amd, not kvm_pvm; output, a writable share, and a non-zero status come back.
probe = ("echo bed-output-start; "
         "test -d /sys/module/kvm_amd || { echo no kvm_amd; exit 90; }; "
         "test -d /sys/module/kvm_pvm && { echo kvm_pvm present; exit 91; }; "
         "test -c /dev/kvm || exit 92; "
         "echo nested=$(cat /sys/module/kvm_amd/parameters/nested) "
         "npt=$(cat /sys/module/kvm_amd/parameters/npt); "
         f"test -x {sgtest.BUILD}/snapgate-vmm || exit 93; "
         f"echo written-inside > {work}/from-bed; "
         "python3 -c 'import sys; print(\"python\", sys.version_info[0])'; "
         # the idle VM of kvm_hold.py is held, and VMs can come and go without a hang
         "p=$(cat /run/sg-bed/kvm-hold.ready) && ls -l /proc/$p/fd | grep -q kvm-vm || exit 94; "
         f"python3 {os.path.realpath(sgtest.SRC)}/tests/kvm-bed/churn_vms.py 20 || exit 95; exit 3")
r = sg_bed_util.run(["sh", "-c", probe], shares=[work], timeout=120)
sgtest.check_eq(r.status, 3, "status of the probe command (90-95: a check inside failed)")
sgtest.check("churn: done" in r.output, "VMs created and closed in a loop did not finish")
sgtest.check("bed-output-start" in r.output, "the command's output did not come back")
sgtest.check("nested=1 npt=Y" in r.output, "kvm_amd is not nested=1 npt=Y")
sgtest.check("python 3" in r.output, "the host's python3 does not run inside")
with open(os.path.join(work, "from-bed")) as f:
    sgtest.check_eq(f.read(), "written-inside\n", "file written to a --share")

# 2. A hung command: killed after --idle, last output shown, retried once, then 124.
r = sg_bed_util.run(["sh", "-c", "echo before-the-hang; sleep 600"], timeout=300, idle=6)
sgtest.check_eq(r.status, sg_bed_util.HUNG, "status of a hung command")
sgtest.check("no output from the command for 6" in r.log, "the hang reason is not reported")
sgtest.check(r.log.count("kvm-bed| before-the-hang") == 2,
             "the guest's last output is not shown for each of the two attempts")
sgtest.check("retrying once" in r.log, "the hung bed was not retried")
sgtest.check("RIP=" in r.log, "no CPU state from the QEMU monitor in the hang report")
print("kvm bed: boots, kvm_amd, status/output/shares, hang kill+report+retry: ok")

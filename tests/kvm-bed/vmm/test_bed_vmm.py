#!/usr/bin/env python3
"""Runs snapgate-vmm's integration tests (tests/integration/vmm, by their ctest names, with
inner.py: ctest's commands and environment, timeouts x5) a
second time, inside the kvm bed, in one boot: there /dev/kvm is kvm_amd, a conventional
KVM, instead of this host's kvm_pvm.

    test_bed_vmm.py [--cpu MODEL] [--probe-no-xsave] TEST...

TEST... is the default subset; SG_BED_FULL=1 runs every vmm_* test instead.  A test that
skips inside the bed fails here: everything it needs (/dev/kvm, QEMU, qemu-img) is there.
--probe-no-xsave first checks that the level-1 CPU has no XSAVE (KVM_CAP_XCRS = 0)."""
import os
import re
import sys

import sg_bed_util
import sgtest

args = sys.argv[1:]
cpu = None
probe = False
while args and args[0].startswith("--"):
    if args[0] == "--cpu":
        cpu = args[1]
        args = args[2:]
    elif args[0] == "--probe-no-xsave":
        probe = True
        args = args[1:]
    else:
        sgtest.fail(f"unknown option {args[0]}")
tests = args
if os.environ.get("SG_BED_FULL") == "1":
    regex = "^vmm_"
else:
    regex = "^(" + "|".join(tests) + ")$"
build = os.path.realpath(sgtest.BUILD)

cmd = ""
if probe:
    # KVM_CHECK_EXTENSION(KVM_CAP_XCRS = 56) is 0 when the host CPU lacks XSAVE.
    cmd += ("python3 -c 'import fcntl, os; fd = os.open(\"/dev/kvm\", os.O_RDWR); "
            "x = fcntl.ioctl(fd, 0xAE03, 56); print(\"KVM_CAP_XCRS\", x); "
            "raise SystemExit(0 if x == 0 else 90)' && ")
inner = os.path.join(os.path.dirname(os.path.abspath(__file__)), "inner.py")
cmd += f"python3 {inner} {build} '{regex}'"
r = sg_bed_util.run(["sh", "-c", cmd], cpu=cpu, timeout=1500)
if probe:
    sgtest.check("KVM_CAP_XCRS 0" in r.output, "the bed's CPU still has XSAVE (KVM_CAP_XCRS != 0)")
results = re.findall(r"Test #\d+: (\S+) \.+ (\S+)", r.output)
sgtest.check(results, "no test results from the bed")
skipped = [n for n, st in results if "Skipped" in st or "Not" in st]
sgtest.check(not skipped, f"skipped inside the bed (where everything they need is): {skipped}")
sgtest.check_eq(r.status, 0, "status of the tests inside the bed")
print(f"kvm bed: {len(results)} vmm tests passed on kvm_amd: {' '.join(n for n, _ in results)}")

#!/usr/bin/env python3
"""snapgate-vmm start-up errors: one line on stderr naming the cause, exit 1."""
import os

import sgtest
from sg_vmm_util import run_vmm_fail

d = sgtest.tmpdir()


def expect_fail(args, needle):
    rc, err = run_vmm_fail(args, cwd=d)
    sgtest.check_eq(rc, 1, f"exit code of {args}")
    lines = err.strip().split("\n")
    sgtest.check_eq(len(lines), 1, f"stderr lines of {args} ({err!r})")
    sgtest.check(lines[0].startswith("snapgate-vmm: "), f"prefix in {lines[0]!r}")
    sgtest.check(needle in lines[0], f"{needle!r} not in {lines[0]!r}")


expect_fail(["-bogus"], "-bogus: invalid option")
for flag in ("-h", "-help", "--help"):
    r = sgtest.run([sgtest.binary("snapgate-vmm"), flag])
    sgtest.check(r.stdout.startswith("Usage: snapgate-vmm ") and "-drive" in r.stdout,
                 f"{flag} prints the usage: {r.stdout[:80]!r}")
r = sgtest.run([sgtest.binary("snapgate-vmm"), "--version"])
sgtest.check(r.stdout.startswith("snapgate-vmm "), f"--version: {r.stdout!r}")
expect_fail(["-m"], "-m: requires an argument")
expect_fail(["-m", "lots"], "invalid RAM size")
expect_fail(["-smp", "2"], "only 1 vCPU")
expect_fail(["-drive", "format=raw"], "file= is required")
expect_fail(["-drive", "file=x,cache=none"], "unsupported option 'cache'")
expect_fail(["-serial", "pty"], "-serial pty")
expect_fail(["-daemonize", "-serial", "stdio"], "-daemonize")
if os.access("/dev/kvm", os.R_OK | os.W_OK):
    expect_fail(["-drive", "file=/nonexistent/disk.qcow2"], "/nonexistent/disk.qcow2")
    expect_fail(["-m", "8M"], "RAM size must be between 16 MiB and 16 GiB")
    expect_fail(["-m", "17G"], "RAM size must be between 16 MiB and 16 GiB")
    # a qcow2 with a backing file is refused by the qcow2 engine, naming the file
    if sgtest.shutil.which("qemu-img"):
        base = os.path.join(d, "base.qcow2")
        top = os.path.join(d, "top.qcow2")
        sgtest.run(["qemu-img", "create", "-q", "-f", "qcow2", base, "1M"])
        sgtest.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top])
        expect_fail(["-drive", f"file={top}"], top)
else:
    rc, err = run_vmm_fail([], cwd=d)
    sgtest.check_eq(rc, 1, "exit code without /dev/kvm")
    sgtest.check(err.startswith("snapgate-vmm: /dev/kvm: "), f"stderr {err!r}")
print("ok")

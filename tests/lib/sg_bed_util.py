"""sg_bed_util: run a command inside the kvm bed (tests/kvm-bed/run.sh) from a python test.

    import sg_bed_util
    r = sg_bed_util.run(["sh", "-c", "ls /dev/kvm"], shares=[workdir], timeout=300)
    r.status, r.output (stdout of the command, text), r.log (the bed's stderr: boot time,
    hang reports)

run() calls sgtest.skip() when the bed cannot run here (run.sh exit 77) unless
skip_ok=False.  Exit statuses of run.sh: the command's own, 77 bed unavailable, 124 hung
twice (or once with no_retry), 125 the bed failed (see tests/kvm-bed/README.md).
"""
import os
import subprocess
import sys

import sgtest

RUN_SH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kvm-bed", "run.sh")
SKIP, HUNG, BED_FAILED = 77, 124, 125


class Result:
    def __init__(self, status, output, log):
        self.status, self.output, self.log = status, output, log


def run(argv, shares=(), timeout=600, idle=None, mem=None, cpu=None, no_retry=False,
        extra=(), skip_ok=True, echo=True):
    """Runs argv in the bed; returns a Result.  echo=True also copies the command's
    output and the bed's log to this test's stdout (ctest shows them on failure)."""
    cmd = [RUN_SH, "--timeout", str(timeout)]
    for d in shares:
        cmd += ["--share", d]
    if idle:
        cmd += ["--idle", str(idle)]
    if mem:
        cmd += ["--mem", mem]
    if cpu:
        cmd += ["--cpu", cpu]
    if no_retry:
        cmd.append("--no-retry")
    cmd += list(extra) + ["--"] + list(argv)
    # ctest's TIMEOUT must leave room for a retry: two boots plus two timeouts.
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=2 * timeout + 600)
    out = p.stdout.decode(errors="replace")
    log = p.stderr.decode(errors="replace")
    if echo:
        sys.stdout.write(out)
        sys.stdout.write("".join(f"[bed] {l}\n" for l in log.splitlines()))
        sys.stdout.flush()
    if p.returncode == SKIP and skip_ok and out.startswith("SKIP: kvm bed:"):
        sgtest.skip(out.splitlines()[0][len("SKIP: "):])
    return Result(p.returncode, out, log)

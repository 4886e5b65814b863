"""sg_bed_util: run a command inside the kvm bed (tests/kvm-bed/run.sh) from a python test.

    import sg_bed_util
    r = sg_bed_util.run(["sh", "-c", "ls /dev/kvm"], shares=[workdir], timeout=300)
    r.status, r.output (stdout of the command, text), r.log (the bed's stderr: boot time,
    hang reports)

run() calls sgtest.skip() when the bed cannot run here (run.sh exit 77) unless
skip_ok=False.  Exit statuses of run.sh: the command's own, 77 bed unavailable, 124 hung
twice (or once with no_retry), 125 the bed failed (see tests/kvm-bed/README.md).

A test that boots a Linux guest: `guest = linux_guest()` (the guest directory, built once),
then `linux_here_or_bed(__file__, guest, timeout)`: returns where a conventional KVM is (or
inside the bed), else re-runs the script with --inner in the bed and exits with its status.
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


def linux_guest():
    """Directory of the Linux test guest (vmlinuz, initrd.img): $SNAPGATE_LINUX_GUEST, else
    BUILD/linux-guest, made by scripts/make-linux-guest.sh the first time.  Skips without."""
    given = os.environ.get("SNAPGATE_LINUX_GUEST")
    where = given or os.path.join(sgtest.BUILD, "linux-guest")
    if not os.path.isfile(os.path.join(where, "initrd.img")):
        if given:
            sgtest.fail(f"SNAPGATE_LINUX_GUEST={given}: no initrd.img there")
        maker = os.path.join(sgtest.SRC, "scripts", "make-linux-guest.sh")
        done = subprocess.run([maker, where], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=900)
        if done.returncode:
            sgtest.skip(f"no Linux guest: {maker} exited {done.returncode}: "
                        f"{done.stdout.strip()[-300:]}")
    return where


def kvm_is_pvm():
    """True when /dev/kvm is kvm_pvm (a Linux guest is far too slow there)."""
    mods = {m for m in ("kvm_pvm", "kvm_intel", "kvm_amd") if os.path.isdir("/sys/module/" + m)}
    return mods == {"kvm_pvm"}


def linux_here_or_bed(script, guest, timeout):
    """A test that boots Linux calls this first.  With a conventional KVM (or already in
    the bed: `--inner` among the arguments) it returns and the test goes on here; on
    kvm_pvm it runs `python3 SCRIPT --inner` in the bed, the guest shared, and exits with
    that status."""
    sgtest.require_kvm()
    if "--inner" in sys.argv or not kvm_is_pvm():
        return
    if not os.path.exists(RUN_SH):
        sgtest.skip("/dev/kvm is kvm_pvm and there is no kvm bed")
    os.environ["SNAPGATE_LINUX_GUEST"] = guest
    r = run(["/usr/bin/python3", os.path.abspath(script), "--inner"], shares=[guest],
            timeout=timeout)
    sys.exit(r.status)

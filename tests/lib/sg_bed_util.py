"""sg_bed_util: run a command inside the kvm bed (tests/kvm-bed/run.sh) from a python test.

    import sg_bed_util
    r = sg_bed_util.run(["sh", "-c", "ls /dev/kvm"], shares=[workdir], timeout=300)
    r.status, r.output (stdout of the command, text), r.log (the bed's stderr: boot time,
    hang reports)

run() calls sgtest.skip() when the bed cannot run here (run.sh exit 77) unless
skip_ok=False.  $SG_BED_ARGS adds options of run.sh to every run (a diagnosis knob:
SG_BED_ARGS="--tcg-threads single").  Exit statuses of run.sh: the command's own, 77 bed
unavailable, 124 hung twice (or once with no_retry), 125 the bed failed (see
tests/kvm-bed/README.md).

A test that boots a Linux guest: `guest = linux_guest()` (the guest directory, built once),
then `linux_here_or_bed(__file__, guest, timeout)`: returns where a conventional KVM is (or
inside the bed), else re-runs the script with --inner in the bed and exits with its status;
when that status is GUEST_LOST (the level-2 guest stopped or rebooted by itself), it runs the
script once more in a fresh bed, prints `RERUN: ...` and keeps the lost attempt's end in
BUILD/Testing/kvm-bed-reruns.log (.ci/run prints it); SG_BED_NO_RERUN=1: no second run.
"""
import os
import shlex
import subprocess
import sys
import time

import sgtest

RUN_SH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kvm-bed", "run.sh")
SKIP, HUNG, BED_FAILED = 77, 124, 125
# A Linux test's own status: its level-2 guest stopped or rebooted by itself
# (linux_util.guest_lost).  linux_here_or_bed runs such a test once more.
GUEST_LOST = 3
RERUN_LOG = "kvm-bed-reruns.log"    # under BUILD/Testing: every such re-run, for CI


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
    cmd += shlex.split(os.environ.get("SG_BED_ARGS", ""))   # e.g. "--tcg-threads single"
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


def record_rerun(name, r):
    """Keeps the lost attempt for CI: one line in BUILD/Testing/kvm-bed-reruns.log, then
    the attempt's last 150 lines of output and bed log (its diagnosis: the VM's state,
    the VMM's stderr), as ctest shows nothing of a test that passes."""
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    lost = [l for l in r.output.splitlines() if l.startswith("FAIL: guest lost")]
    tail = (r.output.splitlines() + [f"[bed] {l}" for l in r.log.splitlines()])[-150:]
    try:
        os.makedirs(os.path.join(sgtest.BUILD, "Testing"), exist_ok=True)
        with open(os.path.join(sgtest.BUILD, "Testing", RERUN_LOG), "a") as f:
            f.write(f"=== {when} {name}: {(lost[-1] if lost else '?')[:1000]}\n")
            f.write("".join(f"    {l[:1000]}\n" for l in tail))
    except OSError as e:
        print(f"(could not record the re-run: {e})", flush=True)


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
    name = os.path.basename(script)
    for attempt in (1, 2):
        r = run(["/usr/bin/python3", os.path.abspath(script), "--inner"], shares=[guest],
                timeout=timeout)
        if r.status != GUEST_LOST:
            sys.exit(r.status)
        if attempt == 2 or os.environ.get("SG_BED_NO_RERUN"):
            break
        # The bed loses a level-2 guest now and then, QEMU 7.2's as well as snapgate-vmm's
        # (tests/kvm-bed/README.md): once is the bed's; twice in a row is a failure.
        print(f"RERUN: {name}: the level-2 guest was lost; once more in a fresh bed", flush=True)
        record_rerun(name, r)
    sys.exit(1)

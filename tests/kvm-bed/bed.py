#!/usr/bin/env python3
"""The kvm bed's host side: boots the level-1 guest under QEMU/TCG with AMD SVM, so that
/dev/kvm inside is a conventional KVM (kvm_amd, nested paging), runs one command there with
the host's programs and trees at their own paths, streams its output and returns its status.
See README.md in this directory; run.sh is the command-line entry point."""
import argparse
import bisect
import ctypes
import os
import re
import secrets
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SKIP = 77        # the bed cannot run here (no QEMU, no SVM under TCG, no Debian packages)
HUNG = 124       # the command or the guest hung twice (or once with --no-retry)
BED_FAILED = 125  # the bed itself failed (boot, mounts, QEMU died)
MODULES = "kvm_amd,9p,9pnet_virtio,overlay"
PARAMS = "kvm_amd nested=1 npt=1"


def log(msg):
    sys.stderr.write(f"kvm-bed: {msg}\n")
    sys.stderr.flush()


def trees():
    src = os.environ.get("SNAPGATE_SRC") or os.path.dirname(os.path.dirname(HERE))
    build = os.environ.get("SNAPGATE_BUILD") or os.path.join(src, "build")
    return os.path.realpath(src), os.path.realpath(build)


def build_guest(build, quiet):
    """Builds (once) the bed's kernel + initramfs under BUILD/kvm-bed/guest.  Skips the
    builder (and apt) when the guest is newer than the scripts that make it (and this
    file: the module parameters)."""
    gdir = os.path.join(build, "kvm-bed", "guest")
    maker = os.path.join(os.path.dirname(os.path.dirname(HERE)), "scripts",
                         "make-linux-guest.sh")
    run_script = os.path.join(HERE, "guest-run.sh")
    stamp = os.path.join(gdir, ".stamp")
    try:
        t = os.path.getmtime(stamp)
        if all(os.path.getmtime(f) < t for f in (maker, run_script, os.path.abspath(__file__))) and \
                os.path.exists(os.path.join(gdir, "vmlinux")):
            return gdir, None
    except OSError:
        pass
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        return None, "no apt-get/dpkg-deb to build the level-1 guest from Debian packages"
    argv = [maker, gdir, "--add-modules", MODULES, "--module-param", PARAMS,
            "--run", run_script, "--ready-marker", "sg-bed: guest ready",
            "--vmlinux", "--compress", "none",     # nothing to decompress under TCG
            "--cache", os.path.join(build, "kvm-bed", "debs")]
    if quiet:
        argv.append("-q")
    r = subprocess.run(argv, stdout=sys.stderr)
    if r.returncode != 0:
        return None, f"building the level-1 guest failed ({' '.join(map(shlex.quote, argv))})"
    return gdir, None


def _die_with_parent():
    # QEMU must not outlive the runner (ctest kills the runner at its TIMEOUT).
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Share:
    def __init__(self, path, mode):
        self.path = os.path.realpath(path)
        self.mode = mode     # ro, rw, ov (read-only below a tmpfs overlay)
        self.tag = ""


def plan_shares(src, build, extra, scratch):
    shares = [Share("/usr", "ro"), Share("/etc", "ro"), Share(src, "ov"), Share(build, "ov")]
    shares += [Share(d, "rw") for d in extra] + [Share(scratch, "rw")]
    out = []
    for s in sorted(shares, key=lambda s: (s.path.count("/"), s.path)):
        if not os.path.isdir(s.path):
            continue
        # A read-only tree inside another read-only tree is already there.
        if s.mode != "rw" and any(o.mode != "rw" and (s.path + "/").startswith(o.path + "/")
                                  for o in out):
            continue
        if any(o.path == s.path for o in out):
            continue
        s.tag = f"sg{len(out)}"
        out.append(s)
    return out


def write_job(ctl, token, shares, argv, cwd, scratch, kvm_hold=True):
    with open(os.path.join(ctl, "token"), "w") as f:
        f.write(token + "\n")
    with open(os.path.join(ctl, "mounts"), "w") as f:
        for s in shares:
            f.write(f"{s.tag} {s.mode} {s.path}\n")
    with open(os.path.join(ctl, "links"), "w") as f:
        for name in sorted(os.listdir("/")):
            p = os.path.join("/", name)
            if os.path.islink(p) and "/" not in name:
                f.write(f"{name} {os.readlink(p)}\n")
    lines = ["# written by tests/kvm-bed/bed.py: the command and its environment"]
    for k, v in sorted(os.environ.items()):
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) and k not in (
                "PWD", "OLDPWD", "SHLVL", "_", "TMPDIR"):
            lines.append(f"export {k}={shlex.quote(v)}")
    lines += [f"export SG_BED=1 SG_BED_SCRATCH={shlex.quote(scratch)}",
              # PATH entries that are not shared (pyenv shims in /root, ...) are dropped
              'p=; IFS=:; for d in $PATH; do [ -d "$d" ] && p=${p:+$p:}$d; done; unset IFS',
              'export PATH=${p:-/usr/bin:/bin}',
              f"cd {shlex.quote(cwd)} 2>/dev/null || cd /"]
    if kvm_hold:
        # One idle VM for the whole run: see kvm_hold.py (the level-1 hangs at text patching).
        shutil.copy(os.path.join(HERE, "kvm_hold.py"), os.path.join(ctl, "kvm_hold.py"))
        lines += ["rm -f /run/sg-bed/kvm-hold.ready",
                  "python3 /run/sg-bed/kvm_hold.py /run/sg-bed/kvm-hold.ready </dev/null &",
                  "i=0; while [ ! -s /run/sg-bed/kvm-hold.ready ] && [ $i -lt 300 ] && "
                  "kill -0 $! 2>/dev/null; do sleep 0.1; i=$((i+1)); done",
                  '[ -s /run/sg-bed/kvm-hold.ready ] || '
                  'echo "kvm-bed: warning: no idle VM held (kvm_hold.py)" >&2']
    lines += ["exec " + " ".join(shlex.quote(a) for a in argv)]
    with open(os.path.join(ctl, "job.sh"), "w") as f:
        f.write("\n".join(lines) + "\n")


def monitor_dump(path):
    """CPU state of every vCPU from the QEMU monitor (for a hang report)."""
    out = b""
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(3)
        s.connect(path)
        s.sendall(b"info cpus\ninfo registers -a\n")
        end = time.monotonic() + 3
        while time.monotonic() < end:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            out += b
        s.close()
    except OSError as e:
        return f"(monitor unavailable: {e})"
    text = out.decode(errors="replace").replace("\r", "")
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def load_kallsyms(path):
    syms = []
    try:
        with open(path) as f:
            for line in f:
                a, _, name = line.split()[:3]
                syms.append((int(a, 16), name))
    except (OSError, ValueError):
        pass
    syms.sort()
    return syms


def symbolize(syms, addr):
    i = bisect.bisect_right(syms, (addr, "\uffff")) - 1
    if i < 0 or not syms or addr - syms[i][0] > 0x100000:
        return "(no symbol)"
    return f"<{syms[i][1]}+{addr - syms[i][0]:#x}>"


class Attempt:
    """One boot of the bed running the command.  result: ('done', status),
    ('hang', why), ('nokvm', why) or ('error', why)."""

    def __init__(self, opts, gdir, shares, ctl, token, out):
        self.opts, self.gdir, self.shares, self.ctl, self.token = opts, gdir, shares, ctl, token
        self.out = out
        self.tail = []          # the guest's last console lines, for reports
        self.partial = b""

    def qemu_argv(self):
        o = self.opts
        # nokaslr: hang reports resolve RIPs against the guest's kallsyms.
        # tsc=reliable: TCG's TSC is the host's on every vCPU, but the boot-time
        # sync check under emulation finds a warp ("TSCs unsynchronized"), so the
        # level-1 kernel ran on HPET and its KVM without a master clock: then KVM
        # adjusts a level-2 vCPU's TSC offset each time it is scheduled in (TSC
        # catch-up), the level-2 guest's TSC and kvmclock drift apart under host
        # load, and its clocksource watchdog marks the TSC unstable (a linux_guest
        # failure that had nothing to do with the VMM under test).
        append = "console=ttyS0 quiet loglevel=4 panic=-1 nokaslr tsc=reliable " + o.append
        argv = [o.qemu, "-accel", f"tcg,thread={o.tcg_threads}", "-cpu", o.cpu, "-smp", str(o.smp),
                "-m", o.mem, "-nodefaults", "-display", "none", "-vga", "none", "-no-reboot",
                "-kernel", os.path.join(self.gdir, "vmlinux"),
                "-initrd", os.path.join(self.gdir, "initrd.img"), "-append", append,
                "-serial", "stdio",
                "-chardev", f"socket,id=hb,path={self.ctl}/hb.sock", "-serial", "chardev:hb",
                "-monitor", f"unix:{self.ctl}/mon.sock,server=on,wait=off"]
        fs = [("sgctl", self.ctl, False)] + [(s.tag, s.path, s.mode != "rw") for s in self.shares]
        for i, (tag, path, ro) in enumerate(fs):
            argv += ["-fsdev", f"local,id=fs{i},path={path},security_model=none,"
                     f"multidevs=remap{',readonly=on' if ro else ''}",
                     "-device", f"virtio-9p-pci,fsdev=fs{i},mount_tag={tag}"]
        return argv

    def keep(self, line):
        self.tail.append(line)
        del self.tail[:-self.opts.tail]

    def report(self, why):
        log(f"{why}: the guest's last output:")
        for line in self.tail:
            sys.stderr.write(f"kvm-bed| {line.decode(errors='replace')}\n")
        if self.partial:
            sys.stderr.write(f"kvm-bed| {self.partial.decode(errors='replace')}\n")
        log("CPU state from the QEMU monitor (info registers -a):")
        syms = load_kallsyms(f"{self.ctl}/kallsyms")
        for line in monitor_dump(f"{self.ctl}/mon.sock").splitlines():
            # the general registers, not FPU/SSE state
            if re.match(r"(CPU|\* CPU|  CPU|RAX|RSI|R8 |R12|RIP|CS |CR0|EFER)", line):
                m = re.match(r"RIP=([0-9a-f]+)", line)
                if m:
                    line += "  " + symbolize(syms, int(m.group(1), 16))
                sys.stderr.write(f"kvm-bed| {line}\n")
        sys.stderr.flush()

    def run(self):
        o = self.opts
        hb_path = f"{self.ctl}/hb.sock"
        hb_listen = socket.socket(socket.AF_UNIX)
        hb_listen.bind(hb_path)
        hb_listen.listen(1)
        t0 = time.monotonic()
        proc = subprocess.Popen(self.qemu_argv(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, "console")
        sel.register(hb_listen, selectors.EVENT_READ, "listen")
        marker = b"sg-bed " + self.token.encode() + b" "
        started = None          # time the command started
        last_hb = None
        last_out = time.monotonic()
        result = None
        try:
            while result is None:
                now = time.monotonic()
                if started is None and now - t0 > o.boot_timeout:
                    result = ("hang", f"the guest did not start the command within {o.boot_timeout} s")
                elif started is not None and now - started > o.timeout:
                    result = ("hang", f"the command ran past --timeout {o.timeout} s")
                elif last_hb is not None and now - last_hb > o.hang:
                    result = ("hang", f"no heartbeat from the guest for {o.hang} s (guest hung)")
                elif started is not None and o.idle and now - last_out > o.idle:
                    result = ("hang", f"no output from the command for {o.idle} s (--idle)")
                if result:
                    break
                events = sel.select(timeout=0.5)
                if not events and self.partial and started is not None and now - last_out > 0.5:
                    self.out.write(self.partial)
                    self.out.flush()
                    self.keep(self.partial)
                    self.partial = b""
                for key, _ in events:
                    if key.data == "listen":
                        c, _ = hb_listen.accept()
                        c.setblocking(False)
                        sel.register(c, selectors.EVENT_READ, "hb")
                    elif key.data == "hb":
                        try:
                            b = key.fileobj.recv(4096)
                        except BlockingIOError:
                            continue
                        if b:
                            last_hb = time.monotonic()
                        else:
                            sel.unregister(key.fileobj)
                    else:
                        b = os.read(proc.stdout.fileno(), 65536)
                        if not b:
                            if result is None:
                                result = self.ended(proc, started)
                            break
                        last_out = time.monotonic()
                        data = self.partial + b.replace(b"\r", b"")
                        *lines, self.partial = data.split(b"\n")
                        for line in lines:
                            i = line.find(marker)
                            if i < 0:
                                self.keep(line)
                                if started is not None:
                                    self.out.write(line + b"\n")
                                elif o.verbose:
                                    sys.stderr.write(f"kvm-bed| {time.monotonic() - t0:6.1f} "
                                                     f"{line.decode(errors='replace')}\n")
                                continue
                            if i > 0:
                                self.keep(line[:i])
                                if started is not None:
                                    self.out.write(line[:i] + b"\n")
                            word = line[i + len(marker):].decode(errors="replace").split(" ", 1)
                            if word[0] == "start":
                                started = time.monotonic()
                                if not o.quiet:
                                    log(f"guest booted in {started - t0:.1f} s; running the command")
                            elif word[0] == "exit":
                                result = ("done", int(word[1]))
                            elif word[0] == "nokvm":
                                result = ("nokvm", word[1] if len(word) > 1 else "")
                        self.out.flush()
            if result[0] == "hang":
                self.report(result[1])
            elif result[0] == "error":
                self.report(result[1])
        finally:
            if result and result[0] == "done":
                try:        # the guest powers off right after the exit line
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    pass
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
            hb_listen.close()
            for key in list(sel.get_map().values()):
                if key.data == "hb":
                    key.fileobj.close()
            sel.close()
            for f in ("hb.sock", "mon.sock"):
                try:
                    os.unlink(f"{self.ctl}/{f}")
                except OSError:
                    pass
        if not o.quiet and result[0] == "done":
            log(f"command exited {result[1]} after {time.monotonic() - t0:.1f} s in the bed")
        return result

    def ended(self, proc, started):
        proc.wait()
        what = "before the command started" if started is None else "while the command ran"
        return ("error", f"QEMU exited {proc.returncode} {what}")


def parse(argv):
    p = argparse.ArgumentParser(prog="tests/kvm-bed/run.sh", description=(
        "Runs COMMAND inside a level-1 Linux guest under QEMU/TCG whose /dev/kvm is kvm_amd. "
        f"Exit status: COMMAND's; {SKIP} the bed cannot run here (reason on stderr); "
        f"{HUNG} hung twice (once with --no-retry); {BED_FAILED} the bed failed."))
    p.add_argument("--share", action="append", default=[], metavar="DIR",
                   help="share DIR writable at its own path (repeatable)")
    p.add_argument("--timeout", type=float, default=1800, metavar="S",
                   help="kill the command after S seconds (default 1800)")
    p.add_argument("--idle", type=float, default=0, metavar="S",
                   help="kill the command after S seconds without output (default: off)")
    p.add_argument("--hang", type=float, default=60, metavar="S",
                   help="kill the guest after S seconds without its heartbeat (default 60)")
    p.add_argument("--boot-timeout", type=float, default=240, metavar="S",
                   help="the guest must start the command within S seconds (default 240)")
    p.add_argument("--mem", default="4G", metavar="SIZE", help="level-1 guest RAM (default 4G)")
    p.add_argument("--smp", type=int, default=2, metavar="N", help="level-1 vCPUs (default 2)")
    p.add_argument("--cpu", default="max", metavar="MODEL",
                   help="level-1 CPU model (default max; e.g. max,-xsave)")
    p.add_argument("--tcg-threads", default="multi", choices=("multi", "single"),
                   help="one host thread per vCPU (multi, default) or one for all")
    p.add_argument("--append", default="", metavar="ARGS", help="extra kernel command line")
    p.add_argument("--no-retry", action="store_true", help="do not retry after a hang")
    p.add_argument("--no-kvm-hold", action="store_true",
                   help="do not hold an idle VM open during the command (see kvm_hold.py)")
    p.add_argument("--keep", action="store_true", help="keep the scratch and control dirs")
    p.add_argument("--tail", type=int, default=30, metavar="N",
                   help="console lines shown in a hang report (default 30)")
    p.add_argument("-q", "--quiet", action="store_true", help="only hang and error reports")
    p.add_argument("-v", "--verbose", action="store_true", help="show the guest's boot output")
    p.add_argument("command", nargs=argparse.REMAINDER)
    o = p.parse_args(argv)
    if o.command[:1] == ["--"]:
        o.command = o.command[1:]
    if not o.command:
        p.error("no COMMAND (tests/kvm-bed/run.sh [options] -- COMMAND...)")
    return o


def main(argv=None):
    o = parse(sys.argv[1:] if argv is None else argv)
    o.qemu = shutil.which("qemu-system-x86_64")
    if not o.qemu:
        print("SKIP: kvm bed: qemu-system-x86_64 is not installed")
        return SKIP
    for d in o.share:
        if not os.path.isdir(d):
            log(f"--share {d}: not a directory")
            return BED_FAILED
    src, build = trees()
    gdir, why = build_guest(build, o.quiet)
    if not gdir:
        print(f"SKIP: kvm bed: {why}")
        return SKIP
    tmp = os.environ.get("TMPDIR", "/tmp")
    ctl = tempfile.mkdtemp(prefix="sg-bed-ctl-", dir=tmp)
    scratch = tempfile.mkdtemp(prefix="sg-bed-scratch-", dir=tmp)
    shares = plan_shares(src, build, o.share, scratch)
    cwd = os.getcwd()
    if not any((cwd + "/").startswith(s.path + "/") for s in shares):
        cwd = "/"
    out = sys.stdout.buffer
    try:
        for attempt in (1, 2):
            token = secrets.token_hex(6)
            for f in ("status",):
                try:
                    os.unlink(os.path.join(ctl, f))
                except OSError:
                    pass
            write_job(ctl, token, shares, o.command, cwd, scratch, not o.no_kvm_hold)
            kind, val = Attempt(o, gdir, shares, ctl, token, out).run()
            if kind == "done":
                return val
            if kind == "nokvm":
                print(f"SKIP: kvm bed: {val}")
                return SKIP
            if kind == "error":
                return BED_FAILED
            if attempt == 1 and not o.no_retry:
                log(f"killed the hung bed ({val}); retrying once")
                continue
            log(f"hung: {val}")
            return HUNG
    finally:
        if not o.keep:
            shutil.rmtree(ctl, True)
            shutil.rmtree(scratch, True)
        else:
            log(f"kept control dir {ctl} and scratch {scratch}")
    return BED_FAILED


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)

"""linux_util: what the Linux-guest tests share.

    guest = linux_util.enter_bed_or_here(__file__)   # re-runs the test in the bed on kvm_pvm
    con = linux_util.Console(serial_socket_path)     # the guest's ttyS0
    con.boot(300); con.sh("echo hi")

enter_bed_or_here: on a host with kvm_intel/kvm_amd returns the guest directory and the
test goes on here; on kvm_pvm it runs the same script with --inner inside the nested
test bed (tests/kvm-bed/run.sh) and exits with its status; otherwise SKIP.  The guest
(vmlinuz + initrd.img) is $SNAPGATE_LINUX_GUEST or is built once by
scripts/make-linux-guest.sh into build/linux-guest.
"""
import os
import re
import socket
import subprocess
import sys
import time

import sgtest

READY = rb"sg-guest: ready|SNAPGATE-GUEST-READY"


def host_is_pvm():
    return os.path.exists("/sys/module/kvm_pvm") and not (
        os.path.exists("/sys/module/kvm_intel") or os.path.exists("/sys/module/kvm_amd"))


def guest_dir():
    g = os.environ.get("SNAPGATE_LINUX_GUEST")
    if g:
        sgtest.check(os.path.exists(os.path.join(g, "vmlinuz")), f"{g}/vmlinuz missing")
        return g
    mk = os.path.join(sgtest.SRC, "scripts", "make-linux-guest.sh")
    if not os.path.exists(mk):
        sgtest.skip("no Linux guest: set SNAPGATE_LINUX_GUEST=DIR (vmlinuz, initrd.img) or "
                    "add scripts/make-linux-guest.sh")
    g = os.path.join(sgtest.BUILD, "linux-guest")
    if not os.path.exists(os.path.join(g, "initrd.img")):
        r = subprocess.run([mk, g], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            sgtest.skip(f"make-linux-guest.sh failed ({r.returncode}): {r.stderr.strip()[-300:]}")
    return g


def enter_bed_or_here(script, bed_timeout=900):
    """Returns the guest directory when the test is to run in this process."""
    if "--inner" not in sys.argv:
        guest = guest_dir()
        sgtest.require_kvm()
        if host_is_pvm():
            bed = os.path.join(sgtest.SRC, "tests", "kvm-bed", "run.sh")
            if not os.path.exists(bed):
                sgtest.skip("/dev/kvm is kvm_pvm (no Linux guest in useful time) and there is "
                            "no test bed (tests/kvm-bed/run.sh)")
            env = dict(os.environ, SNAPGATE_LINUX_GUEST=guest)
            r = subprocess.run([bed, "--share", guest, "--timeout", str(bed_timeout), "--",
                                "/usr/bin/python3", os.path.abspath(script), "--inner"],
                               env=env, timeout=bed_timeout + 100)
            sys.exit(r.returncode)
        os.environ["SNAPGATE_LINUX_GUEST"] = guest
    sgtest.require_kvm()
    return os.environ["SNAPGATE_LINUX_GUEST"]


class Console:
    """The guest's ttyS0 over a unix socket (snapgate-vmm's or QEMU's -serial unix:...)."""

    def __init__(self, path):
        def connect():
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                return s
            except OSError:
                s.close()
                return None
        self.s = sgtest.wait_for(connect, 30, "serial socket", interval=0.1)
        self.buf = b""
        self.n = 0

    def expect(self, pattern, timeout):
        end = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.buf)
            if m:
                out = self.buf[:m.end()]
                self.buf = self.buf[m.end():]
                return out, m
            left = end - time.monotonic()
            if left <= 0:
                sgtest.fail(f"guest console: no {pattern!r} within {timeout}s; last output: "
                            f"{self.buf[-600:]!r}")
            self.s.settimeout(left)
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                sgtest.fail(f"guest console closed; last output {self.buf[-600:]!r}")
            self.buf += chunk

    def boot(self, timeout=300):
        """Waits for the init's ready line and the shell prompt."""
        self.expect(READY, timeout)
        self.expect(rb"# ", 60)
        self.sh("stty cols 1000")   # no line wrapping in the echo of long commands

    def send(self, line):
        self.s.sendall(line.encode() + b"\n")

    def sh(self, cmd, timeout=60):
        """Runs one shell line; returns its output (the echoed line removed)."""
        self.n += 1
        # The echo of the line shows @@"N"@@, only the output has @@N@@.
        sep = " " if cmd.endswith("&") else "; "
        self.s.sendall(f'{cmd}{sep}echo "@@"{self.n}"@@"\n'.encode())
        out, _ = self.expect(rb"\r?\n@@%d@@\r?\n" % self.n, timeout)
        text = out.decode(errors="replace").replace("\r", "")
        after = text[text.rfind(f'"@@"{self.n}"@@"'):]
        after = after[after.find("\n") + 1:]
        return after[:after.rfind(f"@@{self.n}@@")].strip()

    def close(self):
        self.s.close()

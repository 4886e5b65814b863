"""linux_util: what the Linux-guest tests share.

    guest = linux_util.enter_bed_or_here(__file__)   # re-runs the test in the bed on kvm_pvm
    con = linux_util.Console(serial_socket_path)     # the guest's ttyS0
    con.boot(300); con.sh("echo hi")

enter_bed_or_here: on a host with kvm_intel/kvm_amd returns the guest directory and the
test goes on here; on kvm_pvm it runs the same script with --inner inside the nested
test bed (tests/kvm-bed/run.sh) and exits with its status; otherwise SKIP.
A guest that stops (no console output at all after a command, for the whole wait, or
the echo of the typed line stopping part way: not even its end of line came back) or
reboots by itself (its ready line in a command's output) ends the test with
sg_bed_util.GUEST_LOST; the bed's runner then runs the test once more in a fresh bed
(the bed loses a level-2 guest now and then, QEMU 7.2's too: tests/kvm-bed/README.md).  The guest
(vmlinuz + initrd.img) is $SNAPGATE_LINUX_GUEST or is built once by
scripts/make-linux-guest.sh into build/linux-guest.
"""
import os
import re
import socket
import time

import sg_bed_util
import sgtest

READY = rb"sg-guest: ready|SNAPGATE-GUEST-READY"


def enter_bed_or_here(script, bed_timeout=900):
    """Returns the guest directory when the test is to run in this process (the bed's
    own logic: sg_bed_util.linux_guest and linux_here_or_bed)."""
    guest = sg_bed_util.linux_guest()
    sg_bed_util.linux_here_or_bed(script, guest, bed_timeout)
    os.environ["SNAPGATE_LINUX_GUEST"] = guest
    return guest


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
        self.silent = True      # nothing received since the last line sent
        self.eol = False        # an end of line received since the last line sent

    def expect(self, pattern, timeout, in_command=False):
        """Waits for pattern; returns (the output up to its end, the match).  in_command:
        the guest's ready line on the way means it rebooted by itself."""
        end = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.buf)
            if in_command and re.search(READY, self.buf[:m.end()] if m else self.buf):
                guest_lost(f"the guest rebooted by itself while {pattern!r} was awaited; "
                           f"output: {self.buf[-600:]!r}")
            if m:
                out = self.buf[:m.end()]
                self.buf = self.buf[m.end():]
                return out, m
            left = end - time.monotonic()
            if left <= 0:
                if self.silent:
                    guest_lost(f"guest console: not one byte within {timeout}s while "
                               f"{pattern!r} was awaited; last output: {self.buf[-600:]!r}")
                if in_command and not self.eol:
                    # A live shell echoes the whole line at once; this one stopped
                    # part way (as QEMU's guest once did in linux_power).
                    guest_lost(f"guest console: the echo of the line stopped part way "
                               f"(no end of line within {timeout}s) while {pattern!r} was "
                               f"awaited; last output: {self.buf[-600:]!r}")
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
            self.silent = False
            self.eol = self.eol or b"\n" in chunk

    def boot(self, timeout=300):
        """Waits for the init's ready line and the shell prompt."""
        self.expect(READY, timeout)
        self.expect(rb"# ", 60)
        self.sh("stty cols 1000")   # no line wrapping in the echo of long commands

    def send(self, line):
        self.silent = True
        self.eol = False
        self.s.sendall(line.encode() + b"\n")

    def sh(self, cmd, timeout=60):
        """Runs one shell line; returns its output (the echoed line removed)."""
        self.n += 1
        # The echo of the line shows @@"N"@@, only the output has @@N@@.
        sep = " " if cmd.endswith("&") else "; "
        self.send(f'{cmd}{sep}echo "@@"{self.n}"@@"')
        out, _ = self.expect(rb"\r?\n@@%d@@\r?\n" % self.n, timeout, in_command=True)
        text = out.decode(errors="replace").replace("\r", "")
        after = text[text.rfind(f'"@@"{self.n}"@@"'):]
        after = after[after.find("\n") + 1:]
        return after[:after.rfind(f"@@{self.n}@@")].strip()

    def close(self):
        self.s.close()


def guest_lost(msg):
    """Ends the test: the level-2 guest stopped or rebooted by itself (see the top)."""
    sgtest.fail(f"guest lost: {msg}", status=sg_bed_util.GUEST_LOST)


def show_log_on_failure(path, what="snapgate-vmm stderr", lines=40):
    """On a failure, the last lines of the log at path are printed."""
    def show():
        with open(path, "rb") as f:
            tail = f.read().decode(errors="replace").splitlines()[-lines:]
        print(f"--- last {len(tail)} lines of {what} ---\n" + "\n".join(tail), flush=True)
    sgtest.on_failure(show)


def show_vm_state_on_failure(holder):
    """On a failure, asks the VM in holder["qmp"] (an sgtest.QMP, when set) for its
    run state and, with SNAPGATE_VMM_IRQ_TRACE set, saves once more so that the VMM's
    stderr shows the interrupt state of the guest as it is (a stuck guest's)."""
    def show():
        q = holder.get("qmp")
        if q is None:
            return
        q.sock.settimeout(60)
        print("query-status at the failure:", q.cmd("query-status"), flush=True)
        print("savevm sg-diag:", q.hmp("savevm sg-diag"), flush=True)
    sgtest.on_failure(show)

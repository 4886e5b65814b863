"""sg_vmm_util: helpers for snapgate-vmm integration tests (stdlib only)."""
import os
import re
import subprocess
import threading
import time

import sgtest

# In the kvm bed (SG_BED=1) the guest's time runs 10-40x slower than here and varies with
# the host's load: serial waits stretch like ctest's TIMEOUTs there (kvm-bed/vmm/inner.py).
WAIT_SCALE = (float(os.environ.get("SG_BED_TIMEOUT_SCALE", "5"))
              if os.environ.get("SG_BED") == "1" else 1.0)


class VMM:
    """A running snapgate-vmm with its serial console (stdio) collected
    line by line on a thread and a QMP socket in `workdir`."""

    def __init__(self, workdir, args=(), qmp=True, name="vmm"):
        sgtest.require_kvm()
        self.sock = os.path.join(workdir, f"{name}.qmp")
        argv = [sgtest.binary("snapgate-vmm")] + list(args)
        if qmp:
            argv += ["-qmp", f"unix:{self.sock},server=on,wait=off"]
        self.lines = []
        self._lock = threading.Lock()
        self.stderr_path = os.path.join(workdir, f"{name}.stderr")
        self._stderr = open(self.stderr_path, "wb")
        self.proc = sgtest.spawn(argv, stdout=subprocess.PIPE, stderr=self._stderr,
                                 cwd=workdir)
        self._t = threading.Thread(target=self._reader, daemon=True)
        self._t.start()
        self.qmp = None
        if qmp:
            sgtest.wait_for(lambda: os.path.exists(self.sock) or self.proc.poll() is not None,
                            10, "QMP socket")
            if self.proc.poll() is not None:
                sgtest.fail(f"snapgate-vmm exited {self.proc.returncode}: {self.stderr()}")
            self.qmp = sgtest.QMP(self.sock)

    def _reader(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            with self._lock:
                self.lines.append(line)

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def snapshot_lines(self):
        with self._lock:
            return list(self.lines)

    def wait_line(self, pattern, timeout=10.0, start=0):
        """Waits for a serial line matching regex `pattern` at index >= start;
        returns (index, match)."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout * WAIT_SCALE
        while time.monotonic() < end:
            lines = self.snapshot_lines()
            for i in range(start, len(lines)):
                m = rx.search(lines[i])
                if m:
                    return i, m
            if self.proc.poll() is not None and self._t.is_alive() is False:
                break
            time.sleep(0.02)
        sgtest.fail(f"no serial line matching {pattern!r} within {timeout}s; "
                    f"last lines: {self.snapshot_lines()[-5:]}")

    def ticks(self):
        return [int(m.group(1)) for m in
                (re.match(r"tick (\d+)$", l) for l in self.snapshot_lines()) if m]

    def last_tick(self):
        t = self.ticks()
        return t[-1] if t else 0

    def io_written(self):
        """Bytes the VMM process wrote: /proc/PID/io write_bytes, or wchar where
        the file system does no block accounting (tmpfs, as in the kvm bed)."""
        with open(f"/proc/{self.proc.pid}/io") as f:
            kv = dict(line.split(": ") for line in f.read().splitlines())
        return int(kv["write_bytes"]) or int(kv["wchar"])

    def check_no_ram_failure(self):
        bad = [l for l in self.snapshot_lines() if "RAM CHECK FAILED" in l]
        sgtest.check(not bad, f"guest reported {bad[:3]}")

    def quit(self, timeout=10):
        if self.qmp:
            r = self.qmp.cmd("quit")
            sgtest.check("return" in r, f"quit: {r}")
        rc = self.proc.wait(timeout)
        self._t.join(5)
        return rc


def run_vmm_fail(args, cwd=None, timeout=20):
    """Runs snapgate-vmm expecting a start-up failure: returns (rc, stderr)."""
    r = subprocess.run([sgtest.binary("snapgate-vmm")] + list(args), capture_output=True,
                       text=True, timeout=timeout, cwd=cwd)
    return r.returncode, r.stderr

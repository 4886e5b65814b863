"""sgtest: shared helpers for snapgate's integration tests (Python 3 stdlib only).

Integration tests start the real programs (snapgate, snapgate-vmm, snapgate-img,
qemu-system-x86_64, qemu-img, qemu-io).  A test whose hardware or tool is absent
calls skip(reason): it prints why and exits 77, which ctest reports as skipped.
"""
import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77
BUILD = os.environ.get("SNAPGATE_BUILD") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build")
SRC = os.environ.get("SNAPGATE_SRC") or os.path.join(os.path.dirname(__file__), "..", "..")


def skip(reason):
    print(f"SKIP: {reason}", flush=True)
    sys.exit(SKIP)


_on_failure = []


def on_failure(fn):
    """fn() runs when the test fails (before it exits): diagnosis a test keeps
    in files that die with its temporary directory, such as a program's stderr."""
    _on_failure.append(fn)


def fail(msg, status=1):
    """Prints msg, runs the on_failure hooks and exits with status (1: a failure)."""
    print(f"FAIL: {msg}", flush=True)
    for fn in _on_failure:
        try:
            fn()
        except Exception as e:  # the diagnosis must not hide the failure
            print(f"(diagnosis failed: {e})", flush=True)
    sys.exit(status)


def check(cond, msg):
    """Asserts cond; on failure prints msg and exits 1."""
    if not cond:
        fail(msg)


def check_eq(got, want, what):
    if got != want:
        fail(f"{what}: got {got!r}, want {want!r}")


def binary(name):
    """Path of a program built by this tree (build/NAME)."""
    p = os.path.join(BUILD, name)
    check(os.access(p, os.X_OK), f"{p} not built")
    return p


def require_tool(name):
    p = shutil.which(name)
    if not p:
        skip(f"{name} not installed (scripts/install-deps.sh installs it)")
    return p


def require_kvm():
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
    except OSError as e:
        skip(f"/dev/kvm not usable: {e.strerror}")


_procs = []


def tmpdir(prefix="sgtest-"):
    d = tempfile.mkdtemp(prefix=prefix)
    if not os.environ.get("SGTEST_KEEP"):
        atexit.register(shutil.rmtree, d, True)
    return d


def spawn(argv, **kw):
    """Starts a process that is killed at exit if the test forgets it."""
    p = subprocess.Popen(argv, **kw)
    _procs.append(p)
    return p


@atexit.register
def _reap():
    for p in _procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def wait_for(pred, timeout=10.0, what="condition", interval=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    fail(f"timed out after {timeout}s waiting for {what}")


def run(argv, check_rc=True, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check_rc and r.returncode != 0:
        fail(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip()}")
    return r


def qemu_img_check(path, allow_leaks=False):
    """qemu-img check must report the image clean (the project's rule for every image)."""
    qi = shutil.which("qemu-img")
    if not qi:
        return  # the test itself decides whether qemu-img is required
    r = subprocess.run([qi, "check", path], capture_output=True, text=True)
    ok = r.returncode == 0 or (allow_leaks and r.returncode == 3)
    check(ok, f"qemu-img check {path} exited {r.returncode}:\n{r.stdout}{r.stderr}")


class QMP:
    """A small synchronous QMP client for tests: commands, events, raw bytes."""

    def __init__(self, path, timeout=10.0, negotiate=True, connect_timeout=10.0):
        self.events = []
        self.buf = b""
        end = time.monotonic() + connect_timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(timeout)
        self.greeting = self.recv()
        self._id = 0
        if negotiate:
            r = self.cmd("qmp_capabilities")
            check("return" in r, f"qmp_capabilities failed: {r}")

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def recv(self):
        """Next message (reply or event) as a dict."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        line = line.strip()
        if not line:
            return self.recv()
        return json.loads(line)

    def cmd(self, name, args=None, id=None):
        """Sends a command and returns its reply; events seen meanwhile are queued."""
        self._id += 1
        mid = id if id is not None else f"t{self._id}"
        msg = {"execute": name, "id": mid}
        if args is not None:
            msg["arguments"] = args
        self.send_raw(json.dumps(msg) + "\r\n")
        while True:
            m = self.recv()
            if "event" in m:
                self.events.append(m)
                continue
            return m

    def hmp(self, line):
        r = self.cmd("human-monitor-command", {"command-line": line})
        check("return" in r, f"human-monitor-command {line!r} failed: {r}")
        return r["return"]

    def wait_event(self, name, timeout=30.0, pred=None):
        end = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e["event"] == name and (pred is None or pred(e)):
                    return self.events.pop(i)
            left = end - time.monotonic()
            if left <= 0:
                fail(f"timed out waiting for event {name}")
            self.sock.settimeout(left)
            try:
                m = self.recv()
            except socket.timeout:
                fail(f"timed out waiting for event {name}")
            if "event" in m:
                self.events.append(m)

    def wait_job(self, job_id, timeout=120.0):
        """Waits until a job concludes; returns its query-jobs entry, then dismisses it."""
        self.wait_event("JOB_STATUS_CHANGE", timeout,
                        lambda e: e["data"]["id"] == job_id and e["data"]["status"] == "concluded")
        jobs = self.cmd("query-jobs")["return"]
        job = [j for j in jobs if j["id"] == job_id]
        check(job, f"job {job_id} missing from query-jobs")
        r = self.cmd("job-dismiss", {"id": job_id})
        check("return" in r, f"job-dismiss {job_id}: {r}")
        return job[0]


def start_qemu(drives, workdir, extra=()):
    """Starts qemu-system-x86_64 -S with QMP on a unix socket; returns (proc, sock_path).
    drives: list of -drive option strings.  Uses KVM when available, else TCG."""
    qemu = require_tool("qemu-system-x86_64")
    sock = os.path.join(workdir, "qemu-qmp.sock")
    accel = "kvm:tcg" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg"
    argv = [qemu, "-S", "-nodefaults", "-display", "none", "-machine", f"accel={accel}",
            "-m", "64", "-qmp", f"unix:{sock},server=on,wait=off"]
    for d in drives:
        argv += ["-drive", d]
    argv += list(extra)
    p = spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=workdir)
    wait_for(lambda: os.path.exists(sock) or p.poll() is not None, 20, "QEMU QMP socket")
    if p.poll() is not None:
        fail(f"QEMU exited {p.returncode}: {p.stderr.read().decode()}")
    return p, sock

"""sg_gateway_util: helpers for the gateway's integration tests (stdlib only).

FakeBackend: a scripted QMP server on a unix socket that plays a back end
(greeting, negotiation, canned replies, events on demand, a command that
never answers) so the proxy can be tested without KVM or QEMU.
Terminal: drives an interactive program through a pseudo-terminal.
"""
import json
import os
import atexit
import pty
import re
import select
import signal
import socket
import subprocess
import threading
import time

import sgtest


class FakeBackend:
    """QMP back end in a thread.  Commands: qmp_capabilities, query-status,
    query-version, echo (returns its arguments), emit (sends the event named in
    arguments.event), hang (never answers), quit (answers and closes),
    human-monitor-command (echoes the line; the line "hang" never answers)."""

    def __init__(self, path, package="fake-backend"):
        self.path = path
        self.package = package
        self.received = []          # every command message, in order
        self.conns = []
        self.lock = threading.Lock()
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(4)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _send(self, conn, msg):
        try:
            conn.sendall((json.dumps(msg) + "\r\n").encode())
        except OSError:
            pass

    def _accept(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        self._send(conn, {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},
                                               "package": self.package},
                                  "capabilities": []}})
        buf = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                msg = json.loads(line)
                with self.lock:
                    self.received.append(msg)
                self._handle(conn, msg)

    def _handle(self, conn, msg):
        name = msg.get("execute")
        args = msg.get("arguments", {})
        rid = msg.get("id")

        def reply(ret):
            r = {"return": ret}
            if rid is not None:
                r["id"] = rid
            self._send(conn, r)

        if name in ("qmp_capabilities", "job-dismiss", "cont", "stop"):
            reply({})
        elif name == "query-status":
            reply({"status": "running", "singlestep": False, "running": True})
        elif name == "query-version":
            reply({"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": self.package})
        elif name in ("query-jobs", "query-named-block-nodes", "query-block"):
            reply([])
        elif name == "query-commands":
            reply([{"name": n} for n in ("qmp_capabilities", "query-status", "echo", "emit",
                                         "hang", "quit", "query-jobs",
                                         "human-monitor-command")])
        elif name == "echo":
            reply(args)
        elif name == "raw":
            # arguments.text is sent as it is: replies jansson cannot hold
            # (integers above 2^63), broken JSON, ...  "{ID}" becomes the id.
            text = args["text"].replace("{ID}", json.dumps(rid))
            try:
                conn.sendall((text + "\r\n").encode())
            except OSError:
                pass
        elif name == "emit":
            reply({})
            now = time.time()
            self._send(conn, {"timestamp": {"seconds": int(now), "microseconds": 0},
                              "event": args["event"], "data": args.get("data", {})})
        elif name == "hang":
            pass
        elif name == "human-monitor-command":
            line = args.get("command-line", "")
            if line != "hang":            # "hang" never answers
                reply(f"fake: {line}\r\n")
        elif name == "quit":
            reply({})
            conn.shutdown(socket.SHUT_RDWR)
        else:
            err = {"error": {"class": "CommandNotFound",
                             "desc": f"The command {name} has not been found"}}
            if rid is not None:
                err["id"] = rid
            self._send(conn, err)

    def commands(self):
        with self.lock:
            return [m.get("execute") for m in self.received]

    def die(self):
        """The back end vanishes: every connection is cut at once."""
        self.srv.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass


class Terminal:
    """A program on a pseudo-terminal: send keys, wait for output."""

    def __init__(self, argv, env=None, cwd=None):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                if cwd:
                    os.chdir(cwd)
                os.execve(argv[0], argv, env or os.environ)
            finally:
                os._exit(127)
        atexit.register(self.kill)
        self.out = b""      # everything received so far
        self.pos = 0        # where the next expect() starts looking
        self.status = None

    def _read(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            data = b""
        if not data:
            raise EOFError("terminal closed")
        self.out += data
        return True

    def expect(self, pattern, timeout=20.0):
        """Waits for a regex (bytes) after the previous match; returns the match."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while True:
            m = rx.search(self.out, self.pos)
            if m:
                self.pos = m.end()
                return m
            left = end - time.monotonic()
            if left <= 0:
                sgtest.fail(f"timed out waiting for {pattern!r}; tail of output: "
                            f"{self.out[-1500:]!r}")
            try:
                self._read(left)
            except EOFError:
                sgtest.fail(f"program ended while waiting for {pattern!r}; output: "
                            f"{self.out[-1500:]!r}")

    def send(self, data):
        os.write(self.fd, data.encode() if isinstance(data, str) else data)

    def drain(self, seconds):
        """Reads whatever arrives during `seconds`."""
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                self._read(max(0.0, end - time.monotonic()))
        except EOFError:
            pass

    def wait(self, timeout=20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                self._read(0.05)
            except EOFError:
                pass
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(st)
                return self.status
        self.kill()
        sgtest.fail(f"program did not end within {timeout}s; output: {self.out[-1500:]!r}")

    def kill(self):
        if self.status is not None:
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def gateway_env(home):
    env = dict(os.environ)
    env["HOME"] = home
    env["TERM"] = "xterm"
    env.pop("INPUTRC", None)
    return env


def gateway_on_fake_backend(d, extra=(), **spawn_kw):
    """A FakeBackend on d/be.sock and `snapgate --connect` to it serving
    --qmp on d/gw.sock (stdin closed, stderr piped unless said otherwise).
    Returns (backend, gateway process, --qmp socket path) once the socket is
    there; fails the test if the gateway exits instead."""
    be_sock = os.path.join(d, "be.sock")
    gw_sock = os.path.join(d, "gw.sock")
    be = FakeBackend(be_sock)
    spawn_kw.setdefault("stdin", subprocess.DEVNULL)
    spawn_kw.setdefault("stderr", subprocess.PIPE)
    gw = sgtest.spawn([sgtest.binary("snapgate"), "--connect", "unix:" + be_sock,
                       "--qmp", "unix:" + gw_sock, "--no-monitor", *extra], **spawn_kw)
    sgtest.wait_for(lambda: os.path.exists(gw_sock) or gw.poll() is not None, 10, "--qmp socket")
    if gw.poll() is not None:
        sgtest.fail(f"gateway exited {gw.returncode}")
    return be, gw, gw_sock


VMM_PROMPT = rb"\(snapgate\) "


def gateway_on_vmm(d, vmm_args=("-m", "64")):
    """`snapgate --vmm` on a pty (state in d/state, the serial console on the
    terminal, --qmp on d/gw.sock): returns (Terminal at its first prompt,
    QMP client of the gateway)."""
    gw_sock = os.path.join(d, "gw.sock")
    t = Terminal([sgtest.binary("snapgate"), "--state-dir", os.path.join(d, "state"),
                  "--serial-to-terminal", "--qmp", "unix:" + gw_sock, "--vmm", *vmm_args, "--"],
                 env=gateway_env(d))
    t.expect(VMM_PROMPT, 30)
    sgtest.wait_for(lambda: os.path.exists(gw_sock), 10, "gateway QMP socket")
    return t, sgtest.QMP(gw_sock)


def monitor_reply(t, line, timeout=30):
    """Types `line` at the gateway's monitor: its output up to the next
    prompt, as lines without ANSI escapes, blank lines, the guest's ticks,
    prompts and the echo of the line itself (which the terminal may wrap)."""
    t.send(line + "\r")
    t.expect(re.escape(line.split()[0].encode()), 10)
    begin = t.pos
    m = t.expect(VMM_PROMPT, timeout)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", t.out[begin:m.start()].decode(errors="replace"))
    echo = line.replace(" ", "")
    return [ln.strip() for ln in text.replace("\r", "").split("\n")
            if ln.strip() and not re.fullmatch(r"tick \d+|\(snapgate\)", ln.strip())
            and ln.replace(" ", "") not in echo]

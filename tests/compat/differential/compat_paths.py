"""The three ways a scenario runs: (A) QEMU 7.2 directly, (B) snapgate in front of that QEMU,
(C) snapgate in front of snapgate-vmm.  Each returns a transcript with the same shape as a
golden file, so any two can be compared.
"""
import json
import os
import shutil
import socket
import subprocess
import time

import sgtest

QMP_TIMEOUT = 20.0      # one command; snapshots of a -S guest take milliseconds
JOB_TIMEOUT = 30.0
START_TIMEOUT = 10.0


class PathError(Exception):
    """The path could not run the scenario at all (start-up failed, a process died).
    slow: it took a timeout to find out (worth giving up on the path after a few)."""

    def __init__(self, msg, slow=False):
        super().__init__(msg)
        self.slow = slow


def _wait_socket(path, proc, what):
    end = time.monotonic() + START_TIMEOUT
    while time.monotonic() < end:
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            raise PathError(f"{what} exited {proc.returncode} before creating {os.path.basename(path)}"
                            + _log_tail(proc))
        time.sleep(0.01)
    raise PathError(f"{what} did not create its QMP socket within {START_TIMEOUT:.0f}s", slow=True)


def _log_tail(proc):
    log = getattr(proc, "sg_log", None)
    if not log or not os.path.exists(log):
        return ""
    with open(log, errors="replace") as f:
        lines = f.read().strip().splitlines()[-5:]
    return (": " + " / ".join(lines)) if lines else ""


def _spawn_logged(argv, workdir, logname):
    log = os.path.join(workdir, logname)
    with open(log, "wb") as lf:
        p = sgtest.spawn(argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=lf,
                         stderr=subprocess.STDOUT)
    p.sg_log = log
    return p


def _connect(sock_path, what, proc):
    try:
        q = sgtest.QMP(sock_path, timeout=QMP_TIMEOUT, negotiate=False, connect_timeout=START_TIMEOUT)
        r = q.cmd("qmp_capabilities")
    except (OSError, EOFError, ValueError) as e:
        raise PathError(f"{what}: QMP connection failed: {e}{_log_tail(proc)}",
                        slow=isinstance(e, socket.timeout)) from None
    if "return" not in r:
        raise PathError(f"{what}: qmp_capabilities failed: {r}")
    return q


def make_images(scenario, workdir):
    qi = shutil.which("qemu-img")
    for d in scenario.disks:
        fmt = "qcow2" if d.fmt == "qcow2" else "raw"
        _run([qi, "create", "-q", "-f", fmt, d.file, d.size], workdir)
        for tag in d.snaps:
            _run([qi, "snapshot", "-c", tag, d.file], workdir)


def _run(argv, cwd):
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise PathError(f"{' '.join(argv[:3])} exited {r.returncode}: {r.stderr.strip()}")
    return r


def inspect_images(scenario, workdir):
    """qemu-img's view of every image after the run: check status and the snapshot list."""
    qi = shutil.which("qemu-img")
    out = {}
    for d in scenario.disks:
        if d.fmt != "qcow2":
            continue
        path = os.path.join(workdir, d.file)
        chk = subprocess.run([qi, "check", path], capture_output=True, text=True)
        lst = subprocess.run([qi, "snapshot", "-l", path], capture_output=True, text=True)
        info = subprocess.run([qi, "info", "--output=json", path], capture_output=True, text=True)
        snaps = None
        if info.returncode == 0:
            # The JSON form of the same list: `snapshot -l` columns cannot delimit tags with spaces.
            snaps = [[s["id"], s["name"]] for s in json.loads(info.stdout).get("snapshots", [])]
        out[d.file] = {"check": chk.returncode, "list-rc": lst.returncode, "snapshots": snaps}
        if chk.returncode != 0:
            out[d.file]["check-output"] = (chk.stdout + chk.stderr).strip()[-400:]
    return out


def _events(q, job_ids):
    """Events in arrival order; job events of jobs the scenario did not create (the gateway's
    own hmp-* jobs) are not part of the comparison."""
    out = []
    for e in q.events:
        data = e.get("data", {})
        if e.get("event") == "JOB_STATUS_CHANGE" and data.get("id") not in job_ids:
            continue
        out.append(f"{e.get('event')}:{json.dumps(data, sort_keys=True)}")
    return out


def _wait_concluded(q, job_id, since):
    """since: index into q.events where this job's events start (a reused job id has an
    older 'concluded' before it)."""
    end = time.monotonic() + JOB_TIMEOUT
    while True:
        for e in q.events[since:]:
            d = e.get("data", {})
            if e.get("event") == "JOB_STATUS_CHANGE" and d.get("id") == job_id \
                    and d.get("status") == "concluded":
                return True
        left = end - time.monotonic()
        if left <= 0:
            return False
        q.sock.settimeout(left)
        try:
            m = q.recv()
        except socket.timeout:
            return False
        finally:
            q.sock.settimeout(QMP_TIMEOUT)
        if "event" in m:
            q.events.append(m)


def run_steps(scenario, q):
    steps, job_ids = [], set()
    for n, st in enumerate(scenario.steps, 1):
        sent = f"step-{n}"
        if st.kind == "hmp":
            r = q.cmd("human-monitor-command", {"command-line": st.text}, id=sent)
            if r.get("id") != sent:  # a reply that is not ours can never equal the reference
                reply = {"wrong-id": r}
            else:
                reply = r["return"] if "return" in r else {"error": r.get("error")}
            steps.append({"hmp": st.text, "reply": reply})
            continue
        first_event = len(q.events)
        r = q.cmd(st.command, st.arguments, id=sent)
        if r.get("id") == sent:
            del r["id"]  # kept otherwise, so that the comparison shows the wrong id
        rec = {"qmp": st.command, "reply": r}
        if st.arguments is not None:
            rec["arguments"] = st.arguments
        jid = st.job_id()
        if jid is not None and "return" in r:
            job_ids.add(jid)
            if _wait_concluded(q, jid, first_event):
                jobs = q.cmd("query-jobs").get("return", [])
                entry = [j for j in jobs if j.get("id") == jid]
                rec["job"] = entry[0] if entry else "missing from query-jobs"
                q.cmd("job-dismiss", {"id": jid})
            else:
                rec["job"] = "did not conclude"
        steps.append(rec)
    q.cmd("query-status")  # flushes events emitted by the last step
    return steps, _events(q, job_ids)


def _stop(proc, q=None, grace=5.0):
    """With a QMP connection: `quit` and give the process `grace` seconds to go; otherwise,
    or if it lingers, SIGTERM, then SIGKILL."""
    if q is not None:
        try:
            q.cmd("quit")
        except (OSError, EOFError, ValueError):
            pass
        try:
            q.close()
        except OSError:
            pass
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_accepting(sock, proc, what):
    """QEMU creates its socket file at bind() and listens a moment later: a gateway started
    in between gets ECONNREFUSED and exits 1 (under -j2 load that window was hit).  A probe
    connection that succeeds proves the listen; QEMU serves the next client after it."""
    end = time.monotonic() + START_TIMEOUT
    while time.monotonic() < end:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            c.connect(sock)
            return
        except OSError:
            if proc.poll() is not None:
                raise PathError(f"{what} exited {proc.returncode}") from None
            time.sleep(0.01)
        finally:
            c.close()
    raise PathError(f"{what} does not accept QMP connections after {START_TIMEOUT:.0f}s", slow=True)


def _start_qemu(scenario, workdir):
    try:
        p, sock = sgtest.start_qemu([d.qemu_drive() for d in scenario.disks], workdir)
    except SystemExit:  # sgtest.fail() already printed why
        raise PathError("QEMU did not start") from None
    try:
        _wait_accepting(sock, p, "QEMU")
    except PathError:
        _stop(p, grace=1.0)
        raise
    return p, sock


def _transcript(scenario, drives, steps, events, workdir):
    return {"scenario": scenario.name, "drives": drives, "steps": steps, "events": events,
            "images": inspect_images(scenario, workdir)}


def run_qemu(scenario, workdir):
    """Path A.  Also returns QEMU's version for golden files."""
    make_images(scenario, workdir)
    p, sock = _start_qemu(scenario, workdir)
    try:
        q = _connect(sock, "QEMU", p)
    except PathError:
        _stop(p, grace=1.0)
        raise
    try:
        version = q.greeting.get("QMP", {}).get("version")
        steps, events = run_steps(scenario, q)
    except (OSError, EOFError, ValueError) as e:
        raise PathError(f"QEMU connection lost: {e}") from None
    finally:
        _stop(p, q)
    t = _transcript(scenario, [d.qemu_drive() for d in scenario.disks], steps, events, workdir)
    t["qemu"] = version
    return t


def _gateway(build, backend_sock, workdir):
    gw_sock = os.path.join(workdir, "gw.sock")
    g = _spawn_logged([os.path.join(build, "snapgate"), "--connect", f"unix:{backend_sock}",
                       "--qmp", f"unix:{gw_sock}", "--no-monitor"], workdir, "snapgate.log")
    try:
        _wait_socket(gw_sock, g, "snapgate")
        return g, _connect(gw_sock, "snapgate", g)
    except PathError:
        _stop(g, grace=1.0)
        raise


_SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def _sanitizer_reports(workdir):
    """Sanitizer findings in the logs of the processes this path started (ASan builds)."""
    out = []
    for fn in ("snapgate.log", "vmm.log"):
        p = os.path.join(workdir, fn)
        if not os.path.exists(p):
            continue
        with open(p, errors="replace") as f:
            for line in f:
                if any(m in line for m in _SANITIZER_MARKS):
                    out.append(f"{fn}: {line.strip()[:300]}")
                    break
    return out


def _through_gateway(scenario, build, backend, backend_sock, workdir, drives, what):
    g, q = None, None
    try:
        g, q = _gateway(build, backend_sock, workdir)
        steps, events = run_steps(scenario, q)
    except (OSError, EOFError, ValueError) as e:
        died = [n for n, pr in (("snapgate", g), (what, backend)) if pr is not None and pr.poll() is not None]
        raise PathError(f"connection lost ({e}); exited: {', '.join(died) or 'none'}"
                        + (_log_tail(g) if g else ""), slow=isinstance(e, socket.timeout)) from None
    finally:
        # quit goes through the gateway to the back end; the gateway then sees its back end go.
        if g is not None:
            _stop(backend, q)
            try:  # a gateway whose back end has gone exits by itself (exit code 2)
                g.wait(2.0)
            except subprocess.TimeoutExpired:
                pass
            _stop(g, grace=2.0)
        else:
            _stop(backend)
    t = _transcript(scenario, drives, steps, events, workdir)
    t["process-errors"] = _sanitizer_reports(workdir)
    return t


def run_gateway_qemu(scenario, workdir, build):
    """Path B."""
    make_images(scenario, workdir)
    p, sock = _start_qemu(scenario, workdir)
    return _through_gateway(scenario, build, p, sock, workdir,
                            [d.qemu_drive() for d in scenario.disks], "QEMU")


def run_gateway_vmm(scenario, workdir, build):
    """Path C: the same disks given to snapgate-vmm (INTERFACES.md 1.2), paused like QEMU -S."""
    make_images(scenario, workdir)
    sock = os.path.join(workdir, "vmm.sock")
    argv = [os.path.join(build, "snapgate-vmm"), "-S", "-serial", "none"]
    for d in scenario.disks:
        argv += ["-drive", d.vmm_drive()]
    argv += ["-qmp", f"unix:{sock},server=on,wait=off"]
    v = _spawn_logged(argv, workdir, "vmm.log")
    try:
        _wait_socket(sock, v, "snapgate-vmm")
    except PathError:
        _stop(v, grace=1.0)
        raise
    return _through_gateway(scenario, build, v, sock, workdir,
                            [d.vmm_drive() for d in scenario.disks], "snapgate-vmm")

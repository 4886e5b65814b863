#!/usr/bin/env python3
"""bench.py: snapgate side by side with QEMU 7.2, in one run (issue 9).

Run through bench/run.sh (see bench/README.md).  Every section starts the real
programs, repeats each measurement, and prints a table of medians with the
spread [min-max] and a snapgate/QEMU ratio column.  A side that cannot run
(binary missing, start-up failure) is printed as "n/a" with the reason, so a
table always says which cells hold real numbers.

Sections
  1  snapshot save/load/delete, random and mostly-zero RAM, + machine limits
  2  monitor responsiveness: query-status latency while a save runs
  3  gateway overhead (10,000-call latency loops, C client) and WebSocket fan-out
  4  scale: info snapshots / savevm / delvm with 10..1000 snapshots, and qcow2
     random 4 KiB writes (our engine vs qemu-io)
  5  live save, lazy load, incremental save (bench_live.py; only when asked)
  6  Linux guest: boot to shell, save, load of 512 MiB (bench_linux.py; only when
     asked; in the kvm bed on kvm_pvm)
"""
import argparse
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

MODES = {
    # smoke: seconds, for the ctest; quick: default, fits a shared 2-core box;
    # full: the whole matrix (4 GiB rows, more repetitions).
    "smoke": dict(sizes=[64], reps=1, mon_size=64, lat_count=200, fanout=[10], rounds=2,
                  scale=[10], scale_reps=1, randw_count=500, randw_span=64 << 20),
    "quick": dict(sizes=[256], reps=3, mon_size=256, lat_count=10000, fanout=[100, 1000],
                  rounds=5, scale=[10, 100, 1000], scale_reps=3, randw_count=10000,
                  randw_span=1 << 30),
    "full": dict(sizes=[256, 1024, 4096], reps=5, mon_size=1024, lat_count=10000,
                 fanout=[100, 1000], rounds=10, scale=[10, 100, 1000], scale_reps=5,
                 randw_count=50000, randw_span=4 << 30),
}
MiB = 1 << 20
# The demo guest fills RAM from 32 MiB up (gateway/vmm/guest/guest.c); QEMU's
# prefilled file leaves the same first 32 MiB zero so both save the same
# amount of non-zero RAM.
GUEST_DIRTY_BASE = 32 * MiB


class Unavailable(Exception):
    """This side of a row cannot be measured; the message says why."""


# ---------------------------------------------------------------- processes

_procs = []


def spawn(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    _procs.append(p)
    return p


def stop(p, timeout=10):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def reap_all():
    for p in _procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def wait_until(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise Unavailable(f"timed out after {timeout:.0f}s waiting for {what}")


def io_written(pid):
    """Bytes this process caused to be written to storage (/proc/PID/io)."""
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def allocated(path):
    return os.stat(path).st_blocks * 512


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------- QMP client

class QMP:
    """Synchronous QMP client that stamps each message with its arrival time
    (monotonic) so a job's wall time ends when its event arrived, not when the
    script got round to reading it."""

    def __init__(self, path, timeout=600.0):
        end = time.monotonic() + 20
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > end:
                    raise Unavailable(f"cannot connect to QMP socket {path}")
                time.sleep(0.05)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.queue = []        # (arrival, msg) not consumed yet
        self.n = 0
        self.greeting = self._read()[1]
        r = self.cmd("qmp_capabilities")
        if "return" not in r:
            raise Unavailable(f"qmp_capabilities: {r}")

    def close(self):
        self.sock.close()

    def _read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise Unavailable("QMP connection closed")
            self.buf += chunk
        t = time.monotonic()
        line, self.buf = self.buf.split(b"\n", 1)
        if not line.strip():
            return self._read()
        return t, json.loads(line)

    def send(self, name, args=None, mid=None):
        self.n += 1
        mid = mid if mid is not None else f"b{self.n}"
        msg = {"execute": name, "id": mid}
        if args is not None:
            msg["arguments"] = args
        self.sock.sendall((json.dumps(msg) + "\r\n").encode())
        return mid

    def next(self):
        if self.queue:
            return self.queue.pop(0)
        return self._read()

    def reply(self, mid):
        """Waits for the reply with this id; other messages stay queued."""
        for i, (t, m) in enumerate(self.queue):
            if m.get("id") == mid and "event" not in m:
                del self.queue[i]
                return m
        while True:
            t, m = self._read()
            if m.get("id") == mid and "event" not in m:
                return m
            self.queue.append((t, m))

    def cmd(self, name, args=None):
        return self.reply(self.send(name, args))

    def hmp(self, line):
        r = self.cmd("human-monitor-command", {"command-line": line})
        if "return" not in r:
            raise Unavailable(f"HMP {line!r}: {r}")
        return r["return"]

    def run_job(self, name, args, job_id):
        """Runs a snapshot job: returns (wall s, pause s or None, error or None).
        Wall: command sent -> 'concluded' event arrived.  Pause: STOP -> RESUME
        event timestamps (the server's clock).  Also kept: command sent -> RESUME
        arrived (resume_after) and -> RESUME stamped (resume_stamped)."""
        self.queue.clear()
        t0, t0_wall = time.monotonic(), time.time()
        mid = self.send(name, dict(args, **{"job-id": job_id}))
        stop_ts = resume_ts = self.resume_after = self.resume_stamped = None
        concluded = None
        replied = False
        while concluded is None or not replied:
            t, m = self.next()
            if "event" in m:
                ts = m["timestamp"]["seconds"] + m["timestamp"]["microseconds"] / 1e6
                if m["event"] == "STOP" and stop_ts is None:
                    stop_ts = ts
                elif m["event"] == "RESUME" and stop_ts is not None:
                    resume_ts = ts
                    self.resume_after = t - t0   # command sent -> guest running
                    # ... by the server's stamp (its clock is this machine's):
                    # without the client's reading of the messages before it
                    self.resume_stamped = ts - t0_wall
                elif (m["event"] == "JOB_STATUS_CHANGE" and m["data"]["id"] == job_id
                      and m["data"]["status"] == "concluded"):
                    concluded = t
            elif m.get("id") == mid:
                replied = True
                if "error" in m:
                    raise Unavailable(f"{name}: {m['error'].get('desc')}")
        jobs = self.cmd("query-jobs").get("return", [])
        err = next((j.get("error") for j in jobs if j["id"] == job_id), None)
        self.cmd("job-dismiss", {"id": job_id})
        pause = resume_ts - stop_ts if stop_ts and resume_ts else None
        return concluded - t0, pause, err


# ---------------------------------------------------------------- back ends

class Backend:
    name = "?"
    proc = None
    sock = None

    qmp = None

    def close(self):
        if not self.proc:
            return
        try:
            if self.qmp is None or self.qmp.sock.fileno() < 0:
                self.qmp = QMP(self.sock, timeout=10)
            self.qmp.sock.settimeout(10)
            self.qmp.cmd("quit")
            self.qmp.close()
            self.proc.wait(10)
        except Exception:
            pass
        stop(self.proc)


class Qemu(Backend):
    """qemu-system-x86_64 -S with QMP; RAM from a prefilled file (random
    rows) or anonymous (mostly-zero rows); `cont` so STOP/RESUME are real.
    Two QMP sockets: QEMU serves one client per socket."""
    name = "QEMU 7.2"

    def __init__(self, work, ram_mib, disk, ram_file=None, run=True):
        qemu = shutil.which("qemu-system-x86_64")
        if not qemu:
            raise Unavailable("qemu-system-x86_64 not installed")
        self.sock = os.path.join(work, "qemu.qmp")
        self.sock2 = os.path.join(work, "qemu2.qmp")
        for s in (self.sock, self.sock2):
            if os.path.exists(s):
                os.unlink(s)
        argv = [qemu, "-S", "-nodefaults", "-display", "none", "-machine", "accel=kvm:tcg",
                "-m", f"{ram_mib}M", "-drive", f"file={disk},if=none,id=drive0,node-name=disk0",
                "-qmp", f"unix:{self.sock},server=on,wait=off",
                "-qmp", f"unix:{self.sock2},server=on,wait=off"]
        if ram_file:
            argv += ["-object", f"memory-backend-file,id=m,size={ram_mib}M,mem-path={ram_file},"
                     "share=off", "-machine", "memory-backend=m"]
        self.proc = spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
        wait_until(lambda: os.path.exists(self.sock2) or self.proc.poll() is not None, 30,
                   "QEMU's QMP socket")
        if self.proc.poll() is not None:
            raise Unavailable(f"QEMU exited {self.proc.returncode}")
        self.qmp = QMP(self.sock)
        if run:
            self.qmp.cmd("cont")


class SnapVMM(Backend):
    """snapgate-vmm with the demo guest; dirty=SIZE fills guest RAM with a
    pseudo-random pattern before 'ready'."""
    name = "snapgate"

    def __init__(self, work, ram_mib, disk, build, dirty=False, append=None):
        exe = os.path.join(build, "snapgate-vmm")
        if not os.access(exe, os.X_OK):
            raise Unavailable(f"{exe} not built")
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            raise Unavailable("/dev/kvm not usable")
        self.sock = os.path.join(work, "vmm.qmp")
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        serial = os.path.join(work, "serial.log")
        if os.path.exists(serial):
            os.unlink(serial)
        argv = [exe, "-m", f"{ram_mib}M", "-drive", f"file={disk},format=qcow2,node-name=disk0",
                "-qmp", f"unix:{self.sock},server=on,wait=off", "-serial", f"file:{serial}"]
        if dirty or append:
            argv += ["-append", append or f"dirty={ram_mib}M"]
        self.serial = serial
        self.stderr = open(os.path.join(work, "vmm.stderr"), "wb")
        self.proc = spawn(argv, stdout=subprocess.DEVNULL, stderr=self.stderr, cwd=work)

        def ready():
            if self.proc.poll() is not None:
                return True
            try:
                with open(serial, errors="replace") as f:
                    return "demo guest ready" in f.read()
            except OSError:
                return False
        # Filling RAM runs in guest ring 3 at native speed: ~1 s per GiB.
        wait_until(ready, 60 + ram_mib / 64, "the demo guest's 'ready' line")
        if self.proc.poll() is not None:
            raise Unavailable(f"snapgate-vmm exited {self.proc.returncode}: "
                              f"{open(self.stderr.name, errors='replace').read().strip()[-200:]}")
        self.qmp = QMP(self.sock)


class Gateway:
    """snapgate --connect unix:BACKEND --qmp unix:PATH --no-monitor [--web]."""

    def __init__(self, work, backend_sock, build, web=False):
        exe = os.path.join(build, "snapgate")
        if not os.access(exe, os.X_OK):
            raise Unavailable(f"{exe} not built")
        self.sock = os.path.join(work, "gw.qmp")
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        argv = [exe, "--connect", f"unix:{backend_sock}", "--qmp", f"unix:{self.sock}",
                "--no-monitor"]
        self.port = self.token = None
        if web:
            self.port = free_port()
            argv += ["--web", f"127.0.0.1:{self.port}"]
        self.proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, cwd=work, text=True)
        if web:
            end = time.monotonic() + 20
            while time.monotonic() < end and self.token is None:
                line = self.proc.stdout.readline()
                if not line and self.proc.poll() is not None:
                    break
                if "token=" in line:
                    self.token = line.strip().split("token=", 1)[1]
            if self.token is None:
                raise Unavailable("snapgate --web printed no 'web console:' URL")
        wait_until(lambda: os.path.exists(self.sock) or self.proc.poll() is not None, 20,
                   "the gateway's --qmp socket")
        if self.proc.poll() is not None:
            raise Unavailable(f"snapgate exited {self.proc.returncode}")

    def close(self):
        stop(self.proc)


# ---------------------------------------------------------------- tables

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def cell(xs, fmt="{:.3f}"):
    """median [min-max] of the repetitions."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    m = fmt.format(statistics.median(xs))
    if len(xs) == 1:
        return m
    return f"{m} [{fmt.format(min(xs))}-{fmt.format(max(xs))}]"


def ratio(a, b):
    a, b = med(a) if isinstance(a, list) else a, med(b) if isinstance(b, list) else b
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def table(title, header, rows, notes=()):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    out = [title]
    fmt = lambda r: "  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    out.append(fmt(header))
    out.append("  " + "  ".join("-" * w for w in widths))
    out += [fmt(r) for r in rows]
    out += [f"  {n}" for n in notes]
    text = "\n".join(out)
    print(text + "\n", flush=True)
    return text


# ---------------------------------------------------------------- section 1

def make_ram_file(path, mib):
    """Random RAM image for QEMU: first 32 MiB zero, like the demo guest's."""
    with open(path, "wb") as f:
        zero = min(GUEST_DIRTY_BASE, mib * MiB)
        f.truncate(mib * MiB)
        f.seek(zero)
        left = mib * MiB - zero
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n


def fresh_disk(path, size="64M"):
    if os.path.exists(path):
        os.unlink(path)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, size], check=True)


def measure_snapshots(vm, disk, reps):
    """reps x (save, load, delete) on one running VM; per-op lists."""
    res = {op: dict(wall=[], pause=[], written=[], growth=[]) for op in ("save", "load", "delete")}
    args = {"tag": "bench", "vmstate": "disk0", "devices": ["disk0"]}
    for rep in range(reps):
        for op, cmd, a in (("save", "snapshot-save", args),
                           ("load", "snapshot-load", args),
                           ("delete", "snapshot-delete", {"tag": "bench", "devices": ["disk0"]})):
            w0, a0 = io_written(vm.proc.pid), allocated(disk)
            wall, pause, err = vm.qmp.run_job(cmd, a, f"bench-{op}-{rep}")
            if err:
                raise Unavailable(f"{cmd}: {err}")
            r = res[op]
            r["wall"].append(wall)
            r["pause"].append(pause)
            r["written"].append((io_written(vm.proc.pid) - w0) / MiB)
            # Growth only means something on the fresh image of rep 0: later
            # saves reuse the clusters the previous delete freed.
            r["growth"].append((allocated(disk) - a0) / MiB if rep == 0 else None)
    return res


def section1(cfg, build, work, results):
    lim = os.path.join(build, "bench", "bench-limits")
    lim_rows = []
    limits = None
    if os.access(lim, os.X_OK):
        out = subprocess.run([lim, "--size", str(max(cfg["sizes"][0], 64)), "--dir", work,
                              "--json"], capture_output=True, text=True)
        if out.returncode == 0:
            limits = json.loads(out.stdout)
            lim_rows = [["memcpy", f"{limits['memcpy-gbs']:.2f}"],
                        ["sequential write, no fsync", f"{limits['write-gbs']:.2f}"],
                        ["sequential write, fsync at end", f"{limits['write-fsync-end-gbs']:.2f}"],
                        ["sequential write, fsync every MiB",
                         f"{limits['write-fsync-every-mib-gbs']:.2f}"]]
    results["limits"] = limits
    table(f"(1a) machine limits, measured now ({work})", ["what", "GB/s"],
          lim_rows or [["bench-limits", "n/a (not built)"]])

    rows, data = [], {}
    for mib in cfg["sizes"]:
        for kind in ("random", "zero"):
            per = {}
            for impl in ("qemu", "snapgate"):
                d = os.path.join(work, f"s1-{impl}-{mib}-{kind}")
                os.makedirs(d, exist_ok=True)
                disk = os.path.join(d, "disk.qcow2")
                fresh_disk(disk)
                vm = None
                try:
                    if impl == "qemu":
                        ram = None
                        if kind == "random":
                            ram = os.path.join(d, "ram.bin")
                            make_ram_file(ram, mib)
                        vm = Qemu(d, mib, disk, ram_file=ram)
                    else:
                        vm = SnapVMM(d, mib, disk, build, dirty=(kind == "random"))
                    per[impl] = measure_snapshots(vm, disk, cfg["reps"])
                except Unavailable as e:
                    per[impl] = str(e)
                finally:
                    if vm:
                        vm.close()
                    shutil.rmtree(d, ignore_errors=True)
            data[f"{mib}-{kind}"] = per
            for op in ("save", "load", "delete"):
                row = [f"{mib} MiB", kind, op]
                for impl in ("qemu", "snapgate"):
                    r = per[impl]
                    if isinstance(r, str):
                        row += [f"n/a: {r}"[:100], "", "", "", ""]
                        continue
                    r = r[op]
                    gbs = [mib * MiB / w / 1e9 for w in r["wall"]] if op != "delete" else []
                    row += [cell(r["wall"]), cell(r["pause"]), cell(r["written"], "{:.0f}"),
                            cell(r["growth"], "{:.0f}"), cell(gbs, "{:.2f}") if gbs else "-"]
                q, s = per["qemu"], per["snapgate"]
                if isinstance(q, str) or isinstance(s, str):
                    row += ["-", "-"]
                else:
                    row += [ratio(s[op]["wall"], q[op]["wall"]),
                            ratio(s[op]["pause"], q[op]["pause"])]
                rows.append(row)
    results["snapshots"] = data
    return table(
        f"(1b) snapshot jobs over QMP, median [min-max] of {cfg['reps']}",
        ["RAM", "data", "op",
         "QEMU wall s", "QEMU pause s", "QEMU written MiB", "QEMU growth MiB", "QEMU GB/s",
         "snapgate wall s", "snapgate pause s", "snapgate written MiB", "snapgate growth MiB",
         "snapgate GB/s", "wall sg/QEMU", "pause sg/QEMU"],
        rows,
        ["wall: command sent -> JOB_STATUS_CHANGE concluded arrived; pause: STOP -> RESUME",
         "event timestamps; written: /proc/PID/io write_bytes of the VM process during the",
         "job; growth: allocated bytes of the image (first repetition, fresh image);",
         "GB/s: guest RAM size / wall.  random: all RAM above 32 MiB non-zero on both sides."])


# ---------------------------------------------------------------- section 2

def monitor_during_save(vm, interval=0.02, cmd="query-status"):
    """query-status sent every `interval` on the same connection while a
    save runs; returns (latencies, save wall).  Pipelined on one connection
    because QEMU serves one client per socket."""
    q = vm.qmp
    q.queue.clear()
    sent = {}
    lat = []
    t0 = time.monotonic()
    save_id = q.send("snapshot-save", {"job-id": "mon", "tag": "mon", "vmstate": "disk0",
                                       "devices": ["disk0"]})
    done = None
    stop_sending = False
    replied = False
    # The first query goes out at once: a small save can conclude within one
    # interval, and a run without a single query has no latency to report.
    next_send = time.monotonic()
    while done is None or not replied or sent:
        now = time.monotonic()
        # At most 16 in flight: a back end that stops reading (QEMU queues 8
        # requests, then suspends the monitor) must not fill the socket.
        if not stop_sending and now >= next_send and len(sent) < 16:
            sent[q.send(cmd)] = time.monotonic()
            next_send = now + interval
        if b"\n" not in q.buf:
            r, _, _ = select.select([q.sock], [], [], max(0.001, next_send - time.monotonic()))
            if not r:
                continue
        t, m = q._read()
        if m.get("id") in sent and "event" not in m:
            lat.append(t - sent.pop(m["id"]))
        elif m.get("id") == save_id:
            replied = True
        elif (m.get("event") == "JOB_STATUS_CHANGE" and m["data"]["id"] == "mon"
              and m["data"]["status"] == "concluded"):
            done = t - t0
            stop_sending = True
        if time.monotonic() - t0 > 600:
            raise Unavailable("save did not finish in 600 s")
    q.cmd("job-dismiss", {"id": "mon"})
    return lat, done


def section2(cfg, build, work, results):
    mib = cfg["mon_size"]
    rows, data = [], {}
    for impl in ("qemu", "snapgate"):
        d = os.path.join(work, f"s2-{impl}")
        os.makedirs(d, exist_ok=True)
        disk = os.path.join(d, "disk.qcow2")
        fresh_disk(disk)
        vm = None
        try:
            if impl == "qemu":
                ram = os.path.join(d, "ram.bin")
                make_ram_file(ram, mib)
                vm = Qemu(d, mib, disk, ram_file=ram)
            else:
                vm = SnapVMM(d, mib, disk, build, dirty=True)
            # One untimed save + delete first: the first save into a fresh
            # image also pays for growing the file, which (1b) reports.
            for op, cmd, a in (("w", "snapshot-save", {"tag": "mon", "vmstate": "disk0",
                                                       "devices": ["disk0"]}),
                               ("d", "snapshot-delete", {"tag": "mon", "devices": ["disk0"]})):
                if vm.qmp.run_job(cmd, a, f"warm-{op}")[2]:
                    raise Unavailable(f"warm-up {cmd} failed")
            lat, wall = monitor_during_save(vm)
            data[impl] = dict(latencies=lat, save=wall)
            if not lat:
                raise Unavailable(f"the save concluded in {wall:.3f} s before any query was answered")
            rows.append([vm.name, f"{wall:.3f}", str(len(lat)),
                         f"{statistics.median(lat) * 1e3:.1f}", f"{max(lat) * 1e3:.1f}",
                         str(sum(1 for x in lat if x <= 0.05))])
        except Unavailable as e:
            rows.append(["QEMU 7.2" if impl == "qemu" else "snapgate", f"n/a: {e}"[:70],
                         "", "", "", ""])
        finally:
            if vm:
                vm.close()
            shutil.rmtree(d, ignore_errors=True)
    results["monitor"] = data
    return table(f"(2) query-status every 20 ms while a {mib} MiB random-RAM save runs",
                 ["back end", "save wall s", "queries", "p50 ms", "max ms", "answered <= 50 ms"],
                 rows, ["QEMU 7.2 runs snapshot-save in its main loop: queries wait for the save."])


# ---------------------------------------------------------------- section 3

def qmp_lat(build, sock, count, hmp=None, execute="query-status", pipeline=False):
    exe = os.path.join(build, "bench", "bench-qmp-lat")
    if not os.access(exe, os.X_OK):
        raise Unavailable("bench-qmp-lat not built")
    argv = [exe, "--socket", sock, "--count", str(count), "--warmup", str(min(100, count))]
    argv += ["--hmp", hmp] if hmp else ["--execute", execute]
    if pipeline:
        argv.append("--pipeline")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise Unavailable(r.stderr.strip()[-120:] or f"exit {r.returncode}")
    return json.loads(r.stdout)


def disk_with_snapshots(path, n, size="64M"):
    fresh_disk(path, size)
    for i in range(n):
        subprocess.run(["qemu-img", "snapshot", "-c", f"s{i + 1}", path], check=True)


# The lossless proxy's own rows: pipelined throughput and a ~200 KB reply
# (counts scaled with the mode's latency count: 10,000 and 200 in quick/full).
def proxy_plan(lat_count):
    return ((f"query-status x{lat_count}, pipelined", dict(count=lat_count, pipeline=True)),
            (f"query-qmp-schema x{max(5, lat_count // 50)}",
             dict(count=max(5, lat_count // 50), execute="query-qmp-schema")))


def proxy_cells(r):
    if not isinstance(r, dict):
        return [f"n/a: {r}"[:60], ""]
    if "per-s" in r:
        return [f"{r['per-s']:.0f} /s", f"{r['seconds']:.3f} s"]
    return [f"p50 {r['p50-us'] / 1e3:.2f} ms", f"p99 {r['p99-us'] / 1e3:.2f} ms"]


def proxy_runs(build, sock, label, path, impl, prows, data, lat_count):
    for what, kw in proxy_plan(lat_count):
        if "schema" in what and impl != "qemu":
            continue  # snapgate-vmm has no query-qmp-schema
        try:
            r = qmp_lat(build, sock, **kw)
        except Unavailable as e:
            r = str(e)
        data[f"{impl}-{what}-{path}"] = r
        prows.append([what, label, path] + proxy_cells(r))


def section3(cfg, build, work, results):
    count = cfg["lat_count"]
    rows, data, prows = [], {}, []
    for impl in ("qemu", "snapgate"):
        d = os.path.join(work, f"s3-{impl}")
        os.makedirs(d, exist_ok=True)
        disk = os.path.join(d, "disk.qcow2")
        disk_with_snapshots(disk, 3)
        vm = gw = None
        label = "QEMU 7.2" if impl == "qemu" else "snapgate-vmm"
        try:
            vm = Qemu(d, 64, disk) if impl == "qemu" else SnapVMM(d, 64, disk, build)
            vm.qmp.close()     # QEMU serves one client per socket
            for what, hmp in (("query-status", None), ("HMP info snapshots", "info snapshots")):
                direct = via = None
                try:
                    direct = qmp_lat(build, vm.sock, count, hmp)
                except Unavailable as e:
                    direct = str(e)
                data[f"{impl}-{what}-direct"] = direct
                rows.append([what, label, "direct"] + lat_cells(direct) + ["-"])
            proxy_runs(build, vm.sock, label, "direct", impl, prows, data, count)
            gw = Gateway(d, vm.sock, build)
            proxy_runs(build, gw.sock, label, "via snapgate gateway", impl, prows, data, count)
            for what, hmp in (("query-status", None), ("HMP info snapshots", "info snapshots")):
                try:
                    via = qmp_lat(build, gw.sock, count, hmp)
                except Unavailable as e:
                    via = str(e)
                direct = data[f"{impl}-{what}-direct"]
                data[f"{impl}-{what}-gateway"] = via
                r = "-"
                if isinstance(via, dict) and isinstance(direct, dict):
                    r = f"{via['p50-us'] / direct['p50-us']:.2f}"
                rows.append([what, label, "via snapgate gateway"] + lat_cells(via) + [r])
        except Unavailable as e:
            rows.append(["-", label, f"n/a: {e}"[:70], "", "", "", ""])
        finally:
            if gw:
                gw.close()
            if vm:
                vm.close()
            shutil.rmtree(d, ignore_errors=True)
    rows.sort(key=lambda r: r[0] != "query-status")
    t1 = table(f"(3a) gateway overhead: {count} sequential calls (bench-qmp-lat, C client)",
               ["call", "back end", "path", "calls", "p50 us", "p99 us", "ratio p50 gw/direct"],
               rows, ["HMP direct: the back end's own human-monitor-command; via gateway: the",
                      "gateway's HMP engine (it queries the back end for the snapshot list)."])
    t1 += "\n\n" + table("(3c) lossless proxy: pipelined commands and a ~200 KB reply",
                         ["run", "back end", "path", "result", ""], prows,
                         ["pipelined: every command written at once, replies read meanwhile;",
                          "the gateway keeps at most 16 of one client's commands in flight."])

    frows = []
    d = os.path.join(work, "s3-fanout")
    os.makedirs(d, exist_ok=True)
    disk = os.path.join(d, "disk.qcow2")
    fresh_disk(disk)
    vm = gw = None
    try:
        vm = SnapVMM(d, 64, disk, build)
        vm.qmp.close()
        gw = Gateway(d, vm.sock, build, web=True)
        exe = os.path.join(build, "bench", "bench-ws-fanout")
        for n in cfg["fanout"]:
            r = subprocess.run([exe, "--port", str(gw.port), "--token", gw.token,
                                "--trigger", gw.sock, "--clients", str(n),
                                "--rounds", str(cfg["rounds"])],
                               capture_output=True, text=True, timeout=300)
            try:
                res = json.loads(r.stdout)
                data[f"fanout-{n}"] = res
                frows.append([str(n), str(cfg["rounds"]), str(res["n"]), str(res["missing"]),
                              f"{res['p50-us'] / 1e3:.2f}", f"{res['p99-us'] / 1e3:.2f}",
                              f"{res['max-us'] / 1e3:.2f}"])
            except (ValueError, KeyError):
                frows.append([str(n), str(cfg["rounds"]),
                              f"n/a: {r.stderr.strip()[-80:] or 'exit ' + str(r.returncode)}",
                              "", "", "", ""])
    except Unavailable as e:
        frows.append(["-", "-", f"n/a: {e}"[:80], "", "", "", ""])
    finally:
        if gw:
            gw.close()
        if vm:
            vm.close()
        shutil.rmtree(d, ignore_errors=True)
    results["gateway"] = data
    t2 = table("(3b) WebSocket /qmp fan-out: one STOP/RESUME event to N clients (bench-ws-fanout)",
               ["clients", "rounds", "deliveries", "missing", "p50 ms", "p99 ms", "max ms"],
               frows, ["t0: the trigger's stop/cont written to the gateway's --qmp socket;",
                       "sample: the event frame read by a client (all clients on one epoll",
                       "loop in one process).  QEMU has no WebSocket QMP: no QEMU column."])
    return t1 + "\n\n" + t2


def lat_cells(r):
    if isinstance(r, dict):
        return [str(r["n"]), f"{r['p50-us']:.0f}", f"{r['p99-us']:.0f}"]
    return [f"n/a: {r}"[:60], "", ""]


# ---------------------------------------------------------------- section 4

def hmp_times(q, line, reps):
    out = []
    for _ in range(reps):
        t = time.monotonic()
        text = q.hmp(line)
        out.append(time.monotonic() - t)
        if "Error" in text:
            raise Unavailable(f"{line}: {text.strip()[:60]}")
    return out


def scale_one(q, reps, n):
    """info snapshots, then savevm/delvm of one more snapshot, reps times."""
    info = hmp_times(q, "info snapshots", reps)
    text = q.hmp("info snapshots")
    if f"s{n}" not in text:
        raise Unavailable(f"info snapshots does not list s{n}")
    save, dele = [], []
    for i in range(reps):
        save += hmp_times(q, f"savevm bench{i}", 1)
        dele += hmp_times(q, f"delvm bench{i}", 1)
    return dict(info=info, savevm=save, delvm=dele)


def section4(cfg, build, work, results):
    rows, data = [], {}
    for n in cfg["scale"]:
        base = os.path.join(work, f"s4-base-{n}.qcow2")
        disk_with_snapshots(base, n)
        per = {}
        for impl in ("qemu", "snapgate"):
            d = os.path.join(work, f"s4-{impl}-{n}")
            os.makedirs(d, exist_ok=True)
            disk = os.path.join(d, "disk.qcow2")
            shutil.copyfile(base, disk)
            vm = gw = q = None
            try:
                if impl == "qemu":
                    vm = Qemu(d, 64, disk)
                    q = vm.qmp
                else:
                    # The product path: HMP through the gateway (name
                    # resolution + snapshot-* jobs on snapgate-vmm).
                    vm = SnapVMM(d, 64, disk, build)
                    vm.qmp.close()
                    gw = Gateway(d, vm.sock, build)
                    q = QMP(gw.sock)
                per[impl] = scale_one(q, cfg["scale_reps"], n)
            except Unavailable as e:
                per[impl] = str(e)
            finally:
                if gw:
                    q.close()
                    gw.close()
                if vm:
                    vm.close()
                shutil.rmtree(d, ignore_errors=True)
        os.unlink(base)
        data[n] = per
        for what in ("info", "savevm", "delvm"):
            row = [str(n), {"info": "info snapshots"}.get(what, what)]
            for impl in ("qemu", "snapgate"):
                r = per[impl]
                row.append(cell([x * 1e3 for x in r[what]], "{:.1f}") if isinstance(r, dict)
                           else f"n/a: {r}"[:50])
            q, s = per["qemu"], per["snapgate"]
            row.append(ratio(s[what], q[what]) if isinstance(q, dict) and isinstance(s, dict)
                       else "-")
            rows.append(row)
    t1 = table(f"(4a) HMP with N disk-only snapshots in the image (64 MiB guest), ms, "
               f"median [min-max] of {cfg['scale_reps']}",
               ["N", "command", "QEMU 7.2 ms", "snapgate ms", "sg/QEMU"], rows,
               ["QEMU: human-monitor-command on its QMP socket; snapgate: human-monitor-command",
                "on the gateway's --qmp (HMP engine -> snapshot-* job on snapgate-vmm)."])

    rrows = []
    span, count = cfg["randw_span"], cfg["randw_count"]
    offsets = lcg_offsets(count, span)
    for pass_ in ("allocating", "overwrite"):
        per = {}
        for impl in ("qemu-io", "snapgate"):
            img = os.path.join(work, f"s4-randw-{impl}.qcow2")
            try:
                fresh_disk(img, str(span))
                if pass_ == "overwrite":
                    # Allocate every cluster the run touches, untimed.
                    r = subprocess.run(["qemu-io", "-f", "qcow2", "-t", "writeback", img],
                                       input="".join(f"write -q -P 7 {o} 4k\n"
                                                     for o in sorted(set(offsets))) + "flush\n",
                                       text=True, capture_output=True)
                    if r.returncode != 0:
                        raise Unavailable(f"qemu-io pre-allocation: {r.stderr.strip()[:60]}")
                per[impl] = (randw_qemu_io(img, offsets) if impl == "qemu-io"
                             else randw_ours(build, img, count, span))
            except Unavailable as e:
                per[impl] = str(e)
            finally:
                if os.path.exists(img):
                    os.unlink(img)
        row = [pass_, str(count), f"{span >> 20} MiB"]
        for impl in ("qemu-io", "snapgate"):
            v = per[impl]
            row.append(f"{count / v:.0f}" if isinstance(v, float) else f"n/a: {v}"[:50])
        q, s = per["qemu-io"], per["snapgate"]
        row.append(f"{q / s:.2f}" if isinstance(q, float) and isinstance(s, float) else "-")
        rrows.append(row)
        data[f"randw-{pass_}"] = per
    results["scale"] = data
    t2 = table("(4b) qcow2 random 4 KiB writes (same offsets, writeback cache, one flush at end)",
               ["image", "writes", "span", "qemu-io IOPS", "snapgate IOPS", "IOPS sg/QEMU"],
               rrows, ["qemu-io: wall of the script minus a script with only 'flush';",
                       "snapgate: bench-qcow2-randw on libsgblock, timed inside."])
    return t1 + "\n\n" + t2


def lcg_offsets(count, span, seed=1):
    """The same sequence as bench/qcow2_randw.c's lcg_next."""
    s, out, slots = seed, [], span // 4096
    for _ in range(count):
        s = (s * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
        out.append((s >> 33) % slots * 4096)
    return out


def randw_qemu_io(img, offsets):
    if not shutil.which("qemu-io"):
        raise Unavailable("qemu-io not installed")
    script = "".join(f"write -q -P {i % 250 + 1} {o} 4k\n" for i, o in enumerate(offsets))

    def run(text):
        t = time.monotonic()
        r = subprocess.run(["qemu-io", "-f", "qcow2", "-t", "writeback", img], input=text,
                           text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise Unavailable(f"qemu-io: {r.stderr.strip()[:60]}")
        return time.monotonic() - t
    base = run("flush\n")
    return max(run(script + "flush\n") - base, 1e-6)


def randw_ours(build, img, count, span):
    exe = os.path.join(build, "bench", "bench-qcow2-randw")
    if not os.access(exe, os.X_OK):
        raise Unavailable("bench-qcow2-randw not built")
    r = subprocess.run([exe, "--image", img, "--count", str(count), "--span", str(span)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise Unavailable(r.stderr.strip()[-60:])
    return json.loads(r.stdout)["seconds"]


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=sorted(MODES), default="quick")
    ap.add_argument("--build", default=os.environ.get("SNAPGATE_BUILD") or "build")
    ap.add_argument("--dir", help="scratch directory (default: a new one under $TMPDIR)")
    ap.add_argument("--only", default="1,2,3,4",
                    help="sections to run, e.g. 1,3; 5 (live/lazy/incremental) and 6 (Linux "
                         "guest, in the kvm bed on kvm_pvm) only when asked")
    ap.add_argument("--json", help="also write every sample to this file")
    ap.add_argument("--reps", type=int, help="override the repetitions of section 1")
    ap.add_argument("--sizes", help="override the RAM sizes (MiB) of section 1, e.g. 1024")
    ap.add_argument("--mon-size", type=int, help="override the RAM size (MiB) of section 2")
    ap.add_argument("--live-size", type=int,
                    help="RAM size (MiB) of section 5 (default: section 2's)")
    a = ap.parse_args()
    # Killed from outside: still stop every VM this run started (finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cfg = dict(MODES[a.mode])
    if a.reps:
        cfg["reps"] = a.reps
    if a.sizes:
        cfg["sizes"] = [int(x) for x in a.sizes.split(",")]
    if a.mon_size:
        cfg["mon_size"] = a.mon_size
    if a.live_size:
        cfg["live_size"] = a.live_size
    build = os.path.abspath(a.build)
    work = a.dir or tempfile.mkdtemp(prefix="snapgate-bench-")
    os.makedirs(work, exist_ok=True)
    if not shutil.which("qemu-img"):
        print("bench: qemu-img is needed to create the images", file=sys.stderr)
        return 1
    import bench_linux
    import bench_live
    sections = {"1": section1, "2": section2, "3": section3, "4": section4,
                "5": bench_live.section5, "6": bench_linux.section6}
    print(f"snapgate benchmarks, mode {a.mode}, build {build}, scratch {work}")
    print(time.strftime("%Y-%m-%d %H:%M:%S %Z") + f", {os.cpu_count()} CPUs, "
          f"{subprocess.run(['qemu-system-x86_64', '--version'], capture_output=True, text=True).stdout.splitlines()[0] if shutil.which('qemu-system-x86_64') else 'no QEMU'}\n",
          flush=True)
    results = {"mode": a.mode, "config": cfg}
    rc = 0
    try:
        for s in a.only.split(","):
            s = s.strip()
            if s not in sections:
                print(f"bench: unknown section {s!r}", file=sys.stderr)
                return 1
            sections[s](cfg, build, work, results)
    except KeyboardInterrupt:
        rc = 130
    finally:
        reap_all()
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1, default=str)
    return rc


if __name__ == "__main__":
    sys.exit(main())

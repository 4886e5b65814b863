#!/usr/bin/env python3
"""Hostile input on a QMP socket: snapgate-vmm's own (argument `vmm`) or the
gateway's `--qmp` endpoint (argument `gateway`).

Malformed, non-UTF-8, truncated, oversized (over 16 MiB), deeply nested
(over 64) messages, wrong types, pipelined floods, a slow client, 1 MiB HMP
lines through human-monitor-command and absurd snapshot arguments.  Each case
must get a clear error (or, for over-limit input, an error and a closed
connection), the server must keep answering other clients meanwhile and
afterwards, nothing may hang, and at the end the server quits cleanly (exit
0: under ASan that includes LeakSanitizer) with no sanitizer report.
"""
import json
import os
import socket
import subprocess
import sys
import time

import sgtest

which = sys.argv[1] if len(sys.argv) > 1 else "vmm"
sgtest.require_kvm()
qemu_img = sgtest.require_tool("qemu-img")
work = sgtest.tmpdir(f"sg-hostile-{which}-")
disk = os.path.join(work, "disk.qcow2")
sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", disk, "16M"])
sock = os.path.join(work, "qmp.sock")
errlog = open(os.path.join(work, "stderr"), "wb")
if which == "vmm":
    argv = [sgtest.binary("snapgate-vmm"), "-m", "64M", "-drive", f"file={disk}",
            "-serial", "none", "-qmp", f"unix:{sock},server=on,wait=off"]
else:
    argv = [sgtest.binary("snapgate"), "--no-monitor", "--state-dir", os.path.join(work, "state"), "--qmp", f"unix:{sock}",
            "--vmm", "-m", "64M", "-drive", f"file={disk}", "-serial", "none", "--"]
proc = sgtest.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errlog,
                    cwd=work)
sgtest.wait_for(lambda: os.path.exists(sock) or proc.poll() is not None, 20, "QMP socket")
sgtest.check(proc.poll() is None, f"{argv[0]} exited {proc.returncode}")

cases = 0


def alive(what):
    """A fresh client gets a greeting and an answer: the server survived `what`."""
    sgtest.check(proc.poll() is None, f"server died after {what} (exit {proc.returncode})")
    q = sgtest.QMP(sock, timeout=10)
    r = q.cmd("query-status")
    sgtest.check("return" in r, f"query-status after {what}: {r}")
    q.close()


def raw_client(negotiate=True):
    q = sgtest.QMP(sock, timeout=20, negotiate=negotiate)
    return q


def reply_or_close(q, what):
    """The next reply (skipping events), or None if the server closed."""
    while True:
        try:
            m = q.recv()
        except EOFError:
            return None
        except (ConnectionResetError, BrokenPipeError):
            return None
        except socket.timeout:
            sgtest.fail(f"{what}: no reply and no close within {q.sock.gettimeout()} s")
        except ValueError as e:
            sgtest.fail(f"{what}: the server sent invalid JSON: {e}")
        if "event" not in m:
            return m


def expect_error(payload, what, cls="GenericError", usable=True):
    """Sends payload on a negotiated connection; wants an error reply, then
    (usable=True) the same connection still answers."""
    global cases
    cases += 1
    q = raw_client()
    try:
        q.send_raw(payload)
    except (BrokenPipeError, ConnectionResetError):
        sgtest.check(not usable, f"{what}: connection dropped while sending")
    r = reply_or_close(q, what)
    if usable:
        sgtest.check(r is not None and "error" in r, f"{what}: want an error reply, got {r}")
        if cls:
            sgtest.check_eq(r["error"].get("class"), cls, f"{what}: error class")
        sgtest.check(r["error"].get("desc"), f"{what}: error without a description")
        # Bad bytes may earn several errors (one per bad token, as QEMU);
        # the connection must then answer a tagged request.
        q.send_raw(b'{"execute": "query-status", "id": "after"}\r\n')
        for _ in range(64):
            r2 = reply_or_close(q, what)
            sgtest.check(r2 is not None, f"{what}: connection closed afterwards")
            if r2.get("id") == "after":
                break
        sgtest.check("return" in r2, f"{what}: connection unusable afterwards: {r2}")
    else:
        # Over the limits: an error, then the server closes this connection.
        if r is not None:
            sgtest.check("error" in r, f"{what}: want an error, got {r}")
            r = reply_or_close(q, what)
            sgtest.check(r is None, f"{what}: connection stays open after the limit error: {r}")
    q.close()
    alive(what)


def expect_reply(msg, what, want_error=None, job=False):
    """A well-formed but hostile command: any error must be a clear one.
    job=True: an accepted job is followed to its end on the same connection
    (the gateway dismisses the jobs of a client that leaves)."""
    global cases
    cases += 1
    q = raw_client()
    t = time.monotonic()
    try:
        r = q.cmd(msg["execute"], msg.get("arguments"))
    except (socket.timeout, EOFError, ConnectionResetError) as e:
        sgtest.fail(f"{what}: no reply ({type(e).__name__} after {time.monotonic() - t:.1f} s); "
                    f"server {'alive' if proc.poll() is None else 'exited %s' % proc.returncode}")
    if want_error is True:
        sgtest.check("error" in r and r["error"].get("desc"), f"{what}: want an error, got {r}")
    sgtest.check("return" in r or ("error" in r and r["error"].get("desc")), f"{what}: {r}")
    if job and "return" in r:
        info = finish_job(q, msg["arguments"]["job-id"], what)
        print(f"{msg['execute']} {what}: accepted, job ended with "
              f"{info.get('error', 'success')[:100]!r}", flush=True)
    q.close()
    alive(what)
    return r


def finish_job(q, job_id, what):
    """Polls query-jobs until the job concludes, then dismisses it."""
    end = time.monotonic() + 60
    while True:
        jobs = [j for j in q.cmd("query-jobs")["return"] if j["id"] == job_id]
        sgtest.check(jobs, f"{what}: accepted job {job_id[:20]} missing from query-jobs")
        if jobs[0]["status"] == "concluded":
            break
        sgtest.check(time.monotonic() < end, f"{what}: job still {jobs[0]['status']} after 60 s")
        time.sleep(0.05)
    r = q.cmd("job-dismiss", {"id": job_id})
    sgtest.check("return" in r, f"{what}: job-dismiss: {r}")
    return jobs[0]


t0 = time.monotonic()
MiB = 1 << 20

# ---- malformed framing: error, connection stays usable --------------------
expect_error(b'{"execute": }\r\n', "missing value", cls=None)
expect_error(b'}}}\r\n', "stray closing braces", cls=None)
expect_error(b'{"execute": "query-status", "id": 1, }\r\n', "trailing comma", cls=None)
expect_error(b'{"execute": "\xff\xfe\xc0\x80"}\r\n', "non-UTF-8 command name", cls=None)
expect_error(b'{"execute": "query-status", "id": "\xed\xa0\x80"}\r\n', "UTF-8 surrogate in id",
             cls=None)
expect_error(b'{"execute": "query-status", "id": "\\ud800"}\r\n', "lone surrogate escape",
             cls=None)
expect_error(b'[1, 2, 3]\r\n', "top-level array")
expect_error(b'42\r\n', "top-level number")
expect_error(b'"execute"\r\n', "top-level string")
expect_error(b'{}\r\n', "empty object")
expect_error(b'{"execute": 5}\r\n', "numeric command name")
expect_error(b'{"execute": "query-status", "arguments": []}\r\n', "array arguments")
expect_error(b'{"execute": "query-status", "arguments": {"x": 1}}\r\n', "unexpected argument")
expect_error(b'{"execute": "query-\\u0000status"}\r\n', "NUL inside the command name",
             cls=None)
expect_error(b'{"execute": "no-such-command"}\r\n', "unknown command", cls="CommandNotFound")
expect_error(b'{"execute": "qmp_capabilities"}\r\n', "second negotiation", cls="CommandNotFound")
expect_error(b'\x00\x01\x02\x03\x04\r\n', "binary garbage", cls=None)
nested_ok = "[" * 60 + "]" * 60
expect_error(f'{{"execute": "query-status", "arguments": {{"a": {nested_ok}}}}}\r\n'.encode(),
             "60-deep arguments (within the limit)", cls=None)

# ---- over the limits: error, connection closed -----------------------------
expect_error(b"[" * 100000 + b"\r\n", "100000-deep nesting", usable=False)
expect_error(b'{"a":' * 70 + b'1' + b'}' * 70 + b"\r\n", "70-deep objects", usable=False)
big = b'{"execute": "query-status", "arguments": {"x": "' + b"A" * (17 * MiB) + b'"}}\r\n'
expect_error(big, "17 MiB message", usable=False)
expect_error(b'{"execute": "' + b"A" * (17 * MiB) + b"\r\n", "17 MiB unterminated string",
             usable=False)

# ---- truncated messages and abrupt disconnects -----------------------------
for cut in (b'{"execute": "query-sta', b'{"execute": "snapshot-save", "arguments": {"job-id": "x',
            b'{', b'\xff'):
    cases += 1
    q = raw_client()
    q.send_raw(cut)
    q.close()
    alive(f"truncated {cut[:20]!r} then close")
cases += 1
q = raw_client(negotiate=False)
q.send_raw(b'{"execute": "qmp_capabilities"}\r\n{"execute": "query-status"}\r\n' * 200)
q.sock.shutdown(socket.SHUT_RDWR)
q.close()
alive("client vanishing with 400 replies unread")

# ---- before negotiation ----------------------------------------------------
cases += 1
q = raw_client(negotiate=False)
q.send_raw(b'{"execute": "query-status"}\r\n')
r = reply_or_close(q, "command before qmp_capabilities")
sgtest.check(r and r.get("error", {}).get("class") == "CommandNotFound",
             f"command before negotiation: {r}")
q.close()

# ---- a slow client must not block others -----------------------------------
cases += 1
slow = raw_client()
slow.send_raw(b'{"execute": "query-')
t = time.monotonic()
alive("a half-sent message on another connection")
sgtest.check(time.monotonic() - t < 2, "a slow client delayed another client's reply")
slow.send_raw(b'status"}\r\n')
r = reply_or_close(slow, "slow client finishing its message")
sgtest.check(r and "return" in r, f"slow client: {r}")
slow.close()

# ---- a pipelined flood gets every reply, in order --------------------------
cases += 1
q = raw_client()
n = 2000
q.send_raw("".join(json.dumps({"execute": "query-status", "id": i}) + "\r\n"
                   for i in range(n)).encode())
ids = []
while len(ids) < n:
    m = reply_or_close(q, "flood")
    sgtest.check(m is not None, f"flood: connection closed after {len(ids)} replies")
    ids.append(m.get("id"))
sgtest.check_eq(ids, list(range(n)), "flood reply ids")
q.close()

# ---- hostile HMP lines (1 MiB) ----------------------------------------------
for line in ["savevm " + "T" * MiB, "loadvm " + "T" * MiB, "delvm " + "T" * MiB,
             "x" * MiB, "info " + "s" * MiB, "savevm " + "\x01\x7f\ufffd" * 1000,
             "loadvm -i " + "9" * 5000, "delvm -t", "loadvm", "savevm a b c d",
             "info snapshots " + "x" * 1000, " " * MiB, "\t\n\r" * 1000]:
    r = expect_reply({"execute": "human-monitor-command", "arguments": {"command-line": line}},
                     f"HMP line {line[:24]!r}... ({len(line)} chars)")
    if "return" in r:
        sgtest.check(isinstance(r["return"], str) and len(r["return"]) < 4 * MiB,
                     f"HMP {line[:24]!r}: reply of {len(r['return'])} chars")

# ---- absurd snapshot job arguments -----------------------------------------
spec = {"vmstate": "disk0", "devices": ["disk0"]}
for what, args in [
        ("empty job-id", dict(spec, **{"job-id": "", "tag": "a"})),
        ("1 MiB job-id", dict(spec, **{"job-id": "j" * MiB, "tag": "a"})),
        ("1 MiB tag", dict(spec, **{"job-id": "big-tag", "tag": "t" * MiB})),
        ("unknown vmstate node", {"job-id": "nv", "tag": "a", "vmstate": "nope", "devices": ["disk0"]}),
        ("10000 devices", {"job-id": "many", "tag": "a", "vmstate": "disk0",
                           "devices": ["disk0"] * 10000}),
        ("devices not a list", {"job-id": "dl", "tag": "a", "vmstate": "disk0", "devices": "disk0"}),
        ("tag is a number", dict(spec, **{"job-id": "tn", "tag": 7})),
]:
    # Accepted or not, the job must conclude (error or not) and be dismissable.
    expect_reply({"execute": "snapshot-save", "arguments": args}, what, job=True)
for what, args in [("load of a missing tag", dict(spec, **{"job-id": "l1", "tag": "missing"})),
                   ("delete with no devices", {"job-id": "d1", "tag": "x", "devices": []})]:
    cmd = "snapshot-load" if "load" in what else "snapshot-delete"
    expect_reply({"execute": cmd, "arguments": args}, what, job=True)

# ---- a client that floods and never reads: held back, memory bounded --------
cases += 1


def rss_kb():
    with open(f"/proc/{proc.pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))


def cpu_s():
    with open(f"/proc/{proc.pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


rss0 = rss_kb()
hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
hog.connect(sock)
hog.setblocking(False)
flood = (b'{"execute": "qmp_capabilities"}\r\n' +
         b'{"execute": "query-commands"}\r\n' * 200000)
sent, end = 0, time.monotonic() + 3
while sent < len(flood) and time.monotonic() < end:
    try:
        sent += hog.send(flood[sent:sent + 65536])
    except BlockingIOError:
        time.sleep(0.01)
sgtest.check(sent < len(flood), f"{which} stopped reading a client that does not read its replies")
alive("a client that floods and never reads")
sgtest.check(rss_kb() - rss0 < 64 * 1024, f"RSS bounded with a non-reading client: {rss0} -> {rss_kb()} KiB")
hog.close()
alive("the non-reading client left")

# ---- at the descriptor limit: new connections closed, no spinning, others served
cases += 1
import resource  # noqa: E402
keep = raw_client()
nfd = len(os.listdir(f"/proc/{proc.pid}/fd"))
old = resource.prlimit(proc.pid, resource.RLIMIT_NOFILE)
resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (nfd + 2, old[1]))
extra = []
for _ in range(20):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(5)
    try:
        c.connect(sock)  # the kernel queues it; the server decides
    except OSError:  # the listen backlog is full: refused outright
        c.close()
        continue
    extra.append(c)
cpu0 = cpu_s()
time.sleep(1.0)
spent = cpu_s() - cpu0
sgtest.check(spent < 0.5, f"{which} spins at the descriptor limit ({spent:.2f} s CPU in 1 s)")
r = keep.cmd("query-status")
sgtest.check("return" in r, f"a connected client at the descriptor limit: {r}")
refused = 0
for c in extra:
    try:
        data = c.recv(65536)
        while data and b"\n" not in data:
            data += c.recv(65536)
        if not data:
            refused += 1
    except OSError:
        pass
    c.close()
sgtest.check(refused > 0 or len(extra) < 20,
             f"connections over the limit are closed ({refused} of {len(extra)})")
resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, old)
keep.close()
alive("the descriptor limit")

took = time.monotonic() - t0
# ---- a clean exit: under ASan/LSan this also proves nothing leaked ---------
q = raw_client()
q.cmd("quit")
try:
    rc = proc.wait(30)
except subprocess.TimeoutExpired:
    sgtest.fail("server did not exit within 30 s of quit")
errlog.close()
with open(os.path.join(work, "stderr"), "rb") as f:
    err = f.read().decode(errors="replace")
for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
    sgtest.check(marker not in err, f"sanitizer report on {which}:\n{err[-4000:]}")
sgtest.check_eq(rc, 0, f"{which} exit code after quit (stderr: {err[-2000:]})")
sgtest.run([qemu_img, "check", disk])
print(f"{which}: {cases} hostile cases answered, server alive throughout, clean exit; "
      f"{took:.1f} s", flush=True)
print("PASS", flush=True)

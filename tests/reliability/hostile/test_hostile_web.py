#!/usr/bin/env python3
"""Hostile input on the gateway's web server (`snapgate --web`): WebSocket
frames that break RFC 6455 (unmasked, reserved bits, unknown opcodes, huge or
fragmented control frames), frames and fragmented messages over 1 MiB (close
1009), malformed / non-UTF-8 / deeply nested QMP text, 1 MiB HMP lines, and
broken HTTP (garbage request lines, 100 KiB headers, truncated requests).
Each must end in an error reply or a close; the server keeps serving other
clients and exits 0 on `quit` with no sanitizer report."""
import json
import os
import socket
import struct
import subprocess
import time

import sgtest
import sg_web_util as w

sgtest.require_kvm()
qemu_img = sgtest.require_tool("qemu-img")
work = sgtest.tmpdir("sg-hostile-web-")
disk = os.path.join(work, "disk.qcow2")
sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", disk, "16M"])
s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()
errpath = os.path.join(work, "stderr")
proc = sgtest.spawn([sgtest.binary("snapgate"), "--no-monitor", "--state-dir", os.path.join(work, "st"),
                     "--web", f"127.0.0.1:{port}", "--vmm", "-m", "64M", "-drive", f"file={disk}",
                     "-serial", "none", "--"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=open(errpath, "wb"),
                    text=True, cwd=work)
scheme, hostport, token = w.wait_url(proc)
MiB = 1 << 20
cases = 0


def ws(path="/qmp", proto="qmp"):
    st, c = w.WS.open(hostport, path, token=token, protocol=proto)
    sgtest.check(st == 101 and c, f"upgrade {path}: HTTP {st}")
    c.sock.settimeout(20)
    return c


def qmp_ws():
    c = ws()
    greeting = json.loads(c.recv_text())
    sgtest.check("QMP" in greeting, f"greeting {greeting}")
    c.send(json.dumps({"execute": "qmp_capabilities"}))
    sgtest.check("return" in json.loads(c.recv_text()), "qmp_capabilities over WebSocket")
    return c


def next_reply(c, what):
    while True:
        try:
            m = json.loads(c.recv_text())
        except w.WSClosed as e:
            return e
        except socket.timeout:
            sgtest.fail(f"{what}: neither a reply nor a close within 20 s")
        except (ConnectionResetError, BrokenPipeError):
            return w.WSClosed(None, "reset")
        if "event" not in m:
            return m


def alive(what):
    sgtest.check(proc.poll() is None, f"gateway died after {what} (exit {proc.returncode})")
    c = qmp_ws()
    c.send(json.dumps({"execute": "query-status", "id": "alive"}))
    r = next_reply(c, what)
    sgtest.check(isinstance(r, dict) and "return" in r, f"query-status after {what}: {r}")
    c.close()
    st, _, _ = w.http_request(hostport, "/")
    sgtest.check(st == 200, f"GET / after {what}: HTTP {st}")


notes = []


def expect_close(c, what, codes, strict=True):
    """strict=False: RFC 6455 conformance only (libwebsockets' call): a
    deviation is reported as a note, not a failure; the server must live."""
    global cases
    cases += 1
    r = next_reply(c, what)
    ok = isinstance(r, w.WSClosed) and (not codes or r.code is None or r.code in codes)
    if not ok:
        got = f"close {r.code}" if isinstance(r, w.WSClosed) else f"reply {str(r)[:80]}"
        msg = f"{what}: want a close {codes or ''}, got {got}"
        sgtest.check(not strict, msg)
        notes.append(msg)
    c.close()
    alive(what)


def raw_frame(c, b0, payload, mask=True, length=None):
    n = len(payload) if length is None else length
    if n < 126:
        hdr = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
    key = b"\x01\x02\x03\x04"
    body = bytes(x ^ key[i % 4] for i, x in enumerate(payload)) if mask else payload
    try:
        c.sock.sendall(hdr + (key if mask else b"") + body)
    except (BrokenPipeError, ConnectionResetError):
        pass


t0 = time.monotonic()
# ---- QMP text that is wrong but within the rules: an error, still usable ---
for what, text in [("malformed JSON", '{"execute": }'), ("array", "[1,2]"),
                   ("unknown command", '{"execute": "nope"}'),
                   ("60-deep arguments", '{"execute": "query-status", "arguments": {"a": '
                    + "[" * 60 + "]" * 60 + "}}"),
                   ("NUL escape", '{"execute": "query-\\u0000status"}')]:
    cases += 1
    c = qmp_ws()
    c.send(text)
    r = next_reply(c, what)
    sgtest.check(isinstance(r, dict) and "error" in r and r["error"].get("desc"),
                 f"/qmp {what}: {r}")
    c.send(json.dumps({"execute": "query-status", "id": "after"}))
    for _ in range(16):
        r = next_reply(c, what)
        if not isinstance(r, dict) or r.get("id") == "after":
            break
    sgtest.check(isinstance(r, dict) and "return" in r, f"/qmp {what}: unusable afterwards: {r}")
    c.close()

# ---- protocol violations and limits: the connection is closed --------------
c = qmp_ws(); raw_frame(c, 0x81, b'{"execute":"query-status"}', mask=False)
expect_close(c, "unmasked client frame", (1002,), strict=False)
c = qmp_ws(); raw_frame(c, 0x81 | 0x40, b'{}')
expect_close(c, "reserved bit set", (1002,), strict=False)
c = qmp_ws(); raw_frame(c, 0x83, b'x')
expect_close(c, "unknown opcode 3", (1002,), strict=False)
c = qmp_ws(); raw_frame(c, 0x89, b"p" * 200)
expect_close(c, "ping of 200 bytes", (1002,), strict=False)
c = qmp_ws(); raw_frame(c, 0x09, b"p")
expect_close(c, "fragmented ping", (1002,), strict=False)
c = qmp_ws(); raw_frame(c, 0x80, b"x")
expect_close(c, "continuation without a start", (1002,), strict=False)
c = qmp_ws(); c.send(b'{"execute": "\xff\xfe"}')
r = next_reply(c, "non-UTF-8 text frame")
sgtest.check(isinstance(r, w.WSClosed) or (isinstance(r, dict) and "error" in r),
             f"non-UTF-8 text frame: {r}")
cases += 1
c.close()
alive("non-UTF-8 text frame")
c = qmp_ws(); c.send("[" * 100000)
expect_close(c, "100000-deep nesting", None)
c = qmp_ws(); c.send(b"A" * (MiB + 1))
expect_close(c, "frame of 1 MiB + 1", (1009,))
c = qmp_ws()
for i in range(20):
    c.send(b"[" if i == 0 else b"1," * 40000, fin=False, opcode=1 if i == 0 else 0)
c.send(b"1]", opcode=0)
expect_close(c, "fragmented message over 1 MiB", (1009,))
# A header announcing 2^62 bytes: closing at once is best; at the latest the
# close must come once more than 1 MiB has arrived.
c = qmp_ws()
raw_frame(c, 0x81, b"", length=1 << 62)
c.sock.settimeout(2)
try:
    early = c.recv()
except w.WSClosed as e:
    early = e
except (socket.timeout, OSError):
    early = None
if not isinstance(early, w.WSClosed):
    notes.append("frame claiming 2^62 bytes: no close on the header alone (waits for payload)")
    c.sock.settimeout(20)
    try:
        c.sock.sendall(b"x" * (MiB + 4096))
    except (BrokenPipeError, ConnectionResetError):
        pass
    expect_close(c, "frame claiming 2^62 bytes, 1 MiB of it sent", (1009, 1002))
else:
    cases += 1
    c.close()
    alive("frame claiming 2^62 bytes")
c = qmp_ws(); raw_frame(c, 0x81, b"x" * 10, length=1000)
c.close()
cases += 1
alive("truncated frame then disconnect")

# ---- HMP: long lines ---------------------------------------------------------
for line in ["x" * (MiB - 64), "savevm " + "T" * (MiB - 64), "info " + "s" * 100000, "\x00\x01"]:
    cases += 1
    c = ws("/hmp", "hmp")
    c.send(line)
    try:
        out = c.recv_text()
    except w.WSClosed as e:
        sgtest.fail(f"/hmp {line[:10]!r}... ({len(line)} chars): closed {e}")
    except socket.timeout:
        sgtest.fail(f"/hmp {line[:10]!r}... ({len(line)} chars): no reply in 20 s")
    # savevm prints nothing on success (as QEMU), a line cut short by NUL is
    # empty; the others must explain.
    sgtest.check((out.strip() or line.startswith(("savevm", "\x00"))) and len(out) < 4 * MiB,
                 f"/hmp {line[:10]!r}: reply {out[:80]!r}")
    c.close()
c = ws("/hmp", "hmp"); c.send("x" * (MiB + 1))
expect_close(c, "HMP frame over 1 MiB", (1009,))
c = ws("/serial", "serial"); c.send(b"\xff" * (MiB + 1), binary=True)
expect_close(c, "serial frame over 1 MiB", (1009,))

# ---- broken HTTP ---------------------------------------------------------------
for what, req in [("garbage request line", b"\x00\xff GARBAGE\r\n\r\n"),
                  ("100 KiB header", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"A" * 100000 + b"\r\n\r\n"),
                  ("truncated request", b"GET /qmp HTTP/1.1\r\nHost: "),
                  ("upgrade without key", b"GET /qmp?token=" + token.encode()
                   + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
                  ("10000 headers", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 10000 + b"\r\n")]:
    cases += 1
    sk = w.connect(hostport)
    sk.settimeout(20)
    try:
        sk.sendall(req)
        sk.shutdown(socket.SHUT_WR)
        while sk.recv(65536):
            pass
    except socket.timeout:
        sgtest.fail(f"HTTP {what}: the server neither answered nor closed in 20 s")
    except OSError:
        pass   # reset or already closed by the server: fine
    sk.close()
    alive(f"HTTP {what}")

took = time.monotonic() - t0
c = qmp_ws()
c.send(json.dumps({"execute": "quit"}))
try:
    rc = proc.wait(30)
except subprocess.TimeoutExpired:
    sgtest.fail("gateway did not exit within 30 s of quit")
with open(errpath, "rb") as f:
    err = f.read().decode(errors="replace")
for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
    sgtest.check(marker not in err, f"sanitizer report:\n{err[-4000:]}")
sgtest.check_eq(rc, 0, f"gateway exit code after quit (stderr: {err[-1500:]})")
for n in notes:
    print(f"NOTE (RFC 6455 conformance, not a failure): {n}", flush=True)
print(f"web: {cases} hostile cases, server alive throughout, clean exit; {took:.1f} s", flush=True)
print("PASS", flush=True)

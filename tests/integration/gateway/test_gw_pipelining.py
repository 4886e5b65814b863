#!/usr/bin/env python3
"""Pipelining and back-pressure through `snapgate --qmp` (issue 13).

In front of real QEMU 7.2:
  - one client writes 10,000 commands at once (query-status, with an HMP line
    the gateway answers itself every 250th, and a forwarded HMP line): every
    reply arrives, in the client's order;
  - 50 clients at once, 200 pipelined commands each: every client gets its
    own replies, in order;
  - a client that writes 60,000 query-qmp-schema (12 GB of replies) and never
    reads is held back (the gateway stops reading it): the gateway's RSS stays
    bounded and another client keeps getting answers at once.
In front of a scripted back end: a client that never reads while 1 MiB events
keep coming is disconnected once its backlog passes 16 MiB; the others go on.
"""
import json
import os
import socket
import subprocess
import threading
import time

import sg_gateway_util
import sgtest

gw_bin = sgtest.binary("snapgate")
sgtest.require_tool("qemu-system-x86_64")
d = sgtest.tmpdir()
qemu, qemu_sock = sgtest.start_qemu([], d)
gw_sock = os.path.join(d, "gw.sock")
# Under ASan freed memory sits in a 256 MiB quarantine, which would look like
# growth: a small quarantine keeps the RSS checks meaningful there too.
env = dict(os.environ)
env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS"), "quarantine_size_mb=8"]))
gw = sgtest.spawn([gw_bin, "--connect", "unix:" + qemu_sock, "--qmp", "unix:" + gw_sock,
                   "--no-monitor"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
sgtest.wait_for(lambda: os.path.exists(gw_sock) or gw.poll() is not None, 20, "--qmp socket")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pipeline(q, lines):
    """Writes every line at once (from a thread) and reads the replies."""
    data = "".join(l + "\r\n" for l in lines).encode()
    t = threading.Thread(target=q.sock.sendall, args=(data,), daemon=True)
    t.start()
    out = []
    while len(out) < len(lines):
        m = q.recv()
        if "event" not in m:
            out.append(m)
    t.join(30)
    return out


def cmd(i):
    if i % 250 == 7:
        return json.dumps({"execute": "human-monitor-command",
                           "arguments": {"command-line": "info snapshots"}, "id": i})
    if i % 250 == 8:
        return json.dumps({"execute": "human-monitor-command",
                           "arguments": {"command-line": "info status"}, "id": i})
    return json.dumps({"execute": "query-status", "id": i})


rss0 = rss_kb(gw.pid)
q = sgtest.QMP(gw_sock, timeout=60)
replies = pipeline(q, [cmd(i) for i in range(10000)])
ids = [r.get("id") for r in replies]
sgtest.check_eq(ids, list(range(10000)), "10,000 pipelined replies in order")
sgtest.check(all("return" in r for r in replies), "every pipelined command succeeded")
sgtest.check("VM status" in replies[8]["return"], f"forwarded HMP line: {replies[8]}")

results = {}


def one_client(n):
    c = sgtest.QMP(gw_sock, timeout=60)
    rs = pipeline(c, [json.dumps({"execute": "query-status", "id": [n, i]}) for i in range(200)])
    results[n] = [r.get("id") for r in rs] == [[n, i] for i in range(200)]
    c.close()


threads = [threading.Thread(target=one_client, args=(n,)) for n in range(50)]
for t in threads:
    t.start()
for t in threads:
    t.join(120)
sgtest.check_eq(sorted(n for n, ok in results.items() if ok), list(range(50)),
                "50 clients at once: each got its own replies in order")

# A client that floods and never reads: held back, memory bounded, others served.
hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
hog.connect(gw_sock)
hog.setblocking(False)
flood = ('{"execute": "qmp_capabilities"}\r\n' +
         '{"execute": "query-qmp-schema"}\r\n' * 60000).encode()
sent = 0
end = time.monotonic() + 2
while sent < len(flood) and time.monotonic() < end:
    try:
        sent += hog.send(flood[sent:sent + 65536])
    except BlockingIOError:
        time.sleep(0.01)
sgtest.check(sent < len(flood), "the gateway stopped reading a client that does not read")
peak = 0
for _ in range(3):
    start = time.monotonic()
    sgtest.check_eq(q.cmd("query-status")["return"]["status"], "prelaunch", "others served")
    # Not a timing test: behind 60,000 queued schemas it would take half an hour;
    # behind the 16 the gateway lets through it takes well under a minute.
    sgtest.check(time.monotonic() - start < 30.0, "another client is not stuck behind the flood")
    peak = max(peak, rss_kb(gw.pid))
    time.sleep(0.1)
sgtest.check(peak - rss0 < 96 * 1024, f"gateway RSS bounded: {rss0} -> {peak} KiB")
hog.close()
sgtest.check_eq(q.cmd("query-status")["return"]["status"], "prelaunch", "after the hog left")
gw.terminate()
sgtest.check_eq(gw.wait(10), 0, "gateway exit code")

# A never-reading client is cut off when its backlog passes 16 MiB.
be_sock = os.path.join(d, "be.sock")
be = sg_gateway_util.FakeBackend(be_sock)
gw2_sock = os.path.join(d, "gw2.sock")
gw2 = sgtest.spawn([gw_bin, "--connect", "unix:" + be_sock, "--qmp", "unix:" + gw2_sock,
                    "--no-monitor"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
sgtest.wait_for(lambda: os.path.exists(gw2_sock) or gw2.poll() is not None, 10, "--qmp socket")
sleeper = sgtest.QMP(gw2_sock)        # negotiates, then never reads
sleeper.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
worker = sgtest.QMP(gw2_sock, timeout=30)
blob = "e" * (1 << 20)
for i in range(24):
    worker.cmd("emit", {"event": "BIG", "data": {"n": i, "blob": blob}})
    worker.wait_event("BIG", 10)
sgtest.check_eq(worker.cmd("echo", {"ok": 1})["return"], {"ok": 1}, "the reading client goes on")
sleeper.sock.settimeout(10)
got = 0
try:
    while True:
        chunk = sleeper.sock.recv(1 << 20)
        if not chunk:
            break
        got += len(chunk)
except socket.timeout:
    sgtest.fail("the never-reading client was not disconnected")
sgtest.check(got < 24 << 20, f"it was cut off before every event was queued ({got} bytes)")
sgtest.check(rss_kb(gw2.pid) < 200 * 1024, "gateway RSS after the cut-off")
gw2.terminate()
sgtest.check_eq(gw2.wait(10), 0, "gateway exit code")
print("ok")

#!/usr/bin/env python3
"""One bound on the output the gateway holds for all its clients (32 MiB
over every --qmp unix-socket and WebSocket client), under a hostile crowd.

In front of the bundled VMM (demo guest), 120 unix-socket clients and 30
/qmp WebSocket clients each pipeline 400 `human-monitor-command help`
(12 KiB replies) and never read.  Each is held by its own bounds (1 MiB of
unread output, 256 KiB on a WebSocket), which alone would let the crowd
make the gateway hold well over 100 MiB; with the total bound:
- the gateway's RSS (VmHWM, its peak) stays within 96 MiB of what it was
  before the crowd came;
- greedy clients are dropped (their sockets reach EOF), each with one line
  on the gateway's stderr saying why; the number dropped matches the lines;
- a well-behaved client that reads its replies, connected throughout, gets
  every reply right (query-status, HMP info block as before the crowd) and
  is never dropped; greedy clients not dropped get all their replies, in
  order, once they read;
- the VM is unaffected (query-status: running throughout), the gateway
  still accepts clients and exits cleanly; qemu-img check on the disk."""
import json
import os
import re
import socket
import subprocess
import time

import sgtest
import sg_web_util as wu

sgtest.require_kvm()
gw_bin, _ = sgtest.binary("snapgate"), sgtest.binary("snapgate-vmm")
d = sgtest.tmpdir("sg-outtotal-")
state, gw_sock = (os.path.join(d, n) for n in ("state", "gw.sock"))
errf = open(os.path.join(d, "gw.stderr"), "w+")
env = dict(os.environ)
env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS"), "quarantine_size_mb=8"]))
gw = sgtest.spawn([gw_bin, "--state-dir", state, "--no-monitor", "--qmp", "unix:" + gw_sock,
                   "--web", "127.0.0.1:0", "--vmm", "-m", "64", "--"],
                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf, text=True,
                  env=env)
_, hp, tok = wu.wait_url(gw)
sgtest.wait_for(lambda: os.path.exists(gw_sock) or gw.poll() is not None, 20, "--qmp socket")

N_UNIX, N_WS, N_CMDS = 120, 30, 400
HELP = {"execute": "human-monitor-command", "arguments": {"command-line": "help"}}


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


good = sgtest.QMP(gw_sock, timeout=30)
want_help = good.cmd("human-monitor-command", {"command-line": "help"})["return"]
want_block = good.cmd("human-monitor-command", {"command-line": "info block"})["return"]
sgtest.check_eq(good.cmd("query-status")["return"]["status"], "running", "VM before the crowd")

time.sleep(0.5)
rss0 = status(gw.pid, "VmRSS")
print(f"gateway RSS before the crowd: {rss0 // 1024} MiB", flush=True)


def well_behaved(rounds):
    """Commands of the good client, checked; it reads everything."""
    for i in range(rounds):
        r = good.cmd("query-status")
        sgtest.check_eq(r.get("return", {}).get("status"), "running", f"good client: query-status {i}")
        r = good.cmd("human-monitor-command", {"command-line": "info block"})
        sgtest.check_eq(r.get("return"), want_block, f"good client: info block {i}")


# ---- the crowd ------------------------------------------------------------------
greedy = []
for k in range(N_UNIX):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(gw_sock)
    s.setblocking(False)
    data = (json.dumps({"execute": "qmp_capabilities"}) + "\r\n" +
            "".join(json.dumps(dict(HELP, id=i)) + "\r\n" for i in range(N_CMDS))).encode()
    try:
        sent = s.send(data)
    except BlockingIOError:
        sent = 0
    greedy.append(("unix", s, sent == len(data)))
    if k % 20 == 19:
        well_behaved(1)
wss = []
for k in range(N_WS):
    st, ws = wu.WS.open(hp, "/qmp", token=tok, protocol="qmp")
    sgtest.check_eq(st, 101, f"/qmp upgrade {k}")
    ws.send(json.dumps({"execute": "qmp_capabilities"}))
    for i in range(N_CMDS):
        ws.send(json.dumps(dict(HELP, id=i)))   # blocking: the gateway reads until it pauses
    wss.append(ws)
    if k % 10 == 9:
        well_behaved(1)

# Let the gateway work through what it was sent, the good client meanwhile.
peak_seen = 0
for _ in range(30):
    well_behaved(2)
    peak_seen = max(peak_seen, status(gw.pid, "VmRSS"))
    time.sleep(0.1)
sgtest.check(gw.poll() is None, "the gateway is still running")
hwm = status(gw.pid, "VmHWM")
print(f"gateway RSS peak {hwm // 1024} MiB (seen {peak_seen // 1024} MiB) with "
      f"{N_UNIX} + {N_WS} clients not reading", flush=True)
sgtest.check(hwm - rss0 < 96 * 1024,
             f"the gateway grew by {(hwm - rss0) // 1024} MiB under the crowd (bound: 32 MiB of output)")

# ---- who was dropped ----------------------------------------------------------------
def drain_unix(s):
    """Reads what is there: (bytes, reached EOF)."""
    s.setblocking(True)
    s.settimeout(0.5)
    buf = b""
    try:
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                return buf, True
            buf += chunk
    except socket.timeout:
        return buf, False
    except ConnectionResetError:
        return buf, True


dropped, kept = 0, []
for kind, s, _ in greedy:
    buf, eof = drain_unix(s)
    if eof:
        dropped += 1
    else:
        kept.append((s, buf))
errf.flush()
errf.seek(0)
log = errf.read()
lines = re.findall(r"snapgate: (--qmp client \d+|WebSocket /qmp client) dropped: output queued "
                   r"for all clients passed 32 MiB and its \d+ unread bytes were the most", log)
unix_lines = [x for x in lines if x.startswith("--qmp")]
print(f"dropped: {dropped} of {N_UNIX} unix clients ({len(lines)} log lines, "
      f"{len(lines) - len(unix_lines)} WebSocket); kept {len(kept)}", flush=True)
sgtest.check(dropped >= 1, "no greedy client was dropped: the total bound never acted")
sgtest.check_eq(len(unix_lines), dropped, "one stderr line per dropped unix client")
sgtest.check(kept, "every greedy client was dropped: the bound should keep up to 32 MiB")

# A greedy client that was kept gets every reply, in order, once it reads.
s, buf = kept[0]
s.settimeout(30)
msgs = []
while True:
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        if line.strip():
            msgs.append(json.loads(line))
    replies = [m for m in msgs if "return" in m and "id" in m]
    if len(replies) >= N_CMDS:
        break
    chunk = s.recv(1 << 20)
    sgtest.check(chunk, f"kept client closed after {len(replies)} replies")
    buf += chunk
sgtest.check_eq([m["id"] for m in replies], list(range(N_CMDS)), "kept client's reply order")
sgtest.check(all(m["return"] == want_help for m in replies), "kept client's replies")

# ---- the rest goes on --------------------------------------------------------------------
well_behaved(5)
late = sgtest.QMP(gw_sock, timeout=20)
sgtest.check_eq(late.cmd("query-status")["return"]["status"], "running", "a new client, after")
late.close()
for _, s, _ in greedy:
    s.close()
for ws in wss:
    ws.close()
time.sleep(0.5)
well_behaved(2)
r = good.cmd("quit")
sgtest.check("return" in r, f"quit: {r}")
sgtest.check_eq(gw.wait(30), 0, "gateway exit code")
sgtest.qemu_img_check(os.path.join(state, "disk0.qcow2"))
print("ok")

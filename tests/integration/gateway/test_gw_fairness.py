#!/usr/bin/env python3
"""Fairness and bounds between --qmp clients, against a scripted back end
(no KVM, no QEMU needed; the back end's `hang` never answers):
  - a client that pipelines 20 commands the back end holds gets at most its
    share (8) to the back end; the rest wait in the gateway, so another
    client's command still goes through at once (the window is 16: a flooder
    cannot fill it alone);
  - a client whose commands wait for their turn is not read from once 1 MiB
    of them is queued: of 12 MiB written, the gateway takes a bounded part;
  - the gateway itself keeps greeting new clients meanwhile;
  - on the /qmp WebSocket the same bounds pause reading (16 unanswered) and
    resume with the replies: 60 pipelined frames get 60 replies, in order."""
import json
import socket
import subprocess
import time

import sg_gateway_util
import sg_web_util as wu
import sgtest

be, gw, gw_sock = sg_gateway_util.gateway_on_fake_backend(sgtest.tmpdir())

def received(name):
    with be.lock:
        return [m for m in be.received if m.get("execute") == name]


# 1. A flooder's share.
a = sgtest.QMP(gw_sock)
a.send_raw("".join('{"execute": "hang", "id": %d}\r\n' % i for i in range(20)))
sgtest.wait_for(lambda: len(received("hang")) >= 8, 10, "the flooder's first commands")
time.sleep(0.5)   # room for more to arrive if the gateway let them through
sgtest.check_eq(len(received("hang")), 8, "commands of one client at the back end")
b = sgtest.QMP(gw_sock, timeout=10)
sgtest.check_eq(b.cmd("echo", {"who": "b"})["return"], {"who": "b"},
                "another client is answered while the flooder's commands are held")

# 2. Bytes waiting for their turn are bounded per client.
c = sgtest.QMP(gw_sock)
c.send_raw("".join('{"execute": "hang", "id": "h%d"}\r\n' % i for i in range(8)))
sgtest.wait_for(lambda: len(received("hang")) >= 16, 10, "client c's share")
blob = "x" * (1 << 20)
big = ('{"execute": "echo", "arguments": {"blob": "%s"}}\r\n' % blob).encode()
flood = big * 12
raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
raw.connect(gw_sock)
raw.setblocking(False)
# The window (16) is full of hangs now: every echo of `raw` waits its turn.
start = b'{"execute": "qmp_capabilities"}\r\n'
payload = start + flood
sent = 0
end = time.monotonic() + 3
while sent < len(payload) and time.monotonic() < end:
    try:
        sent += raw.send(payload[sent:sent + 65536])
    except BlockingIOError:
        time.sleep(0.02)
# Without the byte bound the gateway would take 15 of the 12 (16 slots):
# all of it.  With it: 1 MiB queued plus what the socket buffers hold.
sgtest.check(sent < len(payload) - (4 << 20),
             f"the gateway stopped reading a client with 1 MiB waiting ({sent} of {len(payload)} bytes taken)")
sgtest.check_eq(len(received("echo")), 1, "no queued echo reached the full back end (only b's)")
# (The back end holds 16 commands that never end, as a QEMU stuck in a
# command would: nothing more can be answered by it, but the gateway lives
# and greets and negotiates new clients itself.)
sgtest.check(gw.poll() is None, "the gateway is still running")
late = sgtest.QMP(gw_sock, timeout=10)
sgtest.check(late.greeting["QMP"]["version"]["qemu"]["major"] == 7, "a new client is greeted")
late.close()
raw.close()
a.close()
c.close()
b.close()
gw.terminate()
sgtest.check_eq(gw.wait(10), 0, "gateway exit code")

# 3. The /qmp WebSocket: pipelined frames, paused and resumed.
be2, gw2, _ = sg_gateway_util.gateway_on_fake_backend(
    sgtest.tmpdir(), extra=["--web", "127.0.0.1:0"], stdout=subprocess.PIPE,
    stderr=subprocess.DEVNULL, text=True)
_, hp, tok = wu.wait_url(gw2)
st, ws = wu.WS.open(hp, "/qmp", token=tok, protocol="qmp")
sgtest.check_eq(st, 101, "/qmp upgrade")
json.loads(ws.recv_text())
ws.send('{"execute": "qmp_capabilities"}')
sgtest.check_eq(json.loads(ws.recv_text()), {"return": {}}, "ws negotiation")
for i in range(60):
    ws.send(json.dumps({"execute": "echo", "arguments": {"n": i}, "id": i}))
for i in range(60):
    sgtest.check_eq(json.loads(ws.recv_text()), {"return": {"n": i}, "id": i},
                    f"pipelined WebSocket reply {i}")
ws.close()
gw2.terminate()
sgtest.check_eq(gw2.wait(10), 0, "gateway exit code (web)")
print("ok")

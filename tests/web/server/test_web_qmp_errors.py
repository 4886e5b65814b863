#!/usr/bin/env python3
"""The /qmp WebSocket and the --qmp unix endpoint of one real gateway answer
malformed input with the same bytes: both parse a message with the QMP
library's sg_qmp_parse_message (no KVM: a scripted back end from
sg_gateway_util).  Also: after a malformed message both connections still
work, and a message nested deeper than 64 gets the same error on both and
closes the connection (WebSocket close code 1008)."""
import json
import os
import socket
import subprocess

import sg_gateway_util
import sg_web_util as wu
import sgtest
from sg_web_util import WS, WSClosed

gw_bin = sgtest.binary("snapgate")
d = sgtest.tmpdir()
be_sock = os.path.join(d, "be.sock")
gw_sock = os.path.join(d, "gw.sock")
be = sg_gateway_util.FakeBackend(be_sock)
p = sgtest.spawn([gw_bin, "--connect", "unix:" + be_sock, "--qmp", "unix:" + gw_sock,
                  "--web", "127.0.0.1:0", "--no-monitor"], stdin=subprocess.DEVNULL,
                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
scheme, hp, tok = wu.wait_url(p)
sgtest.wait_for(lambda: os.path.exists(gw_sock), 10, "--qmp socket")


def open_ws():
    st, ws = WS.open(hp, "/qmp", token=tok, protocol="qmp")
    sgtest.check_eq(st, 101, "/qmp upgrade")
    json.loads(ws.recv_text())                   # greeting
    ws.send('{"execute": "qmp_capabilities"}')
    sgtest.check_eq(json.loads(ws.recv_text()), {"return": {}}, "ws negotiation")
    return ws


def unix_raw(q):
    """The next line from the unix endpoint, as bytes without CRLF."""
    while b"\n" not in q.buf:
        chunk = q.sock.recv(65536)
        if not chunk:
            raise EOFError("closed")
        q.buf += chunk
    line, q.buf = q.buf.split(b"\n", 1)
    return line.rstrip(b"\r")


ws = open_ws()
q = sgtest.QMP(gw_sock)

# Each is one complete (balanced) message, so the stream's framing hands it
# to the parser whole, exactly as a WebSocket frame is.
BAD = [
    '{"execute": nope}',
    '{"execute" "query-status"}',
    '{"execute": "query-status",}',
    '{"execute": "query-status", "id": 1, "id": 2}',   # duplicate member
    '[1, 2, }',
    '{"execute": "x\\u00"}',                              # bad escape
]
for text in BAD:
    ws.send(text)
    got_ws = ws.recv()[1]
    q.send_raw(text + "\r\n")
    got_unix = unix_raw(q)
    sgtest.check_eq(got_ws, got_unix, f"reply to {text!r} on /qmp vs --qmp")
    r = json.loads(got_ws)
    sgtest.check(r.get("error", {}).get("class") == "GenericError" and
                 r["error"]["desc"].startswith("JSON parse error"), f"reply to {text!r}: {r}")

# Both connections still work.
ws.send('{"execute": "query-status", "id": "w"}')
sgtest.check_eq(json.loads(ws.recv_text())["id"], "w", "/qmp usable after bad JSON")
q.buf = b""
sgtest.check_eq(q.cmd("query-status", id="u")["id"], "u", "--qmp usable after bad JSON")

# Two values in one frame (a stream would see two messages here).
ws.send('{"execute": "query-status"} {"execute": "stop"}')
sgtest.check_eq(json.loads(ws.recv_text())["error"]["desc"],
                "JSON parse error, more than one value in a message", "two values in one frame")

# A frame that is not a message at all.
ws.send("   ")
r = json.loads(ws.recv_text())
sgtest.check_eq(r, {"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}},
                "blank frame")

# Nesting over 64: the same error, then the connection is closed.
deep = "[" * 65 + "]" * 65
ws.send(deep)
got_ws = None
try:
    got_ws = ws.recv()[1]
    ws.recv()
    sgtest.fail("/qmp still open after nesting > 64")
except WSClosed as e:
    sgtest.check_eq(e.code, 1008, "close code after nesting > 64")
q.send_raw(deep + "\r\n")
got_unix = unix_raw(q)
sgtest.check_eq(json.loads(got_unix), {"error": {"class": "GenericError",
                "desc": "JSON nesting depth limit exceeded"}}, "--qmp reply to deep nesting")
if got_ws is not None:     # lws may close before the queued reply is written
    sgtest.check_eq(got_ws, got_unix, "deep nesting reply on /qmp vs --qmp")
q.sock.settimeout(5)
try:
    while q.sock.recv(65536):
        pass
except OSError:
    pass
p.terminate()
sgtest.check_eq(p.wait(10), 0, "gateway exit code")
print("ok")

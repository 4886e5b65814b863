#!/usr/bin/env python3
"""Security and protocol tests of the web server (gateway/web) against the
fake gateway (sg_web_testsrv): token, Origin, Host and subprotocol checks on
the upgrade, the 1 MiB message limit (close 1009), the static page's headers
and path confinement, the /qmp /hmp /serial glue, a client too slow to read,
and TLS (https + wss with a certificate made at test time)."""
import json
import os
import socket
import subprocess
import sys
import time

import sgtest
from sgtest import check, check_eq, fail
import sg_web_util as wu
from sg_web_util import WS, WSClosed

SRV = os.path.join(sgtest.BUILD, "tests", "sg_web_testsrv")
DOCROOT = os.path.join(sgtest.SRC, "web")
check(os.access(SRV, os.X_OK), f"{SRV} not built")


def start(*extra):
    p = sgtest.spawn([SRV, "--docroot", DOCROOT, "--port", "0", *extra],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    scheme, hostport, token = wu.wait_url(p)
    return p, scheme, hostport, token


def stop(p):
    p.terminate()
    try:
        rc = p.wait(10)
    except subprocess.TimeoutExpired:
        fail("server did not stop on SIGTERM")
    if rc != 0:
        print("server stderr:", p.stderr.read())
    check_eq(rc, 0, "server exit code after SIGTERM")


def qmp_open(hp, tok, tls=False):
    st, ws = WS.open(hp, "/qmp", token=tok, protocol="qmp", tls=tls)
    check_eq(st, 101, "/qmp upgrade with token and own origin")
    greet = json.loads(ws.recv_text())
    check("QMP" in greet, f"greeting: {greet}")
    ws.send('{"execute": "qmp_capabilities"}')
    check_eq(json.loads(ws.recv_text()), {"return": {}}, "qmp_capabilities reply")
    return ws


def test_page(hp, tok):
    st, h, body = wu.http_request(hp, f"/?token={tok}")
    check_eq(st, 200, "GET /?token=")
    check(b"<html" in body.lower(), "index.html served")
    csp = h.get("content-security-policy", "")
    for part in ("default-src 'none'", "script-src 'self'", "connect-src 'self'",
                 "frame-ancestors 'none'"):
        check(part in csp, f"CSP lacks {part!r}: {csp!r}")
    check("unsafe-eval" not in csp, "CSP must not allow eval")
    check_eq(h.get("x-frame-options"), "DENY", "X-Frame-Options")
    check_eq(h.get("x-content-type-options"), "nosniff", "X-Content-Type-Options")
    check_eq(h.get("referrer-policy"), "no-referrer", "Referrer-Policy (token in URL)")
    # Cookies are not bound to a port: one for 127.0.0.1 would reach every
    # other local web server.  The token never goes into one.
    check("set-cookie" not in h, f"no cookie with the token: {h.get('set-cookie')!r}")
    check(tok.encode() not in body, "the page itself does not embed the token")
    st, h, _ = wu.http_request(hp, "/?token=wrong-token-0123456789abc")
    check_eq(st, 200, "page without a valid token is still served")
    check("set-cookie" not in h, "no cookie for a wrong token")
    for bad in ("/../CMakeLists.txt", "/../gateway/web/web.h", "/package.json", "/README.md", "/%2e%2e/CMakeLists.txt", "/.gitignore",
                "/nonexistent.js", "/node_modules/../package.json/x", "/index.sh"):
        st, _, _ = wu.http_request(hp, bad)
        check(st in (400, 403, 404), f"GET {bad} must be refused, got {st}")
    st, h, _ = wu.http_request(hp, "/", method="POST")
    check(st != 200, f"POST / must not be served, got {st}")
    xterm = os.path.join(DOCROOT, "node_modules/@xterm/xterm/lib/xterm.mjs")
    if os.path.exists(xterm):
        st, h, body = wu.http_request(hp, "/node_modules/@xterm/xterm/lib/xterm.mjs")
        check_eq(st, 200, "xterm.mjs served from node_modules")
        check(h.get("content-type", "").startswith("text/javascript"), "xterm.mjs mime type")
    print("ok: page, headers, cookie, path confinement")


def test_upgrade_rules(hp, tok, serial=True):
    cases = [
        ("no token", dict(token=None), 403),
        ("wrong token", dict(token=tok[:-1] + ("A" if tok[-1] != "A" else "B")), 403),
        ("token prefix", dict(token=tok[:16]), 403),
        ("foreign Origin", dict(token=tok, origin="http://evil.example"), 403),
        ("Origin of another port", dict(token=tok, origin="http://127.0.0.1:1"), 403),
        ("https Origin on http", dict(token=tok, origin="https://" + hp), 403),
        ("no Origin", dict(token=tok, origin=None), 403),
        ("null Origin", dict(token=tok, origin="null"), 403),
        ("rebound Host", dict(token=tok, host="evil.example:" + hp.rsplit(":", 1)[1]), 403),
        ("wrong subprotocol", dict(token=tok, protocol="hmp"), 400),
        ("no subprotocol", dict(token=tok, protocol=""), 400),
    ]
    for what, kw, want in cases:
        kw.setdefault("protocol", "qmp")
        st, ws = WS.open(hp, "/qmp", **kw)
        check_eq(st, want, f"/qmp upgrade with {what}")
    st, _ = WS.open(hp, "/nowhere", token=tok, protocol="qmp")
    check_eq(st, 404, "upgrade on an unknown path")
    # Only the URL carries the token: a cookie (which any local server could
    # have collected) is not accepted.
    st, _ = WS.open(hp, "/hmp", token=None, cookie=f"other=1; sg_token={tok}", protocol="hmp")
    check_eq(st, 403, "upgrade with the token in a cookie only")
    st, ws = WS.open(hp, "/serial", token=tok, protocol="serial")
    check_eq(st, 101 if serial else 404, "/serial upgrade")
    if ws:
        ws.close()
    print("ok: upgrade rules (token, Origin, Host, subprotocol, path)")


def test_qmp(hp, tok):
    ws = qmp_open(hp, tok)
    ws.send('{"execute": "query-status", "id": "a1"}')
    r = json.loads(ws.recv_text())
    check_eq(r.get("id"), "a1", "id echoed")
    check_eq(r["return"]["status"], "running", "query-status")
    ws.send('{"execute": "query-status", "id": ')       # malformed
    r = json.loads(ws.recv_text())
    check_eq(r["error"]["class"], "GenericError", "malformed JSON answered")
    ws.send('{"execute": "stop", "id": 2}')
    msgs = [json.loads(ws.recv_text()), json.loads(ws.recv_text())]
    check(any(m.get("event") == "STOP" for m in msgs), f"STOP event fanned out: {msgs}")
    check(any(m.get("id") == 2 and "return" in m for m in msgs), f"stop reply: {msgs}")
    ws.send('{"execute": "cont"}')
    ws.recv_text(), ws.recv_text()
    # A message of exactly 1 MiB is allowed; the reply must come in fragments.
    filler = "x" * (1024 * 1024 - len('{"execute":"query-status","id":""}'))
    ws.send('{"execute":"query-status","id":"%s"}' % filler)
    r = json.loads(ws.recv_text())
    check_eq(len(r.get("id", "")), len(filler), "1 MiB message accepted and its id echoed")
    # Nesting deeper than 64 closes the connection (INTERFACES.md section 4).
    ws.send("[" * 65 + "]" * 65)
    try:
        while True:
            ws.recv_text()
    except WSClosed as e:
        check_eq(e.code, 1008, "close code after nesting > 64")
    ws.close()
    print("ok: /qmp greeting, ids, malformed JSON, events, 1 MiB boundary, nesting limit")


def test_oversize(hp, tok):
    for path, proto in (("/qmp", "qmp"), ("/hmp", "hmp"), ("/serial", "serial")):
        st, ws = WS.open(hp, path, token=tok, protocol=proto)
        check_eq(st, 101, f"{path} upgrade")
        ws.send(b"{" + b" " * (1024 * 1024), binary=(proto == "serial"))
        code = None
        try:
            for _ in range(10000):
                ws.recv()
        except WSClosed as e:
            code = e.code
        check_eq(code, 1009, f"close code for a frame over 1 MiB on {path}")
        ws.close()
    # The limit is on the message, not the frame: fragments add up.
    st, ws = WS.open(hp, "/hmp", token=tok, protocol="hmp")
    chunk = b"a" * (256 * 1024)
    ws.send(chunk, fin=False)
    for _ in range(3):
        ws.send(chunk, fin=False, opcode=0)
    ws.send(b"b", fin=True, opcode=0)
    code = None
    try:
        ws.recv()
    except WSClosed as e:
        code = e.code
    check_eq(code, 1009, "close code for a fragmented message over 1 MiB")
    print("ok: 1009 for messages over 1 MiB (single frame and fragmented)")


def test_hmp(hp, tok):
    st, ws = WS.open(hp, "/hmp", token=tok, protocol="hmp")
    check_eq(st, 101, "/hmp upgrade")
    ws.send("info status")
    ws.send("bogus-cmd\n")
    check_eq(ws.recv_text(), "VM status: running\n", "first reply")
    check_eq(ws.recv_text(), "unknown command: 'bogus-cmd'\n", "second reply, in order")
    ws.send("savevm t1")          # a job: replied when it concludes
    ws.send("info snapshots")     # queued behind it
    check_eq(ws.recv_text(), "", "savevm reply")
    check("t1" in ws.recv_text(), "info snapshots lists the new snapshot")
    ws.send("quit")
    check_eq(ws.recv_text(), "", "quit reply")
    try:
        ws.recv()
        fail("connection stays open after quit")
    except WSClosed as e:
        check_eq(e.code, 1000, "close code after quit")
    print("ok: /hmp one line per frame, ordered replies, jobs, quit")


def test_hmp_queue_bound(hp, tok):
    # Lines sent while a save runs wait for it; past 64 of them the client is
    # closed with 1008 instead of the gateway buffering them without bound.
    st, ws = WS.open(hp, "/hmp", token=tok, protocol="hmp")
    check_eq(st, 101, "/hmp upgrade")
    ws.send("savevm queue-bound")
    for _ in range(64):
        ws.send("info status")
    ws.send("info status")        # the 65th waiting line
    code, reason, replies = None, "", 0
    try:
        for _ in range(200):
            ws.recv_text()
            replies += 1
    except WSClosed as e:
        code, reason = e.code, getattr(e, "reason", "")
    check_eq(code, 1008, "close code for a client over the /hmp queue bound")
    check_eq(replies, 0, "the queued lines were not run after the close")
    # 64 waiting lines are fine: all run, in order, after the save (once the
    # first save, which goes on without its client, is over).
    time.sleep(2.5)
    st, ws = WS.open(hp, "/hmp", token=tok, protocol="hmp")
    ws.send("savevm queue-ok")
    for _ in range(64):
        ws.send("info status")
    check_eq(ws.recv_text(), "", "savevm reply")
    for i in range(64):
        check_eq(ws.recv_text(), "VM status: running\n", f"queued line {i + 1} answered")
    ws.close()
    print("ok: /hmp queue bounded (64 lines wait, the 65th closes with 1008)")


def test_serial_and_slow_client(hp, tok):
    st, fast = WS.open(hp, "/serial", token=tok, protocol="serial")
    check_eq(st, 101, "/serial upgrade")
    st, slow = WS.open(hp, "/serial", token=tok, protocol="serial")
    fast.send(b"hello\x00\xff", binary=True)
    got = b""
    while b"hello\x00\xff" not in got:
        op, data = fast.recv()
        check_eq(op, 2, "serial output is in binary frames")
        got += data
    # The slow client never reads: the echo of 16 MiB must not be buffered
    # for it without bound, and the fast one must keep working.
    block = bytes(range(256)) * 256      # 64 KiB
    total = 0
    fast.sock.settimeout(30)
    for _ in range(256):
        fast.send(block, binary=True)
        total += len(block)
        need = total
        while len(got) < need + 7:
            op, data = fast.recv()
            got += data
    check(len(got) >= total, "fast reader got all its echoes")
    slow.sock.settimeout(10)
    closed = False
    try:
        drained = 0
        while drained < 64 * 1024 * 1024:
            chunk = slow.sock.recv(1 << 20)
            if not chunk:
                closed = True
                break
            drained += len(chunk)
    except (ConnectionResetError, socket.timeout):
        closed = True
    check(closed, "a client that stopped reading is dropped")
    fast.close()
    slow.close()
    print("ok: /serial binary both ways; slow reader dropped, fast one unaffected")


def test_tls(tmp):
    cert, key = wu.make_cert(tmp)
    p, scheme, hp, tok = start("--cert", cert, "--key", key)
    check_eq(scheme, "https", "URL scheme with --web-cert")
    st, h, body = wu.http_request(hp, f"/?token={tok}", tls=True)
    check_eq(st, 200, "GET / over https")
    check("set-cookie" not in h, "no cookie over https either")
    check("strict-transport-security" in h, "HSTS over https")
    ws = qmp_open(hp, tok, tls=True)
    ws.send('{"execute": "query-status", "id": 7}')
    check_eq(json.loads(ws.recv_text()).get("id"), 7, "QMP over wss")
    ws.close()
    st, _ = WS.open(hp, "/qmp", token=tok, protocol="qmp", tls=True, origin="http://" + hp)
    check_eq(st, 403, "http:// Origin refused on an https console")
    try:
        s = socket.create_connection(tuple([hp.rsplit(":", 1)[0], int(hp.rsplit(":", 1)[1])]), 5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        data = s.recv(100)
        check(not data.startswith(b"HTTP/1.1 200"), "plain http is not served on the TLS port")
        s.close()
    except OSError:
        pass
    stop(p)
    print("ok: TLS (https + wss) with a certificate made by openssl")


def test_startup_errors(tmp):
    r = subprocess.run([SRV, "--docroot", DOCROOT, "--addr", "0.0.0.0", "--port", "0"],
                       capture_output=True, text=True, timeout=20)
    check_eq(r.returncode, 1, "non-loopback bind without TLS exits 1")
    check("--web-cert" in r.stderr and "--web-insecure" in r.stderr, f"message: {r.stderr!r}")
    r = subprocess.run([SRV, "--docroot", DOCROOT, "--cert", "/nonexistent.pem", "--key", "/x"],
                       capture_output=True, text=True, timeout=20)
    check_eq(r.returncode, 1, "missing certificate exits 1")
    check("/nonexistent.pem" in r.stderr, f"message names the file: {r.stderr!r}")
    r = subprocess.run([SRV, "--docroot", tmp], capture_output=True, text=True, timeout=20)
    check_eq(r.returncode, 1, "docroot without index.html exits 1")
    tf = os.path.join(tmp, "token")
    with open(tf, "w") as f:
        f.write("Operator_Chosen-Token-0123456789\n")
    p, _, _, tok = start("--token-file", tf)
    check_eq(tok, "Operator_Chosen-Token-0123456789", "token from --web-token-file")
    stop(p)
    print("ok: start-up errors and --web-token-file")


def main():
    tmp = sgtest.tmpdir("sgweb-")
    p, scheme, hp, tok = start()
    check_eq(scheme, "http", "URL scheme")
    check(len(tok) >= 22, "token carries at least 128 bits")
    test_page(hp, tok)
    test_upgrade_rules(hp, tok)
    test_qmp(hp, tok)
    test_oversize(hp, tok)
    test_hmp(hp, tok)
    test_hmp_queue_bound(hp, tok)
    test_serial_and_slow_client(hp, tok)
    stop(p)
    p, _, hp, tok = start("--no-serial")
    test_upgrade_rules(hp, tok, serial=False)
    stop(p)
    test_tls(tmp)
    test_startup_errors(tmp)
    print("web_security: all checks passed")


if __name__ == "__main__":
    main()

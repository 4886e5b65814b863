"""sg_web_util: a small WebSocket client (RFC 6455) and helpers for testing
`snapgate --web` and the web server test binary.  Python 3 stdlib only."""
import base64
import os
import re
import socket
import ssl
import struct
import subprocess
import time

import sgtest

URL_RE = re.compile(r"web console: (https?)://([^/]+)/\?token=([A-Za-z0-9_-]+)")


def wait_url(proc, timeout=20.0):
    """Reads the process's stdout until the 'web console:' line; returns
    (scheme, hostport, token).  The process must have stdout=PIPE, text=True."""
    end = time.monotonic() + timeout
    seen = []
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                sgtest.fail(f"server exited {proc.returncode} before printing its URL: {seen}")
            continue
        seen.append(line.rstrip())
        m = URL_RE.search(line)
        if m:
            return m.group(1), m.group(2), m.group(3)
    sgtest.fail(f"no 'web console:' line within {timeout}s: {seen}")


def connect(hostport, tls=False, timeout=10.0):
    host, port = hostport.rsplit(":", 1)
    s = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname="localhost")
    return s


def http_request(hostport, path, headers=None, tls=False, method="GET"):
    """One HTTP/1.1 request; returns (status, headers dict lowercased, body bytes)."""
    s = connect(hostport, tls)
    h = {"Host": hostport, "Connection": "close"}
    h.update(headers or {})
    req = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    s.sendall(req.encode())
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
        hdr_end = data.find(b"\r\n\r\n")
        if hdr_end >= 0:
            m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", data[:hdr_end])
            if m and len(data) >= hdr_end + 4 + int(m.group(1)):
                break
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs.setdefault(k.strip().lower(), v.strip())
    return status, hdrs, body


class WSClosed(Exception):
    def __init__(self, code, reason):
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


class WS:
    """A WebSocket client.  open() returns (status, ws-or-None)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    @staticmethod
    def open(hostport, path, token=None, origin="auto", protocol=None, tls=False,
             cookie=None, host=None, timeout=10.0):
        s = connect(hostport, tls, timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        h = {"Host": host or hostport, "Upgrade": "websocket", "Connection": "Upgrade",
             "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"}
        if origin == "auto":
            origin = ("https://" if tls else "http://") + (host or hostport)
        if origin:
            h["Origin"] = origin
        if protocol:
            h["Sec-WebSocket-Protocol"] = protocol
        if cookie:
            h["Cookie"] = cookie
        target = path + (f"?token={token}" if token else "")
        req = f"GET {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        s.sendall(req.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        first = head.split(b"\r\n", 1)[0].decode("latin-1")
        status = int(first.split()[1]) if len(first.split()) > 1 else 0
        if status != 101:
            s.close()
            return status, None
        ws = WS(s)
        ws.buf = rest
        ws.headers = head.decode("latin-1")
        return status, ws

    def send(self, payload, binary=False, fin=True, opcode=None):
        if isinstance(payload, str):
            payload = payload.encode()
        op = opcode if opcode is not None else (2 if binary else 1)
        b0 = (0x80 if fin else 0) | op
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", b0, 0x80 | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, 0x80 | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, 0x80 | 127, n)
        mask = os.urandom(4)
        # XOR through int arithmetic: fast enough for megabyte frames.
        m = int.from_bytes((mask * (n // 4 + 1))[:n], "big") if n else 0
        body = (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big") if n else b""
        try:
            self.sock.sendall(hdr + mask + body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise WSClosed(None, "EOF")
            self.buf += chunk

    def recv_frame(self):
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        off = 2
        if n == 126:
            self._need(4)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            self._need(10)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        self._need(off + n)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return b0 & 0x80 != 0, b0 & 0x0F, payload

    def recv(self):
        """A whole message: (opcode, bytes).  Raises WSClosed on a close frame."""
        data, first_op = b"", None
        while True:
            fin, op, payload = self.recv_frame()
            if op == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise WSClosed(code, payload[2:])
            if op == 9:   # ping -> pong
                self.send(payload, opcode=10)
                continue
            if op == 10:
                continue
            if first_op is None:
                first_op = op
            data += payload
            if fin:
                return first_op, data

    def recv_text(self):
        op, data = self.recv()
        return data.decode()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def make_cert(dirpath):
    """A self-signed certificate for localhost made now with openssl."""
    sgtest.require_tool("openssl")
    cert, key = os.path.join(dirpath, "cert.pem"), os.path.join(dirpath, "key.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       capture_output=True, text=True)
    sgtest.check(r.returncode == 0, f"openssl req failed: {r.stderr}")
    return cert, key

#!/usr/bin/env python3
"""The library's server (tests/qmp_test_server) answers the same malformed,
negotiation and argument inputs exactly like a live QEMU 7.2 does.

Both get the same bytes on fresh connections; after each input a sentinel
command with a unique id marks the end of its replies.  Error replies must
be identical, except JSON syntax errors, where QEMU's own lexer words the
desc differently from jansson (and may report one bad line as several
errors): there the set of (class, id) and "the connection stays usable"
are compared.  Successful replies are compared by shape (return
present, same id), because the two servers' data differ."""
import json
import os
import socket
import subprocess

import sgtest

sgtest.require_tool("qemu-system-x86_64")
server = os.path.join(sgtest.BUILD, "tests", "qmp_test_server")
sgtest.check(os.access(server, os.X_OK), f"{server} not built")
work = sgtest.tmpdir("sgqmp-vs-")
qemu, qsock = sgtest.start_qemu([], work)
osock = os.path.join(work, "ours.sock")
ours = sgtest.spawn([server, osock], stdin=subprocess.PIPE)
sgtest.wait_for(lambda: os.path.exists(osock) or ours.poll() is not None, 10, "our socket")
sgtest.check(ours.poll() is None, "qmp_test_server died")
sgtest.check_eq(os.stat(osock).st_mode & 0o777, 0o600, "socket mode")


class Raw:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.s.settimeout(10)
        self.buf = b""
        self.n = 0
        self.greeting = self.line()

    def line(self):
        while b"\n" not in self.buf:
            c = self.s.recv(65536)
            if not c:
                raise EOFError
            self.buf += c
        l, self.buf = self.buf.split(b"\n", 1)
        sgtest.check(l.endswith(b"\r"), f"message not ended by CRLF: {l!r}")
        return json.loads(l)

    def exchange(self, data):
        """Sends data + a sentinel; returns the messages before the sentinel's reply."""
        self.n += 1
        sync = f"sync-{self.n}"
        self.s.sendall(data + b'\n{"execute": "query-status", "id": "%s"}\n' % sync.encode())
        out = []
        while True:
            m = self.line()
            if m.get("id") == sync:
                return out
            out.append(m)


def shape(m, syntax):
    if "event" in m:
        return ("event", m["event"])
    if "return" in m:
        return ("return", json.dumps(m.get("id")))
    if "error" in m:
        if syntax:
            return ("error", m["error"]["class"], json.dumps(m.get("id")))
        return ("error", m["error"], json.dumps(m.get("id")))
    return ("other", m)


def compare(name, inputs, negotiate=True, syntax=False):
    q, o = Raw(qsock), Raw(osock)
    # Greeting: same structure; capabilities differ by design (no oob).
    sgtest.check_eq(sorted(o.greeting["QMP"]), sorted(q.greeting["QMP"]), "greeting keys")
    sgtest.check_eq(sorted(o.greeting["QMP"]["version"]), sorted(q.greeting["QMP"]["version"]),
                    "greeting version keys")
    sgtest.check_eq(o.greeting["QMP"]["capabilities"], [], "our capabilities")
    if negotiate:
        for c in (q, o):
            c.exchange(b'{"execute": "qmp_capabilities"}')
    for data in inputs:
        a = [shape(m, syntax) for m in q.exchange(data)]
        b = [shape(m, syntax) for m in o.exchange(data)]
        if syntax:
            # QEMU's lexer may split one bad line into several errors
            a, b = sorted(set(a)), sorted(set(b))
        if a != b:
            sgtest.fail(f"{name}: input {data!r}\n  qemu: {a}\n  ours: {b}")
    q.s.close()
    o.s.close()
    print(f"ok {name}: {len(inputs)} inputs")


# Negotiation (no qmp_capabilities yet; the sentinel itself is refused too).
compare("negotiation", [
    b'{"execute": "query-status", "id": 5}',
    b'{"execute": "nope"}',
    b'{"execute": "qmp_capabilities", "arguments": {"x": 1}}',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": "oob"}}',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": ["bogus"]}}',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": [1]}}',
    b'{"execute": 1, "id": 9}',
    b'{"execute": "qmp_capabilities", "id": [1, {"a": null}]}',
    b'{"execute": "qmp_capabilities"}',
    b'{"execute": "qmp_capabilities", "arguments": {"x": 1}}',
], negotiate=False)

# Request structure and ids of every type.
compare("requests", [
    b'[1]', b'123', b'null', b'"str"', b'{}', b'{"id": 3}', b'{"id": {"a": [1, 2.5]}}',
    b'{"execute": 1, "id": 9}', b'{"execute": "query-status", "arguments": []}',
    b'{"execute": "query-status", "arguments": null, "id": true}',
    b'{"execute": "query-status", "foo": 1, "id": "x"}',
    b'{"exec-oob": "query-status"}', b'{"execute": "query-status", "control": {}}',
    b'{"execute": "no-such-command", "id": -1}',
    b'{"execute": "query-status", "id": {"x": [null, false, "\\u00e9"]}}',
    b'{"execute": "query-status", "id": 1} {"execute": "query-status", "id": 2}\r\n',
    b'{"execute": "query-status", "id": 1, "id": 2}',
])

# Argument checking with QEMU's schemas for these commands.
compare("arguments", [
    b'{"execute": "human-monitor-command", "id": 1}',
    b'{"execute": "human-monitor-command", "arguments": {"command-line": 1}}',
    b'{"execute": "human-monitor-command", "arguments": {"command-line": null}}',
    b'{"execute": "human-monitor-command", "arguments": {"command-line": "info status", "x": 2}}',
    b'{"execute": "human-monitor-command", "arguments": {"x": 1, "y": 2}}',
    b'{"execute": "human-monitor-command", "arguments": {"command-line": "x", "cpu-index": 1.5}}',
    b'{"execute": "human-monitor-command", "arguments": {"command-line": "x", "cpu-index": "a"}}',
    b'{"execute": "query-status", "arguments": {"x": 2}}',
    b'{"execute": "snapshot-save", "arguments": {}}',
    b'{"execute": "snapshot-save", "arguments": {"job-id": "j", "tag": "t", "vmstate": "v", "devices": [1]}}',
    b'{"execute": "snapshot-save", "arguments": {"job-id": "j", "tag": "t", "vmstate": "v", "devices": "x"}}',
    b'{"execute": "snapshot-save", "arguments": {"job-id": "j", "vmstate": "v", "devices": []}}',
    b'{"execute": "block-set-write-threshold", "arguments": {"node-name": "x", "write-threshold": "s"}}',
    b'{"execute": "block-set-write-threshold", "arguments": {"node-name": "x", "write-threshold": 1.5}}',
    b'{"execute": "block-set-write-threshold", "arguments": {"node-name": 3, "write-threshold": 1}}',
    b'{"execute": "set_link", "arguments": {"name": "x", "up": 1}}',
    b'{"execute": "transaction", "arguments": {"actions": {}}}',
    b'{"execute": "transaction", "arguments": {"actions": [{"data": {}}]}}',
    b'{"execute": "transaction", "arguments": {"actions": [{"type": 5}]}}',
    b'{"execute": "transaction", "arguments": {"actions": [{"type": "nope", "data": {}}]}}',
    b'{"execute": "transaction", "arguments": {"actions": [{"type": "blockdev-snapshot-internal-sync"}]}}',
    b'{"execute": "transaction", "arguments": {"actions": [{"type": "blockdev-snapshot-internal-sync", "data": {"device": "d"}}]}}',
    b'{"execute": "transaction", "arguments": {"actions": [{"type": "blockdev-snapshot-internal-sync", "data": {"device": "d", "name": "n", "foo": 2}}]}}',
    b'{"execute": "transaction", "arguments": {"actions": [{"type": "blockdev-snapshot-internal-sync", "data": 7}]}}',
])

# Malformed JSON: a GenericError each, and the connection keeps working.
compare("syntax", [
    b'garbage', b'{"a":}', b'}', b'{"a" 1}', b'[1,]', b'@', b'"abc', b'\xff', b'{"execute": "qu\xffery"}',
], syntax=True)

# Events go to negotiated clients, before the reply that caused them.
compare("events", [
    b'{"execute": "cont", "id": "c"}',
    b'{"execute": "stop", "id": "s"}',
])

ours.stdin.close()
ours.wait(10)
sgtest.check(not os.path.exists(osock), "socket removed at exit")
print("PASS")

#!/usr/bin/env python3
"""The gateway as a lossless proxy in front of real QEMU 7.2 (INTERFACES.md 4.2).

Two identical QEMUs: one spoken to directly, one through `snapgate --qmp`.
For query-qmp-schema (~200 KB), qom-get of the CPU's lbr-fmt (a uint64 above
2^63: 18446744073709551552, which jansson cannot hold), query-cpu-model-
expansion and device-list-properties, each sent with ids of every JSON type
(string, integer, an integer above 2^64, float, true, false, null, array,
object, escapes), the gateway's reply is byte for byte QEMU's, except that the
id is exactly the bytes the client sent.  Then file descriptors (SCM_RIGHTS):
getfd + closefd and add-fd through the gateway, checked with QEMU's
query-fdsets, QEMU's own error when no descriptor comes, and the gateway
keeps no copy of a passed descriptor."""
import array
import json
import os
import re
import socket
import subprocess

import sgtest

gw_bin = sgtest.binary("snapgate")
sgtest.require_tool("qemu-system-x86_64")
d1, d2 = sgtest.tmpdir(), sgtest.tmpdir()
qemu_direct, direct_sock = sgtest.start_qemu([], d1)
qemu_behind, behind_sock = sgtest.start_qemu([], d2)
gw_sock = os.path.join(d2, "gw.sock")
gw = sgtest.spawn([gw_bin, "--connect", "unix:" + behind_sock, "--qmp", "unix:" + gw_sock,
                   "--no-monitor"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
sgtest.wait_for(lambda: os.path.exists(gw_sock) or gw.poll() is not None, 20, "--qmp socket")
direct = sgtest.QMP(direct_sock, timeout=30)
proxied = sgtest.QMP(gw_sock, timeout=30)


def raw_line(q, text, fds=()):
    """Sends one command as text (with descriptors) and returns the reply line's bytes."""
    data = (text + "\r\n").encode()
    if fds:
        q.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        q.sock.sendall(data)
    while True:
        while b"\n" not in q.buf:
            chunk = q.sock.recv(1 << 20)
            if not chunk:
                sgtest.fail("connection closed")
            q.buf += chunk
        line, q.buf = q.buf.split(b"\n", 1)
        line = line.rstrip(b"\r")
        if b'"event"' in line[:40] or b'"timestamp"' in line[:20]:
            continue  # events are not what this compares
        return line


cpu = direct.cmd("query-cpus-fast")["return"][0]["qom-path"]
COMMANDS = [
    ("query-qmp-schema", None),
    ("qom-get", {"path": cpu, "property": "lbr-fmt"}),
    ("query-cpu-model-expansion", {"type": "full", "model": {"name": "qemu64"}}),
    ("device-list-properties", {"typename": "virtio-blk-pci"}),
    ("no-such-command", None),
]
IDS = ['"str"', '42', '18446744073709551616123', '-1.5e+300', 'true', 'false', 'null',
       '[1, {"a": [2.50, "\\u00e9"]}]', '{"k": "v", "n": 0.1}', '"quo\\"te \\u2603"']
seen_big = False
for name, args in COMMANDS:
    for mid in IDS:
        body = '{"execute": "%s"%s, "id": %s}' % (
            name, ', "arguments": ' + json.dumps(args) if args else "", mid)
        want = raw_line(direct, body)
        got = raw_line(proxied, body)
        # QEMU prints the id it parsed (e.g. a float re-formatted); the gateway
        # must give the client's own bytes back and QEMU's bytes for the rest.
        m = re.match(rb'^(.*), "id": (.*)\}$', want, re.S) if b'"return"' in want[:12] else \
            re.match(rb'^\{"id": (.*), ("error": \{[^{}]*\}\})$', want, re.S)
        sgtest.check(m, f"{name}: QEMU's reply has its id where expected: {want[:200]!r}")
        if b'"return"' in want[:12]:
            expect = m.group(1) + b', "id": ' + mid.encode() + b'}'
        else:
            expect = b'{"id": ' + mid.encode() + b', ' + m.group(2)
        if got != expect:
            sgtest.fail(f"{name} id {mid}: gateway bytes differ from QEMU's\n"
                        f"want {expect[:300]!r}...\ngot  {got[:300]!r}...")
        if b"18446744073709551552" in got:
            seen_big = True
        if name == "query-qmp-schema":
            sgtest.check(len(got) > 100000, f"query-qmp-schema is big ({len(got)} bytes)")
sgtest.check(seen_big, "the uint64 above 2^63 came through")
# Without id: no id in the reply, the rest as QEMU wrote it.
want = raw_line(direct, '{"execute": "query-status"}')
got = raw_line(proxied, '{"execute": "query-status"}')
sgtest.check_eq(got, want, "reply without id")

# ---- descriptors ----------------------------------------------------------
def gw_fds():
    return len(os.listdir(f"/proc/{gw.pid}/fd"))


base = gw_fds()
r, w = os.pipe()
reply = raw_line(proxied, '{"execute": "getfd", "arguments": {"fdname": "fd1"}, "id": "g"}', [r])
sgtest.check_eq(json.loads(reply), {"return": {}, "id": "g"}, "getfd with a descriptor")
reply = raw_line(proxied, '{"execute": "add-fd", "arguments": {"fdset-id": 7}, "id": "a"}', [w])
added = json.loads(reply)
sgtest.check("return" in added and added["return"]["fdset-id"] == 7, f"add-fd: {added}")
os.close(r)
os.close(w)
sets = proxied.cmd("query-fdsets")["return"]
sgtest.check(any(s["fdset-id"] == 7 and any(f["fd"] == added["return"]["fd"] for f in s["fds"])
                 for s in sets), f"query-fdsets lists the added descriptor: {sets}")
r1 = raw_line(proxied, '{"execute": "closefd", "arguments": {"fdname": "fd1"}, "id": "c1"}')
sgtest.check_eq(json.loads(r1), {"return": {}, "id": "c1"}, "closefd of the passed descriptor")
r2 = raw_line(proxied, '{"execute": "closefd", "arguments": {"fdname": "fd1"}, "id": "c2"}')
r2d = raw_line(direct, '{"execute": "closefd", "arguments": {"fdname": "fd1"}, "id": "c2"}')
sgtest.check_eq(r2, r2d, "second closefd: QEMU's own error")
r3 = raw_line(proxied, '{"execute": "getfd", "arguments": {"fdname": "x"}, "id": 3}')
r3d = raw_line(direct, '{"execute": "getfd", "arguments": {"fdname": "x"}, "id": 3}')
sgtest.check_eq(r3, r3d, "getfd without a descriptor: QEMU's error")
sgtest.check(b"No file descriptor supplied via SCM_RIGHTS" in r3, f"getfd error text: {r3!r}")
r4 = raw_line(proxied, '{"execute": "remove-fd", "arguments": {"fdset-id": 7}, "id": 4}')
sgtest.check_eq(json.loads(r4), {"return": {}, "id": 4}, "remove-fd")
sgtest.wait_for(lambda: gw_fds() <= base, 5, "the gateway closed its copies of passed descriptors")

# ---- negotiation: every bad qmp_capabilities form answered in QEMU's words --
# (QEMU offers "oob" in its greeting and the gateway does not, on purpose: the
# forms below avoid enabling it successfully.)
NEGOTIATION = [
    '{"execute": "qmp_capabilities", "arguments": {"enable": 5}, "id": 1}',
    '{"execute": "qmp_capabilities", "arguments": {"enable": "oob"}, "id": 2}',
    '{"execute": "qmp_capabilities", "arguments": {"enable": [5]}, "id": 3}',
    '{"execute": "qmp_capabilities", "arguments": {"enable": ["foo"]}, "id": 4}',
    '{"execute": "qmp_capabilities", "arguments": {"enable": null}, "id": 5}',
    '{"execute": "qmp_capabilities", "arguments": {"x": 1}, "id": 6}',
    '{"execute": "qmp_capabilities", "arguments": [], "id": 7}',
    '{"execute": "qmp_capabilities", "extra": 1, "id": 8}',
    '{"execute": 5, "id": 9}',
    '{"arguments": {}, "id": 10}',
    '{"execute": "query-status", "id": 11}',
    '[]',
    '{"execute": "qmp_capabilities", "arguments": {"enable": []}, "id": 12}',
]
AFTER = [
    '{"execute": "qmp_capabilities", "id": 13}',
    '{"execute": "qmp_capabilities", "arguments": {"enable": 5}, "id": 14}',
    '{"execute": "qmp_capabilities", "arguments": {"x": 1}, "id": 15}',
]
direct.close()


def session(path, lines):
    q = sgtest.QMP(path, timeout=20, negotiate=False)
    out = [raw_line(q, l) for l in lines]
    q.close()
    return out


want = session(direct_sock, NEGOTIATION + AFTER)
got = session(gw_sock, NEGOTIATION + AFTER)
for line, w, g in zip(NEGOTIATION + AFTER, want, got):
    sgtest.check_eq(g, w, f"negotiation reply to {line}")
vmm = sgtest.binary("snapgate-vmm")
try:
    os.close(os.open("/dev/kvm", os.O_RDWR))
    kvm = os.access(vmm, os.X_OK)
except OSError:
    kvm = False
if kvm:  # snapgate-vmm's own server negotiates with the same code and texts
    vsock = os.path.join(d2, "vmm.sock")
    v = sgtest.spawn([vmm, "-S", "-m", "32M", "-serial", "none", "-qmp",
                      f"unix:{vsock},server=on,wait=off"], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=d2)
    sgtest.wait_for(lambda: os.path.exists(vsock) or v.poll() is not None, 20, "VMM socket")
    got = session(vsock, NEGOTIATION + AFTER)
    for line, w, g in zip(NEGOTIATION + AFTER, want, got):
        sgtest.check_eq(g, w, f"snapgate-vmm negotiation reply to {line}")
    v.kill()
    print("snapgate-vmm negotiation: same texts as QEMU")
gw.terminate()
sgtest.check_eq(gw.wait(10), 0, "gateway exit code")
print("ok")

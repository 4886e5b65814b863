#!/usr/bin/env python3
"""The --qmp endpoint as a proxy, against a scripted back end (no KVM needed):
greeting with the back end's version, negotiation, ids kept apart between
clients (any JSON id, echoed verbatim, never seen by the back end), events to
every negotiated client, 4 MiB messages both ways, malformed JSON answered
without closing, replies and events the back end writes passed on byte for
byte (a uint64 jansson cannot hold, floats, escapes, spacing), a reply that is
not JSON answered with a GenericError while the link stays up, the HMP
engine's job-id prefix refused, replies in each client's order, socket mode
0600, and (with --reconnect 0) a back end that dies mid-command: the waiting
client gets an error naming the cause, the gateway says so on stderr and exits
2 (no hang)."""
import json
import os
import stat
import subprocess

import sg_gateway_util
import sgtest

gw_bin = sgtest.binary("snapgate")
d = sgtest.tmpdir()
be_sock = os.path.join(d, "be.sock")
gw_sock = os.path.join(d, "gw.sock")
be = sg_gateway_util.FakeBackend(be_sock, package="fake-7.2")

# --reconnect 0: the old contract, exit 2 as soon as the back end goes (the
# reconnection is tested in test_gw_reconnect.py).
gw = sgtest.spawn([gw_bin, "--connect", "unix:" + be_sock, "--qmp", "unix:" + gw_sock,
                   "--no-monitor", "--reconnect", "0"], stdin=subprocess.DEVNULL,
                  stderr=subprocess.PIPE)
sgtest.wait_for(lambda: os.path.exists(gw_sock) or gw.poll() is not None, 10, "--qmp socket")
if gw.poll() is not None:
    sgtest.fail(f"gateway exited: {gw.stderr.read()!r}")
sgtest.check_eq(stat.S_IMODE(os.stat(gw_sock).st_mode), 0o600, "--qmp socket mode")

a = sgtest.QMP(gw_sock, negotiate=False)
b = sgtest.QMP(gw_sock)
sgtest.check_eq(a.greeting["QMP"]["version"]["package"], "fake-7.2", "greeting carries the back end's version")
sgtest.check_eq(a.greeting["QMP"]["capabilities"], [], "greeting capabilities")

# Before negotiation: QEMU's CommandNotFound.
r = a.cmd("query-status", id="pre")
sgtest.check_eq(r, {"id": "pre", "error": {"class": "CommandNotFound",
                "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}, "pre-negotiation")
sgtest.check_eq(a.cmd("qmp_capabilities", id=1), {"return": {}, "id": 1}, "negotiation")
r = a.cmd("qmp_capabilities", id=2)
sgtest.check_eq(r["error"]["class"], "CommandNotFound", "second qmp_capabilities")

# Same id on two clients, interleaved: each gets its own reply.
a.send_raw('{"execute": "echo", "arguments": {"who": "a"}, "id": "same"}\r\n')
b.send_raw('{"execute": "echo", "arguments": {"who": "b"}, "id": "same"}\r\n')
ra, rb = a.recv(), b.recv()
sgtest.check_eq(ra, {"return": {"who": "a"}, "id": "same"}, "client a's reply")
sgtest.check_eq(rb, {"return": {"who": "b"}, "id": "same"}, "client b's reply")
# Odd ids come back verbatim; no id means no id.
sgtest.check_eq(a.cmd("echo", {"x": 1}, id={"k": [1, None]})["id"], {"k": [1, None]}, "object id")
a.send_raw('{"execute": "echo", "arguments": {"x": 2}}\r\n')
sgtest.check_eq(a.recv(), {"return": {"x": 2}}, "reply without id")
# The back end saw only the gateway's own ids.
sent = [m for m in be.received if m.get("execute") == "echo"]
ids = [m.get("id") for m in sent]
sgtest.check(len(set(map(str, ids))) == len(ids), f"back-end ids are unique: {ids}")
sgtest.check(all(isinstance(i, str) and i.startswith("sg-") and i[3:].isdigit() for i in ids),
             f"back-end ids are the link's own (sg_qmp_client: sg-N): {ids}")

# Big messages both ways (more than a socket buffer: the link's output queue
# has to be written over several loop rounds).
big = "x" * (4 << 20)
sgtest.check_eq(a.cmd("echo", {"big": big}, id="big")["return"]["big"], big, "4 MiB echo")

# Errors from the back end pass through with the client's id.
r = a.cmd("no-such-command", id=7)
sgtest.check_eq(r, {"id": 7, "error": {"class": "CommandNotFound",
                "desc": "The command no-such-command has not been found"}}, "forwarded error")

# Events reach every negotiated client.
c = sgtest.QMP(gw_sock, negotiate=False)  # not negotiated: gets no events
a.cmd("emit", {"event": "STOP"})
ea = a.wait_event("STOP", 5)
eb = b.wait_event("STOP", 5)
sgtest.check("timestamp" in ea and ea == eb, f"both clients got the same event: {ea} {eb}")
b.cmd("emit", {"event": "RESUME"})
a.wait_event("RESUME", 5)
b.wait_event("RESUME", 5)
c.sock.settimeout(0.3)
try:
    m = c.recv()
    sgtest.fail(f"a client that did not negotiate got {m}")
except OSError:
    pass
c.close()

# Malformed JSON: an error, and the connection still works.
b.send_raw('{"execute": nope}\r\n')
r = b.recv()
sgtest.check(r.get("error", {}).get("class") == "GenericError", f"malformed JSON: {r}")
sgtest.check_eq(b.cmd("query-status")["return"]["status"], "running", "still usable after bad JSON")
r = b.cmd("human-monitor-command", {})
sgtest.check_eq(r["error"]["desc"], "Parameter 'command-line' is missing", "HMC without line")

# Lossless: replies and events as the back end wrote them, only the id put back.
def line_of(q):
    while b"\n" not in q.buf:
        q.buf += q.sock.recv(65536)
    line, q.buf = q.buf.split(b"\n", 1)
    return line.rstrip(b"\r")


for text, want in [
        ('{"return": 18446744073709551552, "id": {ID}}', b'{"return": 18446744073709551552, "id": "big"}'),
        ('{ "id" : {ID} ,"return":{"f": 1.50e+300, "s": "\\u00e9\\n", "z": -0.0}}',
         b'{ "id" : "big" ,"return":{"f": 1.50e+300, "s": "\\u00e9\\n", "z": -0.0}}'),
]:
    b.send_raw(json.dumps({"execute": "raw", "arguments": {"text": text}, "id": "big"}) + "\r\n")
    sgtest.check_eq(line_of(b), want, f"reply passed through byte for byte: {text}")
# An event jansson cannot hold still reaches every client as sent.
ev = '{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "X_BIG", "data": {"n": 18446744073709551615, "f": 0.1}}'
b.send_raw(json.dumps({"execute": "raw", "arguments": {"text": '{"return": {}, "id": {ID}}\r\n' + ev}, "id": "e"}) + "\r\n")
sgtest.check_eq(line_of(b), b'{"return": {}, "id": "e"}', "reply before the event")
sgtest.check_eq(line_of(b), ev.encode(), "event with a uint64 and a float, as sent")
sgtest.check_eq(line_of(a), ev.encode(), "the other client got the same bytes")
# A reply that is not JSON: the command it answers gets a GenericError, the
# link stays up, and the next command is answered normally.
b.send_raw(json.dumps({"execute": "raw", "arguments": {"text": '{"return": nonsense, "id": {ID}}'}, "id": "bad"}) + "\r\n")
r = b.recv()
sgtest.check(r.get("id") == "bad" and r["error"]["class"] == "GenericError" and
             "not valid JSON" in r["error"]["desc"], f"unparseable reply: {r}")
sgtest.check_eq(b.cmd("echo", {"after": 1})["return"], {"after": 1}, "link up after bad JSON")
# Job ids of the gateway's HMP engine cannot be taken.
r = b.cmd("snapshot-save", {"job-id": "hmp-savevm-1", "tag": "x", "vmstate": "d", "devices": []})
sgtest.check("reserved" in r.get("error", {}).get("desc", ""), f"hmp- job id refused: {r}")
sgtest.check("snapshot-save" not in be.commands(), "the refused command never reached the back end")
# Replies in the client's order: an HMP line the gateway answers itself and a
# forwarded command sent after it.
b.send_raw('{"execute": "human-monitor-command", "arguments": {"command-line": "info snapshots"}, "id": 1}\r\n'
           '{"execute": "echo", "arguments": {"n": 2}, "id": 2}\r\n'
           '{"execute": "qmp_capabilities", "id": 3}\r\n'
           '{"execute": "echo", "arguments": {"n": 4}, "id": 4}\r\n')
order = [b.recv().get("id") for _ in range(4)]
sgtest.check_eq(order, [1, 2, 3, 4], "replies in the client's order")

# A client leaving with a command in flight does not disturb the others.
a.send_raw('{"execute": "hang", "id": "gone"}\r\n')
a.close()
sgtest.check_eq(b.cmd("echo", {"y": 1})["return"], {"y": 1}, "after a client left")

# The back end dies while b waits for a reply.
b.send_raw('{"execute": "hang", "id": "h1"}\r\n')
sgtest.wait_for(lambda: be.commands().count("hang") >= 2, 5, "hang reached the back end")
be.die()
r = b.recv()
sgtest.check_eq(r.get("id"), "h1", f"error reply for the pending command: {r}")
sgtest.check("back end" in r.get("error", {}).get("desc", ""), f"error names the cause: {r}")
rc = gw.wait(10)
err = gw.stderr.read().decode()
sgtest.check_eq(rc, 2, "exit code when the back end dies")
sgtest.check("the back end died" in err, f"stderr says the back end died: {err!r}")
sgtest.check(not os.path.exists(gw_sock), "--qmp socket removed at exit")

# human-monitor-command "quit" (what libvirt-style scripts send): "" and the
# back end is quit, then the gateway ends with exit 0.
be3 = sg_gateway_util.FakeBackend(os.path.join(d, "be3.sock"))
gw_sock3 = os.path.join(d, "gw3.sock")
gw = sgtest.spawn([gw_bin, "--connect", "unix:" + os.path.join(d, "be3.sock"), "--qmp",
                   "unix:" + gw_sock3, "--no-monitor"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
sgtest.wait_for(lambda: os.path.exists(gw_sock3) or gw.poll() is not None, 10, "--qmp socket")
q = sgtest.QMP(gw_sock3)
sgtest.check_eq(q.hmp("quit"), "", "HMC quit reply")
sgtest.check_eq(gw.wait(10), 0, "exit code after HMC quit")
sgtest.check("quit" in be3.commands(), "quit reached the back end")
print("ok")

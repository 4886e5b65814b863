#!/usr/bin/env python3
"""/serial output is coalesced (gateway/web/web_conn.c): bytes the guest
printed while the client was not writable go out in few WebSocket messages,
not one per byte, byte-exact and in order, and the per-client and total
output bounds still hold.  Against the fake gateway (sg_web_testsrv), whose
"\\x1b[sg-burst N]" input makes it hand over N bytes (i % 251) one callback
per byte, as the VMM's UART does, all before the event loop runs again.

Usage: test_web_serial_coalesce.py [--counts]  (--counts: only print the
message counts of the two small cases, e.g. against an older build)."""
import os
import re
import subprocess
import sys
import time

import sgtest
from sgtest import check, check_eq
import sg_web_util as wu
from sg_web_util import WS, WSClosed

SRV = os.path.join(sgtest.BUILD, "tests", "sg_web_testsrv")
DOCROOT = os.path.join(sgtest.SRC, "web")
check(os.access(SRV, os.X_OK), f"{SRV} not built")
COALESCE = 64 * 1024          # SG_WEB_COALESCE
TICK = re.compile(rb"(\[fake guest\] tick \d+\r\n)*")


def pattern(n):
    block = bytes(i % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


def burst(ws, n):
    ws.send(f"\x1b[sg-burst {n}]".encode(), binary=True)


def read_burst(ws, n):
    """Reads messages until the burst of n bytes has arrived.  Returns the
    number of messages that carried burst bytes.  Everything around it must
    be whole tick lines of the fake guest: nothing lost, nothing doubled."""
    want = pattern(n)
    head = want[:64]
    stream, spans, start = b"", [], -1
    ws.sock.settimeout(60)
    while start < 0 or len(stream) < start + n:
        op, data = ws.recv()
        check_eq(op, 2, "serial output is in binary frames")
        spans.append((len(stream), len(stream) + len(data)))
        stream += data
        if start < 0:
            start = stream.find(head)
    check(stream[start:start + n] == want, "burst bytes arrive exactly, in order")
    before, after = stream[:start], stream[start + n:]
    check(TICK.fullmatch(before) is not None, f"only tick lines before the burst: {before[-80:]!r}")
    # A tick may follow in the same message; it must be whole lines too.
    check(TICK.fullmatch(after) is not None, f"only tick lines after the burst: {after[:80]!r}")
    end = start + n
    return sum(1 for a, b in spans if a < end and b > start)


def case_small(hp, tok):
    """One "tick N" line's worth (9 bytes) handed over byte by byte."""
    st, ws = WS.open(hp, "/serial", token=tok, protocol="serial")
    check_eq(st, 101, "/serial upgrade")
    burst(ws, 9)
    msgs = read_burst(ws, 9)
    ws.close()
    return msgs


def case_not_reading(hp, tok, n):
    """A burst bigger than the socket buffers while the client sleeps."""
    st, ws = WS.open(hp, "/serial", token=tok, protocol="serial")
    check_eq(st, 101, "/serial upgrade")
    burst(ws, n)
    time.sleep(1.0)
    msgs = read_burst(ws, n)
    ws.close()
    return msgs


def case_budget(hp, tok):
    """Five clients that do not read and a 7 MiB burst each: 35 MiB is over
    the gateway's 32 MiB total, so exactly one (holding most, at most its own
    8 MiB bound) is dropped; the other four get every byte."""
    n = 7 * 1024 * 1024
    wss = []
    for _ in range(5):
        st, ws = WS.open(hp, "/serial", token=tok, protocol="serial")
        check_eq(st, 101, "/serial upgrade")
        wss.append(ws)
    burst(wss[0], n)
    time.sleep(1.0)
    ok, dropped, counts = 0, 0, []
    for ws in wss:
        try:
            counts.append(read_burst(ws, n))
            ok += 1
        except (WSClosed, ConnectionResetError, OSError):
            dropped += 1
        ws.close()
    check_eq(dropped, 1, "clients dropped for the 32 MiB total")
    check_eq(ok, 4, "clients that got the whole burst")
    for c in counts:
        check(c <= n // COALESCE + 2, f"{c} messages for {n} bytes")
    return counts


def main():
    counts_only = "--counts" in sys.argv[1:]
    p = sgtest.spawn([SRV, "--docroot", DOCROOT, "--port", "0"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    scheme, hp, tok = wu.wait_url(p)
    n = 1024 * 1024 + 12345
    small = case_small(hp, tok)
    big = case_not_reading(hp, tok, n)
    print(f"9 bytes one per callback: {small} message(s)")
    print(f"{n} bytes one per callback, client not reading: {big} message(s)")
    if counts_only:
        p.terminate()
        p.wait(10)
        return
    check_eq(small, 1, "messages for 9 bytes queued before the client was writable")
    check(big <= -(-n // COALESCE) + 1, f"{big} messages for {n} bytes (64 KiB each at most)")
    counts = case_budget(hp, tok)
    print(f"7 MiB to 5 non-reading clients: one dropped, 4 got it in {counts} messages")
    p.terminate()
    rc = p.wait(10)
    err = p.stderr.read()
    drops = re.findall(r"dropped holding (\d+) bytes", err)
    check_eq(len(drops), 1, f"one drop reported: {err[-400:]!r}")
    held = int(drops[0])
    check(32 * 1024 * 1024 // 5 <= held <= 8 * 1024 * 1024,
          f"the dropped client held {held} bytes (within its 8 MiB bound)")
    check_eq(rc, 0, "server exit code after SIGTERM")
    print(f"the dropped client held {held} bytes")
    print("web_serial_coalesce: all checks passed")


if __name__ == "__main__":
    main()

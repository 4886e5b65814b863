#!/usr/bin/env python3
"""The lost-guest rule of the Linux tests, on any host (no guest, no bed): a fake
ttyS0 on a unix socket that stays silent, stops part way through echoing the typed line
(no end of line), or shows the guest's ready line inside a command's output, ends
linux_util's Console with status 3 (GUEST_LOST); a whole echo and output that then stops
is an ordinary failure (1).  Then sg_bed_util.linux_here_or_bed with
a fake bed: one lost attempt is run again and recorded in BUILD/Testing's re-run log,
two in a row fail (1), any other status is passed on at once."""
import os
import socket
import subprocess
import sys
import threading
import time

import sgtest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sg_bed_util  # noqa: E402
import linux_util  # noqa: E402

if len(sys.argv) == 3 and sys.argv[1] == "--console":
    # Child: one command against a fake guest that answers as argv[2] says.
    d = sgtest.tmpdir("sglost-")
    path = os.path.join(d, "ttyS0.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def guest(mode):
        c, _ = srv.accept()
        c.recv(100)
        if mode == "reboot":
            c.sendall(b"\r\n[    0.0] sg-guest: ready\r\n/ # ")
        elif mode == "partial":
            c.sendall(b"echo hi; ec")
        elif mode == "stops":
            c.sendall(b'echo hi; echo "@@"1"@@"\r\nh')
        elif mode == "answer":
            c.sendall(b'echo hi; echo "@@"1"@@"\r\nhi\r\n@@1@@\r\n')
        time.sleep(30)

    threading.Thread(target=guest, args=(sys.argv[2],), daemon=True).start()
    con = linux_util.Console(path)
    out = con.sh("echo hi", timeout=2)
    sys.exit(0 if out == "hi" else 9)

for mode, want in (("silent", sg_bed_util.GUEST_LOST), ("reboot", sg_bed_util.GUEST_LOST),
                   ("partial", sg_bed_util.GUEST_LOST), ("stops", 1), ("answer", 0)):
    r = subprocess.run([sys.executable, __file__, "--console", mode], capture_output=True,
                       text=True, timeout=60)
    sgtest.check(r.returncode == want, f"console {mode}: exit {r.returncode}, want {want}: "
                 f"{r.stdout}{r.stderr}")
    if want == sg_bed_util.GUEST_LOST:
        sgtest.check("FAIL: guest lost:" in r.stdout, f"console {mode}: {r.stdout!r}")

# The runner, with the bed replaced by a list of attempts.
build = sgtest.tmpdir("sglost-build-")
sgtest.BUILD = build
log = os.path.join(build, "Testing", sg_bed_util.RERUN_LOG)
sg_bed_util.kvm_is_pvm = lambda: True
sgtest.require_kvm = lambda: None
os.environ.pop("SG_BED_NO_RERUN", None)


def runner(statuses):
    seq = [sg_bed_util.Result(s, f"attempt {i}\nFAIL: guest lost: silent {i}\n", "kvm-bed: ok")
           for i, s in enumerate(statuses)]
    calls = []

    def fake_run(argv, **kw):
        calls.append(argv)
        return seq.pop(0)
    sg_bed_util.run = fake_run
    try:
        sg_bed_util.linux_here_or_bed(os.path.join(HERE, "test_x.py"), "/guest", 10)
    except SystemExit as e:
        return e.code, len(calls)
    return None, len(calls)


sgtest.check_eq(runner([3, 0]), (0, 2), "one lost attempt, then a pass")
with open(log) as f:
    text = f.read()
sgtest.check("test_x.py: FAIL: guest lost: silent 0" in text and "    attempt 0" in text,
             f"re-run log: {text!r}")
sgtest.check_eq(runner([3, 3]), (1, 2), "two lost attempts")
sgtest.check_eq(runner([1]), (1, 1), "an ordinary failure: not run again")
sgtest.check_eq(runner([77]), (77, 1), "a skip is passed on")
os.environ["SG_BED_NO_RERUN"] = "1"
sgtest.check_eq(runner([3]), (1, 1), "SG_BED_NO_RERUN=1")
print("guest-lost rule: console silent/reboot -> 3, partial -> 1; runner re-runs once")

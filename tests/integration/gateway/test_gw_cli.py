#!/usr/bin/env python3
"""snapgate's command line: --help, usage errors (exit 1, message naming the
cause), start-up errors (exit 1), and the embedded VMM's start-up failure."""
import os
import sgtest

gw = sgtest.binary("snapgate")
d = sgtest.tmpdir()


def run(*args):
    return sgtest.run([gw, *args], check_rc=False, timeout=30, stdin=open(os.devnull))


r = run("--help")
sgtest.check_eq(r.returncode, 0, "--help exit code")
sgtest.check("--connect unix:PATH" in r.stdout and "--compat-profile" in r.stdout,
             f"--help lists the options: {r.stdout}")
r = run("--version")
sgtest.check(r.returncode == 0 and r.stdout.startswith("snapgate "), f"--version: {r.stdout}")

usage = [
    (["--bogus"], "unknown option '--bogus'"),
    (["--connect"], "option --connect needs a value"),
    (["--connect", "tcp:1.2.3.4:5"], "--connect: expected unix:PATH"),
    (["--qmp", "/x"], "--qmp: expected unix:PATH"),
    (["--hmp-profile", "qemu-8"], "--hmp-profile: unknown profile 'qemu-8'"),
    (["--compat-profile=x"], "--compat-profile: unknown profile 'x'"),
    (["--web", "99999"], "--web: bad port '99999'"),
    (["--web-cert", "a.pem", "--web", "8080"], "--web-cert and --web-key must be given together"),
    (["--web-insecure"], "need --web"),
    (["--no-monitor=yes"], "option --no-monitor takes no value"),
    (["--connect", "unix:/x", "--vmm", "-m", "64"], "--connect and --vmm exclude each other"),
    (["stray"], "unexpected argument 'stray'"),
    (["--qmp", "unix:" + "a" * 200], "longer than 107 bytes"),
]
for args, msg in usage:
    r = run(*args)
    sgtest.check_eq(r.returncode, 1, f"exit code of {args}")
    sgtest.check(msg in r.stderr, f"{args}: stderr {r.stderr!r} lacks {msg!r}")
    sgtest.check(r.stderr.startswith("snapgate: "), f"{args}: message prefix: {r.stderr!r}")

# Start-up errors name their cause and exit 1.
r = run("--connect", "unix:" + os.path.join(d, "nothing.sock"), "--no-monitor", "--qmp",
        "unix:" + os.path.join(d, "gw.sock"))
sgtest.check_eq(r.returncode, 1, "exit code for a missing back-end socket")
sgtest.check("cannot connect to" in r.stderr and "nothing.sock" in r.stderr,
             f"missing socket message: {r.stderr!r}")

# A socket that is not QMP: the greeting never comes.
import socket
silent = os.path.join(d, "silent.sock")
s = socket.socket(socket.AF_UNIX)
s.bind(silent)
s.listen(1)
os.environ["SNAPGATE_GREETING_TIMEOUT_MS"] = "300"
r = run("--connect", "unix:" + silent, "--no-monitor", "--qmp", "unix:" + os.path.join(d, "g.sock"))
sgtest.check_eq(r.returncode, 1, "exit code for a silent back end")
sgtest.check("no QMP greeting" in r.stderr, f"silent back end message: {r.stderr!r}")

# --qmp on a path that is a regular file is refused.
plain = os.path.join(d, "plain")
open(plain, "w").close()
fake_sock = os.path.join(d, "fake.sock")
import sg_gateway_util
be = sg_gateway_util.FakeBackend(fake_sock)
r = run("--connect", "unix:" + fake_sock, "--no-monitor", "--qmp", "unix:" + plain)
sgtest.check_eq(r.returncode, 1, "exit code for --qmp on a regular file")
sgtest.check("exists and is not a socket" in r.stderr, f"--qmp on a file: {r.stderr!r}")
r = run("--connect", "unix:" + fake_sock, "--no-monitor")
sgtest.check_eq(r.returncode, 1, "--no-monitor without --qmp/--web")
sgtest.check("--no-monitor needs --qmp or --web" in r.stderr, r.stderr)

# The embedded VMM: a state dir with a comma cannot be passed to -drive.
r = run("--state-dir", os.path.join(d, "a,b"), "--no-monitor", "--qmp", "unix:" + os.path.join(d, "h.sock"))
sgtest.check_eq(r.returncode, 1, "exit code for a comma in --state-dir")
sgtest.check("comma" in r.stderr, r.stderr)
print("ok")

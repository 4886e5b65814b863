"""sg_install_util: checks shared by the install and Debian package tests:
the programs of an installed tree run, and its snapgate serves the console
page from where it was installed."""
import os
import subprocess

import sg_gateway_util as U
import sg_web_util as W
import sgtest

PROGRAMS = ("snapgate", "snapgate-vmm", "snapgate-img")
MAN_PAGES = ("man1/snapgate.1", "man1/snapgate-vmm.1", "man1/snapgate-img.1",
             "man7/snapgate-hmp.7")
PAGE_FILES = ("index.html", "app.js", "style.css", "node_modules/@xterm/xterm/lib/xterm.mjs")


def check_tree(prefix, docdir=None):
    """prefix: the installed /usr-like tree (bin/, share/)."""
    for p in PROGRAMS:
        sgtest.check(os.access(os.path.join(prefix, "bin", p), os.X_OK), f"{prefix}/bin/{p}")
    for m in MAN_PAGES:
        sgtest.check(os.path.isfile(os.path.join(prefix, "share/man", m)), f"man page {m}")
    for f in PAGE_FILES:
        sgtest.check(os.path.isfile(os.path.join(prefix, "share/snapgate/web", f)),
                     f"page file {f}")
    doc = docdir or os.path.join(prefix, "share/doc/snapgate")
    for u in ("snapgate.service", "snapgate.socket"):
        sgtest.check(os.path.isfile(os.path.join(doc, "examples/systemd", u)), f"example unit {u}")


def check_runs(prefix):
    r = subprocess.run([os.path.join(prefix, "bin/snapgate-img"), "--version"],
                       capture_output=True, text=True, timeout=20)
    sgtest.check_eq((r.returncode, r.stdout), (0, "snapgate-img 0.1.0\n"), "snapgate-img --version")
    r = subprocess.run([os.path.join(prefix, "bin/snapgate"), "--help"],
                       capture_output=True, text=True, timeout=20)
    sgtest.check(r.returncode == 0 and "Usage: snapgate" in r.stdout, f"snapgate --help: {r}")
    r = subprocess.run([os.path.join(prefix, "bin/snapgate-vmm"), "-version"],
                       capture_output=True, text=True, timeout=20)
    sgtest.check(r.returncode == 0 and "snapgate-vmm" in r.stdout, f"snapgate-vmm -version: {r}")


def served_page(snapgate, workdir):
    """Starts `snapgate --web 127.0.0.1:0` in front of a fake back end and
    returns the bytes it serves at / (with the token)."""
    sock = os.path.join(workdir, "fake-%d.sock" % len(os.listdir(workdir)))
    be = U.FakeBackend(sock)
    p = sgtest.spawn([snapgate, "--connect", "unix:" + sock, "--no-monitor",
                      "--web", "127.0.0.1:0"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, hostport, token = W.wait_url(p)
        status, _, body = W.http_request(hostport, f"/?token={token}")
        sgtest.check_eq(status, 200, f"GET / from {snapgate}")
        return body
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
        be.die()

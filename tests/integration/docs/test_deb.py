#!/usr/bin/env python3
"""The Debian package: scripts/make-deb.sh builds it (CPack DEB on a /usr
build); dpkg-deb -I shows its control fields with the library dependencies
dpkg-shlibdeps found, dpkg-deb -c lists every program, man page, the page
and the example units under /usr; unpacked with dpkg -x into a temporary
root (no system install), its programs run and its snapgate serves the
page it carries.  Slow (a whole build): runs with SNAPGATE_TEST_DEB=1."""
import os
import re
import subprocess

import sg_install_util as I
import sgtest

if os.environ.get("SNAPGATE_TEST_DEB") != "1":
    sgtest.skip("builds a whole package: set SNAPGATE_TEST_DEB=1 (.ci/run does)")
for tool in ("dpkg-deb", "dpkg", "cpack", "dpkg-shlibdeps"):
    sgtest.require_tool(tool)
d = sgtest.tmpdir("sg-deb-")
out = os.path.join(d, "out")
r = subprocess.run([os.path.join(sgtest.SRC, "scripts/make-deb.sh"), out],
                   capture_output=True, text=True, timeout=840,
                   env=dict(os.environ, DEB_BUILD_DIR=os.path.join(d, "build")))
sgtest.check(r.returncode == 0, f"make-deb.sh failed: {r.stdout}{r.stderr}")
deb = r.stdout.strip().splitlines()[-1]
sgtest.check(re.fullmatch(r".*/snapgate_0\.1\.0_[a-z0-9]+\.deb", deb), f"package name: {deb}")

info = subprocess.run(["dpkg-deb", "-I", deb], capture_output=True, text=True, check=True).stdout
for field in ("Package: snapgate", "Version: 0.1.0", "Section: admin"):
    sgtest.check(field in info, f"control lacks {field!r}:\n{info}")
depends = re.search(r"Depends: (.*)", info)
sgtest.check(depends, f"no Depends:\n{info}")
for lib in ("libc6", "libjansson4", "libreadline8", "libwebsockets17", "libssl3"):
    sgtest.check(lib in depends.group(1), f"Depends lacks {lib}: {depends.group(1)}")

listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True,
                         check=True).stdout
paths = {ln.split()[-1].lstrip(".") for ln in listing.splitlines() if ln.strip()}
want = [f"/usr/bin/{p}" for p in I.PROGRAMS]
want += [f"/usr/share/man/{m}" for m in I.MAN_PAGES]
want += [f"/usr/share/snapgate/web/{f}" for f in I.PAGE_FILES]
want += ["/usr/share/doc/snapgate/examples/systemd/snapgate.service",
         "/usr/share/doc/snapgate/examples/systemd/snapgate.socket"]
for w in want:
    sgtest.check(w in paths, f"{w} not in the package:\n{listing}")
sgtest.check(not any("/usr/local" in p or "/tests" in p for p in paths),
             f"stray files in the package:\n{listing}")

root = os.path.join(d, "root")
subprocess.run(["dpkg", "-x", deb, root], check=True)
usr = os.path.join(root, "usr")
I.check_tree(usr)
I.check_runs(usr)
body = I.served_page(os.path.join(usr, "bin/snapgate"), d)
with open(os.path.join(usr, "share/snapgate/web/index.html"), "rb") as f:
    sgtest.check_eq(body, f.read(), "page served by the unpacked package")
img = os.path.join(d, "x.qcow2")
r = subprocess.run([os.path.join(usr, "bin/snapgate-img"), "create", "-f", "qcow2", img, "1.5G"],
                   capture_output=True, text=True)
sgtest.check(r.returncode == 0, f"packaged snapgate-img create: {r.stderr}")
qimg = subprocess.run(["qemu-img", "check", img], capture_output=True, text=True) \
    if os.path.exists("/usr/bin/qemu-img") else None
sgtest.check(qimg is None or qimg.returncode == 0, f"qemu-img check: {qimg}")
print(f"deb: {os.path.basename(deb)}, {len(paths)} paths, Depends: {depends.group(1)}")

#!/usr/bin/env python3
"""`cmake --install` like a real tool: into a prefix and into a DESTDIR, the
binaries, man pages, the console page and the example systemd units land
where they belong; the installed programs run; the installed snapgate
serves the installed page (a marker written into the installed copy comes
back over HTTP); a snapgate binary outside the source tree (as a build
folder made with `cmake -B /elsewhere` is) still finds the page; the
example units pass `systemd-analyze verify`."""
import os
import shutil
import subprocess

import sg_install_util as I
import sgtest

sgtest.require_tool("cmake")
for p in I.PROGRAMS:
    sgtest.binary(p)
d = sgtest.tmpdir("sg-install-")


def install(*args, env=None):
    r = subprocess.run(["cmake", "--install", sgtest.BUILD, *args], capture_output=True,
                       text=True, timeout=120, env=env)
    sgtest.check(r.returncode == 0, f"cmake --install {args}: {r.stdout}{r.stderr}")


# 1. a prefix
prefix = os.path.join(d, "prefix")
install("--prefix", prefix)
I.check_tree(prefix)
I.check_runs(prefix)
index = os.path.join(prefix, "share/snapgate/web/index.html")
with open(index, "a") as f:
    f.write("<!-- installed-copy-marker -->\n")
body = I.served_page(os.path.join(prefix, "bin/snapgate"), d)
sgtest.check(b"installed-copy-marker" in body, "the installed snapgate serves the installed page")

# 2. DESTDIR (what packagers do)
dest = os.path.join(d, "destdir")
install("--prefix", "/opt/snapgate", env=dict(os.environ, DESTDIR=dest))
I.check_tree(os.path.join(dest, "opt/snapgate"))
body = I.served_page(os.path.join(dest, "opt/snapgate/bin/snapgate"), d)
sgtest.check(b"<html" in body.lower(), "snapgate under DESTDIR serves the page")

# 3. a binary away from the source tree (an out-of-tree build folder): the
#    page comes from the source tree the build was configured from.
elsewhere = os.path.join(d, "elsewhere")
os.makedirs(elsewhere)
shutil.copy2(os.path.join(sgtest.BUILD, "snapgate"), elsewhere)
body = I.served_page(os.path.join(elsewhere, "snapgate"), d)
with open(os.path.join(sgtest.SRC, "web/index.html"), "rb") as f:
    sgtest.check_eq(body, f.read(), "page served by a snapgate outside the source tree")

# 4. the example units
sa = shutil.which("systemd-analyze")
if sa:
    units = os.path.join(d, "units")
    os.makedirs(units)
    for u in ("snapgate.service", "snapgate.socket"):
        with open(os.path.join(prefix, "share/doc/snapgate/examples/systemd", u)) as f:
            text = f.read().replace("/usr/bin/snapgate", os.path.join(prefix, "bin/snapgate"))
        with open(os.path.join(units, u), "w") as f:
            f.write(text)
    r = subprocess.run([sa, "verify", "--man=no", os.path.join(units, "snapgate.socket"),
                        os.path.join(units, "snapgate.service")],
                       capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines()
                if "snapgate." in ln and "/etc/systemd" not in ln]
    sgtest.check(r.returncode == 0 and not problems,
                 f"systemd-analyze verify: rc {r.returncode}\n{r.stdout}{r.stderr}")
    print("systemd units: systemd-analyze verify clean")
else:
    print("systemd-analyze not installed: units not verified")
print("install: prefix, DESTDIR and an out-of-tree binary all serve the page")

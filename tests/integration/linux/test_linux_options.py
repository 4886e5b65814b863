#!/usr/bin/env python3
"""-kernel/-initrd/-append on any host: errors name their cause, and a
kvm_pvm /dev/kvm refuses a Linux guest at start instead of seeming to hang."""
import os
import subprocess

import sgtest

vmm = sgtest.binary("snapgate-vmm")
d = sgtest.tmpdir()
notk = os.path.join(d, "not-a-kernel")
with open(notk, "wb") as f:
    f.write(b"\0" * 8192)


def run(args, env=None):
    r = subprocess.run([vmm, "-serial", "none"] + args, capture_output=True, text=True,
                       timeout=30, env=dict(os.environ, **(env or {})))
    return r.returncode, r.stderr


rc, err = run(["-initrd", notk])
sgtest.check(rc == 1 and err == "snapgate-vmm: -initrd is only valid with -kernel\n", f"{rc} {err!r}")
rc, err = run(["-kernel"])
sgtest.check(rc == 1 and "requires an argument" in err, f"{rc} {err!r}")

sgtest.require_kvm()
pvm = os.path.exists("/sys/module/kvm_pvm") and not (
    os.path.exists("/sys/module/kvm_intel") or os.path.exists("/sys/module/kvm_amd"))
if pvm:
    rc, err = run(["-kernel", notk])
    sgtest.check(rc == 1 and err.startswith("snapgate-vmm: -kernel: /dev/kvm is kvm_pvm") and
                 err.count("\n") == 1, f"kvm_pvm refusal: {rc} {err!r}")
allow = {"SNAPGATE_VMM_ALLOW_PVM": "1"}
rc, err = run(["-kernel", notk], allow)
sgtest.check(rc == 1 and "not a Linux bzImage" in err, f"bad kernel: {rc} {err!r}")
rc, err = run(["-kernel", os.path.join(d, "missing")], allow)
sgtest.check(rc == 1 and "-kernel " in err and "No such file" in err, f"missing kernel: {rc} {err!r}")
rc, err = run(["-m", "32M", "-kernel", notk], allow)
sgtest.check(rc == 1 and "at least 64 MiB" in err, f"small RAM: {rc} {err!r}")
print("ok")

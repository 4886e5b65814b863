#!/usr/bin/env python3
"""Real back ends behind `snapgate --connect` (issue 10):

- snapgate-vmm killed (SIGKILL) and started again on the same socket path:
  the gateway reconnects, the same --qmp client sees the new back end, the
  HMP engine's snapshot list is fresh (a snapshot taken before the restart
  loads after it) and job ids do not repeat the previous connection's;
- QEMU 7.2 killed and started again on the same path: the same;
- a --qmp client that disconnects while its snapshot-save job runs: the job
  completes and the gateway dismisses it;
- the interactive monitor whose terminal hangs up during savevm: the job
  completes and is dismissed before the gateway leaves (exit 0).
Needs /dev/kvm (snapgate-vmm); the QEMU part is skipped without QEMU."""
import os
import shutil
import signal
import subprocess
import time

import sg_gateway_util as U
import sgtest

sgtest.require_kvm()
gw_bin = sgtest.binary("snapgate")
vmm_bin = sgtest.binary("snapgate-vmm")
img_bin = sgtest.binary("snapgate-img")
d = sgtest.tmpdir()
PROMPT = rb"\(snapgate\) "


def start_vmm(sock, disk, mem="128", extra=()):
    return sgtest.spawn([vmm_bin, "-m", mem, *extra, "-serial", "none", "-drive", f"file={disk},format=qcow2",
                         "-qmp", f"unix:{sock},server=on,wait=off"],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, cwd=d)


def wait_sock(path, proc):
    sgtest.wait_for(lambda: os.path.exists(path) or proc.poll() is not None, 20, f"{path}")
    sgtest.check(proc.poll() is None, f"process exited {proc.returncode}")


def start_gateway(be_sock, name):
    gw_sock = os.path.join(d, f"{name}.sock")
    log_path = os.path.join(d, f"{name}.log")
    logf = open(log_path, "w")
    g = sgtest.spawn([gw_bin, "--connect", "unix:" + be_sock, "--qmp", "unix:" + gw_sock,
                      "--no-monitor", "--reconnect", "60"], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=logf)
    wait_sock(gw_sock, g)
    return g, gw_sock, lambda: open(log_path, errors="replace").read()


def snapshot_tags(q):
    nodes = q.cmd("query-named-block-nodes")["return"]
    return sorted(s["name"] for n in nodes for s in n.get("image", {}).get("snapshots", []))


def restart_case(what, start_backend, kill_backend):
    """savevm before the restart, loadvm/delvm after it, through one client."""
    be_sock = os.path.join(d, f"{what}.qmp")
    be = start_backend(be_sock)
    g, gw_sock, log = start_gateway(be_sock, f"gw-{what}")
    c = sgtest.QMP(gw_sock)
    out = c.hmp("savevm before")
    sgtest.check(out == "", f"{what}: savevm before the restart: {out!r}")
    kill_backend(be)
    sgtest.wait_for(lambda: "reconnecting to" in log(), 10, f"{what}: reconnect message")
    r = c.cmd("query-status")
    sgtest.check(r.get("error", {}).get("desc", "").startswith("back end not connected"),
                 f"{what}: during the outage: {r}")
    be = start_backend(be_sock)
    sgtest.wait_for(lambda: "back end reconnected" in log(), 20, f"{what}: reconnected message")
    sgtest.check(g.poll() is None, f"{what}: the gateway stays: {log()!r}")
    c.events.clear()   # (the first connection's events all came before its end)
    # The HMP engine of the new connection knows the snapshot list.
    sgtest.check("before" in c.hmp("info snapshots"), f"{what}: info snapshots after the restart")
    sgtest.check_eq(c.hmp("savevm after"), "", f"{what}: savevm after the restart")
    sgtest.check_eq(c.hmp("loadvm before"), "", f"{what}: loadvm after the restart")
    sgtest.check_eq(c.hmp("delvm after"), "", f"{what}: delvm after the restart")
    sgtest.check_eq(snapshot_tags(c), ["before"], f"{what}: snapshots at the end")
    # The engine of the second connection names its jobs apart (the events
    # of HMP jobs reach --qmp clients too).
    ids = {e["data"]["id"] for e in c.events if e["event"] == "JOB_STATUS_CHANGE"}
    sgtest.check_eq(ids, {"hmp-c2-savevm-1", "hmp-c2-loadvm-2", "hmp-c2-delvm-3"}, f"{what}: job ids")
    c.close()
    g.send_signal(signal.SIGTERM)
    sgtest.check_eq(g.wait(10), 0, f"{what}: exit code on SIGTERM")
    return be


# ---- snapgate-vmm restarted on the same path ---------------------------------
disk = os.path.join(d, "disk0.qcow2")
sgtest.run([img_bin, "create", disk, "64M"])


def vmm_start(sock):
    p = start_vmm(sock, disk)
    wait_sock(sock, p)
    return p


def vmm_kill(p):
    p.kill()
    p.wait()


be = restart_case("vmm", vmm_start, vmm_kill)
vmm_kill(be)
sgtest.qemu_img_check(disk, allow_leaks=True)

# ---- QEMU restarted on the same path -------------------------------------------
if shutil.which("qemu-system-x86_64") and shutil.which("qemu-img"):
    qdisk = os.path.join(d, "qemu0.qcow2")
    sgtest.run(["qemu-img", "create", "-q", "-f", "qcow2", qdisk, "64M"])

    def qemu_start(sock):
        # The socket file of a killed QEMU stays; a fresh one shows the new
        # QEMU listens.  (No probe connection: QEMU serves one QMP client at a
        # time, and a probe could sit in its backlog behind the gateway.)
        if os.path.exists(sock):
            os.unlink(sock)
        accel = "kvm:tcg" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg"
        p = sgtest.spawn(["qemu-system-x86_64", "-S", "-nodefaults", "-display", "none",
                          "-machine", f"accel={accel}", "-m", "64",
                          "-drive", f"file={qdisk},format=qcow2,if=virtio,node-name=drive0-node",
                          "-qmp", f"unix:{sock},server=on,wait=off"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, cwd=d)
        wait_sock(sock, p)
        return p

    qe = restart_case("qemu", qemu_start, vmm_kill)
    vmm_kill(qe)
    sgtest.qemu_img_check(qdisk, allow_leaks=True)
else:
    print("(QEMU not installed: the QEMU restart case is skipped)")

# ---- clients leaving while their job runs ---------------------------------------
# 256 MiB of guest RAM kept filled (dirty=; zero pages are skipped): the save
# lasts long enough to leave in the middle.
sock = os.path.join(d, "jobs.qmp")
vmm = start_vmm(sock, disk, mem="512", extra=("-append", "dirty=256M"))
wait_sock(sock, vmm)
time.sleep(1.5)   # the guest fills its RAM first (about 0.5 s saves afterwards)
g, gw_sock, log = start_gateway(sock, "gw-jobs")
watcher = sgtest.QMP(gw_sock)
leaver = sgtest.QMP(gw_sock)
leaver.send_raw('{"execute": "snapshot-save", "arguments": {"job-id": "left-behind", "tag": "orphan", '
                '"vmstate": "disk0", "devices": ["disk0"]}, "id": 1}\r\n')
leaver.close()
watcher.wait_event("JOB_STATUS_CHANGE", 60,
                   lambda e: e["data"]["id"] == "left-behind" and e["data"]["status"] == "concluded")
# The gateway dismissed it: the job goes to "null" without anyone here asking.
watcher.wait_event("JOB_STATUS_CHANGE", 10,
                   lambda e: e["data"]["id"] == "left-behind" and e["data"]["status"] == "null")
sgtest.check_eq(watcher.cmd("query-jobs")["return"], [], "no job left behind (--qmp)")
sgtest.check("orphan" in snapshot_tags(watcher), "the departed client's snapshot was taken")
watcher.close()
g.send_signal(signal.SIGTERM)
sgtest.check_eq(g.wait(10), 0, "exit code on SIGTERM")

# The monitor's terminal hangs up during savevm.
t = U.Terminal([gw_bin, "--connect", "unix:" + sock], env=U.gateway_env(d))
t.expect(PROMPT, 20)
spy = sgtest.QMP(sock)                     # straight to the VMM: sees the job start
t.send("savevm hangup\r")
spy.wait_event("JOB_STATUS_CHANGE", 30,
               lambda e: e["data"]["id"] == "hmp-savevm-1" and e["data"]["status"] == "running")
# The terminal goes away (SIGHUP) while the job runs (a save of 256 MiB of
# data lasts long enough here; a faster one still has to end up dismissed).
os.close(t.fd)
end = time.monotonic() + 60
while time.monotonic() < end:
    pid, st = os.waitpid(t.pid, os.WNOHANG)
    if pid:
        t.status = os.waitstatus_to_exitcode(st)
        break
    time.sleep(0.05)
sgtest.check_eq(t.status, 0, "exit code after the terminal hung up")
spy.wait_event("JOB_STATUS_CHANGE", 30,
               lambda e: e["data"]["id"] == "hmp-savevm-1" and e["data"]["status"] == "null")
q = spy
sgtest.check_eq(q.cmd("query-jobs")["return"], [], "no job left behind (monitor)")
sgtest.check("hangup" in snapshot_tags(q), "the monitor's savevm completed")
q.cmd("quit")
vmm.wait(10)
sgtest.qemu_img_check(disk, allow_leaks=True)
print("ok")

#!/usr/bin/env python3
"""Many QMP clients issue snapshot commands at random against one VM for a
bounded time (argument `vmm`: snapgate-vmm's socket, with snapshot-* jobs;
`gateway`: the gateway's --qmp endpoint, with HMP savevm/loadvm/delvm/info
snapshots through human-monitor-command).

Every command must get a reply; a job refused because another one runs must
say so (GenericError naming the running job); at the end the snapshot list
must equal the replay of the successful operations in the order the VMM
concluded them (vmm mode) and the image must check clean.

SG_CLIENTS (default 50) and SG_SECONDS (default 8; SG_LONG=1: 60) tune it.
"""
import os
import random
import re
import subprocess
import sys
import threading
import time

import sgtest

which = sys.argv[1] if len(sys.argv) > 1 else "vmm"
sgtest.require_kvm()
qemu_img = sgtest.require_tool("qemu-img")
clients = int(os.environ.get("SG_CLIENTS") or 50)
seconds = float(os.environ.get("SG_SECONDS") or (60 if os.environ.get("SG_LONG") else 8))
seed = int(os.environ.get("SG_SEED") or random.SystemRandom().randrange(1 << 30))
print(f"{which}: {clients} clients for {seconds} s, seed {seed}", flush=True)
work = sgtest.tmpdir(f"sg-conc-{which}-")
disk = os.path.join(work, "disk.qcow2")
sgtest.run([qemu_img, "create", "-q", "-f", "qcow2", disk, "16M"])
sock = os.path.join(work, "qmp.sock")
vm_args = ["-m", "64M", "-append", "dirty=8M", "-drive", f"file={disk}", "-serial", "none"]
if which == "vmm":
    argv = [sgtest.binary("snapgate-vmm")] + vm_args + ["-qmp", f"unix:{sock},server=on,wait=off"]
else:
    argv = [sgtest.binary("snapgate"), "--no-monitor", "--state-dir", os.path.join(work, "state"),
            "--qmp", f"unix:{sock}", "--vmm"] + vm_args + ["--"]
errlog = open(os.path.join(work, "stderr"), "wb")
proc = sgtest.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errlog,
                    cwd=work)
sgtest.wait_for(lambda: os.path.exists(sock) or proc.poll() is not None, 20, "QMP socket")

lock = threading.Lock()
tags = set()          # tags believed to exist (for choosing targets only)
done = []             # (conclusion timestamp, op, tag) of successful jobs
problems = []
counts = {"commands": 0, "refused_busy": 0, "jobs_ok": 0, "jobs_failed": 0, "max_reply_s": 0.0}
deadline = time.monotonic() + seconds
errors = {}           # gateway mode: normalised HMP error texts -> count


def problem(msg):
    with lock:
        problems.append(msg)


def timed(q, name, args=None):
    t = time.monotonic()
    r = q.cmd(name, args)
    dt = time.monotonic() - t
    with lock:
        counts["commands"] += 1
        counts["max_reply_s"] = max(counts["max_reply_s"], dt)
    return r


def concluded_ts(q, jid):
    """Waits for the job's `concluded` event; returns its timestamp."""
    e = q.wait_event("JOB_STATUS_CHANGE", 120,
                     lambda e: e["data"]["id"] == jid and e["data"]["status"] == "concluded")
    return e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6


def vmm_client(n):
    rng = random.Random(seed * 1000 + n)
    q = sgtest.QMP(sock, timeout=60)
    k = 0
    while time.monotonic() < deadline:
        with lock:
            known = sorted(tags)
        op = rng.choice(["snapshot-save", "snapshot-save", "snapshot-load", "snapshot-delete",
                         "info"])
        if op == "info" or (op != "snapshot-save" and not known):
            r = timed(q, "query-named-block-nodes")
            if "return" not in r:
                problem(f"client {n}: query-named-block-nodes: {r}")
            continue
        k += 1
        jid = f"c{n}-{k}"
        tag = f"c{n}-{k}" if op == "snapshot-save" else rng.choice(known)
        args = {"job-id": jid, "tag": tag, "devices": ["disk0"]}
        if op != "snapshot-delete":
            args["vmstate"] = "disk0"
        r = timed(q, op, args)
        if "error" in r:
            desc = r["error"].get("desc", "")
            if r["error"].get("class") == "GenericError" and re.search(r"job", desc, re.I):
                with lock:
                    counts["refused_busy"] += 1
            else:
                problem(f"client {n}: {op} refused unclearly: {r}")
            time.sleep(rng.uniform(0, 0.05))
            continue
        ts = concluded_ts(q, jid)
        jobs = [j for j in timed(q, "query-jobs")["return"] if j["id"] == jid]
        if not jobs:
            problem(f"client {n}: job {jid} vanished before dismiss")
            continue
        timed(q, "job-dismiss", {"id": jid})
        with lock:
            if "error" in jobs[0]:
                counts["jobs_failed"] += 1
            else:
                counts["jobs_ok"] += 1
                done.append((ts, op, tag))
                if op == "snapshot-save":
                    tags.add(tag)
                elif op == "snapshot-delete":
                    tags.discard(tag)
    q.close()


def gateway_client(n):
    rng = random.Random(seed * 1000 + n)
    q = sgtest.QMP(sock, timeout=120)
    k = 0
    while time.monotonic() < deadline:
        with lock:
            known = sorted(tags)
        op = rng.choice(["savevm", "savevm", "loadvm", "delvm", "info snapshots"])
        if op != "savevm" and op != "info snapshots" and not known:
            op = "info snapshots"
        k += 1
        tag = f"g{n}-{k}" if op == "savevm" else (rng.choice(known) if op != "info snapshots" else "")
        r = timed(q, "human-monitor-command", {"command-line": f"{op} {tag}".strip()})
        if "return" not in r:
            problem(f"client {n}: {op} {tag}: {r}")
            continue
        out = r["return"]
        with lock:
            if "rror" in out:
                counts["jobs_failed"] += 1
                kind = re.sub(r"'[^']*'|\d+", "X", out.strip())[:120]
                errors[kind] = errors.get(kind, 0) + 1
                if "still active" in out:
                    counts["refused_busy"] += 1
                elif "does not exist" not in out:   # a tag another client just deleted
                    problems.append(f"client {n}: {op} {tag}: unclear error {out.strip()[:200]!r}")
            elif op != "info snapshots":
                counts["jobs_ok"] += 1
                if op == "savevm":
                    tags.add(tag)
                elif op == "delvm":
                    tags.discard(tag)
    q.close()


crashed = []


def guarded(fn, n):
    try:
        fn(n)
    except Exception as e:   # a timeout or a closed socket is the failure we look for
        crashed.append(f"client {n}: {e!r}")


t0 = time.monotonic()
threads = [threading.Thread(target=guarded, args=(vmm_client if which == "vmm" else gateway_client, i))
           for i in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join(300)
    sgtest.check(not t.is_alive(), "a client thread is stuck (no reply for minutes)")
took = time.monotonic() - t0
sgtest.check(not crashed, f"{len(crashed)} client(s) failed: {crashed[:3]}")
sgtest.check(not problems, f"{len(problems)} problem(s): {problems[:5]}")
sgtest.check(proc.poll() is None, f"server died (exit {proc.returncode})")

q = sgtest.QMP(sock, timeout=30)
listed = sorted(s["name"] for s in
                q.cmd("query-named-block-nodes")["return"][0]["image"].get("snapshots", []))
if which == "vmm":
    want = set()
    for _, op, tag in sorted(done):
        if op == "snapshot-save":
            want.add(tag)
        elif op == "snapshot-delete":
            want.discard(tag)
    sgtest.check_eq(listed, sorted(want), "snapshot list vs the replay of successful jobs")
else:
    sgtest.check_eq(listed, sorted(tags), "snapshot list vs successful savevm/delvm")
q.cmd("quit")
q.close()
rc = proc.wait(30)
errlog.close()
with open(os.path.join(work, "stderr"), "rb") as f:
    err = f.read().decode(errors="replace")
for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
    sgtest.check(marker not in err, f"sanitizer report:\n{err[-3000:]}")
sgtest.check_eq(rc, 0, "exit code after quit")
r = subprocess.run([qemu_img, "check", disk], capture_output=True, text=True)
sgtest.check(r.returncode == 0, f"qemu-img check: {r.stdout}{r.stderr}")
got = sorted(re.findall(r"^\d+\s+(\S+)", subprocess.run([qemu_img, "snapshot", "-l", disk],
                                                         capture_output=True, text=True).stdout, re.M))
sgtest.check_eq(got, listed, "qemu-img snapshot -l vs query-named-block-nodes")
print(f"{which}: {clients} clients, {took:.1f} s: {counts['commands']} commands answered "
      f"(slowest {counts['max_reply_s']:.2f} s), jobs ok {counts['jobs_ok']}, failed "
      f"{counts['jobs_failed']}, refused while busy {counts['refused_busy']}; "
      f"{len(listed)} snapshots at the end, image clean", flush=True)
if errors:
    print("HMP errors seen: " + "; ".join(f"{n} x {k!r}" for k, n in
                                          sorted(errors.items(), key=lambda x: -x[1])[:6]), flush=True)
print("PASS", flush=True)

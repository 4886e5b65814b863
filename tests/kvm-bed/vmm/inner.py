#!/usr/bin/env python3
"""Runs ctest's tests matching REGEX the way ctest would (command, ENVIRONMENT,
WORKING_DIRECTORY, SKIP_RETURN_CODE, from `ctest --show-only=json-v1`), but with each
TIMEOUT multiplied by SG_BED_TIMEOUT_SCALE (default 5): inside the kvm bed time is
emulated and a loaded host makes it slower still, and ctest has no timeout multiplier.
Prints ctest-like result lines; exits 0 when every test passed (skips count as failures
for the caller to judge: it sees "Skipped")."""
import json
import os
import subprocess
import sys
import time

build, regex = sys.argv[1], sys.argv[2]
scale = float(os.environ.get("SG_BED_TIMEOUT_SCALE", "5"))
info = json.loads(subprocess.run(["ctest", "--test-dir", build, "--show-only=json-v1", "-R", regex],
                                 check=True, stdout=subprocess.PIPE).stdout)
tests = info.get("tests", [])
if not tests:
    print(f"no tests match {regex}")
    sys.exit(1)
failed = 0
for n, t in enumerate(tests, 1):
    props = {p["name"]: p["value"] for p in t.get("properties", [])}
    env = dict(os.environ)
    for kv in props.get("ENVIRONMENT", []):
        k, _, v = kv.partition("=")
        env[k] = v
    limit = float(props.get("TIMEOUT", 1500)) * scale
    print(f"      Start {n}: {t['name']}", flush=True)
    t0 = time.monotonic()
    try:
        p = subprocess.run(t["command"], env=env, cwd=props.get("WORKING_DIRECTORY", build),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=limit)
        out, rc = p.stdout.decode(errors="replace"), p.returncode
        status = ("Passed" if rc == 0 else
                  "***Skipped" if rc == props.get("SKIP_RETURN_CODE") else "***Failed")
    except subprocess.TimeoutExpired as e:
        out, status = (e.stdout or b"").decode(errors="replace"), "***Timeout"
    dots = "." * max(3, 33 - len(t["name"]))
    print(f"{n:2d}/{len(tests)} Test #{n}: {t['name']} {dots} {status} {time.monotonic() - t0:7.2f} sec")
    if status != "Passed":
        failed += 1
        print(out, end="" if out.endswith("\n") else "\n")
    sys.stdout.flush()
print(f"{len(tests) - failed} of {len(tests)} tests passed")
sys.exit(1 if failed else 0)

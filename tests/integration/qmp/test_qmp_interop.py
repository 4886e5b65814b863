#!/usr/bin/env python3
"""The QMP client library against a real QEMU: greeting, negotiation,
query-version, query-status, human-monitor-command "info status", errors,
events.  Skips only when qemu-system-x86_64 is not installed."""
import json
import os
import subprocess

import sgtest

sgtest.require_tool("qemu-system-x86_64")
prog = os.path.join(sgtest.BUILD, "tests", "qmp_interop")
sgtest.check(os.access(prog, os.X_OK), f"{prog} not built")
work = sgtest.tmpdir("sgqmp-interop-")
qemu, sock = sgtest.start_qemu([], work)

# What QEMU says to a plain client, for cross-checking the library's view.
ref = sgtest.QMP(sock)
ref_version = ref.cmd("query-version")["return"]
ref.close()

r = subprocess.run([prog, sock], capture_output=True, text=True, timeout=60)
sgtest.check(r.returncode == 0, f"qmp_interop exited {r.returncode}: {r.stderr}")
lines = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
print("\n".join(json.dumps(l) for l in lines))

greeting = lines[0]["greeting"]["QMP"]
sgtest.check_eq(greeting["version"]["qemu"]["major"], 7, "greeting major version")
replies = [l for l in lines if "cmd" in l]
events = [l["event"] for l in lines if "event" in l]
sgtest.check_eq([x["cmd"] for x in replies],
                ["query-version", "query-status", "human-monitor-command", "no-such-command",
                 "human-monitor-command", "cont", "stop", "query-status"], "command order")
sgtest.check_eq(replies[0]["return"], ref_version, "query-version through the library")
sgtest.check_eq(replies[1]["return"]["status"], "prelaunch", "query-status with -S")
sgtest.check_eq(replies[1]["return"]["running"], False, "query-status running")
sgtest.check_eq(replies[2]["return"], "VM status: paused (prelaunch)\r\n", "info status")
sgtest.check_eq(replies[3]["error"], {"class": "CommandNotFound",
                                      "desc": "The command no-such-command has not been found"},
                "unknown command error")
sgtest.check_eq(replies[4]["error"], {"class": "GenericError",
                                      "desc": "Invalid parameter type for 'command-line', expected: string"},
                "argument type error")
sgtest.check_eq(replies[5]["return"], {}, "cont")
sgtest.check_eq(replies[6]["return"], {}, "stop")
sgtest.check_eq(replies[7]["return"]["status"], "paused", "query-status after stop")
sgtest.check("RESUME" in events and "STOP" in events, f"RESUME and STOP events seen: {events}")
sgtest.check(events.index("RESUME") < events.index("STOP"), "event order")
print("PASS")

#!/usr/bin/env python3
"""Differential compatibility suite (issue 8): every scenario in scenarios/ runs
  A  QEMU 7.2 directly                       (reference; checked against compat/golden/)
  B  snapgate --connect in front of QEMU     (must equal A after normalization)
  C  snapgate in front of snapgate-vmm       (must equal A, except intended-differences.txt)
and the last output line is `N passed, N failed` over scenarios.  A path whose binary is not
built, or that cannot run here, is reported as skipped with the reason and never counted as
passed.  Without QEMU the golden files are the reference.

  compat_runner.py [--record] [--paths A,B,C] [--build DIR] [-k GLOB] [--keep] [-v]
"""
import argparse
import fnmatch
import json
import os
import re
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "lib"))
sys.path.insert(0, HERE)

import sgtest  # noqa: E402
import compat_compare  # noqa: E402
import compat_normalize  # noqa: E402
import compat_paths  # noqa: E402
import compat_scenario  # noqa: E402

PATH_NAMES = {"A": "QEMU 7.2", "B": "snapgate + QEMU", "C": "snapgate + snapgate-vmm"}


def _kvm_usable():
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        return True
    except OSError:
        return False


def _qemu_version_ok(version):
    q = (version or {}).get("qemu", {})
    return q.get("major") == 7 and q.get("minor") == 2


def path_availability(paths, build):
    """{path: None if it can run, else the reason it is skipped}."""
    have_qemu = shutil.which("qemu-system-x86_64") and shutil.which("qemu-img")
    have_img = shutil.which("qemu-img")
    gw = os.path.join(build, "snapgate")
    vmm = os.path.join(build, "snapgate-vmm")
    why = {}
    for p in "ABC":
        if p not in paths:
            why[p] = "not selected (--paths)"
        elif p in "AB" and not have_qemu:
            why[p] = "qemu-system-x86_64/qemu-img not installed (scripts/install-deps.sh)"
        elif p in "BC" and not os.access(gw, os.X_OK):
            why[p] = f"{gw} not built yet"
        elif p == "C" and not os.access(vmm, os.X_OK):
            why[p] = f"{vmm} not built yet"
        elif p == "C" and not _kvm_usable():
            why[p] = "/dev/kvm not usable (snapgate-vmm needs KVM)"
        elif p == "C" and not have_img:
            why[p] = "qemu-img not installed"
        else:
            why[p] = None
    return why


_NOT_FOUND = re.compile(r"The command (\S+) has not been found")


def missing_commands(t):
    """Commands a path answered with CommandNotFound: features not there yet."""
    out = set()
    for s in t["steps"]:
        m = _NOT_FOUND.search(json.dumps(s["reply"]))
        if m:
            out.add(m.group(1))
    return out


def load_golden(golden_dir, name):
    p = os.path.join(golden_dir, name + ".json")
    if not os.path.exists(p):
        return None
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def write_golden(golden_dir, t):
    p = os.path.join(golden_dir, t["scenario"] + ".json")
    with open(p + ".tmp", "w", encoding="utf-8") as f:
        json.dump(t, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    os.replace(p + ".tmp", p)


def golden_matches_scenario(g, sc):
    want = [("hmp " + s.text) if s.kind == "hmp" else ("qmp " + s.command) for s in sc.steps]
    have = [("hmp " + s["hmp"]) if "hmp" in s else ("qmp " + s["qmp"]) for s in g["steps"]]
    return want == have


class PathState:
    """Stops feeding scenarios to a path that keeps timing out: each attempt would only burn
    the timeout again.  Quick failures cost nothing and may be scenario-specific, so they
    never stop the path."""
    BREAK_AFTER = 3

    def __init__(self):
        self.start_failures = 0
        self.broken = None


def run_one(path, sc, workdir, build, state):
    if state.broken:
        return None, f"not run: path gave up after {PathState.BREAK_AFTER} timeouts in a row ({state.broken})"
    try:
        if path == "A":
            t = compat_paths.run_qemu(sc, workdir)
        elif path == "B":
            t = compat_paths.run_gateway_qemu(sc, workdir, build)
        else:
            t = compat_paths.run_gateway_vmm(sc, workdir, build)
    except compat_paths.PathError as e:
        if not e.slow:
            state.start_failures = 0
            return None, str(e)
        state.start_failures += 1
        if state.start_failures >= PathState.BREAK_AFTER:
            state.broken = str(e)
        return None, str(e)
    state.start_failures = 0
    return t, None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--record", action="store_true", help="re-record compat/golden/ from live QEMU 7.2")
    ap.add_argument("--paths", default=os.environ.get("SNAPGATE_COMPAT_PATHS", "A,B,C"))
    ap.add_argument("--build", default=sgtest.BUILD)
    ap.add_argument("--scenarios", default=os.path.join(HERE, "scenarios"))
    ap.add_argument("--golden", default=os.path.join(HERE, "..", "..", "..", "compat", "golden"))
    ap.add_argument("--differences", default=os.path.join(HERE, "intended-differences.txt"))
    ap.add_argument("-k", dest="pattern", default="*", help="only scenarios whose name matches GLOB")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("SNAPGATE_COMPAT_BUDGET", 540)),
                    help="seconds; scenarios left when it runs out are reported as failed")
    ap.add_argument("--keep", action="store_true", help="keep work directories")
    ap.add_argument("-v", action="store_true", help="print every scenario, not only failures")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    golden_dir = os.path.abspath(args.golden)

    scenarios = [s for s in compat_scenario.load_dir(args.scenarios)
                 if fnmatch.fnmatchcase(s.name, args.pattern)]
    diffs = compat_normalize.load_differences(args.differences)
    paths = {p.strip().upper() for p in args.paths.split(",") if p.strip()}
    avail = path_availability(paths | ({"A"} if args.record else set()), build)
    root = tempfile_root(args.keep)

    if args.record:
        return record(scenarios, golden_dir, root, avail)

    live_a = avail["A"] is None
    for p in "ABC":
        state = "runs" if avail[p] is None else f"SKIPPED: {avail[p]}"
        print(f"path {p} ({PATH_NAMES[p]}): {state}")
    if live_a:
        print(f"reference: live QEMU, itself compared with the golden files in {golden_dir}")
    else:
        print(f"reference: the golden files in {golden_dir} (no live QEMU)")
    running = [p for p in "ABC" if avail[p] is None]
    if not running:
        bad = [s.name for s in scenarios if not _golden_ok(golden_dir, s)]
        print(f"no path can run here; golden files checked for {len(scenarios)} scenarios, "
              f"{len(bad)} missing or stale{': ' + ', '.join(bad) if bad else ''}")
        print(f"0 passed, {len(bad)} failed")
        return 1 if bad else sgtest.SKIP

    start = time.monotonic()
    states = {p: PathState() for p in "ABC"}
    per_path = {p: [0, 0] for p in "ABC"}          # passed, failed
    failed_names = {p: [] for p in "ABC"}
    missing = {p: set() for p in "ABC"}
    libvirt = {p: [0, 0] for p in "BC"}            # agreeing, total HMP replies
    passed = failed = 0
    for sc in scenarios:
        problems = {}
        golden = load_golden(golden_dir, sc.name)
        ref = None
        over_budget = time.monotonic() - start > args.budget
        if golden is None:
            problems["golden"] = ["no golden file (record it: compat_runner.py --record)"]
        elif not golden_matches_scenario(golden, sc):
            problems["golden"] = ["golden file does not match the scenario's steps (re-record)"]
            golden = None
        for p in running:
            if over_budget:
                problems[p] = [f"not run: time budget of {args.budget:.0f}s used up"]
                continue
            work = os.path.join(root, f"{sc.name}-{p}")
            os.makedirs(work)
            t, err = run_one(p, sc, work, build, states[p])
            if not args.keep:
                shutil.rmtree(work, True)
            if err:
                problems[p] = [err]
                continue
            missing[p] |= missing_commands(t)
            if p == "A":
                ref = t
                if golden is not None:
                    pr, _ = compat_compare.compare(golden, t, sc.name)
                    if pr:
                        problems["A"] = ["differs from golden: " + x for x in pr]
                continue
            base = ref if ref is not None else (golden if not live_a else None)
            if base is None:
                problems[p] = ["no reference (path A failed and no usable golden file)"]
                continue
            pr, (agree, total) = compat_compare.compare(base, t, sc.name,
                                                   [d for d in diffs if p in d.paths])
            libvirt[p][0] += agree
            libvirt[p][1] += total
            if pr:
                problems[p] = pr
        if live_a and ref is not None and "A" not in problems:
            # the live reference's own images must be clean too
            pr = compat_compare.image_problems(ref, ref, set(), True)
            if pr:
                problems["A"] = pr
        for p in running:
            per_path[p][1 if p in problems else 0] += 1
            if p in problems:
                failed_names[p].append(sc.name)
        status = []
        for p in "ABC":
            status.append(f"{p}={'skip' if avail[p] else ('FAIL' if p in problems else 'ok')}")
        if problems:
            failed += 1
            print(f"FAIL {sc.name} [{' '.join(status)}] -- {sc.description}")
            for k, lst in problems.items():
                for x in lst:
                    print(f"    {k}: {x}")
        else:
            passed += 1
            if args.v:
                print(f"ok   {sc.name} [{' '.join(status)}]")

    print(f"-- {len(scenarios)} scenarios in {time.monotonic() - start:.1f}s")
    for p in "ABC":
        if avail[p]:
            print(f"path {p} ({PATH_NAMES[p]}): skipped, not counted as passed: {avail[p]}")
        else:
            print(f"path {p} ({PATH_NAMES[p]}): {per_path[p][0]} passed, {per_path[p][1]} failed"
                  + (f" ({', '.join(failed_names[p])})" if failed_names[p] else ""))
        if missing[p]:
            print(f"path {p}: commands answered with CommandNotFound (features missing): "
                  f"{', '.join(sorted(missing[p]))}")
    for p in "BC":
        if avail[p] is None:
            a, t = libvirt[p]
            print(f"libvirt view, {p} vs reference: {a} of {t} HMP replies conclude the same")
    if avail["C"] is None and args.pattern == "*":
        for d in diffs:
            if not d.used:
                print(f"intended difference never applied (stale?): {d.origin}: {d.scenario} | {d.step}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def _golden_ok(golden_dir, sc):
    g = load_golden(golden_dir, sc.name)
    return g is not None and golden_matches_scenario(g, sc)


def record(scenarios, golden_dir, root, avail):
    if avail["A"]:
        print(f"cannot record: {avail['A']}")
        return 1
    os.makedirs(golden_dir, exist_ok=True)
    state = PathState()
    ok = bad = 0
    for sc in scenarios:
        work = os.path.join(root, f"{sc.name}-rec")
        os.makedirs(work)
        t, err = run_one("A", sc, work, "", state)
        shutil.rmtree(work, True)
        if err:
            print(f"FAIL {sc.name}: {err}")
            bad += 1
            continue
        if not _qemu_version_ok(t.get("qemu")):
            print(f"refusing to record: QEMU is {t.get('qemu')}, the golden files are QEMU 7.2's")
            return 1
        dirty = compat_compare.image_problems(t, t, set(), True)
        if dirty:
            print(f"FAIL {sc.name}: {dirty}")
            bad += 1
            continue
        write_golden(golden_dir, t)
        ok += 1
    print(f"recorded {ok} golden files in {golden_dir}")
    print(f"{ok} passed, {bad} failed")
    return 1 if bad else 0


def tempfile_root(keep):
    d = tempfile.mkdtemp(prefix="sgcompat-") if keep else sgtest.tmpdir("sgcompat-")
    if keep:
        print(f"work directories kept in {d}")
    return d


if __name__ == "__main__":
    sys.exit(main())

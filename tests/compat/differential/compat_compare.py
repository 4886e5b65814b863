"""Comparison of two transcripts (reference vs candidate), after normalization."""
import compat_normalize as N


def _step_label(rec):
    if "hmp" in rec:
        return "hmp " + rec["hmp"]
    args = rec.get("arguments")
    return "qmp " + rec["qmp"] + ("" if args is None else " " + N.show(args))


def compare(ref, got, scenario_name, diffs=(), check_images=True):
    """Returns (problems, libvirt) where problems is a list of strings (empty: equal) and
    libvirt is (agreeing, total) over HMP replies.  diffs: intended-difference rules that
    apply to this candidate (path C only)."""
    problems = []
    agree = total = 0
    if len(ref["steps"]) != len(got["steps"]):
        return [f"{len(got['steps'])} steps, reference has {len(ref['steps'])}"], (0, 0)
    for i, (r, g) in enumerate(zip(ref["steps"], got["steps"]), 1):
        label = _step_label(r)
        if label != _step_label(g):
            problems.append(f"step {i}: is {_step_label(g)!r}, reference has {label!r} "
                            "(golden file out of date? re-record with --record)")
            continue
        rules = N.rules_for(diffs, scenario_name, label)
        if "ignore" in rules:
            continue
        if "hmp" in r:
            total += 1
            lv_r, lv_g = N.libvirt_view(r["reply"]), N.libvirt_view(g["reply"])
            if lv_r == lv_g:
                agree += 1
            else:
                problems.append(f"step {i} {label!r}: libvirt view {lv_g}, reference {lv_r}")
            if "libvirt-only" in rules:
                continue
            a, b = N.value(r["reply"]), N.value(g["reply"])
            if a != b:
                problems.append(f"step {i} {label!r}:\n        {N.describe(b, a)}")
            continue
        a, b = r["reply"], g["reply"]
        if "snapshots-only" in rules:
            a, b = N.snapshots_only(a), N.snapshots_only(b)
        a, b = N.value(a), N.value(b)
        if a != b:
            problems.append(f"step {i} {label!r}:\n        {N.describe(b, a)}")
        if "job" in r or "job" in g:
            ja, jb = r.get("job"), g.get("job")
            if "progress" in rules:
                ja, jb = N.without_progress(ja), N.without_progress(jb)
            ja, jb = N.value(ja), N.value(jb)
            if ja != jb:
                problems.append(f"step {i} {label!r} job:\n        {N.describe(jb, ja)}")
    if "ignore" not in N.rules_for(diffs, scenario_name, "events") \
            and N.value(ref["events"]) != N.value(got["events"]):
        problems.append(f"events:\n        {N.describe(N.value(got['events']), N.value(ref['events']), 2000)}")
    problems += image_problems(ref, got, N.rules_for(diffs, scenario_name, "images"), check_images)
    problems += [f"sanitizer: {x}" for x in got.get("process-errors", [])]
    return problems, (agree, total)


def image_problems(ref, got, rules, check_images):
    out = []
    ri, gi = ref.get("images", {}), got.get("images", {})
    for f in sorted(set(ri) | set(gi)):
        g = gi.get(f)
        if g is None:
            out.append(f"image {f}: not inspected")
            continue
        if check_images and g.get("check") != 0:
            out.append(f"image {f}: qemu-img check exited {g.get('check')}: {g.get('check-output', '')}")
        if check_images and g.get("list-rc") != 0:
            out.append(f"image {f}: qemu-img snapshot -l exited {g.get('list-rc')}")
        r = ri.get(f)
        if r is None:
            continue
        rs, gs = r.get("snapshots"), g.get("snapshots")
        if "ignore" in rules:
            continue  # the lists are not compared (qemu-img check above still is)
        if "images-ids" in rules:
            rs = None if rs is None else [t for _, t in rs]
            gs = None if gs is None else [t for _, t in gs]
        rs, gs = N.value(rs), N.value(gs)
        if rs != gs:
            out.append(f"image {f}: qemu-img snapshot list (ID, TAG) {gs}, reference {rs}")
    return out

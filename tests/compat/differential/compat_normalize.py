"""What the suite normalizes before comparing replies, and nothing more: dates, sizes and
clock values (issue 8).  Everything else must be equal byte for byte.
"""
import fnmatch
import json
import re

# Right-aligned table cells: the padding in front of a size or a clock depends only on the
# value's width, so the padding goes with the value.
_CLOCK = re.compile(r" *\b\d+:\d{2}:\d{2}\.\d{3}\b")
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\b")
_SIZE = re.compile(r" *\b\d+(?:\.\d+)? (?:B|KiB|MiB|GiB|TiB|PiB|EiB)(?= |$)", re.M)
# savevm without a tag names the snapshot after the local time (vm-%Y%m%d%H%M%S).
_AUTO_TAG = re.compile(r"\bvm-\d{14}\b")
# Not a date, size or clock, but QEMU itself draws these at random (id_generate() appends a
# random number to a counter), so two runs of the same QEMU differ; nothing else is touched.
_AUTO_NODE = re.compile(r"^#block\d+$")

# JSON members that carry a date, a size or a clock value.
_VOLATILE_KEYS = {"date-sec", "date-nsec", "vm-clock-sec", "vm-clock-nsec", "vm-state-size",
                  "actual-size", "timestamp"}


def text(s):
    s = _CLOCK.sub(" <clock>", s)
    s = _DATE.sub("<date>", s)
    s = _SIZE.sub(" <size>", s)
    return _AUTO_TAG.sub("vm-<date>", s)


def value(v):
    """Normalizes a JSON value (a QMP reply, a job entry) recursively."""
    if isinstance(v, dict):
        return {k: ("<n>" if k in _VOLATILE_KEYS else value(x)) for k, x in v.items()}
    if isinstance(v, list):
        return [value(x) for x in v]
    if isinstance(v, str):
        return "#block<n>" if _AUTO_NODE.match(v) else text(v)
    return v


def first_difference(a, b, where="$"):
    """Where two normalized values first differ, as (json-path, a-part, b-part), or None."""
    if type(a) is not type(b):
        return where, a, b
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{where}.{k}", a.get(k, "<absent>"), b.get(k, "<absent>")
            d = first_difference(a[k], b[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{where}[{i}]")
            if d:
                return d
        if len(a) != len(b):
            return f"{where}.length", len(a), len(b)
        return None
    return None if a == b else (where, a, b)


def describe(got, want, limit=400):
    """A short report of a mismatch between two normalized values."""
    lines = []
    if not isinstance(got, str) or not isinstance(want, str):
        d = first_difference(want, got)
        if d:
            lines.append(f"first difference at {d[0]}: got {show(d[2])[:limit]}, want {show(d[1])[:limit]}")
    lines.append(f"got  {show(got)[:limit]}")
    lines.append(f"want {show(want)[:limit]}")
    return "\n        ".join(lines)


def libvirt_view(reply):
    """What libvirt's text-monitor checks conclude from an HMP reply."""
    if not isinstance(reply, str):
        return "qmp-error"
    if reply == "":
        return "success"
    if "Error: " in reply:
        return "failure"
    return "output"


def show(v):
    return json.dumps(v, sort_keys=True) if not isinstance(v, str) else repr(v)


# ---- intended differences (path C unless a rule names B) ------------------------------------------------

RULES = ("ignore", "libvirt-only", "snapshots-only", "progress", "events", "images-ids")


class Difference:
    def __init__(self, scenario, step, rule, reason, origin):
        # An optional "B:" / "BC:" prefix on the scenario glob names the paths the rule
        # covers; without one it covers path C (the VMM) only.
        self.paths = "C"
        m = re.match(r"^([BC]+):(.*)$", scenario)
        if m:
            self.paths, scenario = m.group(1), m.group(2).strip()
        self.scenario, self.step, self.rule, self.reason, self.origin = (
            scenario, step, rule, reason, origin)
        self.used = False

    def matches(self, scenario, step_label):
        return (fnmatch.fnmatchcase(scenario, self.scenario)
                and fnmatch.fnmatchcase(step_label, self.step))


def load_differences(path):
    """Lines `SCENARIO-GLOB | STEP-GLOB | RULE | REASON`; a rule without a reason is refused."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [p.strip() for p in line.split("|", 3)]
            if len(parts) != 4 or not parts[3]:
                raise ValueError(f"{path}:{n}: want 'SCENARIO | STEP | RULE | REASON'")
            if parts[2] not in RULES:
                raise ValueError(f"{path}:{n}: unknown rule {parts[2]!r} (one of {', '.join(RULES)})")
            out.append(Difference(*parts, origin=f"{path}:{n}"))
    return out


def rules_for(diffs, scenario, step_label):
    out = set()
    for d in diffs:
        if d.matches(scenario, step_label):
            d.used = True  # lets the runner name rules that no longer match anything
            out.add(d.rule)
    return out


def snapshots_only(reply):
    """query-named-block-nodes / query-block reduced to what the VMM must report alike."""
    ret = reply.get("return") if isinstance(reply, dict) else None
    if not isinstance(ret, list):
        return reply
    nodes = []
    for n in ret:
        if not isinstance(n, dict) or str(n.get("node-name", "")).startswith("#"):
            continue  # QEMU's auto-named protocol nodes have no counterpart in the VMM
        img = n.get("image") or {}
        snaps = [{k: s.get(k) for k in ("id", "name")} for s in img.get("snapshots") or []]
        nodes.append({"node-name": n.get("node-name"), "ro": n.get("ro"), "drv": n.get("drv"),
                      "snapshots": snaps})
    # QEMU lists named nodes newest first, an artifact of its node list; scripts find nodes
    # by name, so the projection does not hold the VMM to that order.
    return {"return": sorted(nodes, key=lambda x: str(x["node-name"]))}


def without_progress(job):
    if isinstance(job, dict):
        return {k: v for k, v in job.items() if k not in ("current-progress", "total-progress")}
    return job

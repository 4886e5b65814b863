"""Scenario files of the differential compatibility suite (see README.md for the format).

A scenario is plain text, one directive per line:

    # first comment line: what the scenario checks
    disk qcow2|raw [size=16M] [readonly]   -> drive<N> / node disk<N>, file d<N>.qcow2|.raw
    snap N TAG                             -> `qemu-img snapshot -c TAG` on disk N before start
    hmp LINE                               -> human-monitor-command, LINE verbatim
    qmp COMMAND [JSON-OBJECT]              -> a QMP command with those arguments

TAG and LINE run to the end of the line, so spaces and quotes are kept as written.
`@{TEXT*N}` anywhere in a snap/hmp/qmp line expands to TEXT repeated N times (long tags).
"""
import json
import os
import re

_EXPAND = re.compile(r"@\{([^*}]+)\*(\d+)\}")


class ScenarioError(Exception):
    pass


def expand(text):
    return _EXPAND.sub(lambda m: m.group(1) * int(m.group(2)), text)


class Disk:
    def __init__(self, index, fmt, size="16M", readonly=False):
        self.index = index
        self.fmt = fmt
        self.size = size
        self.readonly = readonly
        self.snaps = []  # tags created with qemu-img before the VM starts

    @property
    def file(self):
        return f"d{self.index}.{'qcow2' if self.fmt == 'qcow2' else 'raw'}"

    @property
    def drive(self):
        return f"drive{self.index}"

    @property
    def node(self):
        return f"disk{self.index}"

    def qemu_drive(self):
        """-drive value for QEMU: a device-less drive named like the VMM names its drives."""
        s = f"file={self.file},format={self.fmt},if=none,id={self.drive},node-name={self.node}"
        return s + (",readonly=on" if self.readonly else "")

    def vmm_drive(self):
        """-drive value for snapgate-vmm (INTERFACES.md 1.2)."""
        s = f"file={self.file},format={self.fmt},node-name={self.node}"
        return s + (",readonly=on" if self.readonly else "")


class Step:
    def __init__(self, kind, text, command=None, arguments=None):
        self.kind = kind            # "hmp" or "qmp"
        self.text = text            # HMP line, or QMP command name
        self.command = command
        self.arguments = arguments  # dict or None

    def label(self):
        """The string intended-difference rules match against."""
        if self.kind == "hmp":
            return "hmp " + self.text
        args = "" if self.arguments is None else " " + json.dumps(self.arguments, sort_keys=True)
        return "qmp " + self.command + args

    def job_id(self):
        if self.kind == "qmp" and self.command in JOB_COMMANDS and isinstance(self.arguments, dict):
            return self.arguments.get("job-id")
        return None


JOB_COMMANDS = ("snapshot-save", "snapshot-load", "snapshot-delete")


class Scenario:
    def __init__(self, name, description, disks, steps):
        self.name = name
        self.description = description
        self.disks = disks
        self.steps = steps


def parse(text, name="scenario"):
    disks, steps, description = [], [], ""
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        if line.lstrip().startswith("#"):
            if not description:
                description = line.lstrip()[1:].strip()
            continue
        word, _, rest = line.partition(" ")
        where = f"{name}:{lineno}"
        if word == "disk":
            opts = rest.split()
            if not opts or opts[0] not in ("qcow2", "raw"):
                raise ScenarioError(f"{where}: disk needs a format, qcow2 or raw")
            d = Disk(len(disks), opts[0])
            for o in opts[1:]:
                if o == "readonly":
                    d.readonly = True
                elif o.startswith("size="):
                    d.size = o[5:]
                else:
                    raise ScenarioError(f"{where}: unknown disk option {o!r}")
            disks.append(d)
        elif word == "snap":
            idx, _, tag = rest.partition(" ")
            if not idx.isdigit() or int(idx) >= len(disks) or not tag:
                raise ScenarioError(f"{where}: snap needs a declared disk index and a tag")
            if disks[int(idx)].fmt != "qcow2":
                raise ScenarioError(f"{where}: snap on a raw disk")
            if steps:
                raise ScenarioError(f"{where}: snap must come before the first step")
            disks[int(idx)].snaps.append(expand(tag))
        elif word == "hmp":
            steps.append(Step("hmp", expand(rest)))
        elif word == "qmp":
            cmd, _, args = rest.strip().partition(" ")
            if not cmd:
                raise ScenarioError(f"{where}: qmp needs a command")
            arguments = None
            if args.strip():
                try:
                    arguments = json.loads(expand(args))
                except ValueError as e:
                    raise ScenarioError(f"{where}: arguments are not JSON: {e}") from None
                if not isinstance(arguments, dict):
                    raise ScenarioError(f"{where}: arguments must be a JSON object")
            steps.append(Step("qmp", cmd, cmd, arguments))
        else:
            raise ScenarioError(f"{where}: unknown directive {word!r}")
    if not steps:
        raise ScenarioError(f"{name}: no steps")
    return Scenario(name, description, disks, steps)


def load_dir(directory):
    out = []
    for fn in sorted(os.listdir(directory)):
        if fn.endswith(".scn"):
            with open(os.path.join(directory, fn), encoding="utf-8") as f:
                out.append(parse(f.read(), fn[:-4]))
    return out

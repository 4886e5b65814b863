"""sg_qcow2_util: helpers for the qcow2 engine's integration tests."""
import os
import shutil
import struct
import subprocess

import sgtest

ENV = dict(os.environ, TZ="UTC")


def tools():
    """(snapgate-img, sg_qcow2_io, qemu-img, qemu-io); skips when QEMU's tools are absent."""
    img = sgtest.binary("snapgate-img")
    io = os.path.join(sgtest.BUILD, "tests", "sg_qcow2_io")
    sgtest.check(os.access(io, os.X_OK), f"{io} not built")
    return img, io, sgtest.require_tool("qemu-img"), sgtest.require_tool("qemu-io")


def run(argv, rc=0):
    r = subprocess.run(argv, capture_output=True, text=True, env=ENV)
    if rc is not None and r.returncode != rc:
        sgtest.fail(f"{' '.join(argv)} exited {r.returncode} (want {rc}):\n{r.stdout}{r.stderr}")
    return r


def qemu_check_clean(path):
    """qemu-img check: exit 0 and no leaks."""
    r = run(["qemu-img", "check", path], rc=None)
    sgtest.check(r.returncode == 0 and "No errors were found" in r.stdout,
                 f"qemu-img check {path} exited {r.returncode}:\n{r.stdout}{r.stderr}")


def qemu_read(path, pattern, off, length, snapshot=None):
    """qemu-io read -P on the active image (or on a copy reverted to a snapshot)."""
    target = path
    if snapshot is not None:
        target = path + ".revert"
        shutil.copyfile(path, target)
        run(["qemu-img", "snapshot", "-a", snapshot, target])
    r = run(["qemu-io", "-f", "qcow2", "-c", f"read -P {pattern} {off} {length}", target], rc=None)
    sgtest.check(r.returncode == 0 and "Pattern verification failed" not in r.stdout,
                 f"qemu-io read -P {pattern} {off} {length} on {target}:\n{r.stdout}{r.stderr}")


def header(path):
    with open(path, "rb") as f:
        h = f.read(104)
    return {
        "version": struct.unpack(">I", h[4:8])[0],
        "l1_size": struct.unpack(">I", h[36:40])[0],
        "l1_offset": struct.unpack(">Q", h[40:48])[0],
        "rt_offset": struct.unpack(">Q", h[48:56])[0],
        "nb_snapshots": struct.unpack(">I", h[60:64])[0],
        "snapshots_offset": struct.unpack(">Q", h[64:72])[0],
    }


def file_sha(path):
    """sha256 of a whole file (to show a command wrote nothing)."""
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def refcount16(path, cluster, value=None):
    """Reads (or, with value, writes on disk) a cluster's entry in refcount
    block 0 of a 16-bit-refcount image."""
    with open(path, "rb" if value is None else "r+b") as f:
        f.seek(header(path)["rt_offset"])
        rb = struct.unpack(">Q", f.read(8))[0]
        f.seek(rb + 2 * cluster)
        if value is None:
            return struct.unpack(">H", f.read(2))[0]
        f.write(struct.pack(">H", value))
        return value

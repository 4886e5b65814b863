"""sg_libvirt: a private libvirt 9.0 for tests (virtlogd + libvirtd of our own).

The privileged daemons have fixed paths (/etc/libvirt, /run/libvirt, /var/lib/libvirt, ...),
so the test runs in its own mount namespace (`unshare -m`) with a temp dir bound over each
of them: its own qemu.conf (user/group root, no namespaces, no security driver), sockets,
domain state and logs, invisible to any libvirt on the host and gone when the test ends.
Both daemons run in the background and are stopped by pid (no systemd)."""
import os
import shutil
import signal
import subprocess
import sys
import time

import sgtest
from sgtest import check, fail, skip

PRIVATE_DIRS = ["/etc/libvirt", "/run/libvirt", "/var/lib/libvirt", "/var/log/libvirt",
                "/var/cache/libvirt"]

QEMU_CONF = """user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
"""


def enter_namespace():
    """Re-executes the calling script in a private mount namespace (once)."""
    if os.environ.get("SG_LIBVIRT_NS") == "1":
        return
    for tool in ("libvirtd", "virtlogd", "virsh"):
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
            skip(f"{tool} not installed (scripts/install-deps.sh installs libvirt)")
    if os.geteuid() != 0:
        skip("a private privileged libvirtd needs root")
    unshare = shutil.which("unshare")
    if not unshare:
        skip("unshare (util-linux) not installed")
    env = dict(os.environ, SG_LIBVIRT_NS="1")
    probe = subprocess.run([unshare, "-m", "--propagation", "private", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        skip(f"cannot make a private mount namespace: {probe.stderr.strip()}")
    os.execve(unshare, [unshare, "-m", "--propagation", "private", sys.executable] + sys.argv,
              env)


def _tool(name):
    return shutil.which(name) or "/usr/sbin/" + name


class Libvirt:
    """The private daemons; call start(), then virsh(...); stop() at the end."""

    def __init__(self, root):
        self.root = root
        self.libvirtd = None
        self.virtlogd = None
        for d in PRIVATE_DIRS:
            src = os.path.join(root, d.strip("/").replace("/", "_"))
            os.makedirs(src, exist_ok=True)
            os.makedirs(d, exist_ok=True)   # a mount point (the packages may not ship it)
            subprocess.run(["mount", "--bind", src, d], check=True)
        os.makedirs("/etc/libvirt/qemu", exist_ok=True)
        with open("/etc/libvirt/qemu.conf", "w") as f:
            f.write(QEMU_CONF)
        with open("/etc/libvirt/libvirtd.conf", "w") as f:
            f.write('unix_sock_group = "root"\nunix_sock_rw_perms = "0700"\n'
                    'auth_unix_rw = "none"\nauth_unix_ro = "none"\n'
                    'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n')
        with open("/etc/libvirt/virtlogd.conf", "w") as f:
            f.write('log_outputs = "3:file:/var/log/libvirt/virtlogd.log"\n')
        os.environ["LIBVIRT_DEFAULT_URI"] = "qemu:///system"

    def _daemon(self, name, conf, sock):
        p = sgtest.spawn([_tool(name), "-f", conf], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(self.root, name + ".stderr"), "ab"))
        end = time.monotonic() + 60
        while not os.path.exists(sock):
            if p.poll() is not None:
                fail(f"{name} exited {p.returncode}: {self.log(name)}")
            if time.monotonic() > end:
                fail(f"{name} did not create {sock} in 60 s")
            time.sleep(0.05)
        return p

    def log(self, name):
        out = ""
        for p in (os.path.join(self.root, name + ".stderr"), f"/var/log/libvirt/{name}.log"):
            try:
                with open(p, errors="replace") as f:
                    out += f.read()[-4000:]
            except OSError:
                pass
        return out

    def start_virtlogd(self):
        self.virtlogd = self._daemon("virtlogd", "/etc/libvirt/virtlogd.conf",
                                     "/run/libvirt/virtlogd-sock")

    def start_libvirtd(self):
        self.libvirtd = self._daemon("libvirtd", "/etc/libvirt/libvirtd.conf",
                                     "/run/libvirt/libvirt-sock")
        end = time.monotonic() + 60
        while self.virsh("version", check_rc=False).returncode != 0:
            if time.monotonic() > end:
                fail("libvirtd does not answer virsh version")
            time.sleep(0.1)

    def start(self):
        self.start_virtlogd()
        self.start_libvirtd()

    def stop_libvirtd(self):
        if self.libvirtd and self.libvirtd.poll() is None:
            self.libvirtd.send_signal(signal.SIGTERM)
            try:
                self.libvirtd.wait(30)
            except subprocess.TimeoutExpired:
                self.libvirtd.kill()
                self.libvirtd.wait()
        try:
            os.unlink("/run/libvirt/libvirt-sock")
        except OSError:
            pass

    def stop(self):
        self.stop_libvirtd()
        if self.virtlogd and self.virtlogd.poll() is None:
            self.virtlogd.send_signal(signal.SIGTERM)
            self.virtlogd.wait(30)

    def virsh(self, *args, check_rc=True, timeout=180):
        r = subprocess.run(["virsh", "-q"] + list(args), capture_output=True, text=True,
                           timeout=timeout)
        if check_rc and r.returncode != 0:
            fail(f"virsh {' '.join(args)} exited {r.returncode}: {r.stderr.strip()}\n"
                 f"--- libvirtd log ---\n{self.log('libvirtd')[-2000:]}")
        return r

    def domain_log(self, name):
        try:
            with open(f"/var/log/libvirt/qemu/{name}.log", errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def domain_xml(name, emulator, kernel, initrd, disk, serial_log, mem_mib=128):
    """A TCG domain: direct kernel boot of the test guest, one qcow2 virtio disk, the serial
    console appended to serial_log (appended, so a revert or restore keeps the history)."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{mem_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{emulator}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'>
      <source path='{serial_log}' append='on'/>
      <target port='0'/>
    </serial>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def build_guest(guest_dir):
    """The test guest: scripts/make-linux-guest.sh with counter.sh as its workload (cached)."""
    script = os.path.join(sgtest.SRC, "scripts", "make-linux-guest.sh")
    check(os.path.exists(script), f"{script} missing")
    run_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "counter.sh")
    r = subprocess.run([script, guest_dir, "--flavour", "cloud-amd64", "--modules",
                        "virtio_pci,virtio_blk", "--run", run_file, "-q"],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        skip(f"cannot build the test guest (make-linux-guest.sh: {r.stderr.strip()[-300:]})")
    return os.path.join(guest_dir, "vmlinuz"), os.path.join(guest_dir, "initrd.img")


def ticks(path):
    """Counter values the guest printed, in order."""
    try:
        with open(path, errors="replace") as f:
            return [int(l.split()[1]) for l in f.read().splitlines()
                    if l.startswith("tick ") and l.split()[1:2] and l.split()[1].isdigit()]
    except OSError:
        return []


def disk_counter(image):
    """The counter in the image's first sector (read shared: the domain may hold it)."""
    r = subprocess.run(["qemu-io", "-U", "-r", "-f", "qcow2", "-c", "read -v 0 16", image],
                       capture_output=True, text=True)
    text = "".join(l[-16:] for l in r.stdout.splitlines() if l[:8].isalnum() and ":" in l[:10])
    text = text.replace("count.", "count ")   # qemu-io shows the space as '.'
    if "count " not in text:
        print(f"disk_counter {image}: {r.returncode} {r.stdout[-300:]!r} {r.stderr[-300:]!r}")
        return None
    return int(text.split("count ")[1][:8])


def img_check(image):
    r = subprocess.run(["qemu-img", "check", "-U", image], capture_output=True, text=True)
    check(r.returncode == 0, f"qemu-img check {image}: {r.returncode}\n{r.stdout}{r.stderr}")

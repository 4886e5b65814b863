#!/usr/bin/env python3
"""Holds one idle KVM VM open for the whole bed run, inside the level-1 guest, so that the
level-1 kernel never patches its own text while VMMs come and go.

Why: the level-1 kernel runs under multi-threaded TCG, and live kernel text patching
across its two vCPUs (text_poke_bp: int3, IPI, rewrite) hangs it now and then (one vCPU
spins at the patched instruction with interrupts off, the other sits in the int3 handler).
The instruction in every such hang seen was the 5-byte NOP of `preempt_notifier_key` in
`__schedule` (prepare_task_switch -> fire_sched_out_preempt_notifiers): KVM increments that
static key when the first VM is created and decrements it when the last one goes, so every
VMM start and exit on an otherwise idle /dev/kvm rewrote `__schedule` on both vCPUs.
While this VM exists, the key's count never drops to 0 and nothing is patched.

The same holds for KVM's deferred keys `apic_sw_disabled` (one vCPU with an in-kernel
local APIC that is never software-enabled) and `apic_hw_disabled` (its APIC base MSR has
the enable bit clear): a level-2 guest enabling its APIC otherwise flips them, patching
kvm.ko's interrupt paths while another vCPU runs them.

Usage: kvm_hold.py READY_FILE   (writes READY_FILE once the VM exists, then sleeps until
killed; exits 1 with a reason on stderr when /dev/kvm does not cooperate)."""
import fcntl
import os
import signal
import struct
import sys

KVM_CREATE_VM = 0xAE01
KVM_CREATE_IRQCHIP = 0xAE60
KVM_CREATE_VCPU = 0xAE41
KVM_SET_MSRS = 0x4008AE89          # _IOW(KVMIO, 0x89, struct kvm_msrs)
MSR_IA32_APICBASE = 0x1B
APIC_BASE_BSP_DISABLED = 0xFEE00100  # default base, BSP, enable bit (11) clear


def hold():
    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
    fcntl.ioctl(vm, KVM_CREATE_IRQCHIP, 0)
    vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
    msrs = struct.pack("<II", 1, 0) + struct.pack("<IIQ", MSR_IA32_APICBASE, 0,
                                                  APIC_BASE_BSP_DISABLED)
    fcntl.ioctl(vcpu, KVM_SET_MSRS, msrs)   # returns the count set; 0 is harmless
    return kvm, vm, vcpu


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: kvm_hold.py READY_FILE\n")
        return 2
    try:
        fds = hold()
    except OSError as e:
        sys.stderr.write(f"kvm_hold: cannot hold a KVM VM open: {e}\n")
        return 1
    with open(argv[1], "w") as f:
        f.write(f"{os.getpid()}\n")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while fds:          # the descriptors stay open as long as this process lives
        signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

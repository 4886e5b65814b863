/* vcpu.c: vCPU set-up and the vCPU thread's run loop.
 *
 * Kicking a vCPU out of KVM_RUN: SIG_KICK stays blocked in the vCPU thread
 * except inside KVM_RUN (KVM_SET_SIGNAL_MASK), so a kick sent at any moment
 * either interrupts KVM_RUN or stays pending and makes the next KVM_RUN
 * return -EINTR at once; the thread then eats it with sigtimedwait.  No
 * window where a pause request is lost. */
#include <errno.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "devices/acpi_pm.h"
#include "guest/boot_info.h"
#include "linux_boot.h"
#include "trace.h"
#include "vm.h"
#include "vm_io.h"

#define SIG_KICK SIGUSR1

bool sg_vcpu_init(struct sg_vm *vm, struct sg_vcpu *vcpu, int index, struct sg_error *err)
{
    vcpu->vm = vm;
    vcpu->index = index;
    vcpu->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, index);
    if (vcpu->fd < 0) {
        sg_error_set_errno(err, errno, "KVM_CREATE_VCPU");
        return false;
    }
    int sz = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (sz <= 0) {
        sg_error_set_errno(err, errno, "KVM_GET_VCPU_MMAP_SIZE");
        return false;
    }
    vcpu->run_size = (size_t)sz;
    vcpu->run = mmap(NULL, vcpu->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
    if (vcpu->run == MAP_FAILED) {
        vcpu->run = NULL;
        sg_error_set_errno(err, errno, "mmap kvm_run");
        return false;
    }
    /* KVM says E2BIG until the buffer holds every leaf it supports. */
    struct kvm_cpuid2 *cpuid = NULL;
    for (int n = 128;; n *= 2) {
        free(cpuid);
        cpuid = calloc(1, sizeof(*cpuid) + (size_t)n * sizeof(struct kvm_cpuid_entry2));
        if (!cpuid) {
            sg_error_set(err, "out of memory");
            return false;
        }
        cpuid->nent = (uint32_t)n;
        if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid) == 0)
            break;
        if (errno != E2BIG || n >= 4096) {
            sg_error_set_errno(err, errno, "KVM_GET_SUPPORTED_CPUID");
            free(cpuid);
            return false;
        }
    }
    bool tsc_deadline = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0;
    /* The supported set already carries KVM's paravirt leaves
     * (0x40000000 signature, 0x40000001 features: kvmclock, async PF...). */
    for (uint32_t i = 0; i < cpuid->nent; i++) {
        struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
        if (e->function == 1) {
            /* APIC ID = vCPU index; no hypervisor-hidden surprises. */
            e->ebx = (e->ebx & 0x00ffffffu) | (uint32_t)index << 24;
            e->ecx |= 1u << 31;   /* hypervisor present */
            /* The TSC-deadline timer is KVM's (emulated in the in-kernel
             * LAPIC), not in the supported set: QEMU adds it too. */
            if (tsc_deadline)
                e->ecx |= 1u << 24;
        } else if (e->function == 0xb || e->function == 0x1f) {
            e->edx = (uint32_t)index;   /* x2APIC ID */
        } else if (e->function == 0x80000007) {
            /* No invariant TSC, as QEMU's -cpu host (invtsc blocks
             * migration there): with it Linux lowers kvmclock below the TSC
             * and its clocksource watchdog then marks the TSC unstable
             * wherever the TSC and the host clock drift apart (the nested
             * bed: "skew is too large" at boot). */
            e->edx &= ~(1u << 8);
        }
    }
    if (ioctl(vcpu->fd, KVM_SET_CPUID2, cpuid) < 0) {
        sg_error_set_errno(err, errno, "KVM_SET_CPUID2");
        free(cpuid);
        return false;
    }
    free(cpuid);
    return sg_vcpu_set_boot_state(vm, vcpu, err);
}

void sg_vcpu_flat_segment(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code)
{
    memset(s, 0, sizeof(*s));
    s->selector = sel;
    s->limit = 0xffffffff;
    s->type = type;
    s->present = 1;
    s->s = 1;
    s->g = 1;
    s->l = code;
    s->db = !code;
}

/* 64-bit mode, paging on with the VMM's identity tables, CPL 0 at the
 * guest's load address. */
bool sg_vcpu_set_boot_state(struct sg_vm *vm, struct sg_vcpu *vcpu, struct sg_error *err)
{
    if (vm->kernel[0])
        return sg_linux_set_boot_state(vm, vcpu, err);
    struct kvm_sregs sr;
    if (ioctl(vcpu->fd, KVM_GET_SREGS, &sr) < 0) {
        sg_error_set_errno(err, errno, "KVM_GET_SREGS");
        return false;
    }
    sg_vcpu_flat_segment(&sr.cs, SG_SEL_KCODE, 11, true);
    sg_vcpu_flat_segment(&sr.ds, SG_SEL_KDATA, 3, false);
    sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
    memset(&sr.tr, 0, sizeof(sr.tr));
    sr.tr.selector = SG_SEL_TSS;
    sr.tr.base = SG_TSS_ADDR;
    sr.tr.limit = 0x67;
    sr.tr.type = 11;   /* busy 64-bit TSS */
    sr.tr.present = 1;
    memset(&sr.ldt, 0, sizeof(sr.ldt));
    sr.ldt.type = 2;
    sr.ldt.unusable = 1;
    sr.gdt.base = SG_GDT_ADDR;
    sr.gdt.limit = SG_SEL_TSS + 16 - 1;
    sr.idt.base = SG_IDT_ADDR;
    sr.idt.limit = 0;
    sr.cr0 = 0x80050033;   /* PG | AM | WP | NE | ET | MP | PE */
    sr.cr3 = SG_PML4_ADDR;
    sr.cr4 = 0x20;         /* PAE */
    sr.efer = 0x501;       /* LME | LMA | SCE (the guest's I/O syscall) */
    memset(sr.interrupt_bitmap, 0, sizeof(sr.interrupt_bitmap));
    if (ioctl(vcpu->fd, KVM_SET_SREGS, &sr) < 0) {
        sg_error_set_errno(err, errno, "KVM_SET_SREGS");
        return false;
    }
    struct kvm_regs r;
    memset(&r, 0, sizeof(r));
    r.rip = SG_GUEST_LOAD_ADDR;
    r.rflags = 2;
    if (ioctl(vcpu->fd, KVM_SET_REGS, &r) < 0) {
        sg_error_set_errno(err, errno, "KVM_SET_REGS");
        return false;
    }
    (void)vm;
    return true;
}

static void kick_handler(int sig)
{
    (void)sig;
}

/* A guest fault is reported with its exception frame: the stub's RSP
 * points at [error code,] RIP, CS, RFLAGS, RSP, SS. */
static void report_fault(struct sg_vm *vm, struct sg_vcpu *vcpu, uint32_t code)
{
    struct kvm_regs r;
    if (ioctl(vcpu->fd, KVM_GET_REGS, &r) < 0)
        return;
    uint64_t f[6] = { 0 };
    void *p = sg_vm_gpa(vm, r.rsp, sizeof(f));
    if (p)
        memcpy(f, p, sizeof(f));
    fprintf(stderr, "snapgate-vmm: guest exception %u: frame %#llx %#llx %#llx %#llx %#llx %#llx\n",
            code & 0xff, (unsigned long long)f[0], (unsigned long long)f[1],
            (unsigned long long)f[2], (unsigned long long)f[3], (unsigned long long)f[4],
            (unsigned long long)f[5]);
}

static void report_triple_fault(struct sg_vcpu *vcpu)
{
    struct kvm_regs r;
    struct kvm_sregs sr;
    if (ioctl(vcpu->fd, KVM_GET_REGS, &r) < 0 || ioctl(vcpu->fd, KVM_GET_SREGS, &sr) < 0) {
        fprintf(stderr, "snapgate-vmm: guest triple fault; resetting\n");
        return;
    }
    fprintf(stderr, "snapgate-vmm: guest triple fault (rip %#llx rsp %#llx cr0 %#llx cr2 %#llx "
            "cr3 %#llx cr4 %#llx); resetting\n", (unsigned long long)r.rip,
            (unsigned long long)r.rsp, (unsigned long long)sr.cr0, (unsigned long long)sr.cr2,
            (unsigned long long)sr.cr3, (unsigned long long)sr.cr4);
}

static void notify_main(struct sg_vm *vm, int kind, uint32_t code)
{
    vm->guest_exit_code = code;
    atomic_store(&vm->guest_exit, kind);
    char c = 1;
    ssize_t w = write(vm->notify_wr, &c, 1);
    (void)w;
}

void sg_vm_guest_exit(struct sg_vm *vm, int kind, uint32_t code)
{
    notify_main(vm, kind, code);
    pthread_mutex_lock(&vm->run_lock);
    vm->pause_req = true;
    pthread_mutex_unlock(&vm->run_lock);
}

/* The guest's idle port: sleep, but wake at once for a pause request. */
static void idle_wait(struct sg_vm *vm, uint32_t us)
{
    if (us > SG_IDLE_MAX_US)
        us = SG_IDLE_MAX_US;
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_nsec += (long)us * 1000;
    dl.tv_sec += dl.tv_nsec / 1000000000;
    dl.tv_nsec %= 1000000000;
    pthread_mutex_lock(&vm->run_lock);
    while (!vm->pause_req && !atomic_load(&vm->quit_req))
        if (pthread_cond_timedwait(&vm->run_cond, &vm->run_lock, &dl) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&vm->run_lock);
}

/* KVM finishes an IN/OUT/MMIO exit (RAX, RIP past the instruction) only
 * on the next KVM_RUN; registers read before that show the instruction not
 * yet executed while the device already saw it, so a snapshot replays it
 * (a second IIR read loses the UART's THRE interrupt, a second RBR read a
 * byte).  immediate_exit completes it without running another guest
 * instruction. */
static void complete_io(struct sg_vcpu *vcpu, const sigset_t *kick)
{
    struct timespec zero = { 0, 0 };
    vcpu->run->immediate_exit = 1;
    if (ioctl(vcpu->fd, KVM_RUN, 0) < 0 && errno == EINTR)
        while (sigtimedwait(kick, NULL, &zero) == SIG_KICK)
            ;
    vcpu->run->immediate_exit = 0;
}

/* Parks here while the main loop holds the VM paused.  The pause request
 * is read under run_lock, and an exit still to complete is completed
 * before the vCPU counts as paused: a request arriving between the exit
 * and the park can no longer leave it half done. */
static void park_if_requested(struct sg_vcpu *vcpu, bool *io_pending, const sigset_t *kick)
{
    struct sg_vm *vm = vcpu->vm;
    pthread_mutex_lock(&vm->run_lock);
    while (vm->pause_req && !atomic_load(&vm->quit_req)) {
        if (*io_pending) {
            pthread_mutex_unlock(&vm->run_lock);
            complete_io(vcpu, kick);
            *io_pending = false;
            pthread_mutex_lock(&vm->run_lock);
            continue;
        }
        vm->vcpu_paused = true;
        pthread_cond_broadcast(&vm->run_cond);
        pthread_cond_wait(&vm->run_cond, &vm->run_lock);
    }
    vm->vcpu_paused = false;
    pthread_mutex_unlock(&vm->run_lock);
}

static void *vcpu_thread(void *arg)
{
    struct sg_vcpu *vcpu = arg;
    struct sg_vm *vm = vcpu->vm;
    sigset_t kick;
    sigemptyset(&kick);
    sigaddset(&kick, SIG_KICK);
    struct timespec zero = { 0, 0 };

    bool io_pending = false;
    while (!atomic_load(&vm->quit_req)) {
        park_if_requested(vcpu, &io_pending, &kick);
        if (atomic_load(&vm->quit_req))
            break;
        int r = ioctl(vcpu->fd, KVM_RUN, 0);
        io_pending = false;   /* KVM_RUN completes the last exit first */
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                while (sigtimedwait(&kick, NULL, &zero) == SIG_KICK)
                    ;
                continue;
            }
            notify_main(vm, SG_GUEST_EXIT_FAULT, 0xdead0000u | (uint32_t)errno);
            break;
        }
        struct kvm_run *run = vcpu->run;
        io_pending = run->exit_reason == KVM_EXIT_IO || run->exit_reason == KVM_EXIT_MMIO;
        switch (run->exit_reason) {
        case KVM_EXIT_IO: {
            uint8_t *data = (uint8_t *)run + run->io.data_offset;
            for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
                if (vm->kernel[0] && run->io.direction == KVM_EXIT_IO_OUT &&
                    sg_reset_port_write(run->io.port, data, run->io.size)) {
                    /* The FADT's reset register (Linux's first way to
                     * reboot) or the keyboard controller (its second). */
                    sg_vm_guest_exit(vm, SG_GUEST_EXIT_RESET, 0);
                    break;
                }
                if (vm->kernel[0]) {
                    sg_vm_pio(vm, run->io.port, run->io.direction == KVM_EXIT_IO_OUT,
                              data, run->io.size);
                    continue;
                }
                if (run->io.direction == KVM_EXIT_IO_OUT &&
                    run->io.port == SG_POWEROFF_PORT && run->io.size == 4) {
                    uint32_t code;
                    memcpy(&code, data, 4);
                    if (code & 0x100)
                        report_fault(vm, vcpu, code);
                    sg_vm_guest_exit(vm, code ? SG_GUEST_EXIT_FAULT : SG_GUEST_EXIT_POWEROFF, code);
                    break;
                }
                if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == SG_IDLE_PORT &&
                    run->io.size == 4) {
                    uint32_t us;
                    memcpy(&us, data, 4);
                    idle_wait(vm, us);
                    continue;
                }
                sg_vm_pio(vm, run->io.port, run->io.direction == KVM_EXIT_IO_OUT,
                          data, run->io.size);
            }
            break;
        }
        case KVM_EXIT_MMIO:
            if (!run->mmio.is_write)
                memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
            break;
        case KVM_EXIT_HLT:
            /* The demo guest only halts after a fatal fault (reported first). */
            pthread_mutex_lock(&vm->run_lock);
            vm->pause_req = true;
            pthread_mutex_unlock(&vm->run_lock);
            break;
        case KVM_EXIT_SHUTDOWN:
            /* Triple fault: a PC resets (QEMU too: RESET, guest-reset).
             * One line says so: a guest that reboots by itself is
             * otherwise indistinguishable from one that asked to. */
            report_triple_fault(vcpu);
            sg_vm_guest_exit(vm, SG_GUEST_EXIT_RESET, 0);
            break;
        case KVM_EXIT_INTR:
            break;
        default:
            sg_vm_guest_exit(vm, SG_GUEST_EXIT_FAULT, 0xee000000u | run->exit_reason);
            break;
        }
    }
    pthread_mutex_lock(&vm->run_lock);
    vm->vcpu_paused = true;
    pthread_cond_broadcast(&vm->run_cond);
    pthread_mutex_unlock(&vm->run_lock);
    return NULL;
}

bool sg_vm_start_vcpus(struct sg_vm *vm, struct sg_error *err)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kick_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIG_KICK, &sa, NULL);

    /* The vCPU thread inherits a mask with SIG_KICK blocked; KVM unblocks
     * it only while the guest runs. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIG_KICK);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    for (int i = 0; i < vm->nr_vcpus; i++) {
        struct sg_vcpu *vcpu = &vm->vcpus[i];
        sigset_t runmask;
        pthread_sigmask(SIG_BLOCK, NULL, &runmask);
        sigdelset(&runmask, SIG_KICK);
        struct { struct kvm_signal_mask m; uint8_t set[8]; } km;
        km.m.len = 8;
        memcpy(km.set, &runmask, 8);
        if (ioctl(vcpu->fd, KVM_SET_SIGNAL_MASK, &km) < 0) {
            sg_error_set_errno(err, errno, "KVM_SET_SIGNAL_MASK");
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            return false;
        }
        int e = pthread_create(&vcpu->thread, NULL, vcpu_thread, vcpu);
        if (e) {
            sg_error_set_errno(err, e, "vCPU thread");
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            return false;
        }
        vcpu->thread_started = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return true;
}

void sg_vm_pause(struct sg_vm *vm)
{
    pthread_mutex_lock(&vm->run_lock);
    vm->pause_req = true;
    pthread_cond_broadcast(&vm->run_cond);   /* wakes an idle sleep */
    for (int i = 0; i < vm->nr_vcpus; i++)
        if (vm->vcpus[i].thread_started)
            pthread_kill(vm->vcpus[i].thread, SIG_KICK);
    sg_trace_mark("kick");
    while (!vm->vcpu_paused)
        pthread_cond_wait(&vm->run_cond, &vm->run_lock);
    pthread_mutex_unlock(&vm->run_lock);
    sg_trace_mark("parked");
}

void sg_vm_resume(struct sg_vm *vm)
{
    pthread_mutex_lock(&vm->run_lock);
    vm->pause_req = false;
    pthread_cond_broadcast(&vm->run_cond);
    pthread_mutex_unlock(&vm->run_lock);
    sg_trace_mark("unpark");
}

void sg_vm_stop_vcpus(struct sg_vm *vm)
{
    atomic_store(&vm->quit_req, true);
    pthread_mutex_lock(&vm->run_lock);
    pthread_cond_broadcast(&vm->run_cond);
    for (int i = 0; i < vm->nr_vcpus; i++)
        if (vm->vcpus[i].thread_started)
            pthread_kill(vm->vcpus[i].thread, SIG_KICK);
    pthread_mutex_unlock(&vm->run_lock);
    for (int i = 0; i < vm->nr_vcpus; i++) {
        if (vm->vcpus[i].thread_started) {
            pthread_join(vm->vcpus[i].thread, NULL);
            vm->vcpus[i].thread_started = false;
        }
    }
}

/* vmstate.c: capture and restore of the machine state (everything but
 * RAM, which the snapshot jobs stream themselves) and the vmstate header.
 *
 * The blob is a list of records {u32 tag, u32 index, u32 len, payload}.
 * Restore order follows Firecracker's (VM chips first; per vCPU: MP state,
 * REGS, SREGS, XSAVE/FPU, XCRS, debug regs, LAPIC, MSRs, then vCPU events
 * last, because setting MSRs and the LAPIC can change pending events). */
#include <errno.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include "trace.h"
#include "vm.h"
#include "vmstate.h"

_Static_assert(sizeof(struct sg_vmstate_header) <= SG_VMSTATE_HEADER_SIZE, "header fits 4 KiB");

enum rec_tag {
    REC_VM_CLOCK = 1,
    REC_VM_PIT2,
    REC_VM_IRQCHIP,
    REC_CPU_MP_STATE = 16,
    REC_CPU_REGS,
    REC_CPU_SREGS,
    REC_CPU_FPU,
    REC_CPU_XSAVE,
    REC_CPU_XCRS,
    REC_CPU_DEBUGREGS,
    REC_CPU_LAPIC,
    REC_CPU_MSRS,
    REC_CPU_EVENTS,
    REC_DEVICE = 64,
};

#define MAX_MSRS 256

/* CRC-32 (IEEE 802.3, reflected), eight bytes a step ("slicing by 8"):
 * bit by bit it took 0.1-0.2 ms of every load's validation and every
 * save's capture here, 1 ms and more in the kvm bed.  x86 only, as the
 * VMM: the 8-byte step reads little-endian words. */
static uint32_t crc_tab[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
        crc_tab[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
}

uint32_t sg_crc32(const void *data, size_t len)
{
    _Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "little-endian words");
    pthread_once(&crc_once, crc_init);
    const uint8_t *p = data;
    uint32_t c = 0xffffffffu;
    for (; len >= 8; p += 8, len -= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= c;
        c = crc_tab[7][lo & 0xff] ^ crc_tab[6][(lo >> 8) & 0xff] ^ crc_tab[5][(lo >> 16) & 0xff] ^
            crc_tab[4][lo >> 24] ^ crc_tab[3][hi & 0xff] ^ crc_tab[2][(hi >> 8) & 0xff] ^
            crc_tab[1][(hi >> 16) & 0xff] ^ crc_tab[0][hi >> 24];
    }
    for (; len; p++, len--)
        c = crc_tab[0][(c ^ *p) & 0xff] ^ (c >> 8);
    return ~c;
}

/* ---- header ------------------------------------------------------------ */

void sg_vmstate_header_init(struct sg_vmstate_header *h, struct sg_vm *vm)
{
    memset(h, 0, sizeof(*h));
    memcpy(h->magic, SG_VMSTATE_MAGIC, 8);
    h->version = SG_VMSTATE_VERSION;
    h->header_size = SG_VMSTATE_HEADER_SIZE;
    h->ram_size = vm->ram_size;
    h->ram_low = vm->ram_low;
    h->ram_offset = SG_VMSTATE_RAM_OFFSET;
    h->state_offset = SG_VMSTATE_STATE_OFFSET;
    h->nr_vcpus = (uint32_t)vm->nr_vcpus;
    snprintf(h->guest_kind, sizeof(h->guest_kind), "%s", vm->guest_kind);
    h->nr_devices = (uint32_t)vm->nr_devices;
    for (int i = 0; i < vm->nr_devices && i < SG_VMSTATE_MAX_DEVICES; i++) {
        snprintf(h->devices[i].type, sizeof(h->devices[i].type), "%s", vm->devices[i]->ops->type);
        snprintf(h->devices[i].name, sizeof(h->devices[i].name), "%s", vm->devices[i]->name);
    }
}

void sg_vmstate_header_encode(struct sg_vmstate_header *h, uint8_t page[SG_VMSTATE_HEADER_SIZE])
{
    h->header_crc = 0;
    memset(page, 0, SG_VMSTATE_HEADER_SIZE);
    memcpy(page, h, sizeof(*h));
    h->header_crc = sg_crc32(page, SG_VMSTATE_HEADER_SIZE);
    memcpy(page, h, sizeof(*h));
}

bool sg_vmstate_header_decode(const uint8_t *page, struct sg_vmstate_header *h, const char *tag,
                              struct sg_error *err)
{
    memcpy(h, page, sizeof(*h));
    if (memcmp(h->magic, SG_VMSTATE_MAGIC, 8) != 0) {
        sg_error_set(err, "Snapshot '%s' has no snapgate VM state (not saved by snapgate-vmm?)", tag);
        return false;
    }
    if (h->version != SG_VMSTATE_VERSION || h->header_size != SG_VMSTATE_HEADER_SIZE) {
        sg_error_set(err, "Snapshot '%s' has VM state version %u, this snapgate-vmm reads version %u",
                     tag, h->version, SG_VMSTATE_VERSION);
        return false;
    }
    uint8_t copy[SG_VMSTATE_HEADER_SIZE];
    memcpy(copy, page, sizeof(copy));
    memset(copy + offsetof(struct sg_vmstate_header, header_crc), 0, 4);
    if (sg_crc32(copy, sizeof(copy)) != h->header_crc) {
        sg_error_set(err, "Snapshot '%s': VM state header is corrupt (checksum mismatch)", tag);
        return false;
    }
    if (h->state_offset != SG_VMSTATE_STATE_OFFSET || h->ram_offset != SG_VMSTATE_RAM_OFFSET ||
        h->state_len > h->ram_offset - h->state_offset || h->nr_devices > SG_VMSTATE_MAX_DEVICES ||
        h->nr_disks > SG_VMSTATE_MAX_DISKS || h->nr_disks == 0) {
        sg_error_set(err, "Snapshot '%s': VM state header is invalid", tag);
        return false;
    }
    h->guest_kind[sizeof(h->guest_kind) - 1] = 0;
    for (unsigned i = 0; i < h->nr_devices; i++) {
        h->devices[i].type[sizeof(h->devices[i].type) - 1] = 0;
        h->devices[i].name[sizeof(h->devices[i].name) - 1] = 0;
    }
    for (unsigned i = 0; i < h->nr_disks; i++) {
        h->disks[i].node[sizeof(h->disks[i].node) - 1] = 0;
        h->disks[i].snap_id[sizeof(h->disks[i].snap_id) - 1] = 0;
    }
    return true;
}

bool sg_vmstate_config_matches(const struct sg_vmstate_header *h, struct sg_vm *vm,
                               const char *tag, struct sg_error *err)
{
    if (h->ram_size != vm->ram_size) {
        sg_error_set(err, "Snapshot '%s' needs %llu MiB of RAM, this VM has %llu MiB", tag,
                     (unsigned long long)(h->ram_size >> 20), (unsigned long long)(vm->ram_size >> 20));
        return false;
    }
    uint64_t low = h->ram_low ? h->ram_low : h->ram_size;
    if (low != vm->ram_low) {
        sg_error_set(err, "Snapshot '%s' has %llu MiB of RAM below 4 GiB, this VM has %llu MiB",
                     tag, (unsigned long long)(low >> 20), (unsigned long long)(vm->ram_low >> 20));
        return false;
    }
    if (h->nr_vcpus != (uint32_t)vm->nr_vcpus) {
        sg_error_set(err, "Snapshot '%s' needs %u vCPUs, this VM has %d", tag, h->nr_vcpus, vm->nr_vcpus);
        return false;
    }
    if (strcmp(h->guest_kind, vm->guest_kind) != 0) {
        sg_error_set(err, "Snapshot '%s' holds a '%s' guest, this VM runs '%s'", tag, h->guest_kind,
                     vm->guest_kind);
        return false;
    }
    for (unsigned i = 0; i < h->nr_devices || i < (unsigned)vm->nr_devices; i++) {
        if (i >= h->nr_devices) {
            sg_error_set(err, "Snapshot '%s' has no device %s (%s), this VM has it", tag,
                         vm->devices[i]->name, vm->devices[i]->ops->type);
            return false;
        }
        if (i >= (unsigned)vm->nr_devices) {
            sg_error_set(err, "Snapshot '%s' needs device %s (%s), this VM lacks it", tag,
                         h->devices[i].name, h->devices[i].type);
            return false;
        }
        if (strcmp(h->devices[i].type, vm->devices[i]->ops->type) ||
            strcmp(h->devices[i].name, vm->devices[i]->name)) {
            sg_error_set(err, "Snapshot '%s' has device %u = %s (%s), this VM has %s (%s)", tag, i,
                         h->devices[i].name, h->devices[i].type, vm->devices[i]->name,
                         vm->devices[i]->ops->type);
            return false;
        }
    }
    return true;
}

/* ---- blob building ------------------------------------------------------ */

struct blob {
    uint8_t *p;
    size_t len, cap;
    bool oom;
};

static void put_rec(struct blob *b, uint32_t tag, uint32_t index, const void *data, uint32_t len)
{
    size_t need = b->len + 12 + len;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 65536;
        while (cap < need)
            cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    uint32_t h[3] = { tag, index, len };
    memcpy(b->p + b->len, h, 12);
    memcpy(b->p + b->len + 12, data, len);
    b->len = need;
}

/* MSRs KVM lists and can read back on this host (probed one by one:
 * KVM_GET_MSRS stops at the first it cannot read).  Probed at the first
 * capture of a vCPU and kept: the set is the KVM's and the CPUID's, fixed
 * once the vCPU exists, and the probe is ~100 ioctls inside a save's
 * pause (1-2 ms of it in the nested bed). */
static int msr_probe(struct sg_vm *vm, int vcpu_fd, uint32_t *out, int max);

static int msr_list(struct sg_vm *vm, int vcpu_fd, uint32_t *out, int max)
{
    static struct { int vcpu_fd, vm_fd, n; uint32_t idx[MAX_MSRS]; } cache[SG_VM_MAX_VCPUS];
    static int cached;
    for (int i = 0; i < cached; i++)
        if (cache[i].vcpu_fd == vcpu_fd && cache[i].vm_fd == vm->vm_fd && cache[i].n <= max) {
            memcpy(out, cache[i].idx, (size_t)cache[i].n * sizeof(*out));
            return cache[i].n;
        }
    int n = msr_probe(vm, vcpu_fd, out, max);
    if (n >= 0 && n <= MAX_MSRS && cached < SG_VM_MAX_VCPUS) {
        cache[cached].vcpu_fd = vcpu_fd;
        cache[cached].vm_fd = vm->vm_fd;
        cache[cached].n = n;
        memcpy(cache[cached].idx, out, (size_t)n * sizeof(*out));
        cached++;
    }
    return n;
}

static int msr_probe(struct sg_vm *vm, int vcpu_fd, uint32_t *out, int max)
{
    struct { struct kvm_msr_list l; uint32_t idx[1024]; } ml;
    ml.l.nmsrs = 1024;
    if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &ml) < 0)
        return -1;
    int n = 0;
    for (uint32_t i = 0; i < ml.l.nmsrs && n < max; i++) {
        struct { struct kvm_msrs m; struct kvm_msr_entry e; } one;
        memset(&one, 0, sizeof(one));
        one.m.nmsrs = 1;
        one.e.index = ml.idx[i];
        if (ioctl(vcpu_fd, KVM_GET_MSRS, &one) == 1)
            out[n++] = ml.idx[i];
    }
    return n;
}

/* Optional vCPU state, probed as QEMU does: without XSAVE in the host CPU (a guest
 * CPU model without it, in a nested setup) KVM refuses KVM_SET_XCRS with EINVAL
 * and reports KVM_CAP_XCRS = 0; the XCRS record is then saved with nr_xcrs = 0
 * (no XCR0) and not applied, and the FP state goes through KVM_SET_FPU. */
static bool kvm_has(struct sg_vm *vm, int cap)
{
    return ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, cap) > 0;
}

static bool cpu_get(int fd, unsigned long req, void *buf, const char *what, struct sg_error *err)
{
    if (ioctl(fd, req, buf) < 0) {
        sg_error_set_errno(err, errno, "%s", what);
        return false;
    }
    return true;
}

/* ---- the guest's two clocks ----------------------------------------------
 * A Linux guest checks its TSC against kvmclock every half second (the
 * clocksource watchdog) and marks the TSC unstable at ~100 us of skew.  The
 * saved pair must therefore be the guest's own view at one instant.
 *
 * The guest does not read kvmclock from KVM_GET_CLOCK: it extrapolates the
 * pvclock record KVM last wrote into its memory (system_time at
 * tsc_timestamp, scaled by tsc_to_system_mul) with its TSC.  Where the host's
 * monotonic clock and its TSC run at slightly different rates (seen in the
 * nested test bed: 0.5%), KVM_GET_CLOCK drifts from that view between two
 * pvclock updates, and restoring the host's value made the guest's kvmclock
 * jump by the drift (3.5 ms measured there; CI saw the watchdog fire) against
 * its TSC.  So the saved clock is computed from vCPU 0's pvclock record and
 * its TSC (one number, no instant to match); KVM_GET_CLOCK is the fallback for guests without kvmclock (the demo
 * guest).  On restore, kvmclock is set to the saved value plus the host time
 * since the TSC was written. */
#define MSR_IA32_TSC 0x10
#define MSR_IA32_TSC_DEADLINE 0x6e0
#define MSR_KVM_ASYNC_PF_EN 0x4b564d02
#define MSR_KVM_SYSTEM_TIME 0x12
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01

/* The guest's layout (struct pvclock_vcpu_time_info, 32 bytes). */
struct pvclock_rec {
    uint32_t version, pad0;
    uint64_t tsc_timestamp, system_time;
    uint32_t tsc_to_system_mul;
    int8_t tsc_shift;
    uint8_t flags, pad[2];
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool tsc_access(int vcpu_fd, bool set, uint64_t *value)
{
    struct { struct kvm_msrs m; struct kvm_msr_entry e; } one;
    memset(&one, 0, sizeof(one));
    one.m.nmsrs = 1;
    one.e.index = MSR_IA32_TSC;
    one.e.data = *value;
    if (ioctl(vcpu_fd, set ? KVM_SET_MSRS : KVM_GET_MSRS, &one) != 1)
        return false;
    *value = one.e.data;
    return true;
}

/* kvmclock as the guest reads it at guest TSC `tsc`, from the pvclock record
 * the MSRs in `m` point at; false when the guest has not enabled kvmclock or
 * the record is not usable (being updated, TSC before its timestamp). */
bool sg_vmstate_guest_kvmclock(struct sg_vm *vm, const struct kvm_msrs *m, uint64_t tsc, uint64_t *ns)
{
    uint64_t msr = 0;
    for (uint32_t i = 0; i < m->nmsrs; i++)
        if (m->entries[i].index == MSR_KVM_SYSTEM_TIME_NEW ||
            (m->entries[i].index == MSR_KVM_SYSTEM_TIME && !(msr & 1)))
            msr = m->entries[i].data;
    if (!(msr & 1))
        return false;
    const void *p = sg_vm_gpa(vm, msr & ~(uint64_t)1, sizeof(struct pvclock_rec));
    if (!p)
        return false;
    struct pvclock_rec r;
    memcpy(&r, p, sizeof(r));
    if ((r.version & 1) || r.tsc_to_system_mul == 0 || tsc < r.tsc_timestamp)
        return false;
    uint64_t delta = tsc - r.tsc_timestamp;
    if (r.tsc_shift < 0)
        delta >>= -r.tsc_shift;
    else
        delta <<= r.tsc_shift;
    *ns = r.system_time + (uint64_t)(((unsigned __int128)delta * r.tsc_to_system_mul) >> 32);
    return true;
}

/* TSC of vCPU 0 and kvmclock as one pair; patches the TSC in `m`. */
static bool capture_clocks(struct sg_vm *vm, struct kvm_msrs *m, struct kvm_clock_data *clock,
                           struct sg_error *err)
{
    uint64_t tsc = 0;
    memset(clock, 0, sizeof(*clock));
    if (!tsc_access(vm->vcpus[0].fd, false, &tsc) ||
        !cpu_get(vm->vm_fd, KVM_GET_CLOCK, clock, "KVM_GET_CLOCK", err)) {
        if (!err->msg[0])
            sg_error_set(err, "KVM_GET_MSRS: cannot read the TSC");
        return false;
    }
    for (uint32_t i = 0; i < m->nmsrs; i++)
        if (m->entries[i].index == MSR_IA32_TSC)
            m->entries[i].data = tsc;
    uint64_t guest_ns;
    if (sg_vmstate_guest_kvmclock(vm, m, tsc, &guest_ns))
        clock->clock = guest_ns;
    return true;
}

/* Writes the saved TSC of every vCPU, then kvmclock.  KVM takes a host
 * write of a TSC within one second of the value it expects as a vCPU
 * "synchronising" and keeps the old offset instead (kvm_synchronize_tsc):
 * a load soon after its save would then rewind kvmclock but not the TSC.
 * A first write of a value far off defeats that guess. */
static bool restore_clocks(struct sg_vm *vm, const struct kvm_msrs *m0, const struct kvm_clock_data *cd,
                           struct sg_error *err)
{
    uint64_t tsc = 0;
    for (uint32_t i = 0; i < m0->nmsrs; i++)
        if (m0->entries[i].index == MSR_IA32_TSC)
            tsc = m0->entries[i].data;
    uint64_t khz = vm->tsc_khz ? vm->tsc_khz : 1000000;
    uint64_t t1 = 0;
    for (int c = 0; c < vm->nr_vcpus; c++) {
        uint64_t far = tsc + 10 * khz * 1000, v = tsc;
        if (!tsc_access(vm->vcpus[c].fd, true, &far)) {
            sg_error_set(err, "KVM_SET_MSRS: TSC refused");
            return false;
        }
        if (c == 0)
            t1 = mono_ns();
        if (!tsc_access(vm->vcpus[c].fd, true, &v)) {
            sg_error_set(err, "KVM_SET_MSRS: TSC refused");
            return false;
        }
    }
    /* Only the clock value: KVM_CLOCK_REALTIME/HOST_TSC flags would make
     * KVM add the wall time that passed since the save. */
    struct kvm_clock_data set = { .clock = cd->clock + (mono_ns() - t1) };
    if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &set) < 0) {
        sg_error_set_errno(err, errno, "KVM_SET_CLOCK");
        return false;
    }
    return true;
}

/* SNAPGATE_VMM_IRQ_TRACE set: one stderr line per vCPU and one for the
 * chips, of what can hold an interrupt back (LAPIC IRR/ISR, TPR, LVT timer,
 * pending events, IOAPIC IRR and remote IRR, PIC, the UART), read back
 * from KVM at capture and after a load: for finding where a restored
 * guest's interrupt went. */
static void trace_vecs(char *out, size_t cap, const uint8_t *regs, unsigned reg)
{
    size_t n = 0;
    out[0] = 0;
    for (unsigned v = 0; v < 256 && n + 6 < cap; v++)
        if (regs[reg + (v / 32) * 16 + (v % 32) / 8] & (1u << (v % 8)))
            n += (size_t)snprintf(out + n, cap - n, "%s%02x", n ? "," : "", v);
}

void sg_vmstate_trace(struct sg_vm *vm, const char *when)
{
    static int on = -1;
    if (on < 0)
        on = getenv("SNAPGATE_VMM_IRQ_TRACE") != NULL;
    if (!on)
        return;
    struct kvm_irqchip ic[3];
    for (uint32_t chip = 0; chip < 3; chip++) {
        memset(&ic[chip], 0, sizeof(ic[chip]));
        ic[chip].chip_id = chip;
        (void)ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &ic[chip]);
    }
    const struct kvm_ioapic_state *io = &ic[KVM_IRQCHIP_IOAPIC].chip.ioapic;
    char rirr[256] = "";
    size_t rn = 0;
    for (int pin = 0; pin < KVM_IOAPIC_NUM_PINS && rn + 40 < sizeof(rirr); pin++) {
        uint64_t e = io->redirtbl[pin].bits;
        if (!(e & (1u << 16)))   /* unmasked pins: vector, level, remote IRR */
            rn += (size_t)snprintf(rirr + rn, sizeof(rirr) - rn, " %d:%02x%s%s", pin,
                                   (unsigned)(e & 0xff), (e & (1u << 15)) ? "L" : "E",
                                   (e & (1u << 14)) ? "R" : "");
    }
    char ser[160] = "";
    if (vm->serial && vm->serial->ops->describe) {
        pthread_mutex_lock(&vm->io_lock);
        vm->serial->ops->describe(vm->serial, ser, sizeof(ser));
        pthread_mutex_unlock(&vm->io_lock);
    }
    const struct kvm_pic_state *m = &ic[KVM_IRQCHIP_PIC_MASTER].chip.pic;
    fprintf(stderr, "irq-trace %s: ioapic irr=%#x pins%s | pic irr=%#x isr=%#x imr=%#x last_irr=%#x | %s\n",
            when, io->irr, rirr, m->irr, m->isr, m->imr, m->last_irr, ser);
    for (int c = 0; c < vm->nr_vcpus; c++) {
        int fd = vm->vcpus[c].fd;
        struct kvm_lapic_state la;
        struct kvm_vcpu_events ev;
        struct kvm_mp_state mp;
        struct kvm_regs r;
        memset(&la, 0, sizeof(la));
        memset(&ev, 0, sizeof(ev));
        memset(&mp, 0, sizeof(mp));
        memset(&r, 0, sizeof(r));
        (void)ioctl(fd, KVM_GET_LAPIC, &la);
        (void)ioctl(fd, KVM_GET_VCPU_EVENTS, &ev);
        (void)ioctl(fd, KVM_GET_MP_STATE, &mp);
        (void)ioctl(fd, KVM_GET_REGS, &r);
        const uint8_t *lr = (const uint8_t *)la.regs;
        uint32_t tpr, ppr, lvtt, tmict, tmcct;
        memcpy(&tpr, lr + 0x80, 4);
        memcpy(&ppr, lr + 0xa0, 4);
        memcpy(&lvtt, lr + 0x320, 4);
        memcpy(&tmict, lr + 0x380, 4);
        memcpy(&tmcct, lr + 0x390, 4);
        char isr[128], irr[128];
        trace_vecs(isr, sizeof(isr), lr, 0x100);
        trace_vecs(irr, sizeof(irr), lr, 0x200);
        fprintf(stderr, "irq-trace %s: cpu%d mp=%u rip=%#llx rflags=%#llx isr=[%s] irr=[%s] tpr=%#x ppr=%#x "
                "lvtt=%#x tmict=%u tmcct=%u | ev intr inj=%u nr=%#x soft=%u shadow=%u nmi inj=%u pend=%u "
                "masked=%u exc inj=%u nr=%u pend=%u\n",
                when, c, mp.mp_state, (unsigned long long)r.rip, (unsigned long long)r.rflags, isr, irr,
                tpr, ppr, lvtt, tmict, tmcct, ev.interrupt.injected, ev.interrupt.nr, ev.interrupt.soft,
                ev.interrupt.shadow, ev.nmi.injected, ev.nmi.pending, ev.nmi.masked,
                ev.exception.injected, ev.exception.nr, ev.exception.pending);
    }
}

bool sg_vmstate_capture(struct sg_vm *vm, uint8_t **out, size_t *out_len, struct sg_error *err)
{
    struct blob b = { 0 };
    bool ok = true;
    sg_vmstate_trace(vm, "capture");

    struct kvm_clock_data clock;
    memset(&clock, 0, sizeof(clock));
    struct kvm_pit_state2 pit;
    ok = ok && cpu_get(vm->vm_fd, KVM_GET_PIT2, &pit, "KVM_GET_PIT2", err);
    if (ok)
        put_rec(&b, REC_VM_PIT2, 0, &pit, sizeof(pit));
    for (uint32_t chip = 0; ok && chip < 3; chip++) {
        struct kvm_irqchip ic;
        memset(&ic, 0, sizeof(ic));
        ic.chip_id = chip;
        ok = cpu_get(vm->vm_fd, KVM_GET_IRQCHIP, &ic, "KVM_GET_IRQCHIP", err);
        if (ok)
            put_rec(&b, REC_VM_IRQCHIP, chip, &ic, sizeof(ic));
    }

    bool has_xcrs = kvm_has(vm, KVM_CAP_XCRS);
    for (int c = 0; ok && c < vm->nr_vcpus; c++) {
        int fd = vm->vcpus[c].fd;
        uint32_t ci = (uint32_t)c;
        struct kvm_mp_state mp;
        struct kvm_regs regs;
        struct kvm_sregs sregs;
        struct kvm_fpu fpu;
        struct kvm_xcrs xcrs;
        struct kvm_debugregs dregs;
        struct kvm_lapic_state lapic;
        struct kvm_vcpu_events ev;
        struct kvm_xsave *xs = calloc(1, sizeof(*xs));
        memset(&xcrs, 0, sizeof(xcrs));
        if (!xs) {
            sg_error_set(err, "out of memory");
            ok = false;
            break;
        }
        ok = cpu_get(fd, KVM_GET_MP_STATE, &mp, "KVM_GET_MP_STATE", err) &&
             cpu_get(fd, KVM_GET_REGS, &regs, "KVM_GET_REGS", err) &&
             cpu_get(fd, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS", err) &&
             cpu_get(fd, KVM_GET_FPU, &fpu, "KVM_GET_FPU", err) &&
             cpu_get(fd, KVM_GET_XSAVE, xs, "KVM_GET_XSAVE", err) &&
             (!has_xcrs || cpu_get(fd, KVM_GET_XCRS, &xcrs, "KVM_GET_XCRS", err)) &&
             cpu_get(fd, KVM_GET_DEBUGREGS, &dregs, "KVM_GET_DEBUGREGS", err) &&
             cpu_get(fd, KVM_GET_LAPIC, &lapic, "KVM_GET_LAPIC", err) &&
             cpu_get(fd, KVM_GET_VCPU_EVENTS, &ev, "KVM_GET_VCPU_EVENTS", err);
        if (ok) {
            put_rec(&b, REC_CPU_MP_STATE, ci, &mp, sizeof(mp));
            put_rec(&b, REC_CPU_REGS, ci, &regs, sizeof(regs));
            put_rec(&b, REC_CPU_SREGS, ci, &sregs, sizeof(sregs));
            put_rec(&b, REC_CPU_FPU, ci, &fpu, sizeof(fpu));
            put_rec(&b, REC_CPU_XSAVE, ci, xs, sizeof(*xs));
            put_rec(&b, REC_CPU_XCRS, ci, &xcrs, sizeof(xcrs));
            put_rec(&b, REC_CPU_DEBUGREGS, ci, &dregs, sizeof(dregs));
            put_rec(&b, REC_CPU_LAPIC, ci, &lapic, sizeof(lapic));
        }
        free(xs);
        if (ok) {
            uint32_t idx[MAX_MSRS];
            int n = msr_list(vm, fd, idx, MAX_MSRS);
            size_t sz = sizeof(struct kvm_msrs) + (size_t)(n > 0 ? n : 0) * sizeof(struct kvm_msr_entry);
            struct kvm_msrs *m = calloc(1, sz);
            if (n < 0 || !m) {
                sg_error_set(err, "cannot list MSRs");
                free(m);
                ok = false;
                break;
            }
            m->nmsrs = (uint32_t)n;
            for (int i = 0; i < n; i++)
                m->entries[i].index = idx[i];
            int got = ioctl(fd, KVM_GET_MSRS, m);
            if (got != n) {
                sg_error_set(err, "KVM_GET_MSRS read %d of %d MSRs", got, n);
                ok = false;
            } else if (c == 0 && !capture_clocks(vm, m, &clock, err)) {
                ok = false;
            } else {
                put_rec(&b, REC_CPU_MSRS, ci, m, (uint32_t)sz);
                if (c == 0)
                    put_rec(&b, REC_VM_CLOCK, 0, &clock, sizeof(clock));
            }
            free(m);
            /* Events last: reading MSRs must not be able to change them. */
            if (ok)
                put_rec(&b, REC_CPU_EVENTS, ci, &ev, sizeof(ev));
        }
    }

    pthread_mutex_lock(&vm->io_lock);
    for (int i = 0; ok && i < vm->nr_devices; i++) {
        struct sg_device *d = vm->devices[i];
        uint8_t buf[32 + SG_DEVICE_STATE_MAX];
        memset(buf, 0, 32);
        snprintf((char *)buf, 32, "%s", d->name);
        size_t n = d->ops->save ? d->ops->save(d, buf + 32, SG_DEVICE_STATE_MAX) : 0;
        if (d->ops->save && n == 0) {
            sg_error_set(err, "%s: cannot save device state", d->name);
            ok = false;
            break;
        }
        put_rec(&b, REC_DEVICE, (uint32_t)i, buf, (uint32_t)(32 + n));
    }
    pthread_mutex_unlock(&vm->io_lock);

    if (ok && b.oom) {
        sg_error_set(err, "out of memory");
        ok = false;
    }
    if (!ok) {
        free(b.p);
        return false;
    }
    *out = b.p;
    *out_len = b.len;
    return true;
}

/* ---- restore ------------------------------------------------------------- */

struct rec {
    uint32_t tag, index, len;
    const uint8_t *data;
};

static bool next_rec(const uint8_t *blob, size_t len, size_t *pos, struct rec *r)
{
    if (*pos + 12 > len)
        return false;
    uint32_t h[3];
    memcpy(h, blob + *pos, 12);
    if (h[2] > len - *pos - 12)
        return false;
    r->tag = h[0];
    r->index = h[1];
    r->len = h[2];
    r->data = blob + *pos + 12;
    *pos += 12 + h[2];
    return true;
}

static size_t fixed_size(uint32_t tag)
{
    switch (tag) {
    case REC_VM_CLOCK: return sizeof(struct kvm_clock_data);
    case REC_VM_PIT2: return sizeof(struct kvm_pit_state2);
    case REC_VM_IRQCHIP: return sizeof(struct kvm_irqchip);
    case REC_CPU_MP_STATE: return sizeof(struct kvm_mp_state);
    case REC_CPU_REGS: return sizeof(struct kvm_regs);
    case REC_CPU_SREGS: return sizeof(struct kvm_sregs);
    case REC_CPU_FPU: return sizeof(struct kvm_fpu);
    case REC_CPU_XSAVE: return sizeof(struct kvm_xsave);
    case REC_CPU_XCRS: return sizeof(struct kvm_xcrs);
    case REC_CPU_DEBUGREGS: return sizeof(struct kvm_debugregs);
    case REC_CPU_LAPIC: return sizeof(struct kvm_lapic_state);
    case REC_CPU_EVENTS: return sizeof(struct kvm_vcpu_events);
    default: return 0;
    }
}

bool sg_vmstate_check(struct sg_vm *vm, const uint8_t *blob, size_t len, struct sg_error *err)
{
    size_t pos = 0;
    struct rec r;
    unsigned cpu_recs = 0, devs = 0;
    /* apply() looks every record up by (tag, index) and uses it, so each
     * one must be there exactly once: a duplicate would hide a missing one
     * (found by fuzz_vmstate: a NULL record dereferenced). */
    uint32_t seen_vm = 0, seen_dev = 0, seen_cpu[SG_VM_MAX_VCPUS] = { 0 };
    while (next_rec(blob, len, &pos, &r)) {
        uint32_t *seen = NULL, bit = 0;
        if (r.tag < REC_CPU_MP_STATE && r.index < (r.tag == REC_VM_IRQCHIP ? 3u : 1u)) {
            seen = &seen_vm;
            bit = (r.tag - 1) * 3 + r.index;
        } else if (r.tag >= REC_CPU_MP_STATE && r.tag < REC_DEVICE &&
                   r.index < (uint32_t)vm->nr_vcpus && r.index < SG_VM_MAX_VCPUS) {
            seen = &seen_cpu[r.index];
            bit = r.tag - REC_CPU_MP_STATE;
        } else if (r.tag == REC_DEVICE && r.index < (uint32_t)vm->nr_devices) {
            seen = &seen_dev;
            bit = r.index;
        }
        if (seen && bit < 32) {
            if (*seen & (1u << bit)) {
                sg_error_set(err, "VM state: record %u/%u appears twice", r.tag, r.index);
                return false;
            }
            *seen |= 1u << bit;
        } else if (r.tag < REC_CPU_MP_STATE) {
            sg_error_set(err, "VM state: record %u/%u is unknown", r.tag, r.index);
            return false;
        }
        if (r.tag == REC_DEVICE) {
            if (r.index >= (uint32_t)vm->nr_devices || r.len < 32 ||
                strncmp((const char *)r.data, vm->devices[r.index]->name, 32) != 0) {
                sg_error_set(err, "VM state: device record %u does not match this VM", r.index);
                return false;
            }
            devs++;
        } else if (r.tag == REC_CPU_MSRS) {
            struct kvm_msrs m;
            if (r.len < sizeof(m)) {
                sg_error_set(err, "VM state: bad MSR record");
                return false;
            }
            memcpy(&m, r.data, sizeof(m));
            if (m.nmsrs > MAX_MSRS || r.len != sizeof(m) + m.nmsrs * sizeof(struct kvm_msr_entry)) {
                sg_error_set(err, "VM state: bad MSR record");
                return false;
            }
        } else {
            size_t want = fixed_size(r.tag);
            if (!want || r.len != want) {
                sg_error_set(err, "VM state: record %u has %u bytes (this build expects %zu)",
                             r.tag, r.len, want);
                return false;
            }
        }
        if (r.tag >= REC_CPU_MP_STATE && r.tag < REC_DEVICE) {
            if (r.index >= (uint32_t)vm->nr_vcpus) {
                sg_error_set(err, "VM state: vCPU %u does not exist here", r.index);
                return false;
            }
            cpu_recs++;
        }
    }
    if (pos != len || devs != (unsigned)vm->nr_devices || cpu_recs != 10u * (unsigned)vm->nr_vcpus ||
        seen_vm != (1u << 0 | 1u << 3 | 7u << 6)) {   /* clock, PIT, 3 irqchips */
        sg_error_set(err, "VM state is truncated or incomplete");
        return false;
    }
    return true;
}

static const struct rec *find_rec(const struct rec *all, int n, uint32_t tag, uint32_t index)
{
    for (int i = 0; i < n; i++)
        if (all[i].tag == tag && all[i].index == index)
            return &all[i];
    return NULL;
}

const struct sg_pv_msr sg_pv_msrs[] = {
    { 0x11, "kvm-wall-clock", false, ~0ull, 12 },              /* MSR_KVM_WALL_CLOCK */
    { 0x4b564d00, "kvm-wall-clock", false, ~0ull, 12 },        /* _NEW */
    { 0x12, "kvm-system-time", true, ~1ull, 32 },              /* MSR_KVM_SYSTEM_TIME */
    { 0x4b564d01, "kvm-system-time", true, ~1ull, 32 },        /* _NEW */
    { 0x4b564d02, "kvm-async-pf", true, ~0x3full, 64 },        /* MSR_KVM_ASYNC_PF_EN */
    { 0x4b564d03, "kvm-steal-time", true, ~0x3full, 64 },      /* MSR_KVM_STEAL_TIME */
    { 0x4b564d04, "kvm-pv-eoi", true, ~1ull, 4 },              /* MSR_KVM_PV_EOI_EN */
};
const size_t sg_nr_pv_msrs = sizeof(sg_pv_msrs) / sizeof(sg_pv_msrs[0]);

bool sg_pv_msr_gpa(const struct sg_pv_msr *pm, uint64_t v, uint64_t *gpa)
{
    if (pm->has_enable ? !(v & 1) : !v)
        return false;
    *gpa = v & pm->addr_mask;
    return true;
}

int sg_vmstate_pv_pages(struct sg_vm *vm, const uint8_t *blob, size_t len, uint64_t *pages, int max)
{
    int out = 0;
    size_t pos = 0;
    struct rec r;
    while (next_rec(blob, len, &pos, &r)) {
        struct kvm_msrs head;
        if (r.tag != REC_CPU_MSRS || r.len < sizeof(head))
            continue;
        memcpy(&head, r.data, sizeof(head));
        if (head.nmsrs > (r.len - sizeof(head)) / sizeof(struct kvm_msr_entry))
            continue;
        for (uint32_t i = 0; i < head.nmsrs; i++) {
            struct kvm_msr_entry e;
            memcpy(&e, r.data + sizeof(head) + i * sizeof(e), sizeof(e));
            for (size_t k = 0; k < sg_nr_pv_msrs; k++) {
                uint64_t gpa;
                if (sg_pv_msrs[k].index != e.index || !sg_pv_msr_gpa(&sg_pv_msrs[k], e.data, &gpa))
                    continue;
                gpa &= ~4095ull;
                bool dup = !sg_vm_gpa(vm, gpa, 4096);    /* not RAM: nothing to bring in */
                for (int j = 0; j < out && !dup; j++)
                    dup = pages[j] == gpa;
                if (!dup && out < max)
                    pages[out++] = gpa;
            }
        }
    }
    return out;
}

static bool cpu_set(int fd, unsigned long req, const struct rec *r, const char *what,
                    struct sg_error *err)
{
    if (!r) {
        sg_error_set(err, "VM state lacks %s", what);
        return false;
    }
    /* The ioctl wants a writable, aligned copy. */
    void *copy = malloc(r->len);
    if (!copy) {
        sg_error_set(err, "out of memory");
        return false;
    }
    memcpy(copy, r->data, r->len);
    int ret = ioctl(fd, req, copy);
    if (req == KVM_SET_MSRS && ret >= 0) {
        struct kvm_msrs *m = copy;
        if ((uint32_t)ret != m->nmsrs) {
            sg_error_set(err, "KVM_SET_MSRS: MSR %#x refused", m->entries[ret].index);
            free(copy);
            return false;
        }
    }
    free(copy);
    if (ret < 0) {
        sg_error_set_errno(err, errno, "%s", what);
        return false;
    }
    return true;
}

bool sg_vmstate_apply(struct sg_vm *vm, const uint8_t *blob, size_t len, struct sg_error *err)
{
    if (!sg_vmstate_check(vm, blob, len, err))
        return false;
    struct rec recs[64 + SG_VM_MAX_DEVICES];
    int n = 0;
    size_t pos = 0;
    while (n < (int)(sizeof(recs) / sizeof(recs[0])) && next_rec(blob, len, &pos, &recs[n]))
        n++;
    sg_trace_mark("apply-check");

    bool ok = cpu_set(vm->vm_fd, KVM_SET_PIT2, find_rec(recs, n, REC_VM_PIT2, 0), "KVM_SET_PIT2", err);
    for (uint32_t chip = 0; ok && chip < 3; chip++)
        ok = cpu_set(vm->vm_fd, KVM_SET_IRQCHIP, find_rec(recs, n, REC_VM_IRQCHIP, chip),
                     "KVM_SET_IRQCHIP", err);
    sg_trace_mark("apply-chips");
    bool has_xsave = kvm_has(vm, KVM_CAP_XSAVE), has_xcrs = kvm_has(vm, KVM_CAP_XCRS);
    for (int c = 0; ok && c < vm->nr_vcpus; c++) {
        int fd = vm->vcpus[c].fd;
        uint32_t ci = (uint32_t)c;
        /* KVM's async page faults of the guest that ran until now (its
         * queue of completions and tokens) are not VM state: switching the
         * feature off empties them (QEMU's reset before a load does the
         * same), and the saved MSRs switch it on again, which makes KVM
         * wake every task the restored guest has waiting (a "wake all"
         * token, sent only when no stale completion is queued). */
        struct { struct kvm_msrs m; struct kvm_msr_entry e; } apf;
        memset(&apf, 0, sizeof(apf));
        apf.m.nmsrs = 1;
        apf.e.index = MSR_KVM_ASYNC_PF_EN;
        (void)ioctl(fd, KVM_SET_MSRS, &apf);   /* absent without the feature: nothing to clear */
        ok = cpu_set(fd, KVM_SET_MP_STATE, find_rec(recs, n, REC_CPU_MP_STATE, ci), "KVM_SET_MP_STATE", err) &&
             cpu_set(fd, KVM_SET_REGS, find_rec(recs, n, REC_CPU_REGS, ci), "KVM_SET_REGS", err) &&
             cpu_set(fd, KVM_SET_SREGS, find_rec(recs, n, REC_CPU_SREGS, ci), "KVM_SET_SREGS", err) &&
             (has_xsave ? cpu_set(fd, KVM_SET_XSAVE, find_rec(recs, n, REC_CPU_XSAVE, ci), "KVM_SET_XSAVE", err)
                        : cpu_set(fd, KVM_SET_FPU, find_rec(recs, n, REC_CPU_FPU, ci), "KVM_SET_FPU", err)) &&
             (!has_xcrs || cpu_set(fd, KVM_SET_XCRS, find_rec(recs, n, REC_CPU_XCRS, ci), "KVM_SET_XCRS", err)) &&
             cpu_set(fd, KVM_SET_DEBUGREGS, find_rec(recs, n, REC_CPU_DEBUGREGS, ci), "KVM_SET_DEBUGREGS", err) &&
             cpu_set(fd, KVM_SET_LAPIC, find_rec(recs, n, REC_CPU_LAPIC, ci), "KVM_SET_LAPIC", err);
        sg_trace_mark("apply-cpu");
        ok = ok && cpu_set(fd, KVM_SET_MSRS, find_rec(recs, n, REC_CPU_MSRS, ci), "KVM_SET_MSRS", err);
        sg_trace_mark("apply-msrs");
        ok = ok && cpu_set(fd, KVM_SET_VCPU_EVENTS, find_rec(recs, n, REC_CPU_EVENTS, ci),
                           "KVM_SET_VCPU_EVENTS", err);
    }
    if (ok) {
        /* Aligned copies: the records sit at any offset in the blob. */
        struct kvm_clock_data cd;
        memcpy(&cd, find_rec(recs, n, REC_VM_CLOCK, 0)->data, sizeof(cd));
        const struct rec *mr = find_rec(recs, n, REC_CPU_MSRS, 0);
        struct kvm_msrs *m0 = malloc(mr->len);
        if (!m0) {
            sg_error_set(err, "out of memory");
            return false;
        }
        memcpy(m0, mr->data, mr->len);
        ok = restore_clocks(vm, m0, &cd, err);
        free(m0);
        sg_trace_mark("apply-clocks");
    }
    /* The TSC-deadline timer was armed (KVM_SET_MSRS above) against the TSC
     * of that moment, which restore_clocks then changed: arm it again
     * against the restored TSC, or it fires at the wrong time. */
    for (int c = 0; ok && c < vm->nr_vcpus; c++) {
        const struct rec *mr = find_rec(recs, n, REC_CPU_MSRS, (uint32_t)c);
        struct kvm_msrs *m = malloc(mr->len);
        if (!m) {
            sg_error_set(err, "out of memory");
            return false;
        }
        memcpy(m, mr->data, mr->len);
        for (uint32_t i = 0; i < m->nmsrs; i++) {
            if (m->entries[i].index != MSR_IA32_TSC_DEADLINE)
                continue;
            struct { struct kvm_msrs m; struct kvm_msr_entry e; } one;
            memset(&one, 0, sizeof(one));
            one.m.nmsrs = 1;
            one.e = m->entries[i];
            if (ioctl(vm->vcpus[c].fd, KVM_SET_MSRS, &one) != 1) {
                sg_error_set(err, "KVM_SET_MSRS: TSC deadline refused");
                ok = false;
            }
        }
        free(m);
    }
    pthread_mutex_lock(&vm->io_lock);
    for (int i = 0; ok && i < vm->nr_devices; i++) {
        const struct rec *r = find_rec(recs, n, REC_DEVICE, (uint32_t)i);
        struct sg_device *d = vm->devices[i];
        if (d->ops->load)
            ok = d->ops->load(d, r->data + 32, r->len - 32, err);
    }
    pthread_mutex_unlock(&vm->io_lock);
    sg_trace_mark("apply-devices");
    sg_vmstate_trace(vm, "applied");
    return ok;
}

/* vm_kvm.c: the KVM VM — guest RAM, in-kernel irqchip and PIT, the early
 * machine the demo guest expects (boot_info.h), and port I/O dispatch. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "guest/boot_info.h"
#include "linux_boot.h"
#include "vmstate.h"
#include "ram_hash.h"
#include "ram_wp.h"
#include "vm.h"

extern const char sg_demo_guest_start[], sg_demo_guest_end[];

/* KVM needs three pages for the real-mode TSS and one for the EPT identity
 * map below 4 GiB; they sit in the PCI hole, above RAM's low part. */
#define SG_KVM_TSS_ADDR 0xfffbd000u
#define SG_KVM_IDMAP_ADDR 0xfffbc000u

void *sg_vm_aligned_space(size_t len, int prot)
{
    const size_t align = 1ul << 30;
    char *m = mmap(NULL, len + align, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    char *a = (char *)(((uintptr_t)m + align - 1) & ~(uintptr_t)(align - 1));
    if (a > m)
        munmap(m, (size_t)(a - m));
    if (m + len + align > a + len)
        munmap(a + len, (size_t)(m + len + align - (a + len)));
    return a;
}

bool sg_vm_init(struct sg_vm *vm, struct sg_error *err)
{
    vm->vm_fd = -1;
    vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (vm->kvm_fd < 0) {
        sg_error_set(err, "/dev/kvm: %s", strerror(errno));
        return false;
    }
    int api = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
    if (api != KVM_API_VERSION) {
        sg_error_set(err, "/dev/kvm: unsupported KVM API version %d", api);
        return false;
    }
    if (vm->ram_size < SG_GUEST_MIN_RAM || vm->ram_size > SG_GUEST_MAX_RAM) {
        sg_error_set(err, "-m: RAM size must be between 16 MiB and %llu GiB",
                     (unsigned long long)(SG_GUEST_MAX_RAM >> 30));
        return false;
    }
    vm->ram_low = vm->ram_size < SG_RAM_LOW_MAX ? vm->ram_size : SG_RAM_LOW_MAX;
    vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
    if (vm->vm_fd < 0) {
        sg_error_set_errno(err, errno, "KVM_CREATE_VM");
        return false;
    }
    if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, SG_KVM_TSS_ADDR) < 0) {
        sg_error_set_errno(err, errno, "KVM_SET_TSS_ADDR");
        return false;
    }
    uint64_t idmap = SG_KVM_IDMAP_ADDR;
    if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0) {
        sg_error_set_errno(err, errno, "KVM_SET_IDENTITY_MAP_ADDR");
        return false;
    }
    if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) {
        sg_error_set_errno(err, errno, "KVM_CREATE_IRQCHIP");
        return false;
    }
    struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
    if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
        sg_error_set_errno(err, errno, "KVM_CREATE_PIT2");
        return false;
    }
    /* 1 GiB aligned and a whole number of GiB long (vm->ram_span): a lazy
     * load's mremap (ram_lazy.c) then moves one page-table entry per GiB;
     * from a 2 MiB boundary it moved every 2 MiB entry, each with its own
     * TLB flush: 2.2-4 ms for 512 MiB here, 5-8 ms in the kvm bed, against
     * 0.04-0.14 ms.  2 MiB alignment is what a live save's write-protect
     * (2 MiB regions, ram_wp.c) and huge pages need; kernels before 6.7
     * (Debian 12's 6.1) do not align a large anonymous mapping by
     * themselves.  Map 1 GiB more, trim. */
    const size_t align = 1ul << 30;
    vm->ram_span = (vm->ram_size + align - 1) & ~(uint64_t)(align - 1);
    vm->ram = sg_vm_aligned_space(vm->ram_span, PROT_READ | PROT_WRITE);
    if (!vm->ram) {
        sg_error_set_errno(err, errno, "guest RAM (%llu bytes)", (unsigned long long)vm->ram_size);
        return false;
    }
    /* Where a lazy load moves the old RAM: reserved now, while no vCPU
     * runs (with one running, each mmap and munmap of this process waited
     * 1-3 ms in the kvm bed: TLB shootdowns into a guest). */
    vm->ram_aside = sg_vm_aligned_space(vm->ram_span, PROT_NONE);
    /* Not MADV_MERGEABLE (QEMU's mem-merge): every mremap of a mergeable
     * mapping first unmerges it page by page, 8-39 ms for 1 GiB in the
     * pause of the first lazy load (ram_lazy.c), KSM running or not. */
    /* Huge pages keep fork() (a live save's instant, ram_live.c) cheap.
     * The whole span: one mapping, never split by a flag. */
    madvise(vm->ram, vm->ram_span, MADV_HUGEPAGE);
    if (!sg_vm_set_ram_slots(vm, 0, err))
        return false;
    int khz = ioctl(vm->vm_fd, KVM_GET_TSC_KHZ, 0);
    if (khz <= 0)
        khz = ioctl(vm->kvm_fd, KVM_GET_TSC_KHZ, 0);
    vm->tsc_khz = khz > 0 ? (uint64_t)khz : 0;
    return true;
}

/* One host mapping, two slots: RAM index = host offset on both sides of
 * the hole, so the vmstate sees one flat RAM.  `flags`: KVM's slot flags
 * (none: KVM's dirty log slowed a writing guest 30-60x on kvm_pvm for as
 * long as it was on; incremental saves compare content, ram_hash.c). */
bool sg_vm_set_ram_slots(struct sg_vm *vm, uint32_t flags, struct sg_error *err)
{
    struct kvm_userspace_memory_region mr[2] = {
        { .slot = 0, .flags = flags, .guest_phys_addr = 0, .memory_size = vm->ram_low,
          .userspace_addr = (uint64_t)(uintptr_t)vm->ram },
        { .slot = 1, .flags = flags, .guest_phys_addr = SG_RAM_HIGH_BASE,
          .memory_size = vm->ram_size - vm->ram_low,
          .userspace_addr = (uint64_t)(uintptr_t)vm->ram + vm->ram_low },
    };
    for (int i = 0; i < 2 && mr[i].memory_size; i++) {
        if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &mr[i]) < 0) {
            sg_error_set_errno(err, errno, "KVM_SET_USER_MEMORY_REGION (slot %d)", i);
            return false;
        }
    }
    return true;
}

void *sg_vm_gpa(struct sg_vm *vm, uint64_t gpa, uint64_t len)
{
    uint64_t idx;
    if (gpa <= vm->ram_low && len <= vm->ram_low - gpa) {
        idx = gpa;
    } else {
        uint64_t high = vm->ram_size - vm->ram_low;
        if (gpa < SG_RAM_HIGH_BASE || gpa - SG_RAM_HIGH_BASE > high ||
            len > high - (gpa - SG_RAM_HIGH_BASE))
            return NULL;
        idx = vm->ram_low + (gpa - SG_RAM_HIGH_BASE);
    }
    return (char *)vm->ram + idx;
}

static void put64(struct sg_vm *vm, uint64_t gpa, uint64_t v)
{
    memcpy((char *)vm->ram + gpa, &v, 8);
}

/* Identity map with 2 MiB user pages of the low 4 GiB and of all RAM above
 * it: the guest's ring-3 code touches everything, and the VMM, not the
 * emulated ring 0, builds it.  All page-table pages lie below 1 MiB. */
bool sg_vm_load_demo_guest(struct sg_vm *vm, struct sg_error *err)
{
    size_t img = (size_t)(sg_demo_guest_end - sg_demo_guest_start);
    if (img > (8u << 20)) {
        sg_error_set(err, "demo guest image too large (%zu bytes)", img);
        return false;
    }
    uint64_t top = SG_RAM_HIGH_BASE + (vm->ram_size - vm->ram_low);
    unsigned pd_pages = (unsigned)((top + (1ull << 30) - 1) >> 30);
    if (pd_pages > SG_PD_MAX_PAGES) {
        sg_error_set(err, "RAM too large for the demo guest's page tables");
        return false;
    }
    memset(vm->ram, 0, SG_PD_ADDR + 4096u * SG_PD_MAX_PAGES);
    const uint64_t pte = 0x7;  /* present | writable | user */
    put64(vm, SG_PML4_ADDR, SG_PDPT_ADDR | pte);
    for (unsigned i = 0; i < pd_pages; i++) {
        put64(vm, SG_PDPT_ADDR + 8 * i, (SG_PD_ADDR + 4096u * i) | pte);
        for (unsigned j = 0; j < 512; j++) {
            uint64_t pa = ((uint64_t)i << 30) | ((uint64_t)j << 21);
            put64(vm, SG_PD_ADDR + 4096u * i + 8 * j, pa | pte | 0x80 /* 2 MiB */);
        }
    }
    put64(vm, SG_GDT_ADDR + SG_SEL_KCODE, 0x00af9a000000ffffull);
    put64(vm, SG_GDT_ADDR + SG_SEL_KDATA, 0x00cf92000000ffffull);
    put64(vm, SG_GDT_ADDR + SG_SEL_UDATA, 0x00cff2000000ffffull);
    put64(vm, SG_GDT_ADDR + SG_SEL_UCODE, 0x00affa000000ffffull);
    uint64_t tss = SG_TSS_ADDR, lim = 0x67;
    put64(vm, SG_GDT_ADDR + SG_SEL_TSS,
          (lim & 0xffff) | (tss & 0xffffff) << 16 | 0x89ull << 40 | (tss >> 24 & 0xff) << 56);
    put64(vm, SG_GDT_ADDR + SG_SEL_TSS + 8, tss >> 32);
    uint16_t iomap = 0x68;   /* no I/O bitmap: IOPL 3 grants port I/O */
    memcpy((char *)vm->ram + SG_TSS_ADDR + 0x66, &iomap, 2);

    struct sg_boot_info *bi = (struct sg_boot_info *)((char *)vm->ram + SG_BOOT_INFO_ADDR);
    bi->magic = SG_BOOT_MAGIC;
    bi->version = 2;
    bi->ram_size = vm->ram_size;
    bi->ram_low = vm->ram_low;
    bi->tsc_khz = vm->tsc_khz;
    /* The demo guest reads at most 255 bytes of -append. */
    size_t cl = strnlen(vm->cmdline, sizeof(bi->cmdline) - 1);
    memcpy(bi->cmdline, vm->cmdline, cl);
    bi->cmdline[cl] = 0;

    memcpy((char *)vm->ram + SG_GUEST_LOAD_ADDR, sg_demo_guest_start, img);
    return true;
}

bool sg_vm_add_device(struct sg_vm *vm, struct sg_device *dev, struct sg_error *err)
{
    if (vm->nr_devices >= SG_VM_MAX_DEVICES) {
        sg_error_set(err, "too many devices");
        return false;
    }
    dev->vm = vm;
    vm->devices[vm->nr_devices++] = dev;
    return true;
}

void sg_vm_set_irq(struct sg_vm *vm, unsigned irq, int level)
{
    struct kvm_irq_level l = { .irq = irq, .level = (uint32_t)level };
    ioctl(vm->vm_fd, KVM_IRQ_LINE, &l);
}

bool sg_vm_reset(struct sg_vm *vm, struct sg_error *err)
{
    /* MADV_DONTNEED on private anonymous memory gives zero pages back; a
     * live save still reading the instant copies what it needs first. */
    sg_ram_wp_before_discard(vm->wp);
    if (madvise(vm->ram, vm->ram_size, MADV_DONTNEED) != 0) {
        sg_error_set_errno(err, errno, "guest RAM reset");
        return false;
    }
    pthread_mutex_lock(&vm->io_lock);
    for (int i = 0; i < vm->nr_devices; i++)
        if (vm->devices[i]->ops->reset)
            vm->devices[i]->ops->reset(vm->devices[i]);
    pthread_mutex_unlock(&vm->io_lock);
    if (!(vm->kernel[0] ? sg_linux_load(vm, err) : sg_vm_load_demo_guest(vm, err)))
        return false;
    if (vm->poweron_state)
        return sg_vmstate_apply(vm, vm->poweron_state, vm->poweron_len, err);
    for (int i = 0; i < vm->nr_vcpus; i++)
        if (!sg_vcpu_set_boot_state(vm, &vm->vcpus[i], err))
            return false;
    return true;
}

void sg_vm_destroy(struct sg_vm *vm)
{
    for (int i = 0; i < vm->nr_devices; i++)
        if (vm->devices[i]->ops->destroy)
            vm->devices[i]->ops->destroy(vm->devices[i]);
    vm->nr_devices = 0;
    for (int i = 0; i < vm->nr_vcpus; i++) {
        if (vm->vcpus[i].run)
            munmap(vm->vcpus[i].run, vm->vcpus[i].run_size);
        if (vm->vcpus[i].fd >= 0)
            close(vm->vcpus[i].fd);
    }
    sg_ram_hashes_free(vm->hashes);
    vm->hashes = NULL;
    free(vm->poweron_state);
    vm->poweron_state = NULL;
    if (vm->ram)
        munmap(vm->ram, vm->ram_span);
    if (vm->ram_aside)
        munmap(vm->ram_aside, vm->ram_span);
    vm->ram_aside = NULL;
    if (vm->vm_fd >= 0)
        close(vm->vm_fd);
    if (vm->kvm_fd >= 0)
        close(vm->kvm_fd);
}

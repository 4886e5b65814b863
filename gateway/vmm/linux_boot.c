/* linux_boot.c: loads a bzImage as a boot loader does for the 64-bit boot
 * protocol (the kernel's Documentation/arch/x86/boot.rst): the setup
 * header is copied into a zero page the VMM fills (loader type, command
 * line, initrd, e820 map), the protected-mode kernel goes to 1 MiB, and the
 * vCPU starts in long mode at its 64-bit entry (load address + 0x200) with
 * RSI pointing at the zero page.  No firmware runs: the VMM also writes the
 * ACPI tables (acpi.c: the machine, power-off, reset) and the MP table
 * (mptable.c, for acpi=off) that tell Linux where the LAPIC and IOAPIC are. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guest/boot_info.h"
#include "linux_boot.h"
#include "vm.h"

/* Offsets in struct boot_params (the zero page) and its setup header. */
enum {
    BP_ACPI_RSDP_ADDR = 0x070,
    BP_E820_ENTRIES = 0x1e8,
    BP_HDR = 0x1f1,             /* setup header starts here */
    BP_SETUP_SECTS = 0x1f1,
    BP_VID_MODE = 0x1fa,
    BP_BOOT_FLAG = 0x1fe,
    BP_JUMP = 0x200,            /* byte 0x201: header length - 0x202 + 0x200... */
    BP_HEADER_MAGIC = 0x202,
    BP_VERSION = 0x206,
    BP_TYPE_OF_LOADER = 0x210,
    BP_LOADFLAGS = 0x211,
    BP_RAMDISK_IMAGE = 0x218,
    BP_RAMDISK_SIZE = 0x21c,
    BP_HEAP_END_PTR = 0x224,
    BP_CMD_LINE_PTR = 0x228,
    BP_INITRD_ADDR_MAX = 0x22c,
    BP_XLOADFLAGS = 0x236,
    BP_CMDLINE_SIZE = 0x238,
    BP_E820_TABLE = 0x2d0,
};
enum { LOADED_HIGH = 1, CAN_USE_HEAP = 0x80 };
enum { XLF_KERNEL_64 = 1 };
enum { E820_RAM = 1, E820_RESERVED = 2 };
#define E820_MAX 128

static uint16_t get16(const uint8_t *p, unsigned off) { uint16_t v; memcpy(&v, p + off, 2); return v; }
static uint32_t get32(const uint8_t *p, unsigned off) { uint32_t v; memcpy(&v, p + off, 4); return v; }
static void put16(uint8_t *p, unsigned off, uint16_t v) { memcpy(p + off, &v, 2); }
static void put32(uint8_t *p, unsigned off, uint32_t v) { memcpy(p + off, &v, 4); }
static void put64(uint8_t *p, unsigned off, uint64_t v) { memcpy(p + off, &v, 8); }

bool sg_linux_host_is_pvm(char *msg, size_t cap)
{
    struct stat st;
    if (stat("/sys/module/kvm_pvm", &st) != 0)
        return false;
    /* A host with kvm_pvm and a hardware KVM module: /dev/kvm is the
     * hardware one unless kvm_pvm took it; only kvm_pvm alone is certain. */
    if (stat("/sys/module/kvm_intel", &st) == 0 || stat("/sys/module/kvm_amd", &st) == 0)
        return false;
    snprintf(msg, cap,
             "-kernel: /dev/kvm is kvm_pvm (a paravirtual KVM that emulates a guest's ring 0): "
             "a Linux kernel cannot boot on it in useful time; run Linux guests on a host with "
             "kvm_intel or kvm_amd (for example the nested test bed, tests/kvm-bed)");
    return true;
}

/* Reads a whole file (kernel or initrd) into a malloc'ed buffer. */
static uint8_t *read_file(const char *path, size_t *len, const char *what, struct sg_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sg_error_set(err, "%s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
        sg_error_set(err, "%s %s: not a regular, non-empty file", what, path);
        close(fd);
        return NULL;
    }
    uint8_t *buf = malloc((size_t)st.st_size);
    if (!buf) {
        sg_error_set(err, "%s %s: out of memory", what, path);
        close(fd);
        return NULL;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            sg_error_set(err, "%s %s: %s", what, path, n < 0 ? strerror(errno) : "short read");
            free(buf);
            close(fd);
            return NULL;
        }
        got += (size_t)n;
    }
    close(fd);
    *len = got;
    return buf;
}

static void e820_add(uint8_t *zp, uint64_t addr, uint64_t size, uint32_t type)
{
    uint8_t n = zp[BP_E820_ENTRIES];
    if (n >= E820_MAX || size == 0)
        return;
    unsigned off = BP_E820_TABLE + 20u * n;
    put64(zp, off, addr);
    put64(zp, off + 8, size);
    put32(zp, off + 16, type);
    zp[BP_E820_ENTRIES] = (uint8_t)(n + 1);
}

/* Long mode needs paging: identity map 0-4 GiB with 2 MiB pages, which
 * covers the kernel, zero page, command line and initrd (all below
 * ram_low).  Linux builds its own tables before it looks above 4 GiB. */
static void write_page_tables(struct sg_vm *vm)
{
    uint8_t *ram = vm->ram;
    memset(ram + SG_LINUX_PML4_ADDR, 0, 0x6000);
    put64(ram, SG_LINUX_PML4_ADDR, SG_LINUX_PDPT_ADDR | 3);
    for (unsigned i = 0; i < 4; i++) {
        put64(ram, SG_LINUX_PDPT_ADDR + 8 * i, (SG_LINUX_PD_ADDR + 0x1000u * i) | 3);
        for (unsigned j = 0; j < 512; j++)
            put64(ram, SG_LINUX_PD_ADDR + 0x1000u * i + 8 * j,
                  ((uint64_t)i << 30 | (uint64_t)j << 21) | 0x83 /* P RW PS */);
    }
    /* __BOOT_CS = 0x10 and __BOOT_DS = 0x18, as the protocol asks. */
    put64(ram, SG_LINUX_GDT_ADDR + 0x10, 0x00af9b000000ffffull);
    put64(ram, SG_LINUX_GDT_ADDR + 0x18, 0x00cf93000000ffffull);
    put64(ram, SG_LINUX_GDT_ADDR + 0x20, 0x00808b0000000000ull);   /* TSS for TR */
}

bool sg_linux_load(struct sg_vm *vm, struct sg_error *err)
{
    if (vm->ram_size < SG_LINUX_MIN_RAM) {
        sg_error_set(err, "-kernel: a Linux guest needs at least %llu MiB of RAM (-m)",
                     (unsigned long long)(SG_LINUX_MIN_RAM >> 20));
        return false;
    }
    size_t klen = 0;
    uint8_t *k = read_file(vm->kernel, &klen, "-kernel", err);
    if (!k)
        return false;
    bool ok = false;
    uint8_t *initrd = NULL;
    size_t ilen = 0;
    if (klen < 0x1000 || get32(k, BP_HEADER_MAGIC) != 0x53726448u /* "HdrS" */) {
        sg_error_set(err, "-kernel %s: not a Linux bzImage (no 'HdrS' setup header)", vm->kernel);
        goto out;
    }
    uint16_t version = get16(k, BP_VERSION);
    if (version < 0x20c || !(get16(k, BP_XLOADFLAGS) & XLF_KERNEL_64)) {
        sg_error_set(err, "-kernel %s: boot protocol %u.%02u without a 64-bit entry point "
                          "(Linux 3.8 or later, x86-64, is needed)",
                     vm->kernel, version >> 8, version & 0xff);
        goto out;
    }
    unsigned setup_sects = k[BP_SETUP_SECTS] ? k[BP_SETUP_SECTS] : 4;
    size_t setup_len = (setup_sects + 1u) * 512u;
    if (setup_len >= klen) {
        sg_error_set(err, "-kernel %s: truncated bzImage", vm->kernel);
        goto out;
    }
    size_t pm_len = klen - setup_len;
    if (SG_LINUX_KERNEL_ADDR + pm_len > vm->ram_low / 2) {
        sg_error_set(err, "-kernel %s: kernel of %zu bytes does not fit in %llu MiB of RAM",
                     vm->kernel, pm_len, (unsigned long long)(vm->ram_size >> 20));
        goto out;
    }
    size_t cmdlen = strlen(vm->cmdline);
    uint32_t cmdline_max = get32(k, BP_CMDLINE_SIZE);
    if (cmdlen >= SG_LINUX_CMDLINE_MAX || (cmdline_max && cmdlen > cmdline_max)) {
        sg_error_set(err, "-append: command line of %zu bytes is longer than the kernel takes (%u)",
                     cmdlen, cmdline_max ? cmdline_max : SG_LINUX_CMDLINE_MAX - 1);
        goto out;
    }
    uint8_t *ram = vm->ram;
    memcpy(ram + SG_LINUX_KERNEL_ADDR, k + setup_len, pm_len);
    memcpy(ram + SG_LINUX_CMDLINE_ADDR, vm->cmdline, cmdlen + 1);

    uint8_t *zp = ram + SG_LINUX_ZERO_PAGE;
    memset(zp, 0, 4096);
    unsigned hdr_end = 0x202u + k[BP_JUMP + 1];   /* the jump at 0x200 skips the header */
    if (hdr_end > 0x280)
        hdr_end = 0x280;
    memcpy(zp + BP_HDR, k + BP_HDR, hdr_end - BP_HDR);
    put16(zp, BP_VID_MODE, 0xffff);                /* "normal" */
    zp[BP_TYPE_OF_LOADER] = 0xff;                  /* undefined loader */
    zp[BP_LOADFLAGS] |= LOADED_HIGH | CAN_USE_HEAP;
    put16(zp, BP_HEAP_END_PTR, 0xfe00);
    put32(zp, BP_CMD_LINE_PTR, SG_LINUX_CMDLINE_ADDR);

    if (vm->initrd[0]) {
        initrd = read_file(vm->initrd, &ilen, "-initrd", err);
        if (!initrd)
            goto out;
        /* As high as the kernel allows, below the top of low RAM: the
         * decompressed kernel grows up from 16 MiB. */
        uint64_t max = get32(zp, BP_INITRD_ADDR_MAX);
        if (!max || version < 0x203)
            max = 0x37ffffff;
        uint64_t top = vm->ram_low < max + 1 ? vm->ram_low : max + 1;
        uint64_t kend = SG_LINUX_KERNEL_ADDR + pm_len;
        if (ilen > top || ((top - ilen) & ~0xfffull) < kend + (64u << 20)) {
            sg_error_set(err, "-initrd %s: %zu bytes do not fit in RAM below %llu MiB next to the "
                              "kernel (raise -m)",
                         vm->initrd, ilen, (unsigned long long)(top >> 20));
            goto out;
        }
        uint64_t at = (top - ilen) & ~0xfffull;
        memcpy(ram + at, initrd, ilen);
        put32(zp, BP_RAMDISK_IMAGE, (uint32_t)at);
        put32(zp, BP_RAMDISK_SIZE, (uint32_t)ilen);
    }

    /* e820: conventional memory, the EBDA/VGA/BIOS hole (ACPI tables and
     * MP table in the BIOS area), RAM from 1 MiB to the PCI hole, and RAM
     * above 4 GiB. */
    e820_add(zp, 0, 0x9fc00, E820_RAM);
    e820_add(zp, 0x9fc00, 0x400, E820_RESERVED);
    e820_add(zp, SG_LINUX_ACPI_ADDR, 0x100000 - SG_LINUX_ACPI_ADDR, E820_RESERVED);
    e820_add(zp, 0x100000, vm->ram_low - 0x100000, E820_RAM);
    e820_add(zp, SG_RAM_HIGH_BASE, vm->ram_size - vm->ram_low, E820_RAM);

    put64(zp, BP_ACPI_RSDP_ADDR, SG_LINUX_ACPI_ADDR);   /* Linux also scans for it */

    write_page_tables(vm);
    ok = sg_acpi_write(vm, (unsigned)vm->nr_drives, err) &&
         sg_mptable_write(vm, (unsigned)vm->nr_drives, err);
out:
    free(k);
    free(initrd);
    return ok;
}

/* MSRs a firmware would leave set: fast strings, MTRRs on with write-back
 * as the default type (Linux keeps the MTRR state it finds). */
static void set_boot_msrs(struct sg_vcpu *vcpu)
{
    static const struct { uint32_t index; uint64_t value; } msrs[] = {
        { 0x1a0, 1 },               /* IA32_MISC_ENABLE: fast strings */
        { 0x2ff, 0x806 },           /* IA32_MTRR_DEF_TYPE: E, WB */
        { 0x10, 0 },                /* IA32_TSC */
    };
    for (size_t i = 0; i < sizeof(msrs) / sizeof(msrs[0]); i++) {
        struct { struct kvm_msrs m; struct kvm_msr_entry e; } one;
        memset(&one, 0, sizeof(one));
        one.m.nmsrs = 1;
        one.e.index = msrs[i].index;
        one.e.data = msrs[i].value;
        /* An MSR this host's KVM lacks is no reason not to boot. */
        (void)ioctl(vcpu->fd, KVM_SET_MSRS, &one);
    }
}

/* LINT0 as ExtINT (the PIC's virtual wire), LINT1 as NMI, as a BIOS
 * leaves the LAPIC: Linux's early timer check goes through the PIC. */
static bool set_boot_lapic(struct sg_vcpu *vcpu, struct sg_error *err)
{
    struct kvm_lapic_state la;
    if (ioctl(vcpu->fd, KVM_GET_LAPIC, &la) < 0) {
        sg_error_set_errno(err, errno, "KVM_GET_LAPIC");
        return false;
    }
    uint32_t lvt0, lvt1;
    memcpy(&lvt0, la.regs + 0x350, 4);
    memcpy(&lvt1, la.regs + 0x360, 4);
    lvt0 = (lvt0 & ~0x700u & ~0x10000u) | 0x700u;   /* ExtINT, unmasked */
    lvt1 = (lvt1 & ~0x700u & ~0x10000u) | 0x400u;   /* NMI, unmasked */
    memcpy(la.regs + 0x350, &lvt0, 4);
    memcpy(la.regs + 0x360, &lvt1, 4);
    if (ioctl(vcpu->fd, KVM_SET_LAPIC, &la) < 0) {
        sg_error_set_errno(err, errno, "KVM_SET_LAPIC");
        return false;
    }
    return true;
}

bool sg_linux_set_boot_state(struct sg_vm *vm, struct sg_vcpu *vcpu, struct sg_error *err)
{
    (void)vm;
    struct kvm_sregs sr;
    if (ioctl(vcpu->fd, KVM_GET_SREGS, &sr) < 0) {
        sg_error_set_errno(err, errno, "KVM_GET_SREGS");
        return false;
    }
    sg_vcpu_flat_segment(&sr.cs, 0x10, 11, true);
    sg_vcpu_flat_segment(&sr.ds, 0x18, 3, false);
    sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
    memset(&sr.tr, 0, sizeof(sr.tr));
    sr.tr.selector = 0x20;
    sr.tr.limit = 0xffff;
    sr.tr.type = 11;
    sr.tr.present = 1;
    memset(&sr.ldt, 0, sizeof(sr.ldt));
    sr.ldt.type = 2;
    sr.ldt.present = 1;
    sr.ldt.limit = 0xffff;
    sr.gdt.base = SG_LINUX_GDT_ADDR;
    sr.gdt.limit = 0x27;
    sr.idt.base = 0;
    sr.idt.limit = 0;
    sr.cr0 = 0x80000033;   /* PG | NE | ET | MP | PE */
    sr.cr2 = 0;
    sr.cr3 = SG_LINUX_PML4_ADDR;
    sr.cr4 = 0x20;         /* PAE */
    sr.efer = 0x500;       /* LME | LMA */
    sr.apic_base = 0xfee00000u | 0x800 /* enabled */ | (vcpu->index == 0 ? 0x100 : 0);
    memset(sr.interrupt_bitmap, 0, sizeof(sr.interrupt_bitmap));
    if (ioctl(vcpu->fd, KVM_SET_SREGS, &sr) < 0) {
        sg_error_set_errno(err, errno, "KVM_SET_SREGS");
        return false;
    }
    struct kvm_regs r;
    memset(&r, 0, sizeof(r));
    r.rip = SG_LINUX_KERNEL_ADDR + 0x200;   /* the 64-bit entry point */
    r.rsi = SG_LINUX_ZERO_PAGE;
    r.rsp = SG_LINUX_ZERO_PAGE - 0x10;
    r.rflags = 2;
    if (ioctl(vcpu->fd, KVM_SET_REGS, &r) < 0) {
        sg_error_set_errno(err, errno, "KVM_SET_REGS");
        return false;
    }
    struct kvm_fpu fpu;
    memset(&fpu, 0, sizeof(fpu));
    fpu.fcw = 0x37f;
    fpu.mxcsr = 0x1f80;
    if (ioctl(vcpu->fd, KVM_SET_FPU, &fpu) < 0) {
        sg_error_set_errno(err, errno, "KVM_SET_FPU");
        return false;
    }
    set_boot_msrs(vcpu);
    return set_boot_lapic(vcpu, err);
}

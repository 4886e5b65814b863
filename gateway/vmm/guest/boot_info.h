/* boot_info.h: the contract between snapgate-vmm and its demo guest.
 * The VMM builds the whole early machine (GDT, TSS, identity page tables,
 * long mode) so the guest's ring-0 part stays a few instructions long:
 * on kvm_pvm every ring-0 instruction is emulated (~1800x slower).
 *
 * kvm_pvm ignores IOPL (a PVM guest's ring 3 is the host's ring 3): port
 * I/O in ring 3 raises #GP, and the guest's #GP handler performs it in
 * ring 0 (guest/entry.S).  On hardware KVM IOPL 3 just works. */
#ifndef SG_GUEST_BOOT_INFO_H
#define SG_GUEST_BOOT_INFO_H

#ifndef __ASSEMBLER__
#include <stdint.h>
#endif

#define SG_BOOT_INFO_ADDR   0x1000u   /* struct sg_boot_info */
#define SG_GDT_ADDR         0x2000u   /* 7 descriptors, see SG_SEL_* */
#define SG_TSS_ADDR         0x3000u
#define SG_IDT_ADDR         0x4000u   /* filled by the guest (handler addresses) */
#define SG_PML4_ADDR        0x8000u
#define SG_PDPT_ADDR        0x9000u
#define SG_PD_ADDR          0x10000u  /* one page per GiB mapped (2 MiB pages) */
#define SG_PD_MAX_PAGES     32u       /* identity map up to 32 GiB of addresses */
#define SG_GUEST_LOAD_ADDR  0x100000u /* image is linked and loaded here */
#define SG_GUEST_MIN_RAM    (16u << 20)

/* Guest RAM layout, as on a PC: the first SG_RAM_LOW_MAX bytes of RAM at
 * guest physical 0, the rest from SG_RAM_HIGH_BASE (4 GiB) up, leaving the
 * 32-bit PCI hole (3-4 GiB; KVM's TSS and identity-map pages sit at its top)
 * free.  "RAM index" i is the i-th byte of RAM in that order: the offset in
 * the VMM's one host mapping and in the vmstate's RAM image. */
#define SG_RAM_LOW_MAX      (3ull << 30)
#define SG_RAM_HIGH_BASE    (4ull << 30)
#define SG_GUEST_MAX_RAM    (16ull << 30)

#define SG_SEL_KCODE 0x08
#define SG_SEL_KDATA 0x10
#define SG_SEL_UDATA 0x18   /* used with RPL 3 */
#define SG_SEL_UCODE 0x20
#define SG_SEL_TSS   0x28   /* 16-byte system descriptor */

/* Port the guest writes to power off (value 0) or report a fatal fault (!= 0). */
#define SG_POWEROFF_PORT 0x604u

/* Paravirtual idle: writing N (32-bit) here sleeps the vCPU up to N
 * microseconds (ring 3 cannot hlt, and a spinning guest would burn a host
 * core).  The VMM cuts the sleep short when it wants the vCPU. */
#define SG_IDLE_PORT 0x608u
#define SG_IDLE_MAX_US 200000u

#define SG_BOOT_MAGIC 0x53474254u   /* "SGBT" */

#ifndef __ASSEMBLER__
struct sg_boot_info {
    uint32_t magic;
    uint32_t version;
    uint64_t ram_size;      /* bytes of guest RAM */
    uint64_t tsc_khz;       /* from KVM_GET_TSC_KHZ; the guest's only clock */
    char cmdline[256];      /* -append, NUL terminated */
    uint64_t ram_low;       /* version >= 2: bytes of RAM below 4 GiB (rest from 4 GiB) */
};
#endif

#endif

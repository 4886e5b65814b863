/* linux_boot.h: booting an unmodified Linux bzImage (x86 64-bit boot
 * protocol, Documentation/arch/x86/boot.rst) on snapgate-vmm's machine:
 * zero page with the setup header, an e820 map around the PCI hole, the
 * command line, the initrd, ACPI tables and an MP table for the in-kernel
 * LAPIC/IOAPIC,
 * identity page tables and the vCPU state at the 64-bit entry point. */
#ifndef SG_LINUX_BOOT_H
#define SG_LINUX_BOOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sg_error.h"

struct sg_vm;
struct sg_vcpu;

/* Guest physical layout of what the VMM writes below 1 MiB. */
#define SG_LINUX_GDT_ADDR       0x500u
#define SG_LINUX_ZERO_PAGE      0x7000u
#define SG_LINUX_PML4_ADDR      0x9000u
#define SG_LINUX_PDPT_ADDR      0xa000u
#define SG_LINUX_PD_ADDR        0xb000u    /* 4 pages: identity map of 0-4 GiB */
#define SG_LINUX_CMDLINE_ADDR   0x20000u
#define SG_LINUX_CMDLINE_MAX    4096u
#define SG_LINUX_ACPI_ADDR      0xe0000u   /* ACPI tables, RSDP first (acpi.c) */
#define SG_LINUX_BIOS_ADDR      0xf0000u   /* MP table (BIOS area Linux scans) */
#define SG_LINUX_KERNEL_ADDR    0x100000u
#define SG_LINUX_MIN_RAM        (64ull << 20)

/* The first PCI interrupt line given to virtio devices: GSIs 16-23 reach
 * the IOAPIC only (KVM's default routing), so they never share an ISA pin. */
#define SG_LINUX_PCI_GSI_BASE   16u

/* Reads vm->kernel (and vm->initrd) and writes the boot image into RAM.
 * Called at start and on every reset (RAM is zero then). */
bool sg_linux_load(struct sg_vm *vm, struct sg_error *err);
/* vCPU state at the kernel's 64-bit entry (RSI = zero page). */
bool sg_linux_set_boot_state(struct sg_vm *vm, struct sg_vcpu *vcpu, struct sg_error *err);

/* mptable.c: MP specification 1.4 tables at SG_LINUX_BIOS_ADDR: one CPU per
 * vCPU, the IOAPIC, ISA IRQs 0-15 on pins 0-15, PCI INTA of slot s on GSI
 * SG_LINUX_PCI_GSI_BASE + s - 1. */
bool sg_mptable_write(struct sg_vm *vm, unsigned nr_pci_slots, struct sg_error *err);
/* The byte that makes the sum of p[0..n) and it zero (MP and ACPI tables). */
uint8_t sg_fw_checksum(const uint8_t *p, size_t n);

/* acpi.c: RSDP, RSDT/XSDT, FADT, FACS, MADT and DSDT at SG_LINUX_ACPI_ADDR
 * (64 KiB): the machine of the MP table plus the acpi-pm device's power-off
 * and the reset register; the host bridge's _PRT routes like the MP table. */
bool sg_acpi_write(struct sg_vm *vm, unsigned nr_pci_slots, struct sg_error *err);

/* A kvm_pvm /dev/kvm runs a guest's ring 0 by emulation: a Linux kernel
 * would take hours to boot.  Returns true (and a message) on such a host. */
bool sg_linux_host_is_pvm(char *msg, size_t cap);

#endif

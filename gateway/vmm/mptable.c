/* mptable.c: the Intel MultiProcessor Specification 1.4 tables Linux reads
 * when there is no ACPI: where the LAPIC and IOAPIC are and how every
 * interrupt line reaches an IOAPIC pin.  The routing written here must be
 * the one KVM's default GSI routing implements: ISA IRQ n drives IOAPIC
 * pin n (and PIC input n), GSIs 16-23 drive IOAPIC pins 16-23 only.
 *
 * Layout at SG_LINUX_BIOS_ADDR: the 16-byte floating pointer, then the
 * configuration table (header + entries). */
#include <stdio.h>
#include <string.h>

#include "linux_boot.h"
#include "vm.h"

#define MP_IOAPIC_ADDR 0xfec00000u
#define MP_LAPIC_ADDR 0xfee00000u
#define MP_BUS_PCI 0
#define MP_BUS_ISA 1

enum { MP_PROCESSOR = 0, MP_BUS, MP_IOAPIC, MP_INTSRC, MP_LINTSRC };
enum { MP_INT = 0, MP_NMI = 1, MP_EXTINT = 3 };
/* irqflag: polarity in bits 0-1 (1 high, 3 low), trigger in 2-3 (1 edge, 3 level). */
#define MP_IRQ_DEFAULT 0x0
#define MP_IRQ_LEVEL_HIGH 0xd

uint8_t sg_fw_checksum(const uint8_t *p, size_t n)
{
    uint8_t s = 0;
    for (size_t i = 0; i < n; i++)
        s = (uint8_t)(s + p[i]);
    return (uint8_t)(0u - s);
}

struct mpw {
    uint8_t *base;   /* configuration table header */
    size_t len;
    uint16_t count;
};

static uint8_t *entry(struct mpw *w, size_t size)
{
    uint8_t *e = w->base + w->len;
    memset(e, 0, size);
    w->len += size;
    w->count++;
    return e;
}

static void intsrc(struct mpw *w, uint8_t type, uint16_t flags, uint8_t bus, uint8_t busirq,
                   uint8_t apic, uint8_t pin)
{
    uint8_t *e = entry(w, 8);
    e[0] = MP_INTSRC;
    e[1] = type;
    memcpy(e + 2, &flags, 2);
    e[4] = bus;
    e[5] = busirq;
    e[6] = apic;
    e[7] = pin;
}

bool sg_mptable_write(struct sg_vm *vm, unsigned nr_pci_slots, struct sg_error *err)
{
    uint8_t *fp = (uint8_t *)vm->ram + SG_LINUX_BIOS_ADDR;
    struct mpw w = { .base = fp + 16, .len = 44, .count = 0 };
    if (nr_pci_slots > 24 - SG_LINUX_PCI_GSI_BASE) {
        sg_error_set(err, "too many PCI devices for the IOAPIC (%u)", nr_pci_slots);
        return false;
    }
    memset(fp, 0, 4096);
    uint8_t ioapic_id = (uint8_t)vm->nr_vcpus;

    for (int c = 0; c < vm->nr_vcpus; c++) {
        uint8_t *e = entry(&w, 20);
        e[0] = MP_PROCESSOR;
        e[1] = (uint8_t)c;             /* LAPIC ID = vCPU index (cpuid leaf 1) */
        e[2] = 0x14;                   /* LAPIC version (integrated) */
        e[3] = (uint8_t)(1 | (c == 0 ? 2 : 0));   /* enabled, BSP */
        uint32_t sig = 0x600, feat = 0x201;        /* family 6; FPU, APIC */
        memcpy(e + 4, &sig, 4);
        memcpy(e + 8, &feat, 4);
    }
    uint8_t *b = entry(&w, 8);
    b[0] = MP_BUS;
    b[1] = MP_BUS_PCI;
    memcpy(b + 2, "PCI   ", 6);
    b = entry(&w, 8);
    b[0] = MP_BUS;
    b[1] = MP_BUS_ISA;
    memcpy(b + 2, "ISA   ", 6);
    uint8_t *io = entry(&w, 8);
    io[0] = MP_IOAPIC;
    io[1] = ioapic_id;
    io[2] = 0x11;
    io[3] = 1;                         /* enabled */
    uint32_t ioaddr = MP_IOAPIC_ADDR;
    memcpy(io + 4, &ioaddr, 4);

    /* ISA: conforming (edge, active high) on the pin of the same number;
     * IRQ 2 is the PIC cascade and has no line. */
    for (uint8_t irq = 0; irq < 16; irq++)
        if (irq != 2)
            intsrc(&w, MP_INT, MP_IRQ_DEFAULT, MP_BUS_ISA, irq, ioapic_id, irq);
    /* PCI: INTA# of slot s (bus IRQ = slot << 2 | pin) on its own GSI,
     * level triggered; KVM's IOAPIC takes the line level as given. */
    for (unsigned s = 1; s <= nr_pci_slots; s++)
        intsrc(&w, MP_INT, MP_IRQ_LEVEL_HIGH, MP_BUS_PCI, (uint8_t)(s << 2), ioapic_id,
               (uint8_t)(SG_LINUX_PCI_GSI_BASE + s - 1));
    uint8_t *l = entry(&w, 8);
    l[0] = MP_LINTSRC;
    l[1] = MP_EXTINT;
    l[4] = MP_BUS_ISA;
    l[6] = 0xff;                       /* every LAPIC */
    l[7] = 0;                          /* LINT0 */
    l = entry(&w, 8);
    l[0] = MP_LINTSRC;
    l[1] = MP_NMI;
    l[4] = MP_BUS_ISA;
    l[6] = 0xff;
    l[7] = 1;                          /* LINT1 */

    uint8_t *h = w.base;
    memcpy(h, "PCMP", 4);
    uint16_t len16 = (uint16_t)w.len;
    memcpy(h + 4, &len16, 2);
    h[6] = 4;                          /* spec 1.4 */
    memcpy(h + 8, "SNAPGATE", 8);
    memcpy(h + 16, "snapgate-vmm", 12);
    memcpy(h + 34, &w.count, 2);
    uint32_t lapic = MP_LAPIC_ADDR;
    memcpy(h + 36, &lapic, 4);
    h[7] = sg_fw_checksum(h, w.len);

    memcpy(fp, "_MP_", 4);
    uint32_t phys = SG_LINUX_BIOS_ADDR + 16;
    memcpy(fp + 4, &phys, 4);
    fp[8] = 1;                         /* length in 16-byte units */
    fp[9] = 4;
    fp[10] = sg_fw_checksum(fp, 16);
    return true;
}

/* acpi.c: the ACPI tables of a -kernel boot, written into guest RAM at
 * SG_LINUX_ACPI_ADDR (0xE0000, where Linux scans for the RSDP; e820 marks
 * 0xE0000-0xFFFFF reserved):
 *
 *   RSDP (ACPI 2.0) -> RSDT + XSDT -> FADT, MADT
 *   FADT (revision 3) -> FACS, DSDT; PM1a event/control blocks of the
 *        acpi-pm device, SCI on IRQ 9, no SMI_CMD (always in ACPI mode),
 *        no PM timer, RESET_REG = port 0xCF9 value 6, the fixed-feature
 *        power button (PWRBTN_STS/EN in PM1a, as QEMU's PIIX4), no sleep
 *        button, no 8042; the CMOS RTC's century register (0x32)
 *   MADT: one LAPIC per vCPU, the IOAPIC, IRQ 9 (SCI) level/high, NMI on
 *        LINT1: the same machine as the MP table (mptable.c)
 *   DSDT: \_S5 (SLP_TYP SG_ACPI_SLP_TYP_S5) and \_SB.PCI0, the host bridge
 *        (PNP0A03) with its windows (_CRS) and the routing of INTA of
 *        slot s to GSI SG_LINUX_PCI_GSI_BASE + s - 1 (_PRT); \_SB.RTC_,
 *        the CMOS clock (PNP0B00: ports 0x70-0x71, IRQ 8).
 *
 * The AML is written by hand (a few named objects), see aml_* below. */
#include <stdio.h>
#include <string.h>

#include "devices/acpi_pm.h"
#include "linux_boot.h"
#include "vm.h"

#define ACPI_AREA_LEN 0x10000u
#define IOAPIC_ADDR 0xfec00000u
#define LAPIC_ADDR 0xfee00000u
#define PCI_HOLE_END 0xfebfffffu     /* below the IOAPIC */

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* ---- AML (ACPI 6.4 chapter 20) -------------------------------------------- */

struct aml {
    uint8_t b[2048];
    size_t len;
    bool overflow;
};

static void aml_bytes(struct aml *a, const void *p, size_t n)
{
    if (a->len + n > sizeof(a->b)) {
        a->overflow = true;
        return;
    }
    memcpy(a->b + a->len, p, n);
    a->len += n;
}

static void aml_byte(struct aml *a, uint8_t v) { aml_bytes(a, &v, 1); }

/* Integer constants in their shortest encoding. */
static void aml_int(struct aml *a, uint64_t v)
{
    uint8_t e[9];
    unsigned n;
    if (v <= 1) {
        aml_byte(a, (uint8_t)v);            /* ZeroOp, OneOp */
        return;
    }
    if (v <= 0xff) {
        e[0] = 0x0a, n = 1;
    } else if (v <= 0xffff) {
        e[0] = 0x0b, n = 2;
    } else if (v <= 0xffffffffu) {
        e[0] = 0x0c, n = 4;
    } else {
        e[0] = 0x0e, n = 8;
    }
    for (unsigned i = 0; i < n; i++)
        e[1 + i] = (uint8_t)(v >> (8 * i));
    aml_bytes(a, e, 1 + n);
}

/* An object with a PkgLength: open writes the opcode and returns where the
 * body starts; close inserts the PkgLength in front of the body. */
static size_t aml_open(struct aml *a, const uint8_t *op, size_t oplen)
{
    aml_bytes(a, op, oplen);
    return a->len;
}

static void aml_close(struct aml *a, size_t start)
{
    if (a->overflow)
        return;
    size_t body = a->len - start, n = 1;
    while (n < 4 && body + n > (n == 1 ? 0x3fu : (1u << (4 + 8 * (n - 1))) - 1))
        n++;
    if (a->len + n > sizeof(a->b) || body + n > 0xfffffff) {
        a->overflow = true;
        return;
    }
    size_t v = body + n;
    memmove(a->b + start + n, a->b + start, body);
    if (n == 1) {
        a->b[start] = (uint8_t)v;
    } else {
        a->b[start] = (uint8_t)((n - 1) << 6 | (v & 0xf));
        for (size_t i = 1; i < n; i++)
            a->b[start + i] = (uint8_t)(v >> (4 + 8 * (i - 1)));
    }
    a->len += n;
}

/* Name(NAME, ...): NAME is a 4-character NameSeg (a leading '\' allowed). */
static void aml_name(struct aml *a, const char *name)
{
    aml_byte(a, 0x08);                      /* NameOp */
    aml_bytes(a, name, strlen(name));
}

static void aml_name_int(struct aml *a, const char *name, uint64_t v)
{
    aml_name(a, name);
    aml_int(a, v);
}

/* Resource descriptors (ACPI 6.4 6.4) for the host bridge's _CRS. */
static void res_word(struct aml *a, uint8_t type, uint8_t tflags, uint16_t min, uint16_t max)
{
    uint8_t d[16] = { 0x88, 13, 0, type, 0x0c /* producer, MinFixed, MaxFixed */, tflags };
    put16(d + 8, min);
    put16(d + 10, max);
    put16(d + 14, (uint16_t)(max - min + 1));
    aml_bytes(a, d, sizeof(d));
}

static void res_dword_mem(struct aml *a, uint8_t tflags, uint32_t min, uint32_t max)
{
    uint8_t d[26] = { 0x87, 23, 0, 0 /* memory */, 0x0c, tflags };
    put32(d + 10, min);
    put32(d + 14, max);
    put32(d + 22, max - min + 1);
    aml_bytes(a, d, sizeof(d));
}

static void build_dsdt_body(struct aml *a, const struct sg_vm *vm, unsigned nr_pci_slots)
{
    /* Name(\_S5, Package() { SLP_TYPa, SLP_TYPb, 0, 0 }) */
    aml_name(a, "\\_S5_");
    size_t pkg = aml_open(a, (const uint8_t[]){ 0x12 }, 1);
    aml_byte(a, 4);
    aml_int(a, SG_ACPI_SLP_TYP_S5);
    aml_int(a, SG_ACPI_SLP_TYP_S5);
    aml_int(a, 0);
    aml_int(a, 0);
    aml_close(a, pkg);

    size_t scope = aml_open(a, (const uint8_t[]){ 0x10 }, 1);   /* ScopeOp */
    aml_bytes(a, "\\_SB_", 5);
    size_t dev = aml_open(a, (const uint8_t[]){ 0x5b, 0x82 }, 2);   /* DeviceOp */
    aml_bytes(a, "PCI0", 4);
    aml_name_int(a, "_HID", 0x030ad041u);   /* EisaId("PNP0A03") */
    aml_name_int(a, "_UID", 0);
    aml_name_int(a, "_BBN", 0);

    /* _CRS: bus 0-255, the configuration ports, I/O around them, the VGA
     * window and the 32-bit hole between RAM and the IOAPIC. */
    aml_name(a, "_CRS");
    size_t buf = aml_open(a, (const uint8_t[]){ 0x11 }, 1);    /* BufferOp */
    struct aml r = { .len = 0 };
    res_word(&r, 2, 0, 0, 0xff);
    aml_bytes(&r, (const uint8_t[]){ 0x47, 1, 0xf8, 0x0c, 0xf8, 0x0c, 1, 8 }, 8);
    res_word(&r, 1, 3, 0, 0x0cf7);
    res_word(&r, 1, 3, 0x0d00, 0xffff);
    res_dword_mem(&r, 3 /* cacheable, RW */, 0xa0000, 0xbffff);
    if (vm->ram_low <= PCI_HOLE_END)
        res_dword_mem(&r, 1 /* RW */, (uint32_t)vm->ram_low, PCI_HOLE_END);
    aml_bytes(&r, (const uint8_t[]){ 0x79, 0 }, 2);            /* end tag */
    a->overflow |= r.overflow;
    aml_int(a, r.len);
    aml_bytes(a, r.b, r.len);
    aml_close(a, buf);

    /* _PRT: Package() { Package() { 0xSSSSFFFF, pin INTA, Zero, GSI }, ... } */
    aml_name(a, "_PRT");
    size_t prt = aml_open(a, (const uint8_t[]){ 0x12 }, 1);
    aml_byte(a, (uint8_t)nr_pci_slots);
    for (unsigned s = 1; s <= nr_pci_slots; s++) {
        size_t e = aml_open(a, (const uint8_t[]){ 0x12 }, 1);
        aml_byte(a, 4);
        aml_int(a, (uint64_t)s << 16 | 0xffff);
        aml_int(a, 0);
        aml_int(a, 0);
        aml_int(a, SG_LINUX_PCI_GSI_BASE + s - 1);
        aml_close(a, e);
    }
    aml_close(a, prt);
    aml_close(a, dev);

    /* The CMOS clock (devices/rtc.c): Linux's rtc_cmos binds to it by PNP. */
    dev = aml_open(a, (const uint8_t[]){ 0x5b, 0x82 }, 2);
    aml_bytes(a, "RTC_", 4);
    aml_name_int(a, "_HID", 0x000bd041u);   /* EisaId("PNP0B00") */
    aml_name(a, "_CRS");
    buf = aml_open(a, (const uint8_t[]){ 0x11 }, 1);
    static const uint8_t rtc_res[] = {
        0x47, 1, 0x70, 0x00, 0x70, 0x00, 1, 2,   /* IO(Decode16, 0x70, 0x70, 1, 2) */
        0x22, 0x00, 0x01,                        /* IRQNoFlags() {8} */
        0x79, 0,                                 /* end tag */
    };
    aml_int(a, sizeof(rtc_res));
    aml_bytes(a, rtc_res, sizeof(rtc_res));
    aml_close(a, buf);
    aml_close(a, dev);
    aml_close(a, scope);
}

/* ---- tables ----------------------------------------------------------------- */

struct area {
    uint8_t *base;      /* host address of SG_LINUX_ACPI_ADDR */
    uint32_t used;
};

static uint8_t *alloc(struct area *ar, uint32_t len, uint32_t *gpa)
{
    uint32_t at = (ar->used + 63u) & ~63u;
    if (at + len > ACPI_AREA_LEN)
        return NULL;
    ar->used = at + len;
    *gpa = SG_LINUX_ACPI_ADDR + at;
    return ar->base + at;
}

static void header(uint8_t *t, const char *sig, uint32_t len, uint8_t rev)
{
    memcpy(t, sig, 4);
    put32(t + 4, len);
    t[8] = rev;
    memcpy(t + 10, "SNPGTE", 6);
    memcpy(t + 16, "SGVMM   ", 8);
    put32(t + 24, 1);
    memcpy(t + 28, "SNPG", 4);
    put32(t + 32, 1);
}

static void finish(uint8_t *t)
{
    uint32_t len;
    memcpy(&len, t + 4, 4);
    t[9] = 0;
    t[9] = sg_fw_checksum(t, len);
}

/* Generic Address Structure: system I/O. */
static void gas_io(uint8_t *g, uint8_t bits, uint8_t access, uint16_t port)
{
    g[0] = 1;
    g[1] = bits;
    g[2] = 0;
    g[3] = access;
    put64(g + 4, port);
}

static uint8_t *build_fadt(struct area *ar, uint32_t facs, uint32_t dsdt, uint32_t *gpa)
{
    enum { FADT_LEN = 244 };
    uint8_t *f = alloc(ar, FADT_LEN, gpa);
    if (!f)
        return NULL;
    header(f, "FACP", FADT_LEN, 3);
    put32(f + 36, facs);
    put32(f + 40, dsdt);
    put16(f + 46, SG_ACPI_SCI_IRQ);
    /* SMI_CMD (48) = 0: no transition, the machine is always in ACPI mode. */
    put32(f + 56, SG_ACPI_PM_BASE);                          /* PM1a_EVT_BLK */
    put32(f + 64, SG_ACPI_PM_BASE + SG_ACPI_PM1_CNT_OFF);    /* PM1a_CNT_BLK */
    f[88] = SG_ACPI_PM1_EVT_LEN;
    f[89] = SG_ACPI_PM1_CNT_LEN;
    put16(f + 96, 0x0fff);      /* P_LVL2_LAT > 100: no C2 */
    put16(f + 98, 0x0fff);      /* P_LVL3_LAT > 1000: no C3 */
    f[108] = 0x32;              /* CENTURY: the CMOS register (devices/rtc.c) */
    /* IAPC_BOOT_ARCH: legacy devices (the UART, the CMOS RTC); no 8042 */
    put16(f + 109, 1u << 0);
    /* WBINVD, PROC_C1, SLP_BUTTON (no fixed sleep button), FIX_RTC,
     * RESET_REG_SUP; PWR_BUTTON (bit 4) clear: the power button is the fixed
     * feature in PM1a (devices/acpi_pm.c, QMP system_powerdown). */
    put32(f + 112, 1u << 0 | 1u << 2 | 1u << 5 | 1u << 6 | 1u << 10);
    gas_io(f + 116, 8, 1, SG_ACPI_RESET_PORT);
    f[128] = SG_ACPI_RESET_VALUE;
    /* X_FIRMWARE_CTRL (132) stays 0: only one of the two FACS pointers may be set. */
    put64(f + 140, dsdt);
    gas_io(f + 148, 8 * SG_ACPI_PM1_EVT_LEN, 0, SG_ACPI_PM_BASE);
    gas_io(f + 172, 8 * SG_ACPI_PM1_CNT_LEN, 0, SG_ACPI_PM_BASE + SG_ACPI_PM1_CNT_OFF);
    finish(f);
    return f;
}

static uint8_t *build_madt(struct area *ar, const struct sg_vm *vm, uint32_t *gpa)
{
    uint32_t len = 44 + 8u * (uint32_t)vm->nr_vcpus + 12 + 10 + 6;
    uint8_t *m = alloc(ar, len, gpa);
    if (!m)
        return NULL;
    header(m, "APIC", len, 1);
    put32(m + 36, LAPIC_ADDR);
    put32(m + 40, 1);                           /* PCAT_COMPAT: the 8259s exist */
    uint8_t *e = m + 44;
    for (int c = 0; c < vm->nr_vcpus; c++, e += 8) {
        e[0] = 0;                               /* processor local APIC */
        e[1] = 8;
        e[2] = (uint8_t)c;                      /* ACPI processor UID */
        e[3] = (uint8_t)c;                      /* APIC ID = vCPU index */
        put32(e + 4, 1);                        /* enabled */
    }
    e[0] = 1;                                   /* I/O APIC */
    e[1] = 12;
    e[2] = (uint8_t)vm->nr_vcpus;               /* its ID, as in the MP table */
    put32(e + 4, IOAPIC_ADDR);
    put32(e + 8, 0);                            /* GSI base */
    e += 12;
    e[0] = 2;                                   /* interrupt source override */
    e[1] = 10;
    e[2] = 0;                                   /* ISA */
    e[3] = SG_ACPI_SCI_IRQ;
    put32(e + 4, SG_ACPI_SCI_IRQ);
    put16(e + 8, 0x000d);                       /* active high, level */
    e += 10;
    e[0] = 4;                                   /* local APIC NMI */
    e[1] = 6;
    e[2] = 0xff;                                /* every processor */
    put16(e + 3, 0);
    e[5] = 1;                                   /* LINT1 */
    finish(m);
    return m;
}

bool sg_acpi_write(struct sg_vm *vm, unsigned nr_pci_slots, struct sg_error *err)
{
    struct area ar = { .base = (uint8_t *)vm->ram + SG_LINUX_ACPI_ADDR, .used = 0 };
    memset(ar.base, 0, ACPI_AREA_LEN);
    if (nr_pci_slots > 24 - SG_LINUX_PCI_GSI_BASE || vm->nr_vcpus > 200) {
        sg_error_set(err, "ACPI: too many PCI devices (%u) or vCPUs", nr_pci_slots);
        return false;
    }
    uint32_t rsdp_at, rsdt_at, xsdt_at, facs_at, dsdt_at, fadt_at, madt_at;
    uint8_t *rsdp = alloc(&ar, 36, &rsdp_at);
    uint8_t *rsdt = alloc(&ar, 36 + 2 * 4, &rsdt_at);
    uint8_t *xsdt = alloc(&ar, 36 + 2 * 8, &xsdt_at);
    uint8_t *facs = alloc(&ar, 64, &facs_at);

    struct aml a = { .len = 0 };
    build_dsdt_body(&a, vm, nr_pci_slots);
    uint8_t *dsdt = a.overflow ? NULL : alloc(&ar, 36 + (uint32_t)a.len, &dsdt_at);
    uint8_t *fadt = dsdt ? build_fadt(&ar, facs_at, dsdt_at, &fadt_at) : NULL;
    uint8_t *madt = fadt ? build_madt(&ar, vm, &madt_at) : NULL;
    if (!madt) {
        sg_error_set(err, "ACPI tables do not fit in %u bytes", ACPI_AREA_LEN);
        return false;
    }
    header(dsdt, "DSDT", 36 + (uint32_t)a.len, 2);
    memcpy(dsdt + 36, a.b, a.len);
    finish(dsdt);

    memcpy(facs, "FACS", 4);
    put32(facs + 4, 64);
    facs[32] = 1;                               /* version (ACPI 2.0) */

    header(rsdt, "RSDT", 36 + 2 * 4, 1);
    put32(rsdt + 36, fadt_at);
    put32(rsdt + 40, madt_at);
    finish(rsdt);
    header(xsdt, "XSDT", 36 + 2 * 8, 1);
    put64(xsdt + 36, fadt_at);
    put64(xsdt + 44, madt_at);
    finish(xsdt);

    memcpy(rsdp, "RSD PTR ", 8);
    memcpy(rsdp + 9, "SNPGTE", 6);
    rsdp[15] = 2;                               /* ACPI 2.0+ */
    put32(rsdp + 16, rsdt_at);
    put32(rsdp + 20, 36);
    put64(rsdp + 24, xsdt_at);
    rsdp[8] = sg_fw_checksum(rsdp, 20);
    rsdp[32] = sg_fw_checksum(rsdp, 36);
    return true;
}

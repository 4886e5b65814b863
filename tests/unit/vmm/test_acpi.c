/* The ACPI tables of a -kernel boot (acpi.c) read back as a guest's ACPI
 * code reads them, and the acpi-pm device alone (power-off, the fixed power
 * button and its SCI, reset ports, save/load).  SG_ACPI_DUMP=DIR also writes each table to DIR/SIG.dat
 * (for `iasl -d`). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "devices/acpi_pm.h"
#include "linux_boot.h"
#include "vm.h"

static int exits, exit_kind;

void sg_vm_guest_exit(struct sg_vm *vm, int kind, uint32_t code)
{
    (void)vm, (void)code;
    exits++;
    exit_kind = kind;
}

/* The SCI as the device drives it: every sg_vm_set_irq call. */
static int irq_calls, irq_last = -1, irq_level = -1;

void sg_vm_set_irq(struct sg_vm *vm, unsigned irq, int level)
{
    (void)vm;
    irq_calls++;
    irq_last = (int)irq;
    irq_level = level;
}

static uint8_t ram[0x100000];

static uint32_t g32(uint32_t gpa) { uint32_t v; memcpy(&v, ram + gpa, 4); return v; }
static uint64_t g64(uint32_t gpa) { uint64_t v; memcpy(&v, ram + gpa, 8); return v; }

static uint8_t sum(uint32_t gpa, uint32_t len)
{
    uint8_t s = 0;
    for (uint32_t i = 0; i < len; i++)
        s = (uint8_t)(s + ram[gpa + i]);
    return s;
}

/* A table at gpa with signature sig and a valid checksum; returns its length. */
static uint32_t table(uint32_t gpa, const char *sig)
{
    assert_true(gpa >= SG_LINUX_ACPI_ADDR && gpa < SG_LINUX_ACPI_ADDR + 0x10000);
    assert_memory_equal(ram + gpa, sig, 4);
    uint32_t len = g32(gpa + 4);
    assert_true(len >= 36 && gpa + len <= SG_LINUX_ACPI_ADDR + 0x10000);
    assert_int_equal(sum(gpa, len), 0);
    const char *dir = getenv("SG_ACPI_DUMP");
    if (dir) {
        char path[512];
        snprintf(path, sizeof(path), "%s/%.4s.dat", dir, sig);
        FILE *f = fopen(path, "wb");
        if (f) {
            fwrite(ram + gpa, 1, len, f);
            fclose(f);
        }
    }
    return len;
}

/* AML PkgLength at p: returns the value, *n = bytes it takes. */
static uint32_t pkglen(const uint8_t *p, unsigned *n)
{
    unsigned extra = p[0] >> 6;
    uint32_t v = extra ? (p[0] & 0xfu) : p[0];
    for (unsigned i = 0; i < extra; i++)
        v |= (uint32_t)p[1 + i] << (4 + 8 * i);
    *n = 1 + extra;
    return v;
}

static const uint8_t *find_bytes(const uint8_t *p, size_t len, const void *needle, size_t nl)
{
    for (size_t i = 0; i + nl <= len; i++)
        if (!memcmp(p + i, needle, nl))
            return p + i;
    return NULL;
}

static const uint8_t *find(const uint8_t *p, size_t len, const char *needle)
{
    return find_bytes(p, len, needle, strlen(needle));
}

static void check_tables(int nr_drives, uint64_t ram_low)
{
    static struct sg_vm vm;
    memset(&vm, 0, sizeof(vm));
    memset(ram, 0xcc, sizeof(ram));
    vm.ram = ram;
    vm.nr_vcpus = 1;
    vm.ram_low = ram_low;
    struct sg_error err = { 0 };
    assert_true(sg_acpi_write(&vm, (unsigned)nr_drives, &err));
    /* The MP table (for acpi=off) lives beside them and leaves them whole. */
    assert_true(sg_mptable_write(&vm, (unsigned)nr_drives, &err));
    assert_memory_equal(ram + SG_LINUX_BIOS_ADDR, "_MP_", 4);

    /* RSDP where Linux scans (16-byte aligned in 0xE0000-0xFFFFF). */
    uint32_t rsdp = SG_LINUX_ACPI_ADDR;
    assert_memory_equal(ram + rsdp, "RSD PTR ", 8);
    assert_int_equal(sum(rsdp, 20), 0);
    assert_int_equal(ram[rsdp + 15], 2);
    assert_int_equal(g32(rsdp + 20), 36);
    assert_int_equal(sum(rsdp, 36), 0);

    uint32_t rsdt = g32(rsdp + 16), xsdt = (uint32_t)g64(rsdp + 24);
    assert_int_equal(table(rsdt, "RSDT"), 36 + 8);
    assert_int_equal(table(xsdt, "XSDT"), 36 + 16);
    uint32_t fadt = g32(rsdt + 36), madt = g32(rsdt + 40);
    assert_int_equal(g64(xsdt + 36), fadt);
    assert_int_equal(g64(xsdt + 44), madt);

    /* FADT: what ACPICA and Linux's poweroff/reboot read. */
    assert_int_equal(table(fadt, "FACP"), 244);
    assert_int_equal(ram[fadt + 8], 3);
    uint32_t facs = g32(fadt + 36), dsdt = g32(fadt + 40);
    assert_int_equal(g64(fadt + 132), 0);                        /* X_FIRMWARE_CTRL: one FACS pointer */
    assert_int_equal(g64(fadt + 140), dsdt);
    assert_memory_equal(ram + facs, "FACS", 4);
    assert_int_equal(g32(facs + 4), 64);
    assert_int_equal(facs % 64, 0);
    assert_int_equal(ram[fadt + 46], SG_ACPI_SCI_IRQ);
    assert_int_equal(g32(fadt + 48), 0);                         /* no SMI_CMD */
    assert_int_equal(g32(fadt + 56), SG_ACPI_PM_BASE);
    assert_int_equal(g32(fadt + 64), SG_ACPI_PM_BASE + SG_ACPI_PM1_CNT_OFF);
    assert_int_equal(ram[fadt + 88], 4);
    assert_int_equal(ram[fadt + 89], 2);
    assert_int_equal(g32(fadt + 76), 0);                         /* no PM timer */
    assert_int_equal(ram[fadt + 109], 0x01);                     /* legacy devices, CMOS RTC present */
    assert_int_equal(ram[fadt + 108], 0x32);                     /* CENTURY register */
    uint32_t flags = g32(fadt + 112);
    assert_true(flags & (1u << 10));                             /* RESET_REG_SUP */
    assert_false(flags & (1u << 4));                             /* PWR_BUTTON clear: fixed power button */
    assert_true(flags & (1u << 5));                              /* SLP_BUTTON: no fixed sleep button */
    assert_int_equal(ram[fadt + 116], 1);                        /* system I/O */
    assert_int_equal(ram[fadt + 117], 8);
    assert_int_equal(g64(fadt + 120), SG_ACPI_RESET_PORT);
    assert_int_equal(ram[fadt + 128], SG_ACPI_RESET_VALUE);
    assert_int_equal(g64(fadt + 148 + 4), SG_ACPI_PM_BASE);      /* X_PM1a_EVT_BLK */
    assert_int_equal(ram[fadt + 148 + 1], 32);
    assert_int_equal(g64(fadt + 172 + 4), SG_ACPI_PM_BASE + SG_ACPI_PM1_CNT_OFF);
    assert_int_equal(ram[fadt + 172 + 1], 16);

    /* MADT: LAPIC 0, IOAPIC id 1 at 0xFEC00000 GSI 0, SCI override, NMI. */
    uint32_t mlen = table(madt, "APIC");
    assert_int_equal(g32(madt + 36), 0xfee00000u);
    int lapics = 0, ioapics = 0, isos = 0, nmis = 0;
    for (uint32_t e = madt + 44; e < madt + mlen; e += ram[e + 1]) {
        assert_true(ram[e + 1] >= 2);
        switch (ram[e]) {
        case 0: lapics++; assert_int_equal(ram[e + 3], 0); assert_int_equal(g32(e + 4), 1); break;
        case 1: ioapics++; assert_int_equal(ram[e + 2], 1); assert_int_equal(g32(e + 4), 0xfec00000u); break;
        case 2: isos++; assert_int_equal(ram[e + 3], 9); assert_int_equal(g32(e + 4), 9);
                assert_int_equal(ram[e + 8], 0x0d); break;
        case 4: nmis++; assert_int_equal(ram[e + 5], 1); break;
        default: fail();
        }
    }
    assert_int_equal(lapics, 1);
    assert_int_equal(ioapics, 1);
    assert_int_equal(isos, 1);
    assert_int_equal(nmis, 1);

    /* DSDT: Name(\_S5_, Package(4) { S5, S5, 0, 0 }), then one Scope that
     * runs exactly to the end of the table (the PkgLengths add up). */
    uint32_t dlen = table(dsdt, "DSDT");
    const uint8_t *d = ram + dsdt + 36, *end = ram + dsdt + dlen;
    static const uint8_t s5[] = { 0x08, '\\', '_', 'S', '5', '_', 0x12 };
    assert_memory_equal(d, s5, sizeof(s5));
    unsigned n;
    uint32_t pl = pkglen(d + sizeof(s5), &n);
    const uint8_t *pk = d + sizeof(s5);
    assert_int_equal(pk[n], 4);
    assert_int_equal(pk[n + 1], 0x0a);
    assert_int_equal(pk[n + 2], SG_ACPI_SLP_TYP_S5);
    const uint8_t *scope = pk + pl;
    assert_int_equal(scope[0], 0x10);
    pl = pkglen(scope + 1, &n);
    assert_ptr_equal(scope + 1 + pl, end);
    assert_memory_equal(scope + 1 + n, "\\_SB_", 5);
    const uint8_t *dev = scope + 1 + n + 5;
    assert_int_equal(dev[0], 0x5b);
    assert_int_equal(dev[1], 0x82);
    pl = pkglen(dev + 2, &n);
    assert_memory_equal(dev + 2 + n, "PCI0", 4);
    /* after PCI0, the last device: RTC_ */
    const uint8_t *dev2 = dev + 2 + pl;
    assert_int_equal(dev2[0], 0x5b);
    assert_int_equal(dev2[1], 0x82);
    pl = pkglen(dev2 + 2, &n);
    assert_ptr_equal(dev2 + 2 + pl, end);
    assert_memory_equal(dev2 + 2 + n, "RTC_", 4);
    assert_non_null(find(d, dlen - 36, "_HID\x0c\x41\xd0\x0a\x03"));   /* PNP0A03 */
    /* the CMOS clock: PNP0B00 with ports 0x70-0x71 and IRQ 8 */
    const uint8_t *rtc = find_bytes(d, dlen - 36, "RTC_\x08_HID\x0c\x41\xd0\x0b\x00", 14);
    assert_non_null(rtc);
    assert_non_null(find_bytes(rtc, (size_t)(end - rtc),
                               "\x47\x01\x70\x00\x70\x00\x01\x02\x22\x00\x01\x79\x00", 13));
    /* _PRT: one entry per slot, INTA of slot s on GSI 15 + s. */
    const uint8_t *prt = find(d, dlen - 36, "_PRT");
    assert_non_null(prt);
    assert_int_equal(prt[4], 0x12);
    pkglen(prt + 5, &n);
    assert_int_equal(prt[5 + n], nr_drives);
    const uint8_t *e = prt + 5 + n + 1;
    for (int s = 1; s <= nr_drives; s++) {
        unsigned en;
        assert_int_equal(e[0], 0x12);
        uint32_t elen = pkglen(e + 1, &en);
        const uint8_t *x = e + 1 + en;
        assert_int_equal(x[0], 4);
        assert_int_equal(x[1], 0x0c);
        assert_int_equal(x[2] | x[3] << 8 | x[4] << 16 | (uint32_t)x[5] << 24, (uint32_t)s << 16 | 0xffff);
        assert_int_equal(x[6], 0);    /* INTA */
        assert_int_equal(x[7], 0);    /* Zero: a GSI */
        assert_int_equal(x[8], 0x0a);
        assert_int_equal(x[9], SG_LINUX_PCI_GSI_BASE + s - 1);
        e += 1 + elen;
    }
    /* _CRS: the hole above RAM, then the end tag. */
    const uint8_t *crs = find(d, dlen - 36, "_CRS");
    assert_non_null(crs);
    uint32_t hole[2] = { (uint32_t)ram_low, 0xfebfffffu };   /* _MIN, _MAX */
    assert_non_null(find_bytes(crs, (size_t)(end - crs), hole, sizeof(hole)));
    assert_non_null(find(crs, (size_t)(end - crs), "\x79"));
}

static void test_tables(void **state)
{
    (void)state;
    check_tables(0, 64ull << 20);
    check_tables(8, 3ull << 30);
    check_tables(2, 512ull << 20);   /* last: what SG_ACPI_DUMP keeps */
    struct sg_vm vm = { .ram = ram, .nr_vcpus = 1, .ram_low = 64u << 20 };
    struct sg_error err = { 0 };
    assert_false(sg_acpi_write(&vm, 9, &err));    /* GSI 24 does not exist */
    assert_true(err.set);
}

static uint16_t rd16(struct sg_device *d, uint16_t off)
{
    uint16_t v = 0;
    d->ops->pio_in(d, off, &v, 2);
    return v;
}

static void wr16(struct sg_device *d, uint16_t off, uint16_t v)
{
    d->ops->pio_out(d, off, &v, 2);
}

static void test_pm_device(void **state)
{
    (void)state;
    struct sg_error err = { 0 };
    struct sg_device *d = sg_acpi_pm_create(&err);
    assert_non_null(d);
    assert_string_equal(d->ops->type, "acpi-pm");
    assert_int_equal(d->port, SG_ACPI_PM_BASE);
    const uint16_t cnt = SG_ACPI_PM1_CNT_OFF;
    assert_int_equal(rd16(d, cnt) & SG_PM1_SCI_EN, SG_PM1_SCI_EN);   /* ACPI mode */
    wr16(d, 2, 0x0120);
    assert_int_equal(rd16(d, 2), 0x0120);                             /* PM1_EN */
    uint8_t b = 0;
    d->ops->pio_in(d, 3, &b, 1);                                      /* byte access */
    assert_int_equal(b, 0x01);

    /* Linux's S5 sequence: SLP_TYP first, then SLP_TYP | SLP_EN. */
    exits = 0;
    wr16(d, cnt, (uint16_t)(SG_PM1_SCI_EN | SG_ACPI_SLP_TYP_S5 << SG_PM1_SLP_TYP_SHIFT));
    assert_int_equal(exits, 0);
    wr16(d, cnt, (uint16_t)(SG_PM1_SCI_EN | SG_ACPI_SLP_TYP_S5 << SG_PM1_SLP_TYP_SHIFT | SG_PM1_SLP_EN));
    assert_int_equal(exits, 1);
    assert_int_equal(exit_kind, SG_GUEST_EXIT_POWEROFF);
    assert_int_equal(rd16(d, cnt) & SG_PM1_SLP_EN, 0);                /* write-only */
    /* another sleep type (S3 here: none declared) does nothing */
    wr16(d, cnt, (uint16_t)(1u << SG_PM1_SLP_TYP_SHIFT | SG_PM1_SLP_EN));
    assert_int_equal(exits, 1);

    /* save, change, load: back as saved; a bad blob is refused */
    uint8_t blob[64];
    size_t n = d->ops->save(d, blob, sizeof(blob));
    assert_true(n > 0);
    wr16(d, 2, 0);
    assert_true(d->ops->load(d, blob, n, &err));
    assert_int_equal(rd16(d, 2), 0x0120);
    assert_false(d->ops->load(d, blob, n - 1, &err));
    assert_true(err.set);
    blob[0] ^= 0xff;
    assert_false(d->ops->load(d, blob, n, &err));
    d->ops->reset(d);
    assert_int_equal(rd16(d, 2), 0);
    d->ops->destroy(d);
}

/* The fixed power button (QMP system_powerdown): PWRBTN_STS set, the SCI
 * up while PWRBTN_EN is set too, the guest's write of 1 clears it. */
static void test_power_button(void **state)
{
    (void)state;
    struct sg_error err = { 0 };
    static struct sg_vm vm;
    memset(&vm, 0, sizeof(vm));
    assert_false(sg_acpi_pm_power_button(&vm));           /* no acpi-pm: the demo guest */
    struct sg_device *d = sg_acpi_pm_create(&err);
    assert_non_null(d);
    d->vm = &vm;
    vm.devices[vm.nr_devices++] = d;
    irq_calls = 0;

    /* not enabled: lost, as in QEMU 7.2 (no status bit, no SCI) */
    assert_true(sg_acpi_pm_power_button(&vm));
    assert_int_equal(rd16(d, 0), 0);
    assert_int_equal(irq_calls, 0);
    /* enabled: the status and the SCI (level) */
    wr16(d, 2, SG_PM1_PWRBTN);
    assert_int_equal(irq_calls, 0);
    assert_true(sg_acpi_pm_power_button(&vm));
    assert_int_equal(rd16(d, 0), SG_PM1_PWRBTN);
    assert_int_equal(irq_calls, 1);
    assert_int_equal(irq_last, SG_ACPI_SCI_IRQ);
    assert_int_equal(irq_level, 1);
    /* a write of 0, or of 1 to another status bit, keeps it */
    wr16(d, 0, 0);
    wr16(d, 0, 0x0001);
    assert_int_equal(rd16(d, 0), SG_PM1_PWRBTN);
    assert_int_equal(irq_level, 1);
    assert_int_equal(irq_calls, 1);
    /* a byte write of 1 to bit 0 of the high byte (PWRBTN_STS) clears it */
    uint8_t one = 0x01;
    d->ops->pio_out(d, 1, &one, 1);
    assert_int_equal(rd16(d, 0), 0);
    assert_int_equal(irq_level, 0);
    assert_int_equal(irq_calls, 2);

    /* pressed with PWRBTN_EN set: the SCI at once; pressed again: no new edge */
    assert_true(sg_acpi_pm_power_button(&vm));
    assert_int_equal(irq_level, 1);
    assert_int_equal(irq_calls, 3);
    assert_true(sg_acpi_pm_power_button(&vm));
    assert_int_equal(irq_calls, 3);
    char line[128];
    d->ops->describe(d, line, sizeof(line));
    assert_string_equal(line, "acpi-pm sts=0x100 en=0x100 sci=1");
    /* disabling lowers it, the status stays */
    wr16(d, 2, 0);
    assert_int_equal(irq_level, 0);
    assert_int_equal(rd16(d, 0), SG_PM1_PWRBTN);

    /* save with the button pressed and enabled; the loaded state raises the
     * SCI again (re-driven); the format is unchanged (version 1, 12 bytes) */
    wr16(d, 2, SG_PM1_PWRBTN);
    uint8_t blob[64];
    size_t n = d->ops->save(d, blob, sizeof(blob));
    assert_int_equal(n, 12);
    uint32_t version;
    memcpy(&version, blob, 4);
    assert_int_equal(version, 1);
    wr16(d, 0, 0xffff);
    wr16(d, 2, 0);
    assert_int_equal(irq_level, 0);
    int calls = irq_calls;
    assert_true(d->ops->load(d, blob, n, &err));
    assert_int_equal(irq_calls, calls + 1);
    assert_int_equal(irq_level, 1);
    assert_int_equal(rd16(d, 0), SG_PM1_PWRBTN);
    assert_int_equal(rd16(d, 2), SG_PM1_PWRBTN);
    /* a blob from before the power button (status and enable 0) loads, SCI low */
    struct { uint32_t version; uint16_t sts, en, cnt, pad; } old = { 1, 0, 0, SG_PM1_SCI_EN, 0 };
    assert_true(d->ops->load(d, &old, sizeof(old), &err));
    assert_int_equal(irq_level, 0);
    assert_int_equal(rd16(d, 0), 0);
    /* a reset releases the button and lowers the line */
    wr16(d, 2, SG_PM1_PWRBTN);
    assert_true(sg_acpi_pm_power_button(&vm));
    assert_int_equal(irq_level, 1);
    d->ops->reset(d);
    assert_int_equal(irq_level, 0);
    assert_int_equal(rd16(d, 0), 0);
    assert_int_equal(rd16(d, 2), 0);
    d->ops->destroy(d);
}

static void test_reset_ports(void **state)
{
    (void)state;
    uint8_t v;
    v = SG_ACPI_RESET_VALUE;
    assert_true(sg_reset_port_write(SG_ACPI_RESET_PORT, &v, 1));     /* ACPI reset */
    v = 0x0e;
    assert_true(sg_reset_port_write(0xcf9, &v, 1));                  /* reboot=pci, cold */
    v = 0x02;
    assert_false(sg_reset_port_write(0xcf9, &v, 1));                 /* only SYS_RST */
    v = 0xfe;
    assert_true(sg_reset_port_write(0x64, &v, 1));                   /* reboot=kbd */
    v = 0xff;
    assert_false(sg_reset_port_write(0x64, &v, 1));
    v = 0x60;
    assert_false(sg_reset_port_write(0x64, &v, 1));
    uint32_t w = 0x80000000u | 6;
    assert_false(sg_reset_port_write(0xcf8, &w, 4));                 /* PCI config address */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables),
        cmocka_unit_test(test_pm_device),
        cmocka_unit_test(test_power_button),
        cmocka_unit_test(test_reset_ports),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

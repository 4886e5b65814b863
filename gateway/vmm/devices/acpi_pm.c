/* acpi_pm.c: the ACPI PM1a event and control registers (ACPI 6.4 4.8.3)
 * and the PC's reset ports.  The FADT (acpi.c) points the guest here.
 *
 * Window at SG_ACPI_PM_BASE, 16-bit registers:
 *   +0 PM1_STS  write 1 to clear (nothing sets a bit: there is no fixed
 *               power/sleep button, no PM timer and no SCI source)
 *   +2 PM1_EN   read/write
 *   +4 PM1_CNT  SCI_EN reads 1; SLP_EN (write-only) with SLP_TYP = S5
 *               is the guest's power-off: the VM ends as QEMU's does.
 * Any other SLP_TYP (no \_S1-\_S4 is declared) is ignored. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/acpi_pm.h"
#include "vm.h"

#define ACPI_PM_STATE_VERSION 1

struct acpi_pm_regs {
    uint32_t version;
    uint16_t sts, en, cnt, pad;
};

static void pm_in(struct sg_device *dev, uint16_t off, void *data, unsigned size)
{
    struct acpi_pm_regs *r = dev->state;
    uint16_t img[4] = { r->sts, r->en, (uint16_t)(r->cnt | SG_PM1_SCI_EN), 0 };
    memset(data, 0, size);
    if (off < sizeof(img))
        memcpy(data, (uint8_t *)img + off, off + size <= sizeof(img) ? size : sizeof(img) - off);
}

static void pm_out(struct sg_device *dev, uint16_t off, const void *data, unsigned size)
{
    struct acpi_pm_regs *r = dev->state;
    uint8_t val[8] = { 0 }, mask[8] = { 0 };
    for (unsigned i = 0; i < size && off + i < sizeof(val); i++) {
        val[off + i] = ((const uint8_t *)data)[i];
        mask[off + i] = 0xff;
    }
    uint16_t v[3], m[3];
    for (int i = 0; i < 3; i++) {
        v[i] = (uint16_t)(val[2 * i] | val[2 * i + 1] << 8);
        m[i] = (uint16_t)(mask[2 * i] | mask[2 * i + 1] << 8);
    }
    r->sts &= (uint16_t)~(v[0] & m[0]);
    r->en = (uint16_t)((r->en & ~m[1]) | (v[1] & m[1]));
    if (!m[2])
        return;
    uint16_t cnt = (uint16_t)((r->cnt & ~m[2]) | (v[2] & m[2]));
    r->cnt = (uint16_t)(cnt & ~SG_PM1_SLP_EN);
    if ((cnt & SG_PM1_SLP_EN) && ((cnt >> SG_PM1_SLP_TYP_SHIFT) & 7) == SG_ACPI_SLP_TYP_S5)
        sg_vm_guest_exit(dev->vm, SG_GUEST_EXIT_POWEROFF, 0);
}

static void pm_reset(struct sg_device *dev)
{
    struct acpi_pm_regs *r = dev->state;
    memset(r, 0, sizeof(*r));
    r->version = ACPI_PM_STATE_VERSION;
    r->cnt = SG_PM1_SCI_EN;
}

static size_t pm_save(struct sg_device *dev, void *buf, size_t cap)
{
    if (cap < sizeof(struct acpi_pm_regs))
        return 0;
    memcpy(buf, dev->state, sizeof(struct acpi_pm_regs));
    return sizeof(struct acpi_pm_regs);
}

static bool pm_load(struct sg_device *dev, const void *buf, size_t len, struct sg_error *err)
{
    struct acpi_pm_regs r;
    if (len != sizeof(r) || (memcpy(&r, buf, sizeof(r)), r.version != ACPI_PM_STATE_VERSION) ||
        (r.cnt & SG_PM1_SLP_EN)) {
        sg_error_set(err, "%s: saved state (%zu bytes) is not a version %d PM1 block", dev->name,
                     len, ACPI_PM_STATE_VERSION);
        return false;
    }
    memcpy(dev->state, &r, sizeof(r));
    return true;
}

static void pm_destroy(struct sg_device *dev)
{
    free(dev->state);
    free(dev);
}

static const struct sg_device_ops acpi_pm_ops = {
    .type = "acpi-pm",
    .pio_in = pm_in,
    .pio_out = pm_out,
    .save = pm_save,
    .load = pm_load,
    .reset = pm_reset,
    .destroy = pm_destroy,
};

struct sg_device *sg_acpi_pm_create(struct sg_error *err)
{
    struct sg_device *dev = calloc(1, sizeof(*dev));
    struct acpi_pm_regs *r = calloc(1, sizeof(*r));
    if (!dev || !r) {
        free(dev);
        free(r);
        sg_error_set(err, "out of memory");
        return NULL;
    }
    dev->ops = &acpi_pm_ops;
    snprintf(dev->name, sizeof(dev->name), "acpi-pm");
    dev->port = SG_ACPI_PM_BASE;
    dev->port_len = SG_ACPI_PM_LEN;
    dev->pci_slot = -1;
    dev->state = r;
    pm_reset(dev);
    return dev;
}

bool sg_reset_port_write(uint16_t port, const void *data, unsigned size)
{
    uint8_t b = *(const uint8_t *)data;
    if (size != 1)
        return false;
    /* 0xCF9: RST_CPU (bit 2); SYS_RST (bit 1) only picks hard or soft,
     * which is the same here.  0x64: the 8042's "pulse output port"
     * commands (0xF0-0xFF, a 0 bit is pulsed) with the reset line, bit 0. */
    return (port == SG_ACPI_RESET_PORT && (b & 4)) || (port == 0x64 && (b & 0xf1) == 0xf0);
}

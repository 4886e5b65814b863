/* acpi_pm.c: the ACPI PM1a event and control registers (ACPI 6.4 4.8.3)
 * and the PC's reset ports.  The FADT (acpi.c) points the guest here.
 *
 * Window at SG_ACPI_PM_BASE, 16-bit registers:
 *   +0 PM1_STS  write 1 to clear; PWRBTN_STS (bit 8) is set by the fixed
 *               power button (sg_acpi_pm_power_button: QMP system_powerdown)
 *               only while PWRBTN_EN is set, as QEMU 7.2's PM1 does (a press
 *               the guest has not enabled is lost, no status is left behind);
 *               nothing else sets a bit (no PM timer, no sleep button)
 *   +2 PM1_EN   read/write
 *   +4 PM1_CNT  SCI_EN reads 1; SLP_EN (write-only) with SLP_TYP = S5
 *               is the guest's power-off: the VM ends as QEMU's does.
 * Any other SLP_TYP (no \_S1-\_S4 is declared) is ignored.
 *
 * The SCI (IRQ 9, level, active high) is up while PM1_STS & PM1_EN has a
 * bit of an SCI source (the power button only), as ACPI's fixed events
 * are: the guest's write of 1 to PWRBTN_STS lowers it.
 *
 * The main loop presses the button while the vCPU runs, so the registers
 * have a lock of their own, held for no more than a register access and
 * the KVM_IRQ_LINE that follows (never across anything that waits). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/acpi_pm.h"
#include "vm.h"

#define ACPI_PM_STATE_VERSION 1

/* The saved blob (version 1 since the first acpi-pm: the power button
 * needed no new field, PWRBTN_STS and PWRBTN_EN are bits of sts and en). */
struct acpi_pm_regs {
    uint32_t version;
    uint16_t sts, en, cnt, pad;
};

struct acpi_pm {
    struct acpi_pm_regs r;
    pthread_mutex_t lock;
    int sci_level;              /* what the SCI line was last set to, -1 unknown */
};

/* The PM1 status bits that raise the SCI when enabled (ACPI 6.4 4.8.3.1). */
#define SCI_SOURCES SG_PM1_PWRBTN

/* Caller holds the lock. */
static void update_sci(struct sg_device *dev)
{
    struct acpi_pm *s = dev->state;
    int level = (s->r.sts & s->r.en & SCI_SOURCES) != 0;
    if (dev->vm && level != s->sci_level)
        sg_vm_set_irq(dev->vm, SG_ACPI_SCI_IRQ, level);
    s->sci_level = level;
}

static void pm_in(struct sg_device *dev, uint16_t off, void *data, unsigned size)
{
    struct acpi_pm *s = dev->state;
    pthread_mutex_lock(&s->lock);
    uint16_t img[4] = { s->r.sts, s->r.en, (uint16_t)(s->r.cnt | SG_PM1_SCI_EN), 0 };
    pthread_mutex_unlock(&s->lock);
    memset(data, 0, size);
    if (off < sizeof(img))
        memcpy(data, (uint8_t *)img + off, off + size <= sizeof(img) ? size : sizeof(img) - off);
}

static void pm_out(struct sg_device *dev, uint16_t off, const void *data, unsigned size)
{
    struct acpi_pm *s = dev->state;
    struct acpi_pm_regs *r = &s->r;
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
    pthread_mutex_lock(&s->lock);
    r->sts &= (uint16_t)~(v[0] & m[0]);
    r->en = (uint16_t)((r->en & ~m[1]) | (v[1] & m[1]));
    update_sci(dev);
    uint16_t cnt = (uint16_t)((r->cnt & ~m[2]) | (v[2] & m[2]));
    r->cnt = (uint16_t)(cnt & ~SG_PM1_SLP_EN);
    pthread_mutex_unlock(&s->lock);
    if (m[2] && (cnt & SG_PM1_SLP_EN) && ((cnt >> SG_PM1_SLP_TYP_SHIFT) & 7) == SG_ACPI_SLP_TYP_S5)
        sg_vm_guest_exit(dev->vm, SG_GUEST_EXIT_POWEROFF, 0);
}

static void pm_reset(struct sg_device *dev)
{
    struct acpi_pm *s = dev->state;
    pthread_mutex_lock(&s->lock);
    memset(&s->r, 0, sizeof(s->r));
    s->r.version = ACPI_PM_STATE_VERSION;
    s->r.cnt = SG_PM1_SCI_EN;
    s->sci_level = -1;          /* lowered whatever it was */
    update_sci(dev);
    pthread_mutex_unlock(&s->lock);
}

static size_t pm_save(struct sg_device *dev, void *buf, size_t cap)
{
    struct acpi_pm *s = dev->state;
    if (cap < sizeof(s->r))
        return 0;
    pthread_mutex_lock(&s->lock);
    memcpy(buf, &s->r, sizeof(s->r));
    pthread_mutex_unlock(&s->lock);
    return sizeof(s->r);
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
    struct acpi_pm *s = dev->state;
    pthread_mutex_lock(&s->lock);
    s->r = r;
    s->sci_level = -1;          /* re-drive the line: a pressed, enabled button raises it */
    update_sci(dev);
    pthread_mutex_unlock(&s->lock);
    return true;
}

static void pm_describe(struct sg_device *dev, char *out, size_t cap)
{
    struct acpi_pm *s = dev->state;
    pthread_mutex_lock(&s->lock);
    snprintf(out, cap, "acpi-pm sts=%#x en=%#x sci=%d", s->r.sts, s->r.en, s->sci_level);
    pthread_mutex_unlock(&s->lock);
}

static void pm_destroy(struct sg_device *dev)
{
    struct acpi_pm *s = dev->state;
    pthread_mutex_destroy(&s->lock);
    free(s);
    free(dev);
}

static const struct sg_device_ops acpi_pm_ops = {
    .type = "acpi-pm",
    .pio_in = pm_in,
    .pio_out = pm_out,
    .save = pm_save,
    .load = pm_load,
    .reset = pm_reset,
    .describe = pm_describe,
    .destroy = pm_destroy,
};

struct sg_device *sg_acpi_pm_create(struct sg_error *err)
{
    struct sg_device *dev = calloc(1, sizeof(*dev));
    struct acpi_pm *s = calloc(1, sizeof(*s));
    if (!dev || !s || pthread_mutex_init(&s->lock, NULL) != 0) {
        free(dev);
        free(s);
        sg_error_set(err, "out of memory");
        return NULL;
    }
    dev->ops = &acpi_pm_ops;
    snprintf(dev->name, sizeof(dev->name), "acpi-pm");
    dev->port = SG_ACPI_PM_BASE;
    dev->port_len = SG_ACPI_PM_LEN;
    dev->pci_slot = -1;
    dev->state = s;
    pm_reset(dev);
    return dev;
}

bool sg_acpi_pm_power_button(struct sg_vm *vm)
{
    for (int i = 0; i < vm->nr_devices; i++) {
        struct sg_device *dev = vm->devices[i];
        if (dev->ops != &acpi_pm_ops)
            continue;
        struct acpi_pm *s = dev->state;
        pthread_mutex_lock(&s->lock);
        if (s->r.en & SG_PM1_PWRBTN)
            s->r.sts |= SG_PM1_PWRBTN;
        update_sci(dev);
        pthread_mutex_unlock(&s->lock);
        return true;
    }
    return false;
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

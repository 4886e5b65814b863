/* pci.c: PCI host bridge with configuration mechanism #1.  Functions live
 * at bus 0, device = pci_slot, function 0; slot 0 is the bridge itself. */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "devices/pci.h"
#include "vm.h"
#include "vm_io.h"

#define PCI_HOST_STATE_VERSION 1

struct pci_host_regs {
    uint32_t version;
    uint32_t config_address;
    uint8_t cfg[SG_PCI_CFG_SIZE];   /* the bridge's own function */
};

static void put16(uint8_t *cfg, unsigned off, uint16_t v) { memcpy(cfg + off, &v, 2); }
static void put32(uint8_t *cfg, unsigned off, uint32_t v) { memcpy(cfg + off, &v, 4); }

void sg_pci_cfg_init(uint8_t *cfg, uint16_t vendor, uint16_t device, uint32_t class_rev,
                     uint16_t subsys_vendor, uint16_t subsys_id)
{
    memset(cfg, 0, SG_PCI_CFG_SIZE);
    put16(cfg, 0x00, vendor);
    put16(cfg, 0x02, device);
    put32(cfg, 0x08, class_rev);
    put16(cfg, 0x2c, subsys_vendor);
    put16(cfg, 0x2e, subsys_id);
}

uint32_t sg_pci_cfg_read(const uint8_t *cfg, unsigned reg)
{
    uint32_t v;
    memcpy(&v, cfg + (reg & 0xfc), 4);
    return v;
}

bool sg_pci_cfg_write(uint8_t *cfg, const uint32_t bar_io_size[6], unsigned reg,
                      uint32_t val, uint32_t mask)
{
    reg &= 0xfc;
    uint32_t old = sg_pci_cfg_read(cfg, reg), writable = 0;
    if (reg == 0x04)
        writable = 0x0000ffff & 0x0547;    /* I/O, mem, master, parity, SERR, INTx off */
    else if (reg >= 0x10 && reg < 0x28 && bar_io_size[(reg - 0x10) / 4])
        writable = ~(bar_io_size[(reg - 0x10) / 4] - 1) & 0xfffc;
    else if (reg == 0x3c)
        writable = 0xff;                   /* interrupt line (pin stays) */
    uint32_t nv = (old & ~(writable & mask)) | (val & writable & mask);
    put32(cfg, reg, nv);
    return nv != old && (reg == 0x04 || reg == 0x10);
}

static void host_cfg_access(struct sg_device *dev, bool is_write, unsigned byte_off,
                            void *data, unsigned size)
{
    struct pci_host_regs *h = dev->state;
    uint32_t addr = h->config_address;
    unsigned bus = addr >> 16 & 0xff, slot = addr >> 11 & 0x1f, fn = addr >> 8 & 7;
    unsigned reg = addr & 0xfc, shift = byte_off * 8;
    struct sg_device *fdev = NULL;
    bool self = bus == 0 && slot == 0 && fn == 0;
    if (!(addr & 0x80000000u) || bus != 0 || fn != 0 || (!self && !(fdev = sg_vm_pci_device(dev->vm, slot)))) {
        if (!is_write)
            memset(data, 0xff, size);
        return;
    }
    if (is_write) {
        uint32_t v = 0;
        memcpy(&v, data, size);
        uint32_t mask = (size == 4 ? 0xffffffffu : ((1u << (size * 8)) - 1)) << shift;
        if (self)
            sg_pci_cfg_write(h->cfg, (const uint32_t[6]){ 0 }, reg, v << shift, mask);
        else
            fdev->ops->cfg_write(fdev, reg, v << shift, mask);
    } else {
        uint32_t v = self ? sg_pci_cfg_read(h->cfg, reg) : fdev->ops->cfg_read(fdev, reg);
        v >>= shift;
        memcpy(data, &v, size);
    }
}

static void host_out(struct sg_device *dev, uint16_t off, const void *data, unsigned size)
{
    struct pci_host_regs *h = dev->state;
    if (off == 0 && size == 4)
        memcpy(&h->config_address, data, 4);
    else if (off >= 4 && off + size <= 8)
        host_cfg_access(dev, true, off - 4u, (void *)data, size);
}

static void host_in(struct sg_device *dev, uint16_t off, void *data, unsigned size)
{
    struct pci_host_regs *h = dev->state;
    if (off == 0 && size == 4)
        memcpy(data, &h->config_address, 4);
    else if (off >= 4 && off + size <= 8)
        host_cfg_access(dev, false, off - 4u, data, size);
    else
        memset(data, 0xff, size);
}

static void host_reset(struct sg_device *dev)
{
    struct pci_host_regs *h = dev->state;
    h->version = PCI_HOST_STATE_VERSION;
    h->config_address = 0;
    sg_pci_cfg_init(h->cfg, 0x8086, 0x1237, 0x06000002, 0x1af4, 0x1100);
}

static size_t host_save(struct sg_device *dev, void *buf, size_t cap)
{
    if (cap < sizeof(struct pci_host_regs))
        return 0;
    memcpy(buf, dev->state, sizeof(struct pci_host_regs));
    return sizeof(struct pci_host_regs);
}

static bool host_load(struct sg_device *dev, const void *buf, size_t len, struct sg_error *err)
{
    struct pci_host_regs r;
    if (len != sizeof(r)) {
        sg_error_set(err, "%s: saved state has %zu bytes, expected %zu", dev->name, len, sizeof(r));
        return false;
    }
    memcpy(&r, buf, sizeof(r));
    if (r.version != PCI_HOST_STATE_VERSION) {
        sg_error_set(err, "%s: unsupported state version %u", dev->name, r.version);
        return false;
    }
    memcpy(dev->state, &r, sizeof(r));
    return true;
}

static void host_destroy(struct sg_device *dev)
{
    free(dev->state);
    free(dev);
}

static const struct sg_device_ops pci_host_ops = {
    .type = "pci-host",
    .pio_in = host_in,
    .pio_out = host_out,
    .save = host_save,
    .load = host_load,
    .reset = host_reset,
    .destroy = host_destroy,
};

struct sg_device *sg_pci_host_create(struct sg_error *err)
{
    struct sg_device *dev = calloc(1, sizeof(*dev));
    struct pci_host_regs *h = calloc(1, sizeof(*h));
    if (!dev || !h) {
        free(dev);
        free(h);
        sg_error_set(err, "out of memory");
        return NULL;
    }
    dev->ops = &pci_host_ops;
    snprintf(dev->name, sizeof(dev->name), "pci-host");
    dev->port = 0xcf8;
    dev->port_len = 8;
    dev->pci_slot = -1;
    dev->state = h;
    host_reset(dev);
    return dev;
}

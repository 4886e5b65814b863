/* device.h: how a device plugs into a VM (kvmtool's model, per VM).
 * A device is a state struct that mirrors its registers plus an ops table.
 * It never sees the run loop: the VM dispatches port I/O to it (vm_io.c
 * says under which lock), and vmstate walks the device list calling save/load, so a
 * test can also build a device alone. */
#ifndef SG_DEVICE_H
#define SG_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sg_error.h"

struct sg_vm;
struct sg_device;

struct sg_device_ops {
    const char *type;   /* "serial", "pci-host", "virtio-blk" (saved in the config) */
    /* Port I/O inside [port, port+len) of the device; size is 1, 2 or 4. */
    void (*pio_in)(struct sg_device *dev, uint16_t off, void *data, unsigned size);
    void (*pio_out)(struct sg_device *dev, uint16_t off, const void *data, unsigned size);
    /* PCI config space (only for PCI functions; reg is 4-byte aligned). */
    uint32_t (*cfg_read)(struct sg_device *dev, unsigned reg);
    void (*cfg_write)(struct sg_device *dev, unsigned reg, uint32_t val, uint32_t mask);
    /* State as a flat blob.  save returns the size written (<= cap) or 0 on
     * failure; load must reject a blob of the wrong size or version without
     * changing the device, and re-derive whatever it caches (IRQ line). */
    size_t (*save)(struct sg_device *dev, void *buf, size_t cap);
    bool (*load)(struct sg_device *dev, const void *buf, size_t len, struct sg_error *err);
    void (*reset)(struct sg_device *dev);
    /* Optional: one line of its interrupt-relevant state (a trace). */
    void (*describe)(struct sg_device *dev, char *out, size_t cap);
    void (*destroy)(struct sg_device *dev);
};

struct sg_device {
    const struct sg_device_ops *ops;
    struct sg_vm *vm;
    char name[32];          /* "serial0", "pci-host", "virtio-blk0" */
    uint16_t port, port_len;   /* port I/O window; len 0 = none (moves with a BAR) */
    int pci_slot;           /* -1 when not a PCI function */
    void *state;            /* the device's own struct */
};

#define SG_DEVICE_STATE_MAX 4096   /* upper bound for one device's blob */

#endif

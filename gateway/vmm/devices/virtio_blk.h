/* virtio_blk.h: a legacy (0.9.5) virtio-blk PCI function on a block device. */
#ifndef SG_VIRTIO_BLK_H
#define SG_VIRTIO_BLK_H

#include "devices/device.h"

struct sg_drive;

/* slot: PCI device number (1..31); index: disk number (device name). */
struct sg_device *sg_virtio_blk_create(struct sg_drive *drive, unsigned slot, unsigned index,
                                       unsigned irq, struct sg_error *err);

#endif

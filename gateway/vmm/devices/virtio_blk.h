/* virtio_blk.h: a legacy (0.9.5) virtio-blk PCI function on a block device. */
#ifndef SG_VIRTIO_BLK_H
#define SG_VIRTIO_BLK_H

#include "devices/device.h"

struct sg_drive;

/* slot: PCI device number (1..31); index: disk number (device name). */
struct sg_device *sg_virtio_blk_create(struct sg_drive *drive, unsigned slot, unsigned index,
                                       unsigned irq, struct sg_error *err);

/* Serves again the request a werror=enospc stop held back (no-op for
 * other devices, or when nothing is held). */
void sg_virtio_blk_restart(struct sg_device *dev);

#endif

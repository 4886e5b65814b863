/* pci.h: PCI host bridge (configuration mechanism #1, ports 0xcf8-0xcff, bus 0)
 * and the config-space rules shared by every PCI function. */
#ifndef SG_PCI_H
#define SG_PCI_H

#include <stdint.h>

#include "devices/device.h"

#define SG_PCI_CFG_SIZE 256

struct sg_device *sg_pci_host_create(struct sg_error *err);

/* Config space helpers for a function's 256-byte image. */
void sg_pci_cfg_init(uint8_t *cfg, uint16_t vendor, uint16_t device, uint32_t class_rev,
                     uint16_t subsys_vendor, uint16_t subsys_id);
uint32_t sg_pci_cfg_read(const uint8_t *cfg, unsigned reg);
/* Applies a guest write honouring read-only bits.  bar_io_size[i] is the size
 * of I/O BAR i (0 = unimplemented BAR).  Returns true if BAR0 or the
 * command register changed (the device then re-derives its port window). */
bool sg_pci_cfg_write(uint8_t *cfg, const uint32_t bar_io_size[6], unsigned reg,
                      uint32_t val, uint32_t mask);

#endif

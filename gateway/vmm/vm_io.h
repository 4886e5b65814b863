/* vm_io.h: port I/O dispatch from the vCPU thread to the VM's devices. */
#ifndef SG_VM_IO_H
#define SG_VM_IO_H

#include <stdbool.h>
#include <stdint.h>

struct sg_vm;
struct sg_device;

/* Handles one access of `size` bytes; unclaimed reads return all ones. */
void sg_vm_pio(struct sg_vm *vm, uint16_t port, bool is_write, void *data, unsigned size);
/* The PCI function in `slot`, or NULL. */
struct sg_device *sg_vm_pci_device(struct sg_vm *vm, unsigned slot);

#endif

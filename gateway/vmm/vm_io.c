/* vm_io.c: port I/O dispatch.  Device windows are looked up on every
 * access (a handful of devices), so a PCI BAR can move without a table.
 *
 * Locking: vm->io_lock guards what the main loop also touches, which is
 * the UART alone (serial input and output redirection, main.c).  Every
 * other device is reached only by the vCPU thread, or by the main loop
 * with the vCPU parked (vmstate capture/apply, reset), so it runs without
 * io_lock: virtio-blk does disk I/O under its drive's lock, and a vCPU
 * waiting for that lock (a snapshot job holds it) must not hold a lock the
 * monitor's loop needs.  With more than one vCPU those devices need locks
 * of their own (SG_VM_MAX_VCPUS is 1). */
#include <string.h>

#include "vm.h"
#include "vm_io.h"

_Static_assert(SG_VM_MAX_VCPUS == 1, "devices other than the UART assume one vCPU (vm_io.c)");

void sg_vm_pio(struct sg_vm *vm, uint16_t port, bool is_write, void *data, unsigned size)
{
    for (int i = 0; i < vm->nr_devices; i++) {
        struct sg_device *d = vm->devices[i];
        if (d->port_len == 0 || port < d->port || port >= d->port + d->port_len)
            continue;
        uint16_t off = (uint16_t)(port - d->port);
        bool shared = d == vm->serial;
        if (shared)
            pthread_mutex_lock(&vm->io_lock);
        if (is_write) {
            if (d->ops->pio_out)
                d->ops->pio_out(d, off, data, size);
        } else if (d->ops->pio_in) {
            d->ops->pio_in(d, off, data, size);
        } else {
            memset(data, 0xff, size);
        }
        if (shared)
            pthread_mutex_unlock(&vm->io_lock);
        return;
    }
    if (!is_write)
        memset(data, 0xff, size);
}

struct sg_device *sg_vm_pci_device(struct sg_vm *vm, unsigned slot)
{
    for (int i = 0; i < vm->nr_devices; i++)
        if (vm->devices[i]->pci_slot == (int)slot)
            return vm->devices[i];
    return NULL;
}

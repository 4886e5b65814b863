/* vm_io.c: port I/O dispatch.  Device windows are looked up on every
 * access (a handful of devices), so a PCI BAR can move without a table. */
#include <string.h>

#include "vm.h"
#include "vm_io.h"

void sg_vm_pio(struct sg_vm *vm, uint16_t port, bool is_write, void *data, unsigned size)
{
    pthread_mutex_lock(&vm->io_lock);
    for (int i = 0; i < vm->nr_devices; i++) {
        struct sg_device *d = vm->devices[i];
        if (d->port_len == 0 || port < d->port || port >= d->port + d->port_len)
            continue;
        uint16_t off = (uint16_t)(port - d->port);
        if (is_write) {
            if (d->ops->pio_out)
                d->ops->pio_out(d, off, data, size);
        } else if (d->ops->pio_in) {
            d->ops->pio_in(d, off, data, size);
        } else {
            memset(data, 0xff, size);
        }
        pthread_mutex_unlock(&vm->io_lock);
        return;
    }
    pthread_mutex_unlock(&vm->io_lock);
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

/* serial.h: a 16550A UART (COM1: ports 0x3f8-0x3ff, IRQ 4). */
#ifndef SG_SERIAL_H
#define SG_SERIAL_H

#include <stddef.h>

#include "devices/device.h"

/* out_fd receives what the guest transmits (-1: discarded). */
struct sg_device *sg_serial_create(uint16_t port, unsigned irq, int out_fd,
                                   struct sg_error *err);
/* Feeds bytes typed by the user; returns how many fit in the receive FIFO.
 * Call with vm->io_lock held. */
size_t sg_serial_receive(struct sg_device *dev, const void *buf, size_t len);
size_t sg_serial_rx_room(struct sg_device *dev);
/* Called periodically: re-raises an interrupt line the guest has left up,
 * untouched, for `looks` calls in a row (a lost edge); true when it did. */
bool sg_serial_watchdog(struct sg_device *dev, unsigned looks);
/* Redirects transmitted bytes (a serial client connected); io_lock held. */
void sg_serial_set_out_fd(struct sg_device *dev, int fd);

#endif

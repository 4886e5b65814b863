/* rtc.h: the CMOS real-time clock (MC146818A, ports 0x70-0x71, IRQ 8). */
#ifndef SG_RTC_H
#define SG_RTC_H

#include <stdint.h>

#include "devices/device.h"

struct sg_device *sg_rtc_create(unsigned irq, struct sg_error *err);
/* Raises the update-ended, alarm and periodic flags that came due and
 * the IRQ when enabled; call about every 0.1 s with vm->io_lock held. */
void sg_rtc_tick(struct sg_device *dev);
/* Tests: the host wall clock reads host_ns from now on (0: the real one). */
void sg_rtc_set_fake_clock(struct sg_device *dev, uint64_t host_ns);

#endif

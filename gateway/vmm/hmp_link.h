/* hmp_link.h: snapgate-vmm's human-monitor-command through gateway/hmp. */
#ifndef SG_HMP_LINK_H
#define SG_HMP_LINK_H

#include <stdbool.h>

#include "sg_error.h"

struct sg_vmm;

bool sg_hmp_link_init(struct sg_vmm *vmm, struct sg_error *err);
/* Call from the main loop; polls job progress every 100 ms while busy. */
void sg_hmp_link_tick(struct sg_vmm *vmm);
bool sg_hmp_link_busy(struct sg_vmm *vmm);
void sg_hmp_link_free(struct sg_vmm *vmm);

#endif

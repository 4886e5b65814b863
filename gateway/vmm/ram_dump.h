/* ram_dump.h: QEMU's pmemsave (ram_dump.c). */
#ifndef SG_VMM_RAM_DUMP_H
#define SG_VMM_RAM_DUMP_H

#include <stdbool.h>

#include "sg_error.h"

struct sg_vmm;

/* Registers `pmemsave` on vmm->qmp. */
bool sg_ram_dump_register(struct sg_vmm *vmm, struct sg_error *err);

#endif

/* ram_dirty.h: pages of guest RAM changed since the last snapshot saved or
 * loaded (ram_dirty.c says how they are found).  Bitmaps are one bit per
 * host page by RAM index.  Main thread only, except sg_ram_dirty_mark. */
#ifndef SG_VMM_RAM_DIRTY_H
#define SG_VMM_RAM_DIRTY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sg_error.h"

struct sg_vm;
struct sg_ram_dirty;

/* Turns KVM's dirty log on (once); until the first take everything counts
 * as changed. */
bool sg_ram_dirty_start(struct sg_vm *vm, struct sg_error *err);
void sg_ram_dirty_free(struct sg_ram_dirty *d);
/* The VMM wrote (or may write) guest RAM [index, index+len); any thread. */
void sg_ram_dirty_mark(struct sg_vm *vm, uint64_t index, uint64_t len);
/* All of RAM changed (reset). */
void sg_ram_dirty_all(struct sg_vm *vm);
/* Collects KVM's log and the VMM's marks and hands back everything changed
 * since the base (malloc'ed), starting a new period.  vCPUs parked. */
uint64_t *sg_ram_dirty_take(struct sg_vm *vm, struct sg_error *err);
/* A save that failed gives its pages back (they still differ from the
 * base). */
void sg_ram_dirty_giveback(struct sg_vm *vm, const uint64_t *bits);
bool sg_ram_dirty_test(const uint64_t *bits, size_t page_size, uint64_t index, uint64_t len);

#endif

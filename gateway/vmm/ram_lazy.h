/* ram_lazy.h: loading guest RAM on first touch (ram_lazy.c). */
#ifndef SG_VMM_RAM_LAZY_H
#define SG_VMM_RAM_LAZY_H

#include <stdbool.h>
#include <stdint.h>

#include "block.h"
#include "sg_error.h"

struct sg_vm;
struct sg_ram_lazy;

/* Maps snapshot `snap_id`'s RAM (at ram_offset of its vmstate) to file
 * offsets, reads the npages guest pages at `first` (what
 * KVM touches as the state is applied: arm puts them in at once, as a
 * fault there would wait for the filler thread to wake) and starts the
 * filler thread (idle until arm); caller holds the drive's lock.  NULL (with the reason) when a lazy load is not possible
 * here: the caller loads eagerly. */
struct sg_ram_lazy *sg_ram_lazy_prepare(struct sg_vm *vm, struct sg_block *bs, const char *snap_id,
                                        uint64_t ram_offset, const uint64_t *first, int npages,
                                        struct sg_error *err);
/* vCPUs parked: empty RAM that fills on first touch (but for prepare's
 * pages, in at once); the filler serves faults from here on.  On
 * failure RAM may already be empty: load it eagerly. */
bool sg_ram_lazy_arm(struct sg_ram_lazy *lz, struct sg_error *err);
/* The guest runs: the filler brings in the rest of RAM as well as faults
 * (until then it serves faults only, leaving the pause its CPU). */
void sg_ram_lazy_go(struct sg_ram_lazy *lz);
/* Once the fill is complete: the hashes of RAM as loaded (caller frees). */
struct sg_ram_hashes *sg_ram_lazy_take_hashes(struct sg_ram_lazy *lz);
uint64_t sg_ram_lazy_progress(struct sg_ram_lazy *lz);
/* 0: still filling, 1: all of RAM is in, -1: failed (err set). */
int sg_ram_lazy_poll(struct sg_ram_lazy *lz, struct sg_error *err);
void sg_ram_lazy_free(struct sg_ram_lazy *lz);

#endif

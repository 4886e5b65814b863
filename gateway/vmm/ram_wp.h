/* ram_wp.h: the instant of a live save kept by userfaultfd write-protect
 * (ram_wp.c says why and how); the fork of ram_live.c is the fallback. */
#ifndef SG_VMM_RAM_WP_H
#define SG_VMM_RAM_WP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sg_error.h"

struct sg_vm;
struct sg_ram_wp;

/* Buffers for the handler's copies, faulted in beforehand: a fresh 2 MiB
 * buffer costs its first touch while a guest write waits (10-30 ms per
 * fault in the kvm bed, where the guest's first writes after the instant
 * come all at once). */
struct sg_ram_wp_stock {
    char **buf;
    size_t n;
};
/* Before the pause, off the main thread (the save's prepare worker): as
 * many as the handler keeps (SNAPGATE_VMM_WP_STOCK, default 32, at most a
 * region per 2 MiB of RAM), best effort. */
void sg_ram_wp_stock_fill(struct sg_ram_wp_stock *st, uint64_t ram_size);
/* Unmaps what sg_ram_wp_open did not take. */
void sg_ram_wp_stock_drop(struct sg_ram_wp_stock *st);

/* Before the pause, the guest running: the descriptor, guest RAM
 * registered (holes mapped to the zero page before Linux 6.4), the
 * handler started and all of RAM protected; a write until the instant
 * only lifts its region.  NULL (with the
 * reason) when the kernel cannot: use the fork.  lift_only: the bench's
 * limit probe (SNAPGATE_VMM_LIVE=wp-limit): a fault only lifts its region,
 * nothing is copied, RAM cannot be read (the save fails on purpose).
 * stock (or NULL): its buffers move to the handler, even on failure. */
struct sg_ram_wp *sg_ram_wp_open(struct sg_vm *vm, bool lift_only, struct sg_ram_wp_stock *stock,
                                 struct sg_error *err);
/* vCPUs parked: protects again the regions written since the open (all of
 * RAM is protected then); from now on RAM as the save reads it is RAM at
 * this instant.  false: sg_ram_wp_end it, use the fork. */
bool sg_ram_wp_protect(struct sg_ram_wp *wp, struct sg_error *err);
/* RAM [off, off+len) at the instant (off = RAM index); every byte at most
 * once.  The save's writer only. */
bool sg_ram_wp_read(struct sg_ram_wp *wp, uint64_t off, void *buf, size_t len,
                    struct sg_error *err);
/* Before RAM is discarded under the save (a reset's MADV_DONTNEED): every
 * region not yet copied is copied now (main thread). */
void sg_ram_wp_before_discard(struct sg_ram_wp *wp);
/* The guest runs again (after the pause): the handler may start filling
 * its stock of copy buffers (in the pause it would take the CPU the pause
 * needs). */
void sg_ram_wp_go(struct sg_ram_wp *wp);
/* Regions still protected (neither copied nor lifted). */
size_t sg_ram_wp_protected(struct sg_ram_wp *wp);
/* 2 MiB regions that a guest or device write made the handler copy. */
uint64_t sg_ram_wp_faults(struct sg_ram_wp *wp);
/* Lifts every protection and stops the handler; RAM is no longer held
 * (the save's writer, once it has read all of RAM). */
void sg_ram_wp_finish(struct sg_ram_wp *wp);
/* Finishes if need be, then frees (main thread). */
void sg_ram_wp_end(struct sg_ram_wp *wp);

#endif

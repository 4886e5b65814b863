/* ram_live.h: a copy-on-write image of guest RAM at one instant, held by a
 * forked child process that does nothing but exist (ram_live.c says why). */
#ifndef SG_VMM_RAM_LIVE_H
#define SG_VMM_RAM_LIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/types.h>

#include "sg_error.h"

#ifdef MADV_COLLAPSE
#define SG_MADV_COLLAPSE MADV_COLLAPSE
#else
#define SG_MADV_COLLAPSE 25   /* Linux 6.1; older kernels answer EINVAL */
#endif

/* Huge pages back for guest RAM [addr, addr+len) (MADV_COLLAPSE), while the
 * guest runs; SNAPGATE_VMM_COLLAPSE=0 leaves it to khugepaged (diagnosis:
 * does a collapse under a running guest matter?). */
void sg_ram_collapse(void *addr, size_t len);

struct sg_ram_child {
    pid_t pid;       /* 0: none */
    int pipe_wr;     /* closing it lets the child exit */
};

/* Forks the holder.  Call with every vCPU parked: the child's memory is
 * guest RAM as it is at this instant, whatever the guest writes after. */
bool sg_ram_child_fork(struct sg_ram_child *c, struct sg_error *err);
/* Reads [addr, addr+len) of the child's memory (addresses are the
 * parent's: fork keeps them). */
bool sg_ram_child_read(struct sg_ram_child *c, const void *addr, void *buf, size_t len,
                       struct sg_error *err);
void sg_ram_child_end(struct sg_ram_child *c);

#endif

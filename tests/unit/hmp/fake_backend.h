/* fake_backend.h: a scripted QMP back end for the HMP engine's tests.  It
 * keeps a tiny model of a VM (disks with snapshot lists, run state, jobs)
 * and answers like QEMU 7.2 does, either at once or from a queue the test
 * drains, so both synchronous and late replies are exercised. */
#ifndef FAKE_BACKEND_H
#define FAKE_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "sg_hmp.h"

#define FAKE_MAX_SNAPS 16

struct fake_snap {
    char id[16], tag[256];
    uint64_t vmsize;
    int64_t date;
    bool icount;
};

struct fake_disk {
    char device[32], node[32], drv[16];
    bool ro;
    struct fake_snap snaps[FAKE_MAX_SNAPS];
    int n, next_id;
};

struct fake_vm {
    struct fake_disk disks[4];
    int ndisks;
    bool running;
    char status[32];
    bool has_hmc;
    bool defer;            /* queue replies/events until fake_drain */
    bool events_first;     /* job events before the command's reply */
    bool no_events;        /* never send JOB_STATUS_CHANGE (tick must cope) */
    bool hold_jobs;        /* jobs stay "running" until fake_release_jobs */
    bool dead;             /* answer every command with NULL */
    bool replaces;         /* snapshot-save replaces an existing tag (snapgate-vmm) */
    const char *fail_next_job;   /* the next job concludes with this error */
    struct sg_hmp *h;
    /* queue of deferred deliveries */
    struct { sg_hmp_reply_fn cb; void *op; json_t *msg; bool event; } q[256];
    int qhead, qtail;
    json_t *jobs;          /* the query-jobs list */
    char log[64][512];     /* one line per snapshot/job command */
    int nlog;
    int ncmds;             /* every command received */
    int cancels;
    char last_hmc[256];
};

void fake_init(struct fake_vm *vm);
void fake_free(struct fake_vm *vm);
/* Adds a disk: drv "qcow2" or "raw". */
struct fake_disk *fake_disk(struct fake_vm *vm, const char *device, const char *node,
                            const char *drv, bool ro);
/* Adds a snapshot as qemu-img would (icount 0) or savevm (no icount). */
void fake_snap(struct fake_disk *d, const char *tag, uint64_t vmsize, int64_t date, bool icount);
struct sg_hmp_backend fake_backend(struct fake_vm *vm);
/* Delivers queued replies/events until none are left (bounded). */
void fake_drain(struct fake_vm *vm);
/* Concludes every held job. */
void fake_release_jobs(struct fake_vm *vm);
/* The JSON the fake answers (new references). */
json_t *fake_query_block(struct fake_vm *vm, bool with_snaps);
json_t *fake_named_nodes(struct fake_vm *vm);
/* Fixtures shared by the tests (see fixtures.c). */
void fixture(struct fake_vm *vm, const char *name);

int fake_find(const struct fake_disk *d, const char *tag);

/* Runs one line to completion (draining the queue) and returns the text
 * (static buffer); asserts done ran exactly once. */
const char *fake_run(struct fake_vm *vm, const char *line, int profile);
extern bool fake_last_quit;

#endif

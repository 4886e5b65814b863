/* snapshot_op.h: what the snapshot jobs (snapshot_save.c, snapshot_load.c,
 * snapshot_delete.c) share, internal to snapgate-vmm: struct snap_op, one
 * job's state; its worker thread; device resolution and snapshot tag lookup
 * (snapshot_op.c); pausing and resuming the guest around a job; and the three
 * job drivers that snapshot_cmds.c starts. */
#ifndef SG_VMM_SNAPSHOT_OP_H
#define SG_VMM_SNAPSHOT_OP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <semaphore.h>

#include "jobs.h"
#include "ram_live.h"
#include "ram_hash.h"
#include "ram_wp.h"
#include "vmm.h"
#include "vmstate.h"

#define SG_SNAP_RAM_STEP (8u << 20)

struct snap_op {
    struct sg_vmm *vmm;
    char tag[256];
    char vmstate[64];
    bool has_vmstate;
    char dev_names[SG_VM_MAX_DRIVES][64];
    int n_names;
    bool has_devices;   /* QMP's explicit list (-loadvm takes every disk) */
    struct sg_drive *drives[SG_VM_MAX_DRIVES];
    int n;
    struct sg_drive *vmdrive;
    int phase;
    bool was_running, paused;
    uint8_t *blob;
    size_t blob_len;
    uint64_t ram_done;
    struct sg_vmstate_header hdr;
    bool created[SG_VM_MAX_DRIVES];
    char ids[SG_VM_MAX_DRIVES][128];   /* snapshot ID per drive (saved / to load) */
    bool reverted;
    char vm_snap_id[128];   /* load: the vmstate disk's snapshot */
    bool replace;           /* save: x-replace, old snapshots go after the commit */

    /* Bulk I/O runs on a worker thread so that no disk stall (a flush that
     * writes back half a GiB, say) can hold up the monitor.  The worker
     * only touches disks (under their locks) and guest RAM (vCPU parked);
     * run state, events and QMP stay on the main thread. */
    pthread_t worker;
    bool worker_started;
    /* A worker started before the pause and given its work inside it
     * (sg_snap_park_worker; sg_snap_start_worker then wakes it): waking a sleeping thread takes microseconds,
     * creating one in the pause took up to 41 ms at load 9. */
    sem_t gate;
    bool parked;              /* waiting at the gate */
    bool gate_ready;
    void *(*parked_fn)(void *);
    atomic_bool worker_done;
    atomic_bool cancel;
    _Atomic uint64_t progress;
    bool worker_ok;
    struct sg_error werr;

    /* Live save (snapshot_save.c): the instant's RAM lives in `child` (or
     * `wp`); the pause takes every drive lock, and the worker, given its
     * work after the resume, releases them once the disks are at the
     * instant. */
    struct sg_ram_child child;
    struct sg_ram_wp *wp;     /* the instant by write-protect (ram_wp.c), else `child` */
    struct sg_ram_wp_stock wp_stock; /* its copy buffers, faulted in by the prepare worker */
    bool by_fork;             /* chosen before the pause (snapshot_save.c) */
    bool wp_limit;            /* SNAPGATE_VMM_LIVE=wp-limit: the bench's probe */
    struct sg_block_frozen frozen_disk[SG_VM_MAX_DRIVES];
    bool held[SG_VM_MAX_DRIVES];
    struct sg_ram_hashes *hashes;   /* RAM's chunk hashes at T (save) / as loaded (load) */
    struct sg_ram_hash zero_hash;   /* of a zero chunk */
    bool incremental;
    uint64_t date_sec;
    uint32_t date_nsec;
    uint64_t bytes_written;   /* RAM bytes handed to the block layer */
    uint64_t unsynced;        /* written since the last unlocked fdatasync */
    struct sg_snap_pos parent;   /* recorded in the header */

    /* Lazy load (ram_lazy.c); eager: read all RAM before resuming */
    struct sg_ram_lazy *lazy;
    bool eager;
    bool disks_reverted;
    bool armed;             /* the lazy fill runs */
    bool share_ok;          /* the active vmstate area shares the loaded snapshot's */
};

bool sg_snap_start_worker(struct snap_op *op, void *(*fn)(void *), struct sg_error *err);
void sg_snap_lock_drives(struct snap_op *op);
void sg_snap_unlock_drives(struct snap_op *op);
bool sg_snap_park_worker(struct snap_op *op, struct sg_error *err);
void sg_snap_unpark_worker(struct snap_op *op, void *(*fn)(void *));
bool sg_snap_worker_finished(struct snap_op *op);
void sg_snap_op_free(void *p);

bool sg_snap_resolve_devices(struct snap_op *op, bool unique, struct sg_error *err);
bool sg_snap_all_can_snapshot(struct snap_op *op, struct sg_error *err);
int sg_snap_find_tag(struct sg_drive *d, const char *tag, char *id, size_t idlen,
                     uint64_t *vm_state_size, struct sg_error *err);
int sg_snap_all_have_tag(struct snap_op *op, struct sg_error *err);
bool sg_snap_find_vmstate_drive(struct snap_op *op, struct sg_error *err);

void sg_snap_pause_vm(struct snap_op *op, enum sg_run_state st);
void sg_snap_resume_vm(struct snap_op *op);
/* Bytes per RAM chunk in the vmstate of `bs`: a cluster, at most 1 MiB
 * (the RAM offset's alignment), at least a page. */
size_t sg_snap_ram_chunk(struct sg_block *bs);
/* Ends a live save's write protection (main thread). */
void sg_snap_wp_end(struct snap_op *op);

/* snapshot_tree.c: x-snapgate-query-snapshot-tree, x-snapgate-ram-checksum. */
bool sg_snap_tree_register(struct sg_vmm *vmm, struct sg_error *err);
/* A save committed snapshot `id` (date) on `d` with `parent` in its header:
 * the tree query learns its parent without reading the image. */
void sg_snap_tree_saved(struct sg_vmm *vmm, const struct sg_drive *d, const char *id,
                        uint64_t date_sec, uint32_t date_nsec, const struct sg_snap_pos *parent);

/* The jobs, in snapshot_save.c, snapshot_load.c and snapshot_delete.c. */
extern const struct sg_job_driver sg_snap_save_drv;
extern const struct sg_job_driver sg_snap_load_drv;
extern const struct sg_job_driver sg_snap_delete_drv;

#endif

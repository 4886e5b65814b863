/* snapshot_op.c: the parts of a snapshot job (struct snap_op,
 * snapshot_op.h) that save, load and delete share: starting and joining the
 * worker thread, freeing the op, resolving the device list, the snapshot tag
 * lookups, and pausing/resuming the guest around the job. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ram_lazy.h"
#include "snapshot_op.h"

bool sg_snap_start_worker(struct snap_op *op, void *(*fn)(void *), struct sg_error *err)
{
    if (op->parked) {
        sg_snap_unpark_worker(op, fn);
        return true;
    }
    atomic_store(&op->worker_done, false);
    int e = pthread_create(&op->worker, NULL, fn, op);
    if (e) {
        sg_error_set_errno(err, e, "job worker thread");
        return false;
    }
    op->worker_started = true;
    return true;
}

/* For a worker that must start under every drive lock (the disks' part
 * of a save's instant, a load's reverts): the caller, in the pause, takes
 * the locks (free: the vCPUs are parked and no other job runs), and `fn`
 * releases them (sg_drive_unlock) when done with the disks.  The guest can
 * resume at once; its first disk request waits for the worker. */
void sg_snap_lock_drives(struct snap_op *op)
{
    for (int i = 0; i < op->n; i++)
        sg_drive_lock(op->drives[i]);
}

void sg_snap_unlock_drives(struct snap_op *op)
{
    for (int i = op->n - 1; i >= 0; i--)
        sg_drive_unlock(op->drives[i]);
}

/* The parked worker: waits at the gate for its work; none means exit. */
static void *parked_worker(void *arg)
{
    struct snap_op *op = arg;
    while (sem_wait(&op->gate) != 0 && errno == EINTR)
        ;
    if (op->parked_fn)
        return op->parked_fn(op);
    atomic_store(&op->worker_done, true);
    return NULL;
}

/* Starts the worker before the guest pauses; the next
 * sg_snap_start_worker, inside the pause, gives it its work.  A new thread waits behind every busy one
 * (at load 9: 41 ms between pthread_create and its first instruction), a
 * woken one runs at once. */
bool sg_snap_park_worker(struct snap_op *op, struct sg_error *err)
{
    if (op->worker_started || op->gate_ready)
        return false;
    if (sem_init(&op->gate, 0, 0) != 0) {
        sg_error_set_errno(err, errno, "semaphore");
        return false;
    }
    op->gate_ready = true;
    op->parked_fn = NULL;
    if (!sg_snap_start_worker(op, parked_worker, err))
        return false;
    op->parked = true;
    return true;
}

/* `fn` runs on the parked worker (NULL: it exits). */
void sg_snap_unpark_worker(struct snap_op *op, void *(*fn)(void *))
{
    if (!op->parked)
        return;
    op->parked = false;
    op->parked_fn = fn;
    sem_post(&op->gate);
}

/* true once the worker has finished (and was joined). */
bool sg_snap_worker_finished(struct snap_op *op)
{
    if (!op->worker_started)
        return true;
    sg_snap_unpark_worker(op, NULL);   /* parked, and no work came */
    if (!atomic_load(&op->worker_done))
        return false;
    pthread_join(op->worker, NULL);
    op->worker_started = false;
    return true;
}

/* The active vmstate area holds a copy of the snapshot the VM stands at,
 * sharing its clusters, only so that the next save can rewrite just what
 * changed (vm.pos.base, with the hashes in memory).  Without that use it
 * only pins the clusters: a deleted snapshot's RAM would keep its space,
 * and once no snapshot is left a grown disk (qemu-img resize) would show
 * those bytes to the guest where QEMU's area lies empty. */
void sg_snap_drop_area(struct sg_vmm *vmm, struct sg_drive *d, const char *deleted_id)
{
    struct sg_vm *vm = &vmm->vm;
    bool base_here = vm->pos.base && !strcmp(vm->pos.node, d->node_name);
    if (deleted_id && base_here && strcmp(vm->pos.id, deleted_id) != 0)
        return;
    if (d->readonly || !d->bs || !sg_block_can_snapshot(d->bs))
        return;
    if (base_here) {
        vm->pos.base = false;
        sg_ram_hashes_free(vm->hashes);
        vm->hashes = NULL;
    }
    struct sg_error err = { 0 };
    sg_drive_lock(d);
    bool ok = sg_block_vmstate_discard(d->bs, &err);
    sg_drive_unlock(d);
    if (!ok)
        fprintf(stderr, "snapgate-vmm: warning: '%s': could not empty the VM state area: %s\n",
                d->node_name, err.msg);
}

void sg_snap_op_free(void *p)
{
    struct snap_op *op = p;
    if (op) {
        if (op->worker_started) {
            atomic_store(&op->cancel, true);
            sg_snap_unpark_worker(op, NULL);
            pthread_join(op->worker, NULL);
        }
        if (op->gate_ready)
            sem_destroy(&op->gate);
        sg_ram_child_end(&op->child);
        sg_snap_wp_end(op);
        sg_ram_wp_stock_drop(&op->wp_stock);
        sg_ram_lazy_free(op->lazy);
        sg_ram_hashes_free(op->hashes);
        free(op->blob);
    }
    free(op);
}

/* ---- lookups (QEMU's bdrv_all_* with an explicit device list) ----------- */

/* `unique`: a node named twice counts once.  QEMU 7.2 takes the list as
 * given, which for save means two snapshots (both with VM state) on that
 * node and for load two reverts; one of each is what the user meant.
 * Delete keeps the repeats: there QEMU's "first match per entry" is a
 * well-defined result (two entries remove two duplicates), so we match it. */
bool sg_snap_resolve_devices(struct snap_op *op, bool unique, struct sg_error *err)
{
    op->n = 0;
    /* QEMU checks this first, as a job error, even before the vmstate node. */
    if (op->has_devices && op->n_names == 0) {
        sg_error_set(err, "At least one device is required for snapshot");
        return false;
    }
    for (int i = 0; i < op->n_names; i++) {
        struct sg_drive *d = sg_vmm_find_node(op->vmm, op->dev_names[i]);
        if (!d) {
            sg_error_set(err, "No block device node '%s'", op->dev_names[i]);
            return false;
        }
        bool seen = false;
        for (int k = 0; unique && k < op->n; k++)
            seen = seen || op->drives[k] == d;
        if (!seen)
            op->drives[op->n++] = d;
    }
    return true;
}

static bool drive_can_snapshot(struct sg_drive *d)
{
    return !d->readonly && sg_block_can_snapshot(d->bs);
}

bool sg_snap_all_can_snapshot(struct snap_op *op, struct sg_error *err)
{
    for (int i = 0; i < op->n; i++) {
        if (!drive_can_snapshot(op->drives[i])) {
            sg_error_set(err, "Device '%s' is writable but does not support snapshots",
                         op->drives[i]->device_name);
            return false;
        }
    }
    return true;
}

/* Fills `id` with the first snapshot called `tag` (0: none, -1: error). */
int sg_snap_find_tag(struct sg_drive *d, const char *tag, char *id, size_t idlen,
                    uint64_t *vm_state_size, struct sg_error *err)
{
    if (!sg_block_can_snapshot(d->bs))
        return 0;
    struct sg_snapshot_info *list = NULL;
    sg_drive_lock(d);
    int n = sg_block_snapshot_list(d->bs, &list, err);
    sg_drive_unlock(d);
    if (n < 0)
        return -1;
    int found = 0;
    for (int i = 0; i < n && !found; i++) {
        if (list[i].name && !strcmp(list[i].name, tag)) {
            if (id)
                snprintf(id, idlen, "%s", list[i].id);
            if (vm_state_size)
                *vm_state_size = list[i].vm_state_size;
            found = 1;
        }
    }
    sg_snapshot_info_free_list(list, n);
    return found;
}

/* 1: every device has `tag`, 0: at least one lacks it, -1: error. */
int sg_snap_all_have_tag(struct snap_op *op, struct sg_error *err)
{
    for (int i = 0; i < op->n; i++) {
        int r = sg_snap_find_tag(op->drives[i], op->tag, NULL, 0, NULL, err);
        if (r <= 0)
            return r;
    }
    return 1;
}

bool sg_snap_find_vmstate_drive(struct snap_op *op, struct sg_error *err)
{
    for (int i = 0; i < op->n; i++) {
        struct sg_drive *d = op->drives[i];
        if (op->has_vmstate ? !strcmp(op->vmstate, d->node_name) && drive_can_snapshot(d)
                            : drive_can_snapshot(d)) {
            op->vmdrive = d;
            return true;
        }
    }
    if (op->has_vmstate)
        sg_error_set(err, "vmstate block device '%s' does not exist", op->vmstate);
    else
        sg_error_set(err, "no block device can store vmstate for snapshot");
    return false;
}

void sg_snap_pause_vm(struct snap_op *op, enum sg_run_state st)
{
    struct sg_vmm *vmm = op->vmm;
    op->was_running = vmm->run_started_ns != 0;
    sg_vmm_stop(vmm, true);
    vmm->vm.state = st;
    op->paused = true;
}

size_t sg_snap_ram_chunk(struct sg_block *bs)
{
    uint64_t cs = sg_block_cluster_size(bs);
    long ps = sysconf(_SC_PAGESIZE);
    size_t chunk = cs > SG_VMSTATE_RAM_OFFSET ? SG_VMSTATE_RAM_OFFSET : (size_t)cs;
    return ps > 0 && chunk < (size_t)ps ? (size_t)ps : chunk;
}

void sg_snap_wp_end(struct snap_op *op)
{
    if (!op->wp)
        return;
    if (op->vmm->vm.wp == op->wp)
        op->vmm->vm.wp = NULL;
    sg_ram_wp_end(op->wp);
    op->wp = NULL;
}

void sg_snap_resume_vm(struct snap_op *op)
{
    struct sg_vmm *vmm = op->vmm;
    if (!op->paused)
        return;
    op->paused = false;
    vmm->vm.state = SG_RUN_NORMAL;
    /* vmm->running is the user's latest word: a stop or cont sent while
     * the job had the guest paused takes effect now. */
    if (vmm->running)
        sg_vmm_cont(vmm, true);
}


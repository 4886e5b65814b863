/* snapshot_save.c: the snapshot-save job: its main-loop steps, the worker
 * that writes guest RAM (leaving untouched pages out) to the vmstate area,
 * and the commit that writes the header and creates the disk snapshots.
 *
 * Save, in main-loop steps (the monitor answers between them):
 *   validate -> pause, capture CPU/devices, write state blob -> write RAM in
 *   8 MiB pieces -> write header, create the disk snapshots (vmstate disk
 *   last: its snapshot is the commit point) -> resume.
 * Any failure or job-cancel before the commit point discards the vmstate
 * area and deletes the snapshots already made, so nothing is left behind. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "snapshot_op.h"

/* The ID the next snapshot on `d` gets: max(IDs) + 1 (block.h's rule). */
static bool next_id(struct sg_drive *d, char *out, size_t len, struct sg_error *err)
{
    struct sg_snapshot_info *list = NULL;
    pthread_mutex_lock(&d->lock);
    int n = sg_block_snapshot_list(d->bs, &list, err);
    pthread_mutex_unlock(&d->lock);
    if (n < 0)
        return false;
    unsigned long long max = 0;
    for (int i = 0; i < n; i++) {
        unsigned long long v = strtoull(list[i].id, NULL, 10);
        if (v > max)
            max = v;
    }
    sg_snapshot_info_free_list(list, n);
    snprintf(out, len, "%llu", max + 1);
    return true;
}

static void save_undo(struct snap_op *op)
{
    for (int i = 0; i < op->n; i++) {
        struct sg_drive *d = op->drives[i];
        pthread_mutex_lock(&d->lock);
        if (op->created[i])
            sg_block_snapshot_delete(d->bs, op->ids[i], NULL);
        if (d == op->vmdrive)
            sg_block_vmstate_discard(d->bs, NULL);
        pthread_mutex_unlock(&d->lock);
        op->created[i] = false;
    }
    sg_snap_resume_vm(op);
}

static bool vmstate_write(struct snap_op *op, uint64_t off, const void *buf, size_t len,
                          struct sg_error *err)
{
    pthread_mutex_lock(&op->vmdrive->lock);
    bool ok = sg_block_vmstate_write(op->vmdrive->bs, off, buf, len, err);
    pthread_mutex_unlock(&op->vmdrive->lock);
    return ok;
}

static bool save_commit(struct snap_op *op, struct sg_error *err)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct sg_vmstate_header *h = &op->hdr;
    h->nr_disks = 0;
    for (int i = 0; i < op->n; i++) {
        struct sg_drive *d = op->drives[i];
        if (!next_id(d, op->ids[i], sizeof(op->ids[i]), err))
            return false;
        struct sg_vmstate_disk *hd = &h->disks[h->nr_disks++];
        snprintf(hd->node, sizeof(hd->node), "%s", d->node_name);
        snprintf(hd->snap_id, sizeof(hd->snap_id), "%s", op->ids[i]);
        hd->size = sg_block_size(d->bs);
        hd->date_sec = (uint64_t)now.tv_sec;
        hd->date_nsec = (uint32_t)now.tv_nsec;
        hd->is_vmstate = d == op->vmdrive;
    }
    /* x-replace: the snapshots that already carry the tag, removed only
     * after the new save has committed (a failed save keeps them). */
    char old[SG_VM_MAX_DRIVES][8][128];
    int n_old[SG_VM_MAX_DRIVES] = { 0 };
    for (int i = 0; op->replace && i < op->n; i++) {
        struct sg_drive *d = op->drives[i];
        struct sg_snapshot_info *list = NULL;
        pthread_mutex_lock(&d->lock);
        int n = sg_block_snapshot_list(d->bs, &list, err);
        pthread_mutex_unlock(&d->lock);
        if (n < 0)
            return false;
        for (int k = 0; k < n && n_old[i] < 8; k++)
            if (list[k].name && !strcmp(list[k].name, op->tag))
                snprintf(old[i][n_old[i]++], 128, "%s", list[k].id);
        sg_snapshot_info_free_list(list, n);
    }
    uint8_t page[SG_VMSTATE_HEADER_SIZE];
    sg_vmstate_header_encode(h, page);
    if (!vmstate_write(op, 0, page, sizeof(page), err))
        return false;
    /* The vmstate disk goes last: once its snapshot exists the save is
     * complete; before that, save_undo() removes every trace. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < op->n; i++) {
            struct sg_drive *d = op->drives[i];
            if ((d == op->vmdrive) != (pass == 1))
                continue;
            struct sg_snapshot_info si;
            memset(&si, 0, sizeof(si));
            si.name = op->tag;
            si.date_sec = (uint64_t)now.tv_sec;
            si.date_nsec = (uint32_t)now.tv_nsec;
            si.vm_clock_nsec = h->vm_clock_ns;
            si.vm_state_size = d == op->vmdrive ? h->ram_offset + h->ram_size : 0;
            si.icount = -1;
            pthread_mutex_lock(&d->lock);
            bool ok = sg_block_flush(d->bs, err) && sg_block_snapshot_create(d->bs, &si, err);
            pthread_mutex_unlock(&d->lock);
            if (!ok) {
                sg_error_prefix(err, "Error while creating snapshot on '%s'", d->device_name);
                return false;
            }
            op->created[i] = true;
            if (strcmp(si.id, op->ids[i]) != 0) {
                snprintf(op->ids[i], sizeof(op->ids[i]), "%s", si.id);
                sg_error_set(err, "snapshot on '%s' got ID %s, not the one recorded",
                             d->device_name, si.id);
                return false;
            }
        }
    }
    for (int i = 0; i < op->n; i++) {
        struct sg_drive *d = op->drives[i];
        for (int k = 0; k < n_old[i]; k++) {
            pthread_mutex_lock(&d->lock);
            /* Best effort: the new snapshot is committed either way; a
             * left-over old one is still a valid snapshot. */
            sg_block_snapshot_delete(d->bs, old[i][k], NULL);
            pthread_mutex_unlock(&d->lock);
        }
    }
    return true;
}

/* Writes one SG_SNAP_RAM_STEP piece of guest RAM [done, done+len) to the vmstate
 * area, leaving out every chunk whose pages the guest never touched
 * (kvm/ram_scan.c says why they are zero).  Leaving them out is only right
 * because the active vmstate area was emptied before the save began
 * (save_step): an unwritten range of it reads as zeros.  A chunk is a
 * cluster (at most 1 MiB, the RAM offset's alignment), so what is written
 * is whole clusters and what is skipped stays unallocated. */
static bool save_ram_piece(struct snap_op *op, struct sg_ram_scan *rs, bool *untouched,
                           uint64_t done, size_t len, struct sg_error *err)
{
    struct sg_vm *vm = &op->vmm->vm;
    char *ram = (char *)vm->ram + done;
    size_t ps = rs->page_size;
    uint64_t cs = sg_block_cluster_size(op->vmdrive->bs);
    size_t chunk = cs > SG_VMSTATE_RAM_OFFSET ? SG_VMSTATE_RAM_OFFSET : (size_t)cs;
    if (chunk < ps)
        chunk = ps;
    if (rs->fd < 0 || len % chunk || done % chunk)
        return vmstate_write(op, SG_VMSTATE_RAM_OFFSET + done, ram, len, err);
    sg_ram_scan_untouched(rs, ram, len / ps, untouched);
    size_t per = chunk / ps, run = 0;   /* run: bytes to write that end at `off` */
    for (size_t off = 0; off < len; off += chunk) {
        bool skip = true;
        for (size_t k = 0; k < per && skip; k++)
            skip = untouched[off / ps + k];
        if (!skip) {
            run += chunk;
            continue;
        }
        if (run && !vmstate_write(op, SG_VMSTATE_RAM_OFFSET + done + off - run, ram + off - run,
                                  run, err))
            return false;
        run = 0;
    }
    return !run || vmstate_write(op, SG_VMSTATE_RAM_OFFSET + done + len - run, ram + len - run,
                                 run, err);
}

/* Worker: guest RAM into the vmstate area, then the header and the disk
 * snapshots.  Cancel is honoured between RAM pieces. */
static void *save_worker(void *arg)
{
    struct snap_op *op = arg;
    struct sg_vm *vm = &op->vmm->vm;
    struct sg_ram_scan rs;
    sg_ram_scan_open(&rs);   /* unavailable: every page is written (and zero-tested) */
    bool *untouched = malloc(SG_SNAP_RAM_STEP / rs.page_size * sizeof(bool));
    bool ok = untouched != NULL;
    if (!ok)
        sg_error_set(&op->werr, "out of memory");
    for (uint64_t done = 0; ok && done < vm->ram_size;) {
        if (atomic_load(&op->cancel)) {
            ok = false;
            break;
        }
        uint64_t left = vm->ram_size - done;
        size_t len = left < SG_SNAP_RAM_STEP ? (size_t)left : SG_SNAP_RAM_STEP;
        ok = save_ram_piece(op, &rs, untouched, done, len, &op->werr);
        done += len;
        atomic_store(&op->progress, done);
    }
    free(untouched);
    sg_ram_scan_close(&rs);
    if (ok && !atomic_load(&op->cancel))
        ok = save_commit(op, &op->werr);
    op->worker_ok = ok;
    atomic_store(&op->worker_done, true);
    return NULL;
}

static enum sg_job_step save_step(struct sg_job *job, bool cancelled)
{
    struct snap_op *op = job->priv;
    struct sg_vm *vm = &op->vmm->vm;
    if (cancelled) {
        atomic_store(&op->cancel, true);
        if (!sg_snap_worker_finished(op))
            return SG_JOB_STEP_WAIT;
        save_undo(op);
        return SG_JOB_STEP_FAILED;
    }
    switch (op->phase) {
    case 0: {
        if (!sg_snap_resolve_devices(op, true, &job->err) || !sg_snap_all_can_snapshot(op, &job->err))
            return SG_JOB_STEP_FAILED;
        int r = sg_snap_all_have_tag(op, &job->err);
        if (r < 0)
            return SG_JOB_STEP_FAILED;
        if (r == 1 && !op->replace) {
            sg_error_set(&job->err, "Snapshot '%s' already exists in one or more devices", op->tag);
            return SG_JOB_STEP_FAILED;
        }
        if (!sg_snap_find_vmstate_drive(op, &job->err))
            return SG_JOB_STEP_FAILED;
        if (op->vmm->vm.state == SG_RUN_SHUTDOWN) {
            sg_error_set(&job->err, "The VM has shut down");
            return SG_JOB_STEP_FAILED;
        }
        sg_snap_pause_vm(op, SG_RUN_SAVE_VM);
        sg_vmstate_header_init(&op->hdr, vm);
        op->hdr.vm_clock_ns = sg_vmm_vm_clock_ns(op->vmm);
        if (!sg_vmstate_capture(vm, &op->blob, &op->blob_len, &job->err)) {
            save_undo(op);
            return SG_JOB_STEP_FAILED;
        }
        if (op->blob_len > SG_VMSTATE_RAM_OFFSET - SG_VMSTATE_STATE_OFFSET) {
            sg_error_set(&job->err, "machine state too large (%zu bytes)", op->blob_len);
            save_undo(op);
            return SG_JOB_STEP_FAILED;
        }
        op->hdr.state_len = op->blob_len;
        op->hdr.state_crc = sg_crc32(op->blob, op->blob_len);
        job->total = SG_VMSTATE_RAM_OFFSET + vm->ram_size;
        /* The RAM writer leaves untouched pages out, so the area must read
         * as zeros first: a crashed save can have left data in it. */
        pthread_mutex_lock(&op->vmdrive->lock);
        bool empty = sg_block_vmstate_discard(op->vmdrive->bs, &job->err);
        pthread_mutex_unlock(&op->vmdrive->lock);
        if (!empty ||
            !vmstate_write(op, SG_VMSTATE_STATE_OFFSET, op->blob, op->blob_len, &job->err) ||
            !sg_snap_start_worker(op, save_worker, &job->err)) {
            save_undo(op);
            return SG_JOB_STEP_FAILED;
        }
        job->cur = SG_VMSTATE_RAM_OFFSET;
        op->phase = 1;
        return SG_JOB_STEP_WAIT;
    }
    case 1:
        job->cur = SG_VMSTATE_RAM_OFFSET + atomic_load(&op->progress);
        if (!sg_snap_worker_finished(op))
            return SG_JOB_STEP_WAIT;
        if (!op->worker_ok) {
            job->err = op->werr;
            save_undo(op);
            return SG_JOB_STEP_FAILED;
        }
        sg_snap_resume_vm(op);
        return SG_JOB_STEP_DONE;
    }
    return SG_JOB_STEP_FAILED;
}

const struct sg_job_driver sg_snap_save_drv = { "snapshot-save", save_step, sg_snap_op_free };

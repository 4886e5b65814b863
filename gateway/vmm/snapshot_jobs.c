/* snapshot_jobs.c: snapshot-save / snapshot-load / snapshot-delete as jobs,
 * blockdev-snapshot-internal-sync, blockdev-snapshot-delete-internal-sync,
 * transaction, and -loadvm.  QEMU 7.2's checks and texts first; then what
 * QEMU does not do: load validates every disk, the VM state header and the
 * configuration before it touches anything.
 *
 * Save, in main-loop steps (the monitor answers between them):
 *   validate -> pause, capture CPU/devices, write state blob -> write RAM in
 *   8 MiB pieces -> write header, create the disk snapshots (vmstate disk
 *   last: its snapshot is the commit point) -> resume.
 * Any failure or job-cancel before the commit point discards the vmstate
 * area and deletes the snapshots already made, so nothing is left behind. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "jobs.h"
#include "qmp_server.h"
#include "vmm.h"
#include "vmstate.h"

#define RAM_STEP (8u << 20)

json_t *sg_vmm_snapshot_info_json(const struct sg_snapshot_info *si);

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
    atomic_bool worker_done;
    atomic_bool cancel;
    _Atomic uint64_t progress;
    bool worker_ok;
    struct sg_error werr;
};

static bool start_worker(struct snap_op *op, void *(*fn)(void *), struct sg_error *err)
{
    atomic_store(&op->worker_done, false);
    int e = pthread_create(&op->worker, NULL, fn, op);
    if (e) {
        sg_error_set_errno(err, e, "job worker thread");
        return false;
    }
    op->worker_started = true;
    return true;
}

/* true once the worker has finished (and was joined). */
static bool worker_finished(struct snap_op *op)
{
    if (!op->worker_started)
        return true;
    if (!atomic_load(&op->worker_done))
        return false;
    pthread_join(op->worker, NULL);
    op->worker_started = false;
    return true;
}

static void op_free(void *p)
{
    struct snap_op *op = p;
    if (op) {
        if (op->worker_started) {
            atomic_store(&op->cancel, true);
            pthread_join(op->worker, NULL);
        }
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
static bool resolve_devices(struct snap_op *op, bool unique, struct sg_error *err)
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

static bool all_can_snapshot(struct snap_op *op, struct sg_error *err)
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
static int find_tag(struct sg_drive *d, const char *tag, char *id, size_t idlen,
                    uint64_t *vm_state_size, struct sg_error *err)
{
    if (!sg_block_can_snapshot(d->bs))
        return 0;
    struct sg_snapshot_info *list = NULL;
    pthread_mutex_lock(&d->lock);
    int n = sg_block_snapshot_list(d->bs, &list, err);
    pthread_mutex_unlock(&d->lock);
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
static int all_have_tag(struct snap_op *op, struct sg_error *err)
{
    for (int i = 0; i < op->n; i++) {
        int r = find_tag(op->drives[i], op->tag, NULL, 0, NULL, err);
        if (r <= 0)
            return r;
    }
    return 1;
}

static bool find_vmstate_drive(struct snap_op *op, struct sg_error *err)
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

static void pause_vm(struct snap_op *op, enum sg_run_state st)
{
    struct sg_vmm *vmm = op->vmm;
    op->was_running = vmm->run_started_ns != 0;
    sg_vmm_stop(vmm, true);
    vmm->vm.state = st;
    op->paused = true;
}

static void resume_vm(struct snap_op *op)
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

/* ---- snapshot-save ------------------------------------------------------- */

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
    resume_vm(op);
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

/* Writes one RAM_STEP piece of guest RAM [done, done+len) to the vmstate
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
    bool *untouched = malloc(RAM_STEP / rs.page_size * sizeof(bool));
    bool ok = untouched != NULL;
    if (!ok)
        sg_error_set(&op->werr, "out of memory");
    for (uint64_t done = 0; ok && done < vm->ram_size;) {
        if (atomic_load(&op->cancel)) {
            ok = false;
            break;
        }
        uint64_t left = vm->ram_size - done;
        size_t len = left < RAM_STEP ? (size_t)left : RAM_STEP;
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
        if (!worker_finished(op))
            return SG_JOB_STEP_WAIT;
        save_undo(op);
        return SG_JOB_STEP_FAILED;
    }
    switch (op->phase) {
    case 0: {
        if (!resolve_devices(op, true, &job->err) || !all_can_snapshot(op, &job->err))
            return SG_JOB_STEP_FAILED;
        int r = all_have_tag(op, &job->err);
        if (r < 0)
            return SG_JOB_STEP_FAILED;
        if (r == 1 && !op->replace) {
            sg_error_set(&job->err, "Snapshot '%s' already exists in one or more devices", op->tag);
            return SG_JOB_STEP_FAILED;
        }
        if (!find_vmstate_drive(op, &job->err))
            return SG_JOB_STEP_FAILED;
        if (op->vmm->vm.state == SG_RUN_SHUTDOWN) {
            sg_error_set(&job->err, "The VM has shut down");
            return SG_JOB_STEP_FAILED;
        }
        pause_vm(op, SG_RUN_SAVE_VM);
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
            !start_worker(op, save_worker, &job->err)) {
            save_undo(op);
            return SG_JOB_STEP_FAILED;
        }
        job->cur = SG_VMSTATE_RAM_OFFSET;
        op->phase = 1;
        return SG_JOB_STEP_WAIT;
    }
    case 1:
        job->cur = SG_VMSTATE_RAM_OFFSET + atomic_load(&op->progress);
        if (!worker_finished(op))
            return SG_JOB_STEP_WAIT;
        if (!op->worker_ok) {
            job->err = op->werr;
            save_undo(op);
            return SG_JOB_STEP_FAILED;
        }
        resume_vm(op);
        return SG_JOB_STEP_DONE;
    }
    return SG_JOB_STEP_FAILED;
}

/* ---- snapshot-load ------------------------------------------------------- */

/* Everything that can be checked without changing anything. */
static bool load_validate(struct sg_job *job, struct snap_op *op)
{
    struct sg_error *err = &job->err;
    struct sg_vm *vm = &op->vmm->vm;
    if (!resolve_devices(op, true, err) || !all_can_snapshot(op, err))
        return false;
    int r = all_have_tag(op, err);
    if (r < 0)
        return false;
    if (r == 0) {
        sg_error_set(err, "Snapshot '%s' does not exist in one or more devices", op->tag);
        return false;
    }
    if (!find_vmstate_drive(op, err))
        return false;
    char vid[128];
    uint64_t vsize = 0;
    if (find_tag(op->vmdrive, op->tag, vid, sizeof(vid), &vsize, err) <= 0)
        return false;
    if (vsize == 0) {
        sg_error_set(err, "This is a disk-only snapshot. Revert to it  offline using qemu-img");
        return false;
    }
    uint8_t page[SG_VMSTATE_HEADER_SIZE];
    pthread_mutex_lock(&op->vmdrive->lock);
    bool ok = sg_block_vmstate_read_snapshot(op->vmdrive->bs, vid, 0, page, sizeof(page), err);
    pthread_mutex_unlock(&op->vmdrive->lock);
    if (!ok || !sg_vmstate_header_decode(page, &op->hdr, op->tag, err) ||
        !sg_vmstate_config_matches(&op->hdr, vm, op->tag, err))
        return false;
    if (vsize < op->hdr.ram_offset + op->hdr.ram_size) {
        sg_error_set(err, "Snapshot '%s': VM state is truncated", op->tag);
        return false;
    }

    /* Every saved disk must be here with the very snapshot this save wrote,
     * and every writable disk being loaded must have been saved. */
    for (unsigned k = 0; k < op->hdr.nr_disks; k++) {
        const struct sg_vmstate_disk *hd = &op->hdr.disks[k];
        int idx = -1;
        for (int i = 0; i < op->n; i++)
            if (!strcmp(op->drives[i]->node_name, hd->node))
                idx = i;
        if (idx < 0) {
            sg_error_set(err, "Snapshot '%s' includes disk '%s', which is not among the devices "
                              "of this VM", op->tag, hd->node);
            return false;
        }
        struct sg_drive *d = op->drives[idx];
        if (hd->is_vmstate != (d == op->vmdrive)) {
            sg_error_set(err, "Snapshot '%s' keeps its VM state on '%s', not on '%s'", op->tag,
                         hd->is_vmstate ? hd->node : "another disk", op->vmdrive->node_name);
            return false;
        }
        if (hd->size != sg_block_size(d->bs)) {
            sg_error_set(err, "Snapshot '%s' was saved with disk '%s' of %llu bytes, it now has "
                              "%llu bytes", op->tag, hd->node, (unsigned long long)hd->size,
                         (unsigned long long)sg_block_size(d->bs));
            return false;
        }
        struct sg_snapshot_info *list = NULL;
        pthread_mutex_lock(&d->lock);
        int n = sg_block_snapshot_list(d->bs, &list, err);
        pthread_mutex_unlock(&d->lock);
        if (n < 0)
            return false;
        bool match = false;
        for (int i = 0; i < n; i++) {
            if (list[i].name && !strcmp(list[i].name, op->tag) && !strcmp(list[i].id, hd->snap_id) &&
                list[i].date_sec == hd->date_sec && list[i].date_nsec == hd->date_nsec)
                match = true;
        }
        sg_snapshot_info_free_list(list, n);
        if (!match) {
            sg_error_set(err, "Snapshot '%s' on disk '%s' is not the one saved with the VM state "
                              "(expected ID %s)", op->tag, hd->node, hd->snap_id);
            return false;
        }
        char sid[sizeof(hd->snap_id)];
        memcpy(sid, hd->snap_id, sizeof(sid));   /* hd lives inside op too */
        snprintf(op->ids[idx], sizeof(op->ids[idx]), "%s", sid);
    }
    for (int i = 0; i < op->n; i++) {
        if (!op->ids[i][0]) {
            sg_error_set(err, "Snapshot '%s' does not cover writable disk '%s'", op->tag,
                         op->drives[i]->node_name);
            return false;
        }
    }

    op->blob_len = op->hdr.state_len;
    op->blob = malloc(op->blob_len ? op->blob_len : 1);
    if (!op->blob) {
        sg_error_set(err, "out of memory");
        return false;
    }
    pthread_mutex_lock(&op->vmdrive->lock);
    ok = sg_block_vmstate_read_snapshot(op->vmdrive->bs, vid, op->hdr.state_offset, op->blob,
                                        op->blob_len, err);
    pthread_mutex_unlock(&op->vmdrive->lock);
    if (!ok)
        return false;
    if (sg_crc32(op->blob, op->blob_len) != op->hdr.state_crc) {
        sg_error_set(err, "Snapshot '%s': machine state is corrupt (checksum mismatch)", op->tag);
        return false;
    }
    if (!sg_vmstate_check(vm, op->blob, op->blob_len, err)) {
        sg_error_prefix(err, "Snapshot '%s'", op->tag);
        return false;
    }
    snprintf(op->vm_snap_id, sizeof(op->vm_snap_id), "%s", vid);
    return true;
}

/* Zeroes guest RAM [idx, idx+len): MADV_DONTNEED on the private anonymous
 * mapping drops the pages (they read as zeros again, without host memory
 * behind them), whatever the guest had written there; unaligned edges (a
 * cluster smaller than a page) are cleared by hand. */
static bool ram_clear(struct sg_vm *vm, uint64_t idx, uint64_t len, size_t ps, struct sg_error *err)
{
    char *p = (char *)vm->ram + idx;
    uint64_t head = (ps - idx % ps) % ps;
    if (head >= len) {
        memset(p, 0, (size_t)len);
        return true;
    }
    uint64_t body = (len - head) / ps * ps;
    memset(p, 0, (size_t)head);
    if (body && madvise(p + head, (size_t)body, MADV_DONTNEED) != 0) {
        sg_error_set_errno(err, errno, "guest RAM reset");
        return false;
    }
    memset(p + head + body, 0, (size_t)(len - head - body));
    return true;
}

/* Worker: revert every disk to the saved snapshot, then read guest RAM.
 * Past the first revert there is no way back, so cancel is not honoured.
 * RAM is rebuilt from the snapshot's allocation map: unallocated ranges
 * (all zeros) are dropped with ram_clear, allocated ones read straight into
 * guest RAM, overwriting whatever the guest had there.  Together they cover
 * all of RAM, so nothing of the pre-load guest survives, and a mostly empty
 * snapshot restores without reading or committing its empty part. */
static void *load_worker(void *arg)
{
    struct snap_op *op = arg;
    struct sg_vm *vm = &op->vmm->vm;
    bool ok = true;
    for (int i = 0; ok && i < op->n; i++) {
        struct sg_drive *d = op->drives[i];
        pthread_mutex_lock(&d->lock);
        ok = sg_block_snapshot_goto(d->bs, op->ids[i], &op->werr);
        pthread_mutex_unlock(&d->lock);
        if (!ok)
            sg_error_prefix(&op->werr, "Error while reverting '%s'", d->device_name);
    }
    long sps = sysconf(_SC_PAGESIZE);
    size_t ps = sps > 0 ? (size_t)sps : 4096;
    struct sg_block_extent ext[64];
    uint64_t base = op->hdr.ram_offset;
    for (uint64_t done = 0; ok && done < vm->ram_size;) {
        uint64_t left = vm->ram_size - done;
        uint64_t len = left < RAM_STEP ? left : RAM_STEP;
        for (uint64_t pos = done; ok && pos < done + len;) {
            pthread_mutex_lock(&op->vmdrive->lock);
            int n = sg_block_vmstate_map_snapshot(op->vmdrive->bs, op->vm_snap_id, base + pos,
                                                  done + len - pos, ext, 64, &op->werr);
            pthread_mutex_unlock(&op->vmdrive->lock);
            ok = n > 0;
            if (n == 0)
                sg_error_set(&op->werr, "VM state map is empty");
            for (int k = 0; ok && k < n; k++) {
                uint64_t idx = ext[k].off - base;
                if (!ext[k].allocated) {
                    ok = ram_clear(vm, idx, ext[k].len, ps, &op->werr);
                } else {
                    pthread_mutex_lock(&op->vmdrive->lock);
                    ok = sg_block_vmstate_read_snapshot(op->vmdrive->bs, op->vm_snap_id, ext[k].off,
                                                        (char *)vm->ram + idx, (size_t)ext[k].len,
                                                        &op->werr);
                    pthread_mutex_unlock(&op->vmdrive->lock);
                }
                pos = idx + ext[k].len;
            }
        }
        done += len;
        atomic_store(&op->progress, done);
    }
    op->worker_ok = ok;
    atomic_store(&op->worker_done, true);
    return NULL;
}

/* A load that failed half way leaves a guest that must not run. */
static enum sg_job_step load_broken(struct sg_job *job, struct snap_op *op)
{
    op->vmm->running = false;
    resume_vm(op);
    (void)job;
    return SG_JOB_STEP_FAILED;
}

static enum sg_job_step load_step(struct sg_job *job, bool cancelled)
{
    struct snap_op *op = job->priv;
    struct sg_vmm *vmm = op->vmm;
    struct sg_vm *vm = &vmm->vm;
    if (cancelled && op->phase == 0)
        return SG_JOB_STEP_FAILED;
    switch (op->phase) {
    case 0:
        if (!load_validate(job, op))
            return SG_JOB_STEP_FAILED;
        job->total = op->hdr.ram_offset + op->hdr.ram_size;
        job->cur = op->hdr.ram_offset;
        pause_vm(op, SG_RUN_RESTORE_VM);
        op->reverted = true;
        if (!start_worker(op, load_worker, &job->err))
            return load_broken(job, op);
        op->phase = 1;
        return SG_JOB_STEP_WAIT;
    case 1:
        job->cur = op->hdr.ram_offset + atomic_load(&op->progress);
        if (!worker_finished(op))
            return SG_JOB_STEP_WAIT;
        if (!op->worker_ok) {
            job->err = op->werr;
            return load_broken(job, op);
        }
        if (!sg_vmstate_apply(vm, op->blob, op->blob_len, &job->err))
            return load_broken(job, op);
        vmm->vm_clock_base_ns = op->hdr.vm_clock_ns;
        resume_vm(op);
        return SG_JOB_STEP_DONE;
    }
    return SG_JOB_STEP_FAILED;
}

/* ---- snapshot-delete ----------------------------------------------------- */

static enum sg_job_step delete_step(struct sg_job *job, bool cancelled)
{
    struct snap_op *op = job->priv;
    if (cancelled)
        return SG_JOB_STEP_FAILED;
    if (!resolve_devices(op, false, &job->err) || !all_can_snapshot(op, &job->err))
        return SG_JOB_STEP_FAILED;
    /* Like QEMU 7.2 (bdrv_all_delete_snapshot): per device entry only the
     * first snapshot with the tag goes; a duplicate made by qemu-img stays,
     * so HMP delvm removes one per call, as QEMU's does.  Devices without
     * the tag are skipped. */
    for (int i = 0; i < op->n; i++) {
        struct sg_drive *d = op->drives[i];
        char id[128];
        int r = find_tag(d, op->tag, id, sizeof(id), NULL, &job->err);
        if (r < 0)
            return SG_JOB_STEP_FAILED;
        if (r == 0)
            continue;
        pthread_mutex_lock(&d->lock);
        bool ok = sg_block_snapshot_delete(d->bs, id, &job->err);
        pthread_mutex_unlock(&d->lock);
        if (!ok) {
            sg_error_prefix(&job->err, "Could not delete snapshot '%s' on '%s'", op->tag,
                            d->device_name);
            return SG_JOB_STEP_FAILED;
        }
    }
    return SG_JOB_STEP_DONE;
}

static const struct sg_job_driver save_drv = { "snapshot-save", save_step, op_free };
static const struct sg_job_driver load_drv = { "snapshot-load", load_step, op_free };
static const struct sg_job_driver delete_drv = { "snapshot-delete", delete_step, op_free };

/* ---- QMP commands ---------------------------------------------------------- */

static struct snap_op *op_from_args(struct sg_vmm *vmm, json_t *args)
{
    struct snap_op *op = calloc(1, sizeof(*op));
    if (!op)
        return NULL;
    op->vmm = vmm;
    snprintf(op->tag, sizeof(op->tag), "%s", json_string_value(json_object_get(args, "tag")));
    op->replace = json_is_true(json_object_get(args, "x-replace"));
    const char *vs = json_string_value(json_object_get(args, "vmstate"));
    if (vs) {
        op->has_vmstate = true;
        snprintf(op->vmstate, sizeof(op->vmstate), "%s", vs);
    }
    json_t *devs = json_object_get(args, "devices");
    op->has_devices = devs != NULL;
    size_t i;
    json_t *v;
    json_array_foreach(devs, i, v) {
        if (op->n_names >= SG_VM_MAX_DRIVES)
            break;
        snprintf(op->dev_names[op->n_names++], 64, "%s", json_string_value(v));
    }
    return op;
}

static void start_job(struct sg_qmp_req *req, json_t *args, struct sg_vmm *vmm,
                      const struct sg_job_driver *drv)
{
    struct sg_error err = { 0 };
    struct snap_op *op = op_from_args(vmm, args);
    if (!op) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "out of memory");
        return;
    }
    if (json_array_size(json_object_get(args, "devices")) > SG_VM_MAX_DRIVES) {
        op_free(op);
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "too many devices");
        return;
    }
    if (!sg_job_create(vmm, json_string_value(json_object_get(args, "job-id")), drv, op, &err)) {
        sg_qmp_req_error(req, &err);
        return;
    }
    /* Replies at once (QEMU 7.2 waits for the job); progress via query-jobs. */
    sg_qmp_req_return(req, NULL);
}

static void cmd_snapshot_save(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    start_job(req, args, opaque, &save_drv);
}

static void cmd_snapshot_load(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    start_job(req, args, opaque, &load_drv);
}

static void cmd_snapshot_delete(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    start_job(req, args, opaque, &delete_drv);
}

/* ---- internal snapshots of one device ------------------------------------- */

static struct sg_drive *root_bs(struct sg_vmm *vmm, const char *name, struct sg_error *err)
{
    struct sg_drive *d = sg_vmm_find_device(vmm, name);
    if (!d)
        d = sg_vmm_find_node(vmm, name);
    if (!d)
        sg_error_set(err, "Cannot find device='%s' nor node-name='%s'", name, name);
    return d;
}

static bool internal_prepare(struct sg_vmm *vmm, const char *device, const char *name,
                             struct sg_drive **out, struct sg_error *err)
{
    struct sg_drive *d = root_bs(vmm, device, err);
    if (!d)
        return false;
    if (d->readonly) {
        sg_error_set(err, "Device '%s' is read only", device);
        return false;
    }
    if (!sg_block_can_snapshot(d->bs)) {
        sg_error_set(err, "Block format '%s' used by device '%s' does not support internal snapshots",
                     sg_block_format(d->bs), device);
        return false;
    }
    if (!*name) {
        sg_error_set(err, "Name is empty");
        return false;
    }
    int r = find_tag(d, name, NULL, 0, NULL, err);
    if (r < 0)
        return false;
    if (r) {
        sg_error_set(err, "Snapshot with name '%s' already exists on device '%s'", name, device);
        return false;
    }
    if (sg_job_active(vmm)) {
        sg_error_set(err, "Job '%s' is active; try again when it has concluded", sg_job_active(vmm)->id);
        return false;
    }
    *out = d;
    return true;
}

static bool internal_create(struct sg_vmm *vmm, struct sg_drive *d, const char *device, const char *name,
                            char *id_out, size_t id_len, struct sg_error *err)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct sg_snapshot_info si;
    memset(&si, 0, sizeof(si));
    si.name = (char *)name;
    si.date_sec = (uint64_t)now.tv_sec;
    si.date_nsec = (uint32_t)(now.tv_nsec / 1000 * 1000);
    si.vm_clock_nsec = sg_vmm_vm_clock_ns(vmm);
    si.icount = -1;
    pthread_mutex_lock(&d->lock);
    bool ok = sg_block_flush(d->bs, err) && sg_block_snapshot_create(d->bs, &si, err);
    pthread_mutex_unlock(&d->lock);
    if (!ok) {
        struct sg_error e2 = { 0 };
        sg_error_set(&e2, "Failed to create snapshot '%s' on device '%s'", name, device);
        *err = e2;
        return false;
    }
    snprintf(id_out, id_len, "%s", si.id);
    return true;
}

static void cmd_internal_sync(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    struct sg_error err = { 0 };
    const char *device = json_string_value(json_object_get(args, "device"));
    const char *name = json_string_value(json_object_get(args, "name"));
    struct sg_drive *d;
    char id[128];
    if (!internal_prepare(vmm, device, name, &d, &err) ||
        !internal_create(vmm, d, device, name, id, sizeof(id), &err)) {
        sg_qmp_req_error(req, &err);
        return;
    }
    sg_qmp_req_return(req, NULL);
}

static void cmd_internal_delete(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    struct sg_error err = { 0 };
    const char *device = json_string_value(json_object_get(args, "device"));
    const char *id = json_string_value(json_object_get(args, "id"));
    const char *name = json_string_value(json_object_get(args, "name"));
    struct sg_drive *d = root_bs(vmm, device, &err);
    if (!d) {
        sg_qmp_req_error(req, &err);
        return;
    }
    /* QEMU 7.2's order: no read-only check up front (a read-only disk fails
     * only when the snapshot table is written), and a format without
     * snapshots fails when its list is read. */
    if (!id && !name) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "Name or id must be provided");
        return;
    }
    if (sg_job_active(vmm)) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "Job '%s' is active; try again when it has concluded",
                          sg_job_active(vmm)->id);
        return;
    }
    if (!sg_block_can_snapshot(d->bs)) {
        sg_error_set_errno(&err, ENOTSUP, "Failed to get a snapshot list");
        sg_qmp_req_error(req, &err);
        return;
    }
    json_t *info = NULL;
    char found_id[128] = "";
    struct sg_snapshot_info *list = NULL;
    pthread_mutex_lock(&d->lock);
    int n = sg_block_snapshot_list(d->bs, &list, &err);
    pthread_mutex_unlock(&d->lock);
    if (n < 0) {
        sg_qmp_req_error(req, &err);
        return;
    }
    for (int i = 0; i < n && !info; i++) {
        if ((!id || !strcmp(list[i].id, id)) && (!name || (list[i].name && !strcmp(list[i].name, name)))) {
            info = sg_vmm_snapshot_info_json(&list[i]);
            snprintf(found_id, sizeof(found_id), "%s", list[i].id);
        }
    }
    sg_snapshot_info_free_list(list, n);
    if (!info) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC,
                          "Snapshot with id '%s' and name '%s' does not exist on device '%s'",
                          id ? id : "null", name ? name : "null", device);
        return;
    }
    if (d->readonly) {
        /* QEMU's text (its write of the snapshot table gets EPERM); unlike
         * QEMU 7.2 we keep listing the snapshot, which is still there. */
        json_decref(info);
        sg_error_set_errno(&err, EPERM, "Failed to remove snapshot from snapshot list");
        sg_qmp_req_error(req, &err);
        return;
    }
    pthread_mutex_lock(&d->lock);
    bool ok = sg_block_snapshot_delete(d->bs, found_id, &err);
    pthread_mutex_unlock(&d->lock);
    if (!ok) {
        json_decref(info);
        sg_qmp_req_error(req, &err);
        return;
    }
    sg_qmp_req_return(req, info);
}

/* transaction: only internal snapshot actions; all prepared first, then
 * created; a failure deletes the ones already made (all or nothing). */
static void cmd_transaction(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    struct sg_error err = { 0 };
    json_t *actions = json_object_get(args, "actions");
    size_t n = json_array_size(actions);
    struct act { const char *device, *name; struct sg_drive *d; char id[128]; bool done; } *a =
        calloc(n ? n : 1, sizeof(*a));
    if (!a) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "out of memory");
        return;
    }
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *data = json_object_get(json_array_get(actions, i), "data");
        a[i].device = json_string_value(json_object_get(data, "device"));
        a[i].name = json_string_value(json_object_get(data, "name"));
        ok = internal_prepare(vmm, a[i].device, a[i].name, &a[i].d, &err);
        for (size_t j = 0; ok && j < i; j++) {
            if (a[j].d == a[i].d && !strcmp(a[j].name, a[i].name)) {
                sg_error_set(&err, "Snapshot with name '%s' already exists on device '%s'",
                             a[i].name, a[i].device);
                ok = false;
            }
        }
    }
    for (size_t i = 0; ok && i < n; i++) {
        ok = internal_create(vmm, a[i].d, a[i].device, a[i].name, a[i].id, sizeof(a[i].id), &err);
        a[i].done = ok;
    }
    if (!ok) {
        for (size_t i = 0; i < n; i++) {
            if (a[i].done) {
                pthread_mutex_lock(&a[i].d->lock);
                sg_block_snapshot_delete(a[i].d->bs, a[i].id, NULL);
                pthread_mutex_unlock(&a[i].d->lock);
            }
        }
        sg_qmp_req_error(req, &err);
    } else {
        sg_qmp_req_return(req, NULL);
    }
    free(a);
}

/* ---- -loadvm --------------------------------------------------------------- */

bool sg_vmm_loadvm_startup(struct sg_vmm *vmm, const char *tag, struct sg_error *err)
{
    struct snap_op *op = calloc(1, sizeof(*op));
    if (!op) {
        sg_error_set(err, "out of memory");
        return false;
    }
    op->vmm = vmm;
    snprintf(op->tag, sizeof(op->tag), "%s", tag);
    /* HMP's rule: every writable, snapshot-capable disk; vmstate on the first. */
    for (int i = 0; i < vmm->vm.nr_drives; i++) {
        struct sg_drive *d = &vmm->vm.drives[i];
        if (d->readonly)
            continue;
        if (!sg_block_can_snapshot(d->bs)) {
            sg_error_set(err, "-loadvm %s: Device '%s' is writable but does not support snapshots",
                         tag, d->device_name);
            op_free(op);
            return false;
        }
        snprintf(op->dev_names[op->n_names++], 64, "%s", d->node_name);
    }
    struct sg_job job;
    memset(&job, 0, sizeof(job));
    job.drv = &load_drv;
    job.priv = op;
    job.vmm = vmm;
    enum sg_job_step r;
    while ((r = load_step(&job, false)) == SG_JOB_STEP_MORE || r == SG_JOB_STEP_WAIT)
        if (r == SG_JOB_STEP_WAIT)
            nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
    op_free(op);
    if (r != SG_JOB_STEP_DONE) {
        sg_error_set(err, "-loadvm %s: %s", tag, job.err.msg);
        return false;
    }
    return true;
}

/* ---- registration ---------------------------------------------------------- */

static const struct sg_qmp_arg str_elem = { NULL, SG_QMP_T_STR };
static const struct sg_qmp_arg load_args[] = {
    { "job-id", SG_QMP_T_STR },
    { "tag", SG_QMP_T_STR },
    { "vmstate", SG_QMP_T_STR },
    { "devices", SG_QMP_T_ARRAY, .elem = &str_elem },
    { NULL },
};
/* x-replace (snapgate extension): an existing tag is replaced atomically
 * instead of being an error; the old snapshot survives a failed save. */
static const struct sg_qmp_arg save_args[] = {
    { "job-id", SG_QMP_T_STR },
    { "tag", SG_QMP_T_STR },
    { "vmstate", SG_QMP_T_STR },
    { "devices", SG_QMP_T_ARRAY, .elem = &str_elem },
    { "x-replace", SG_QMP_T_BOOL, .optional = true },
    { NULL },
};
static const struct sg_qmp_arg delete_args[] = {
    { "job-id", SG_QMP_T_STR },
    { "tag", SG_QMP_T_STR },
    { "devices", SG_QMP_T_ARRAY, .elem = &str_elem },
    { NULL },
};
static const struct sg_qmp_arg internal_args[] = {
    { "device", SG_QMP_T_STR },
    { "name", SG_QMP_T_STR },
    { NULL },
};
static const struct sg_qmp_arg internal_delete_args[] = {
    { "device", SG_QMP_T_STR },
    { "id", SG_QMP_T_STR, .optional = true },
    { "name", SG_QMP_T_STR, .optional = true },
    { NULL },
};
static const char *const action_types[] = { "blockdev-snapshot-internal-sync", NULL };
static const struct sg_qmp_arg action_base[] = {
    { "type", SG_QMP_T_ENUM, .values = action_types },
    { NULL },
};
static const struct sg_qmp_arg action_data_obj[] = {
    { "data", SG_QMP_T_OBJECT, .members = internal_args },
    { NULL },
};
static const struct sg_qmp_variant action_variants[] = {
    { "blockdev-snapshot-internal-sync", action_data_obj },
    { NULL },
};
static const struct sg_qmp_arg action_elem = {
    NULL, SG_QMP_T_UNION, .members = action_base, .discriminator = "type",
    .variants = action_variants,
};
static const struct sg_qmp_arg transaction_args[] = {
    { "actions", SG_QMP_T_ARRAY, .elem = &action_elem },
    { "properties", SG_QMP_T_OBJECT, .optional = true },
    { NULL },
};

bool sg_vmm_jobs_init(struct sg_vmm *vmm, struct sg_error *err)
{
    const struct sg_qmp_command cmds[] = {
        { "snapshot-save", cmd_snapshot_save, save_args, 0, vmm },
        { "snapshot-load", cmd_snapshot_load, load_args, 0, vmm },
        { "snapshot-delete", cmd_snapshot_delete, delete_args, 0, vmm },
        { "blockdev-snapshot-internal-sync", cmd_internal_sync, internal_args, 0, vmm },
        { "blockdev-snapshot-delete-internal-sync", cmd_internal_delete, internal_delete_args, 0, vmm },
        { "transaction", cmd_transaction, transaction_args, 0, vmm },
        { NULL },
    };
    return sg_vmm_jobs_register(vmm, err) && sg_qmp_server_add_commands(vmm->qmp, cmds, err);
}

/* snapshot_load.c: the snapshot-load job and -loadvm.  Beyond QEMU 7.2's
 * checks and texts, load validates every disk, the VM state header and the
 * configuration before it touches anything (load_validate).  Then, lazily
 * (ram_lazy.c): map the snapshot's RAM, pause, swap in RAM that fills on
 * first touch, start the disk reverts behind the drive locks, apply the
 * machine state and resume -- the guest runs within milliseconds while the
 * reverts finish and a filler thread brings the rest of RAM in, and the job
 * concludes when all of it is there.  Where that is not possible (no
 * userfaultfd, an odd cluster size) a worker reverts the disks and reads
 * RAM before the guest resumes, as before.  Either way the vmstate disk's
 * active vmstate area then shares the loaded snapshot's clusters, so the
 * next save writes only what the guest changes after the load. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "ram_hash.h"
#include "qmp_server.h"
#include "ram_lazy.h"
#include "snapshot_op.h"
#include "trace.h"

/* Everything that can be checked without changing anything. */
static bool load_validate(struct sg_job *job, struct snap_op *op)
{
    struct sg_error *err = &job->err;
    struct sg_vm *vm = &op->vmm->vm;
    if (!sg_snap_resolve_devices(op, true, err) || !sg_snap_all_can_snapshot(op, err))
        return false;
    int r = sg_snap_all_have_tag(op, err);
    if (r < 0)
        return false;
    if (r == 0) {
        sg_error_set(err, "Snapshot '%s' does not exist in one or more devices", op->tag);
        return false;
    }
    if (!sg_snap_find_vmstate_drive(op, err))
        return false;
    char vid[128];
    uint64_t vsize = 0;
    if (sg_snap_find_tag(op->vmdrive, op->tag, vid, sizeof(vid), &vsize, err) <= 0)
        return false;
    if (vsize == 0) {
        sg_error_set(err, "This is a disk-only snapshot. Revert to it  offline using qemu-img");
        return false;
    }
    uint8_t page[SG_VMSTATE_HEADER_SIZE];
    sg_drive_lock(op->vmdrive);
    bool ok = sg_block_vmstate_read_snapshot(op->vmdrive->bs, vid, 0, page, sizeof(page), err);
    sg_drive_unlock(op->vmdrive);
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
        sg_drive_lock(d);
        int n = sg_block_snapshot_list(d->bs, &list, err);
        sg_drive_unlock(d);
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
    sg_drive_lock(op->vmdrive);
    ok = sg_block_vmstate_read_snapshot(op->vmdrive->bs, vid, op->hdr.state_offset, op->blob,
                                        op->blob_len, err);
    sg_drive_unlock(op->vmdrive);
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
static bool revert_disks(struct snap_op *op, struct sg_error *err)
{
    bool ok = true;
    for (int i = 0; ok && i < op->n; i++) {
        struct sg_drive *d = op->drives[i];
        sg_drive_lock(d);
        ok = sg_block_snapshot_goto(d->bs, op->ids[i], err);
        sg_drive_unlock(d);
        if (!ok)
            sg_error_prefix(err, "Error while reverting '%s'", d->device_name);
    }
    return ok;
}

static void share_base(struct snap_op *op);

static void *load_worker(void *arg)
{
    struct snap_op *op = arg;
    struct sg_vm *vm = &op->vmm->vm;
    bool ok = op->disks_reverted || revert_disks(op, &op->werr);
    long sps = sysconf(_SC_PAGESIZE);
    size_t ps = sps > 0 ? (size_t)sps : 4096;
    struct sg_block_extent ext[64];
    uint64_t base = op->hdr.ram_offset;
    for (uint64_t done = 0; ok && done < vm->ram_size;) {
        uint64_t left = vm->ram_size - done;
        uint64_t len = left < SG_SNAP_RAM_STEP ? left : SG_SNAP_RAM_STEP;
        for (uint64_t pos = done; ok && pos < done + len;) {
            sg_drive_lock(op->vmdrive);
            int n = sg_block_vmstate_map_snapshot(op->vmdrive->bs, op->vm_snap_id, base + pos,
                                                  done + len - pos, ext, 64, &op->werr);
            sg_drive_unlock(op->vmdrive);
            ok = n > 0;
            if (n == 0)
                sg_error_set(&op->werr, "VM state map is empty");
            for (int k = 0; ok && k < n; k++) {
                uint64_t idx = ext[k].off - base;
                if (!ext[k].allocated) {
                    ok = ram_clear(vm, idx, ext[k].len, ps, &op->werr);
                } else {
                    sg_drive_lock(op->vmdrive);
                    ok = sg_block_vmstate_read_snapshot(op->vmdrive->bs, op->vm_snap_id, ext[k].off,
                                                        (char *)vm->ram + idx, (size_t)ext[k].len,
                                                        &op->werr);
                    sg_drive_unlock(op->vmdrive);
                }
                pos = idx + ext[k].len;
            }
        }
        done += len;
        atomic_store(&op->progress, done);
    }
    /* RAM as loaded, hashed for the next save (ram_hash.c). */
    size_t chunk = sg_snap_ram_chunk(op->vmdrive->bs);
    if (ok && (op->hashes = sg_ram_hashes_new(vm->ram_size, chunk)))
        for (uint64_t c = 0; c < op->hashes->n; c++) {
            uint64_t off = c * chunk;
            size_t n = vm->ram_size - off < chunk ? (size_t)(vm->ram_size - off) : chunk;
            op->hashes->h[c] = sg_ram_hash((char *)vm->ram + off, n);
        }
    if (ok)
        share_base(op);
    op->worker_ok = ok;
    atomic_store(&op->worker_done, true);
    return NULL;
}

/* A load that failed half way leaves a guest that must not run. */
static enum sg_job_step load_broken(struct sg_job *job, struct snap_op *op)
{
    struct sg_vmm *vmm = op->vmm;
    sg_trace_end(false);
    vmm->running = false;
    if (!op->paused)
        sg_vmm_stop(vmm, true);   /* a lazy load had resumed it */
    sg_snap_resume_vm(op);
    vmm->vm.pos.valid = vmm->vm.pos.base = false;
    (void)job;
    return SG_JOB_STEP_FAILED;
}

/* The load is complete: the VM stands at this snapshot, and the active
 * vmstate area becomes the base of the next incremental save. */
static void load_done(struct snap_op *op)
{
    struct sg_vm *vm = &op->vmm->vm;
    struct sg_snap_pos *pos = &vm->pos;
    memset(pos, 0, sizeof(*pos));
    pos->valid = true;
    snprintf(pos->node, sizeof(pos->node), "%s", op->vmdrive->node_name);
    snprintf(pos->id, sizeof(pos->id), "%.31s", op->vm_snap_id);
    for (unsigned k = 0; k < op->hdr.nr_disks; k++) {
        if (op->hdr.disks[k].is_vmstate) {
            pos->date_sec = op->hdr.disks[k].date_sec;
            pos->date_nsec = op->hdr.disks[k].date_nsec;
        }
    }
    pos->base = op->share_ok && op->hashes;
    sg_ram_hashes_free(vm->hashes);
    vm->hashes = pos->base ? op->hashes : NULL;
    if (pos->base)
        op->hashes = NULL;
}

/* Worker side of load_done: one transaction, so off the main loop. */
static void share_base(struct snap_op *op)
{
    sg_drive_lock(op->vmdrive);
    op->share_ok = sg_block_vmstate_share_from(op->vmdrive->bs, op->vm_snap_id, NULL);
    sg_drive_unlock(op->vmdrive);
}

static void *share_worker(void *arg)
{
    struct snap_op *op = arg;
    share_base(op);
    op->worker_ok = true;
    atomic_store(&op->worker_done, true);
    return NULL;
}

/* Lazy load: the disks are reverted while the guest already runs.  The
 * worker takes every drive lock before the guest resumes (the main loop
 * waits for that), so the guest's first disk request waits until its
 * disk is the snapshot's; the reverts' transactions and their flushes
 * (12-17 ms here) stay out of the pause.  The filler reads the snapshot's
 * own clusters meanwhile, which a revert never changes. */
static void *locked_revert_worker(void *arg)
{
    struct snap_op *op = arg;
    bool ok = true;
    for (int i = 0; ok && i < op->n; i++) {
        struct sg_drive *d = op->drives[i];
        ok = sg_block_snapshot_goto(d->bs, op->ids[i], &op->werr);
        if (!ok)
            sg_error_prefix(&op->werr, "Error while reverting '%s'", d->device_name);
    }
    for (int i = op->n - 1; i >= 0; i--)
        sg_drive_unlock(op->drives[i]);
    op->worker_ok = op->disks_reverted = ok;
    atomic_store(&op->worker_done, true);
    return NULL;
}

/* Lazy load, paused: swap in RAM that fills on first touch (ram_lazy.c),
 * take the drive locks, apply the machine state and resume; then the
 * reverts start behind the locks and the filler brings in the rest.  The
 * worker and the filler start only after the resume: run in the pause they
 * took its CPU (up to 7.5 ms of it in the kvm bed, with 2 CPUs).  0: not
 * armed (load eagerly), -1: failed. */
static int load_lazy_instant(struct sg_job *job, struct snap_op *op)
{
    struct sg_vmm *vmm = op->vmm;
    struct sg_vm *vm = &vmm->vm;
    struct sg_error lerr = { 0 };
    if (!sg_ram_lazy_arm(op->lazy, &lerr))
        return 0;
    op->armed = true;
    sg_snap_lock_drives(op);
    sg_trace_mark("locks");
    bool ok = sg_vmstate_apply(vm, op->blob, op->blob_len, &job->err);
    if (ok) {
        vmm->vm_clock_base_ns = op->hdr.vm_clock_ns;
        sg_trace_mark("apply");
        sg_snap_resume_vm(op);   /* RESUME written out, then the vCPUs run */
        sg_trace_end(true);
    }
    /* The reverts run whatever happened: the worker releases the locks. */
    if (!sg_snap_start_worker(op, locked_revert_worker, ok ? &job->err : &lerr)) {
        sg_snap_unlock_drives(op);
        ok = false;
    }
    sg_ram_lazy_go(op->lazy);
    return ok ? 1 : -1;
}

static enum sg_job_step load_step(struct sg_job *job, bool cancelled)
{
    struct snap_op *op = job->priv;
    struct sg_vmm *vmm = op->vmm;
    struct sg_vm *vm = &vmm->vm;
    if (cancelled && op->phase == 0)
        return SG_JOB_STEP_FAILED;
    switch (op->phase) {
    case 0: {
        sg_trace_begin("load");
        if (!load_validate(job, op)) {
            sg_trace_end(false);
            return SG_JOB_STEP_FAILED;
        }
        sg_trace_mark("validate");
        job->total = op->hdr.ram_offset + op->hdr.ram_size;
        job->cur = op->hdr.ram_offset;
        /* Before the pause: the snapshot's RAM clusters, mapped to file
         * offsets (a few L2 tables; nothing can change them meanwhile). */
        struct sg_error lerr = { 0 };
        /* SNAPGATE_VMM_LAZY=0: always the eager load (for comparing). */
        const char *lz = getenv("SNAPGATE_VMM_LAZY");
        sg_drive_lock(op->vmdrive);
        if (!lz || strcmp(lz, "0") != 0) {
            uint64_t pv[8 * SG_VM_MAX_VCPUS];
            int npv = sg_vmstate_pv_pages(vm, op->blob, op->blob_len, pv, (int)(sizeof(pv) / sizeof(pv[0])));
            op->lazy = sg_ram_lazy_prepare(vm, op->vmdrive->bs, op->vm_snap_id, op->hdr.ram_offset,
                                           pv, npv, &lerr);
        }
        sg_drive_unlock(op->vmdrive);
        sg_trace_mark("prepare");

        /* Whichever worker the pause starts, its thread exists already. */
        (void)sg_snap_park_worker(op, &lerr);
        sg_snap_pause_vm(op, SG_RUN_RESTORE_VM);
        sg_trace_mark("stop-event");
        op->reverted = true;
        /* RAM changes from here: no base until the load is complete. */
        sg_ram_hashes_free(vm->hashes);
        vm->hashes = NULL;
        int lazy = op->lazy ? load_lazy_instant(job, op) : 0;
        if (lazy < 0)
            return load_broken(job, op);
        if (lazy > 0) {
            op->phase = 3;
            return SG_JOB_STEP_WAIT;
        }
        /* No lazy fill: a worker reverts the disks and reads RAM, then
         * the guest resumes. */
        sg_ram_lazy_free(op->lazy);
        op->lazy = NULL;
        if (!sg_snap_start_worker(op, load_worker, &job->err))
            return load_broken(job, op);
        op->phase = 1;
        return SG_JOB_STEP_WAIT;
    }
    case 3:
        /* The guest runs; the reverts finish behind the drive locks. */
        if (!sg_snap_worker_finished(op))
            return SG_JOB_STEP_WAIT;
        if (!op->worker_ok) {
            job->err = op->werr;
            return load_broken(job, op);
        }
        op->phase = 2;
        return SG_JOB_STEP_MORE;
    case 4:
        if (!sg_snap_worker_finished(op))
            return SG_JOB_STEP_WAIT;
        load_done(op);
        return SG_JOB_STEP_DONE;
    case 2: {
        job->cur = op->hdr.ram_offset + sg_ram_lazy_progress(op->lazy);
        int r = sg_ram_lazy_poll(op->lazy, &job->err);
        if (r == 0)
            return SG_JOB_STEP_WAIT;
        if (r < 0)
            return load_broken(job, op);
        op->hashes = sg_ram_lazy_take_hashes(op->lazy);
        if (!sg_snap_start_worker(op, share_worker, &job->err))
            return load_broken(job, op);
        op->phase = 4;
        return SG_JOB_STEP_WAIT;
    }
    case 1:
        job->cur = op->hdr.ram_offset + atomic_load(&op->progress);
        if (!sg_snap_worker_finished(op))
            return SG_JOB_STEP_WAIT;
        if (!op->worker_ok) {
            job->err = op->werr;
            return load_broken(job, op);
        }
        sg_trace_mark("eager-worker");   /* the span of phase 0: the eager pause goes on */
        if (!sg_vmstate_apply(vm, op->blob, op->blob_len, &job->err))
            return load_broken(job, op);
        vmm->vm_clock_base_ns = op->hdr.vm_clock_ns;
        sg_trace_mark("apply");
        load_done(op);
        sg_snap_resume_vm(op);
        sg_trace_end(true);
        return SG_JOB_STEP_DONE;
    }
    return SG_JOB_STEP_FAILED;
}

const struct sg_job_driver sg_snap_load_drv = { "snapshot-load", load_step, sg_snap_op_free };

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
            sg_snap_op_free(op);
            return false;
        }
        snprintf(op->dev_names[op->n_names++], 64, "%s", d->node_name);
    }
    struct sg_job job;
    memset(&job, 0, sizeof(job));
    job.drv = &sg_snap_load_drv;
    job.priv = op;
    job.vmm = vmm;
    enum sg_job_step r;
    while ((r = load_step(&job, false)) == SG_JOB_STEP_MORE || r == SG_JOB_STEP_WAIT)
        if (r == SG_JOB_STEP_WAIT)
            nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
    sg_snap_op_free(op);
    if (r != SG_JOB_STEP_DONE) {
        sg_error_set(err, "-loadvm %s: %s", tag, job.err.msg);
        return false;
    }
    return true;
}

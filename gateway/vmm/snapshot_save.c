/* snapshot_save.c: the snapshot-save job, live: the guest pauses only
 * while its machine state is captured and its RAM is frozen by
 * write-protect (ram_wp.c; a fork, ram_live.c, where that is missing),
 * and runs while RAM is written.
 *
 * The steps, and the instant T they all describe:
 *   before the pause (worker): empty the active vmstate area for a full
 *     save; a throw-away fork (KVM drops its mappings while the guest runs);
 *   main loop: pause -> capture CPU/devices, write-protect RAM (T) -> start
 *     the worker and wait until it holds every drive lock -> resume;
 *   worker: with the locks held no guest write can reach a disk, so each
 *     disk is held aside as it is at T (sg_block_freeze: a hidden tree,
 *     listed nowhere); unlock; write the state blob, then RAM at T, read
 *     whole and hashed chunk by chunk, into the active vmstate area: only
 *     the chunks whose hash differs from the base's when that area holds
 *     the base (the rest stays shared with it), else every touched chunk
 *     into the emptied area; write the header; then each held disk becomes
 *     its snapshot (sg_block_frozen_snapshot), the vmstate disk last,
 *     taking the area with it and keeping a shared copy active as the next
 *     save's base (with T's hashes): that last transaction is the commit
 *     point.
 * Any failure or job-cancel before the commit drops what is held and
 * deletes what was made; a crash leaves only leaked clusters (qemu-img
 * check: leaks, no errors; no snapshot that was not reported done). */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ram_hash.h"
#include "snapshot_op.h"
#include "trace.h"

/* Lock hold per vmstate write: guest I/O to the vmstate disk waits for it
 * (the monitor does not: query-block and query-named-block-nodes take no
 * drive lock, qmp_cmds.c). */
#define SAVE_WRITE_MAX (256u << 10)
/* Written data is pushed to the disk without the lock every so often: a
 * metadata flush under the lock (a new L2 table, the commit) would else
 * write back everything written so far while the guest's disk I/O waits. */
#define SAVE_SYNC_EVERY (32u << 20)
/* SNAPGATE_VMM_SAVE_STALL=MS (tests): the writer holds the vmstate drive's
 * lock for MS ms (at most 60 s) once, before it writes RAM, as a write to a
 * stalled disk would (a network file system, a failing device): the test
 * that the monitor answers while a save holds the disk
 * (tests/integration/vmm/test_vmm_monitor_save.py). */
#define SAVE_STALL_MAX_MS 60000

static void save_stall(struct snap_op *op)
{
    const char *v = getenv("SNAPGATE_VMM_SAVE_STALL");
    long ms = v ? strtol(v, NULL, 10) : 0;
    if (ms <= 0)
        return;
    if (ms > SAVE_STALL_MAX_MS)
        ms = SAVE_STALL_MAX_MS;
    sg_drive_lock(op->vmdrive);
    for (long t = 0; t < ms && !atomic_load(&op->cancel); t += 10)
        nanosleep(&(struct timespec){ 0, 10000000 }, NULL);
    sg_drive_unlock(op->vmdrive);
}

/* The ID the next snapshot on `d` gets: max(IDs) + 1 (block.h's rule). */
static bool next_id(struct sg_drive *d, char *out, size_t len, struct sg_error *err)
{
    struct sg_snapshot_info *list = NULL;
    sg_drive_lock(d);
    int n = sg_block_snapshot_list(d->bs, &list, err);
    sg_drive_unlock(d);
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
    struct sg_vm *vm = &op->vmm->vm;
    for (int i = 0; i < op->n; i++) {
        struct sg_drive *d = op->drives[i];
        sg_drive_lock(d);
        if (op->created[i])
            sg_block_snapshot_delete(d->bs, op->ids[i], NULL);
        if (op->held[i])
            sg_block_frozen_drop(d->bs, &op->frozen_disk[i], NULL);
        op->held[i] = false;
        if (d == op->vmdrive)
            sg_block_vmstate_discard(d->bs, NULL);
        sg_drive_unlock(d);
        op->created[i] = false;
    }
    /* The area no longer holds the base; the pages stay changed. */
    if (op->vmdrive && !strcmp(vm->pos.node, op->vmdrive->node_name))
        vm->pos.base = false;
    sg_ram_child_end(&op->child);
    sg_snap_wp_end(op);
    sg_snap_resume_vm(op);
}

static bool vmstate_write(struct snap_op *op, uint64_t off, const void *buf, size_t len,
                          struct sg_error *err)
{
    const char *p = buf;
    if (op->unsynced + len > SAVE_SYNC_EVERY) {
        fdatasync(sg_block_host_fd(op->vmdrive->bs));   /* only a head start: errors come later */
        op->unsynced = 0;
    }
    op->unsynced += len;
    while (len) {
        size_t n = len < SAVE_WRITE_MAX ? len : SAVE_WRITE_MAX;
        sg_drive_lock(op->vmdrive);
        bool ok = sg_block_vmstate_write(op->vmdrive->bs, off, p, n, err);
        sg_drive_unlock(op->vmdrive);
        if (!ok)
            return false;
        off += n;
        p += n;
        len -= n;
    }
    return true;
}

/* Worker, with every drive lock held (taken in drive order): each disk
 * as it is at T, held aside (sg_block_freeze) until the commit makes it a
 * snapshot.  The active vmstate area is left as it is: the base of an
 * incremental save, or emptied for a full one. */
static bool save_disks_at_instant(struct snap_op *op, struct sg_error *err)
{
    for (int i = 0; i < op->n; i++) {
        struct sg_drive *d = op->drives[i];
        if (!sg_block_flush(d->bs, err) || !sg_block_freeze(d->bs, &op->frozen_disk[i], err)) {
            sg_error_prefix(err, "Error while creating snapshot on '%s'", d->device_name);
            return false;
        }
        op->held[i] = true;
    }
    return true;
}

/* Turns the held disk of drive i into its snapshot, with the ID the
 * header recorded. */
static bool attach_disk(struct snap_op *op, int i, struct sg_error *err)
{
    struct sg_drive *d = op->drives[i];
    bool vms = d == op->vmdrive;
    struct sg_snapshot_info si;
    memset(&si, 0, sizeof(si));
    si.name = op->tag;
    si.date_sec = op->date_sec;
    si.date_nsec = op->date_nsec;
    si.vm_clock_nsec = op->hdr.vm_clock_ns;
    si.vm_state_size = vms ? op->hdr.ram_offset + op->hdr.ram_size : 0;
    si.icount = -1;
    sg_drive_lock(d);
    bool ok = sg_block_flush(d->bs, err) &&
              sg_block_frozen_snapshot(d->bs, &op->frozen_disk[i], &si, vms, err);
    sg_drive_unlock(d);
    if (!ok) {
        sg_error_prefix(err, "Error while creating snapshot on '%s'", d->device_name);
        return false;
    }
    op->held[i] = false;
    op->created[i] = true;
    if (strcmp(si.id, op->ids[i]) != 0) {
        snprintf(op->ids[i], sizeof(op->ids[i]), "%s", si.id);
        sg_error_set(err, "snapshot on '%s' got ID %s, not the one recorded", d->device_name,
                     si.id);
        return false;
    }
    return true;
}

/* x-replace: the snapshots that already carry the tag (other than this
 * save's), removed only after the new save has committed. */
static void delete_replaced(struct snap_op *op)
{
    for (int i = 0; op->replace && i < op->n; i++) {
        struct sg_drive *d = op->drives[i];
        struct sg_snapshot_info *list = NULL;
        sg_drive_lock(d);
        int n = sg_block_snapshot_list(d->bs, &list, NULL);
        for (int k = 0; k < n; k++)
            /* Best effort: the new snapshot is committed either way; a
             * left-over old one is still a valid snapshot. */
            if (list[k].name && !strcmp(list[k].name, op->tag) && strcmp(list[k].id, op->ids[i]))
                sg_block_snapshot_delete(d->bs, list[k].id, NULL);
        sg_drive_unlock(d);
        sg_snapshot_info_free_list(list, n);
    }
}

static bool save_commit(struct snap_op *op, struct sg_error *err)
{
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
        hd->date_sec = op->date_sec;
        hd->date_nsec = op->date_nsec;
        hd->is_vmstate = d == op->vmdrive;
    }
    if (op->parent.valid) {
        h->has_parent = 1;
        snprintf(h->parent_id, sizeof(h->parent_id), "%s", op->parent.id);
        h->parent_date_sec = op->parent.date_sec;
        h->parent_date_nsec = op->parent.date_nsec;
    }
    uint8_t page[SG_VMSTATE_HEADER_SIZE];
    sg_vmstate_header_encode(h, page);
    if (!vmstate_write(op, 0, page, sizeof(page), err))
        return false;
    /* Most of the data reaches the disk here, without the lock, so the
     * flush under it (and guest I/O behind it) has little left to do. */
    if (fdatasync(sg_block_host_fd(op->vmdrive->bs)) < 0 && errno != EINVAL) {
        sg_error_set_errno(err, errno, "Error while creating snapshot on '%s': flush",
                           op->vmdrive->device_name);
        return false;
    }
    /* The vmstate disk goes last: once its snapshot exists the save is
     * complete; before that, save_undo() removes every trace. */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < op->n; i++)
            if ((op->drives[i] == op->vmdrive) == (pass == 1) && !attach_disk(op, i, err))
                return false;
    delete_replaced(op);
    return true;
}

/* RAM [idx, idx+len) at the instant: from the write-protected RAM or the
 * forked child. */
static bool ram_read(struct snap_op *op, uint64_t idx, void *buf, size_t len, struct sg_error *err)
{
    if (op->wp)
        return sg_ram_wp_read(op->wp, idx, buf, len, err);
    return sg_ram_child_read(&op->child, (char *)op->vmm->vm.ram + idx, buf, len, err);
}

/* Reads the chunks of [done, done+len) that were touched at T into buf
 * (untouched ones read as zeros and are not read: the forked child's
 * pagemap tells them, kvm/ram_scan.c; under write-protect every chunk is
 * read), hashes every chunk into op->hashes (the next base) and picks
 * those to write: with a base, the chunks whose content differs from the
 * base's; without, the touched ones (the area starts empty). */
static bool read_and_pick(struct snap_op *op, struct sg_ram_scan *rs, bool *untouched, char *buf,
                          uint64_t done, size_t len, size_t chunk, bool *want,
                          struct sg_error *err)
{
    struct sg_vm *vm = &op->vmm->vm;
    size_t ps = rs->page_size, per = chunk / ps, nc = (len + chunk - 1) / chunk;
    bool scan = !op->wp && rs->fd >= 0 && len % chunk == 0 && chunk % ps == 0 &&
                sg_ram_scan_untouched(rs, (char *)vm->ram + done, len / ps, untouched);
    for (size_t c = 0; c < nc; c++) {
        bool zero = scan;
        for (size_t k = 0; k < per && zero; k++)
            zero = untouched[c * per + k];
        want[c] = !zero;   /* for now: to read */
    }
    for (size_t c = 0; c < nc;) {
        size_t e = c;
        while (e < nc && want[e] == want[c])
            e++;
        size_t off = c * chunk, n = e * chunk < len ? (e - c) * chunk : len - off;
        if (want[c] ? !ram_read(op, done + off, buf + off, n, err) : (memset(buf + off, 0, n), 0))
            return false;
        c = e;
    }
    for (size_t c = 0; c < nc; c++) {
        size_t n = len - c * chunk < chunk ? len - c * chunk : chunk;
        uint64_t idx = (done + c * chunk) / chunk;
        struct sg_ram_hash h = want[c] || n != chunk ? sg_ram_hash(buf + c * chunk, n)
                                                     : op->zero_hash;
        op->hashes->h[idx] = h;
        if (op->incremental)
            want[c] = !sg_ram_hash_eq(h, vm->hashes->h[idx]);
    }
    return true;
}

/* One SG_SNAP_RAM_STEP piece of RAM at T: read and hashed
 * (read_and_pick), and the runs of wanted chunks written; a chunk is a
 * cluster (at most 1 MiB, the RAM offset's alignment), so what is skipped
 * stays as it was (shared with the base, or unallocated). */
static bool save_ram_piece(struct snap_op *op, struct sg_ram_scan *rs, bool *untouched,
                           bool *want, char *buf, uint64_t done, size_t len, struct sg_error *err)
{
    size_t chunk = op->hashes->chunk;
    if (!read_and_pick(op, rs, untouched, buf, done, len, chunk, want, err))
        return false;
    size_t nc = (len + chunk - 1) / chunk;
    for (size_t c = 0; c < nc;) {
        if (!want[c]) {
            c++;
            continue;
        }
        size_t e = c;
        while (e < nc && want[e])
            e++;
        size_t off = c * chunk, n = e * chunk < len ? (e - c) * chunk : len - off;
        if (!vmstate_write(op, SG_VMSTATE_RAM_OFFSET + done + off, buf + off, n, err))
            return false;
        op->bytes_written += n;
        c = e;
    }
    return true;
}

/* SNAPGATE_VMM_SAVE_NICE=N: the writer of RAM (the rest of the save, while
 * the guest runs) at nice N, to yield its CPU to the vCPUs.  Off by default:
 * measured (gateway/vmm/README.md), it made saves 3-4x longer on a loaded
 * host without a measurable gain in guest speed. */
static void save_yield_to_guest(void)
{
    const char *v = getenv("SNAPGATE_VMM_SAVE_NICE");
    int nice = v ? atoi(v) : 0;
    if (nice > 0)
        (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice > 19 ? 19 : nice);
}

/* SNAPGATE_VMM_SAVE_RATE=MiB/s: the writer of RAM goes through it no faster
 * (default: flat out).  Off by default: in the kvm bed, whose 2 vCPUs share
 * 2 host cores, 100 MiB/s kept a Linux guest's loop at 86 [56-88] % of its
 * speed through a 512 MiB save against 64 [55-81] % flat out; the save
 * itself takes as long as the rate says. */
static double save_rate(void)
{
    const char *v = getenv("SNAPGATE_VMM_SAVE_RATE");
    double mib = v ? atof(v) : 0;
    return mib > 0 ? (mib < 1 ? 1 : mib) * 1048576.0 : 0;
}

/* Sleeps until `done` bytes are due at `rate` bytes/s since t0, 50 ms at
 * a time, so that a cancel is seen. */
static void save_pace(struct snap_op *op, uint64_t t0, uint64_t done, double rate)
{
    if (rate <= 0)
        return;
    uint64_t due = t0 + (uint64_t)((double)done / rate * 1e9);
    for (uint64_t now; !atomic_load(&op->cancel) && (now = sg_now_ns()) < due;) {
        uint64_t ns = due - now < 50000000u ? due - now : 50000000u;
        nanosleep(&(struct timespec){ 0, (long)ns }, NULL);
    }
}

static void *save_worker(void *arg)
{
    struct snap_op *op = arg;
    struct sg_vm *vm = &op->vmm->vm;
    bool ok = save_disks_at_instant(op, &op->werr);   /* under the locks the pause took */
    for (int i = op->n - 1; i >= 0; i--)
        sg_drive_unlock(op->drives[i]);
    ok = ok && vmstate_write(op, SG_VMSTATE_STATE_OFFSET, op->blob, op->blob_len, &op->werr);
    if (ok)
        save_stall(op);
    save_yield_to_guest();

    /* Unavailable: every page counts as touched (zero clusters still stay
     * unallocated).  Under write-protect this process's pagemap no longer
     * shows the instant (regions lifted since, protected empty pages). */
    long sps = sysconf(_SC_PAGESIZE);
    struct sg_ram_scan rs = { .fd = -1, .buf = NULL, .page_size = sps > 0 ? (size_t)sps : 4096 };
    if (!op->wp)
        sg_ram_scan_open_pid(&rs, op->child.pid);
    size_t ps = rs.page_size;
    bool *untouched = malloc(SG_SNAP_RAM_STEP / ps * sizeof(bool));
    bool *want = malloc((SG_SNAP_RAM_STEP / ps + 1) * sizeof(bool));
    char *buf = malloc(SG_SNAP_RAM_STEP);
    if (buf) {
        memset(buf, 0, op->hashes->chunk);
        op->zero_hash = sg_ram_hash(buf, op->hashes->chunk);
    }
    if (ok && (!untouched || !want || !buf)) {
        sg_error_set(&op->werr, "out of memory");
        ok = false;
    }
    if (ok && op->wp_limit) {
        /* The bench's limit of the mechanism: RAM protected at T, each
         * region lifted at its first write without a copy, no writer
         * competing; over once the guest stopped lifting any (or 5 s). */
        size_t left = sg_ram_wp_protected(op->wp);
        for (int i = 0, still = 0; i < 500 && left && still < 50 && !atomic_load(&op->cancel); i++) {
            nanosleep(&(struct timespec){ 0, 10000000 }, NULL);
            size_t now = sg_ram_wp_protected(op->wp);
            still = now == left ? still + 1 : 0;   /* 0.5 s without a new fault: done */
            left = now;
        }
        sg_error_set(&op->werr, "SNAPGATE_VMM_LIVE=wp-limit: %llu regions lifted, no snapshot"
                     " (a measurement)", (unsigned long long)sg_ram_wp_faults(op->wp));
        ok = false;
    }
    double rate = save_rate();
    uint64_t t0 = sg_now_ns();
    for (uint64_t done = 0; ok && done < vm->ram_size;) {
        if (atomic_load(&op->cancel)) {
            ok = false;
            break;
        }
        uint64_t left = vm->ram_size - done;
        size_t len = left < SG_SNAP_RAM_STEP ? (size_t)left : SG_SNAP_RAM_STEP;
        ok = save_ram_piece(op, &rs, untouched, want, buf, done, len, &op->werr);
        done += len;
        atomic_store(&op->progress, done);
        save_pace(op, t0, done, rate);
    }
    free(untouched);
    free(want);
    free(buf);
    sg_ram_scan_close(&rs);
    /* All of RAM at T is read: the guest need not be held any longer. */
    sg_ram_wp_finish(op->wp);
    if (ok && !atomic_load(&op->cancel))
        ok = save_commit(op, &op->werr);
    /* Here, not on the main loop: the child's exit tears down its copy of
     * the page tables, and waiting for that would stall the monitor. */
    /* Under write-protect huge pages stay whole (regions are lifted 2 MiB
     * at a time), and a collapse would fill never-touched ones. */
    if (!op->wp) {
        sg_ram_child_end(&op->child);
        /* Pages the guest wrote during the save were copied one by one and
         * split their huge pages; put them back so the next fork stays cheap. */
        sg_ram_collapse(vm->ram, vm->ram_size);
    }
    op->worker_ok = ok;
    atomic_store(&op->worker_done, true);
    return NULL;
}

/* Before the pause, while the guest runs: a full save empties the active
 * vmstate area (the writer leaves untouched pages out, so it must read as
 * zeros; a crashed or failed save can have left data in it) -- metadata
 * writes that need not wait for the instant, since nothing else writes the
 * area. */
static void *prepare_worker(void *arg)
{
    struct snap_op *op = arg;
    op->worker_ok = true;
    if (!op->incremental) {
        sg_drive_lock(op->vmdrive);
        op->worker_ok = sg_block_vmstate_discard(op->vmdrive->bs, &op->werr);
        sg_drive_unlock(op->vmdrive);
    }
    /* A fork write-protects all of RAM, and KVM's MMU notifier then drops
     * every mapping the guest has (the guest faults them back): cost in
     * proportion to what the guest touched.  A throw-away fork here, while
     * the guest runs, leaves the one in the pause only what the guest
     * touches in between (fork in the pause: 1.1-1.3 ms, was 1.9-2.3).
     * Under write-protect the protection itself is set before the pause
     * (ram_wp.c) and does the same. */
    if (op->worker_ok && op->by_fork) {
        struct sg_ram_child warm;
        struct sg_error ignored = { 0 };
        sg_trace_begin("save warm-up");   /* the worker's: ram_live.c marks pipe, fork */
        if (sg_ram_child_fork(&warm, &ignored))
            sg_ram_child_end(&warm);
        sg_trace_mark("end");
        sg_trace_end(false);
    }
    /* Under write-protect the guest's first writes after the instant
     * each wait for a 2 MiB copy: into memory faulted in here, while the
     * guest runs, rather than in the handler while the guest waits. */
    if (op->worker_ok && !op->by_fork && !op->wp_limit) {
        uint64_t t0 = sg_now_ns();
        sg_ram_wp_stock_fill(&op->wp_stock, op->vmm->vm.ram_size);
        sg_trace_printf("trace: save: %zu copy buffers faulted in before the pause %.1f ms",
                        op->wp_stock.n, (double)(sg_now_ns() - t0) / 1e6);
    }
    atomic_store(&op->worker_done, true);
    return NULL;
}

static bool save_validate(struct sg_job *job, struct snap_op *op)
{
    if (!sg_snap_resolve_devices(op, true, &job->err) || !sg_snap_all_can_snapshot(op, &job->err))
        return false;
    int r = sg_snap_all_have_tag(op, &job->err);
    if (r < 0)
        return false;
    if (r == 1 && !op->replace) {
        sg_error_set(&job->err, "Snapshot '%s' already exists in one or more devices", op->tag);
        return false;
    }
    if (!sg_snap_find_vmstate_drive(op, &job->err))
        return false;
    if (op->vmm->vm.state == SG_RUN_SHUTDOWN) {
        sg_error_set(&job->err, "The VM has shut down");
        return false;
    }
    return true;
}

/* How the instant is kept (gateway/vmm/README.md has the measurements):
 * userfaultfd write-protect by default, a fork where the kernel has no
 * write-protect or SNAPGATE_VMM_LIVE=fork asks for it (the bench compares
 * both). */
static bool live_by_fork(struct sg_vm *vm)
{
    const char *m = getenv("SNAPGATE_VMM_LIVE");
    if (m)
        return !strcmp(m, "fork");
    /* A guest that has touched less than half of its RAM: the fork, whose
     * writer skips never-touched pages by the child's pagemap without
     * reading them (under write-protect every page is read: 15 s for a
     * 4 GiB guest using 16 MiB), and whose copy-on-write costs little when
     * little is touched. */
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    bool known = f && fscanf(f, "%llu %llu", &size, &resident) == 2;
    if (f)
        fclose(f);
    long ps = sysconf(_SC_PAGESIZE);
    return known && ps > 0 && resident * (unsigned long long)ps < vm->ram_size / 2;
}

/* The pause: everything that must describe the same instant.  wp: the
 * write-protect set up before it (NULL: the fork), protected here. */
static bool save_pause(struct sg_job *job, struct snap_op *op, struct sg_ram_wp *wp,
                       struct sg_error *werr)
{
    struct sg_vm *vm = &op->vmm->vm;
    sg_snap_pause_vm(op, SG_RUN_SAVE_VM);
    sg_trace_mark("stop-event");
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    op->date_sec = (uint64_t)now.tv_sec;
    op->date_nsec = (uint32_t)now.tv_nsec;
    sg_vmstate_header_init(&op->hdr, vm);
    op->hdr.vm_clock_ns = sg_vmm_vm_clock_ns(op->vmm);
    if (!sg_vmstate_capture(vm, &op->blob, &op->blob_len, &job->err)) {
        sg_ram_wp_end(wp);
        return false;
    }
    if (op->blob_len > SG_VMSTATE_RAM_OFFSET - SG_VMSTATE_STATE_OFFSET) {
        sg_error_set(&job->err, "machine state too large (%zu bytes)", op->blob_len);
        sg_ram_wp_end(wp);
        return false;
    }
    sg_trace_mark("capture");
    op->hdr.state_len = op->blob_len;
    op->hdr.state_crc = sg_crc32(op->blob, op->blob_len);
    op->parent = vm->pos;
    if (wp && !sg_ram_wp_protect(wp, werr)) {
        sg_ram_wp_end(wp);
        wp = NULL;
    }
    if (wp)
        op->wp = vm->wp = wp;
    if (!op->by_fork)
        sg_trace_mark(op->wp ? "wp" : "wp-failed");
    if (!op->wp && !sg_ram_child_fork(&op->child, &job->err))
        return false;
    /* The drive locks in the pause (the guest's first disk request waits
     * for the worker to hold the disks at the instant), the worker's work
     * after the resume, as the load does: woken in the pause, it could take
     * this thread's CPU (first saves in the kvm bed: 3.4-8.9 ms between
     * taking the locks and resuming). */
    sg_snap_lock_drives(op);
    sg_trace_mark("locks");
    sg_snap_resume_vm(op);
    sg_ram_wp_go(op->wp);
    sg_trace_mark("wp-go");
    if (!sg_snap_start_worker(op, save_worker, &job->err)) {
        sg_snap_unlock_drives(op);
        return false;
    }
    if (werr->msg[0])
        sg_trace_printf("live: write-protect unavailable, the fork instead: %s", werr->msg);
    return true;
}

static bool save_instant(struct sg_job *job, struct snap_op *op)
{
    struct sg_error perr = { 0 }, werr = { 0 };
    (void)sg_snap_park_worker(op, &perr);   /* save_worker's thread, before the pause */
    /* And the write-protect set-up (userfaultfd, zero-page populate before
     * Linux 6.4, registration, handler thread): the pause only protects. */
    uint64_t t0 = sg_now_ns();
    struct sg_ram_wp *wp = op->by_fork ? NULL : sg_ram_wp_open(&op->vmm->vm, op->wp_limit,
                                                               &op->wp_stock, &werr);
    if (wp)
        sg_trace_printf("trace: save: write-protect set-up before the pause %.3f ms",
                        (double)(sg_now_ns() - t0) / 1e6);
    sg_trace_begin("save");
    bool ok = save_pause(job, op, wp, &werr);
    sg_trace_end(ok);
    return ok;
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
    case 0:
        if (!save_validate(job, op))
            return SG_JOB_STEP_FAILED;
        job->total = SG_VMSTATE_RAM_OFFSET + vm->ram_size;
        /* Incremental when the active area holds the base and RAM's hashes
         * at the base are known in the same chunks (nothing changes either
         * before the pause: jobs run one at a time). */
        size_t chunk = sg_snap_ram_chunk(op->vmdrive->bs);
        op->incremental = vm->pos.base && !strcmp(vm->pos.node, op->vmdrive->node_name) &&
                          vm->hashes && vm->hashes->chunk == chunk;
        if (!(op->hashes = sg_ram_hashes_new(vm->ram_size, chunk))) {
            sg_error_set(&job->err, "out of memory");
            return SG_JOB_STEP_FAILED;
        }
        op->by_fork = live_by_fork(vm);
        const char *lm = getenv("SNAPGATE_VMM_LIVE");
        op->wp_limit = lm && !strcmp(lm, "wp-limit");
        if (!sg_snap_start_worker(op, prepare_worker, &job->err))
            return SG_JOB_STEP_FAILED;
        op->phase = 3;
        return SG_JOB_STEP_WAIT;
    case 3:
        if (!sg_snap_worker_finished(op))
            return SG_JOB_STEP_WAIT;
        if (!op->worker_ok) {
            job->err = op->werr;
            return SG_JOB_STEP_FAILED;
        }
        op->phase = 2;
        return SG_JOB_STEP_MORE;
    case 2:
        if (!save_instant(job, op)) {
            if (op->worker_started) {
                atomic_store(&op->cancel, true);
                while (!sg_snap_worker_finished(op))
                    nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
            }
            save_undo(op);
            return SG_JOB_STEP_FAILED;
        }
        job->cur = SG_VMSTATE_RAM_OFFSET;
        op->phase = 1;
        return SG_JOB_STEP_WAIT;
    case 1:
        job->cur = SG_VMSTATE_RAM_OFFSET + atomic_load(&op->progress);
        if (!sg_snap_worker_finished(op))
            return SG_JOB_STEP_WAIT;
        if (!op->worker_ok) {
            job->err = op->werr;
            save_undo(op);
            return SG_JOB_STEP_FAILED;
        }
        sg_snap_wp_end(op);
        /* RAM at T is the next save's base. */
        sg_ram_hashes_free(vm->hashes);
        vm->hashes = op->hashes;
        op->hashes = NULL;
        int vi = 0;
        while (op->drives[vi] != op->vmdrive)
            vi++;
        /* The new position, and the base of the next incremental save. */
        struct sg_snap_pos *pos = &vm->pos;
        pos->valid = pos->base = true;
        snprintf(pos->node, sizeof(pos->node), "%s", op->vmdrive->node_name);
        snprintf(pos->id, sizeof(pos->id), "%s", op->ids[vi]);
        pos->date_sec = op->date_sec;
        pos->date_nsec = op->date_nsec;
        sg_snap_tree_saved(op->vmm, op->vmdrive, op->ids[vi], op->date_sec, op->date_nsec,
                           &op->parent);
        return SG_JOB_STEP_DONE;
    }
    return SG_JOB_STEP_FAILED;
}

const struct sg_job_driver sg_snap_save_drv = { "snapshot-save", save_step, sg_snap_op_free };

/* qcow2_vmstate_share.c: what live, incremental and lazy snapshots need
 * from the qcow2 engine (block.h, "Live snapshots"), apart from the core
 * snapshot code.  Each change is one transaction (qcow2_txn.c).
 *
 *   - sg_block_freeze: the disk as it is now, held as a hidden L1 tree
 *     (listed nowhere) while the active image goes on (it gets private
 *     copies of the disk's L2 tables, as snapshot create gives it).  Its
 *     references are counted in the refcounts but reached by no table
 *     `qemu-img check` walks, so until it becomes a snapshot or is dropped
 *     it shows as leaks -- which is exactly what a crash leaves: leaks, no
 *     snapshot that was not reported done, and no error.
 *   - sg_block_frozen_snapshot: the hidden tree becomes a listed snapshot,
 *     taking the active vmstate area with it if asked (the active image
 *     keeps a shared copy: the base of the next incremental save).
 *   - sg_block_vmstate_share_from: the active vmstate area becomes a shared
 *     copy of a snapshot's (after a load: the next save writes only what
 *     changed since).
 *   - sg_block_vmstate_host_map / sg_block_host_fd: where a snapshot's
 *     vmstate clusters lie in the file, so a lazy load can pread them on a
 *     fault without the drive lock (the faulting vCPU may hold it).
 *
 * Refcounts follow QEMU's rule (qcow2.h): a copied L2 table adds one to
 * each of its data clusters, a dropped tree takes one off everything it
 * reaches; COPIED in the active tables stays exact because the active side
 * always gets the fresh copies. */
#include "qcow2.h"

#include <stdlib.h>
#include <string.h>

static struct qcow2 *writable_qcow2(struct sg_block *bs, struct sg_error *err)
{
    if (strcmp(sg_block_format(bs), "qcow2") != 0) {
        sg_error_set(err, "live snapshots need a qcow2 image");
        return NULL;
    }
    struct qcow2 *s = qcow2_state(bs);
    if (s->rdonly) {
        sg_error_set(err, "image is read-only");
        return NULL;
    }
    return s;
}

static struct qsnap *snap_by_id(struct qcow2 *s, const char *id, struct sg_error *err)
{
    for (int i = 0; i < s->nb_snapshots; i++)
        if (!strcmp(s->snaps[i].id, id))
            return &s->snaps[i];
    sg_error_set(err, "Can't find snapshot with ID '%s'", id);
    return NULL;
}

static uint64_t l1_clusters(const struct qcow2 *s, uint32_t n)
{
    return ((uint64_t)n * 8 + s->cluster_size - 1) / s->cluster_size;
}

/* Writes an L1 table to new clusters (above the transaction's floor). */
static bool write_l1(struct qcow2 *s, const uint64_t *l1, uint32_t n, uint64_t *off,
                     struct sg_error *err)
{
    uint64_t cl = l1_clusters(s, n);
    uint8_t *raw = calloc(cl ? cl : 1, s->cluster_size);
    if (!raw) {
        sg_error_set(err, "out of memory");
        return false;
    }
    for (uint32_t i = 0; i < n; i++)
        sg_put_be64(raw + 8 * i, l1[i]);
    *off = cl ? qcow2_alloc_clusters(s, cl, err) : 0;
    bool ok = !cl || (*off && sg_pwrite_full(s->fd, raw, cl * s->cluster_size, *off, "L1 table",
                                             err));
    free(raw);
    return ok;
}

static bool free_clusters_now(struct qcow2 *s, uint64_t off, uint64_t n, struct sg_error *err)
{
    for (uint64_t o = 0; o < n; o++)
        if (!qcow2_dec_refcount_now(s, (off >> s->cluster_bits) + o, err))
            return false;
    return true;
}

/* Ends a transaction whose only table change is the active L1 (rewritten
 * to a new place, the old one freed) and, if v, a new snapshot table. */
static bool commit(struct qcow2 *s, struct qsnap *v, int nb, struct sg_error *err)
{
    if (!v) {
        v = qcow2_snaps_copy(s, NULL, &nb, err);
        if (!v) {
            qcow2_txn_abort(s);
            return false;
        }
    }
    if (!qcow2_txn_commit(s, v, nb, true, s->size, err)) {
        qcow2_snaps_free_array(v, nb);
        return false;
    }
    qcow2_snaps_install(s, v, nb);
    return true;
}

bool sg_block_freeze(struct sg_block *bs, struct sg_block_frozen *fz, struct sg_error *err)
{
    struct qcow2 *s = writable_qcow2(bs, err);
    if (!s)
        return false;
    uint32_t vi = (uint32_t)qcow2_size_to_l1(s, s->size);
    if (vi > s->l1_size)
        vi = s->l1_size;
    if (!qcow2_txn_begin(s, err))
        return false;
    bool ok = write_l1(s, s->l1, vi, &fz->l1_offset, err) &&
              qcow2_txn_copy_tree(s, s->l1, vi, s->l1, err);
    s->l1_dirty = true;
    if (!ok) {
        qcow2_txn_abort(s);
        return false;
    }
    fz->l1_size = vi;
    fz->disk_size = s->size;
    return commit(s, NULL, 0, err);
}

bool sg_block_frozen_drop(struct sg_block *bs, struct sg_block_frozen *fz, struct sg_error *err)
{
    struct qcow2 *s = writable_qcow2(bs, err);
    if (!s)
        return false;
    uint64_t *l1;
    if (!qcow2_read_l1(s, fz->l1_offset, fz->l1_size, &l1, err))
        return false;
    bool ok = qcow2_txn_begin(s, err);
    if (ok) {
        ok = qcow2_txn_drop_tree(s, l1, fz->l1_size, err) &&
             free_clusters_now(s, fz->l1_offset, l1_clusters(s, fz->l1_size), err);
        ok = ok ? commit(s, NULL, 0, err) : (qcow2_txn_abort(s), false);
    }
    free(l1);
    return ok;
}

bool sg_block_frozen_snapshot(struct sg_block *bs, struct sg_block_frozen *fz,
                              struct sg_snapshot_info *info, bool take_vmstate,
                              struct sg_error *err)
{
    struct qcow2 *s = writable_qcow2(bs, err);
    if (!s)
        return false;
    if (fz->disk_size != s->size || s->nb_snapshots >= QCOW2_MAX_SNAPSHOTS) {
        sg_error_set(err, fz->disk_size != s->size ? "qcow2: the disk was resized" :
                     "qcow2: too many snapshots");
        return false;
    }
    uint32_t vi = fz->l1_size, act = s->l1_size;
    uint32_t n = take_vmstate && act > vi ? act : vi;
    uint64_t *nl1 = calloc(n ? n : 1, 8), *hidden = NULL;
    if (!nl1 || !qcow2_read_l1(s, fz->l1_offset, vi, &hidden, err)) {
        if (!nl1)
            sg_error_set(err, "out of memory");
        free(nl1);
        return false;
    }
    memcpy(nl1, hidden, (size_t)vi * 8);
    free(hidden);
    unsigned long max = 0;
    for (int i = 0; i < s->nb_snapshots; i++) {
        unsigned long v = strtoul(s->snaps[i].id, NULL, 10);
        max = v > max ? v : max;
    }
    char id[32];
    snprintf(id, sizeof id, "%lu", max + 1);
    bool ok = qcow2_txn_begin(s, err);
    if (!ok) {
        free(nl1);
        return false;
    }
    if (take_vmstate && act > vi) {
        /* The snapshot takes the active vmstate L2 tables as they are
         * (COPIED does not matter in a snapshot); the active image gets
         * private copies, so it keeps the same RAM, shared. */
        memcpy(nl1 + vi, s->l1 + vi, (size_t)(act - vi) * 8);
        ok = qcow2_txn_copy_tree(s, s->l1 + vi, act - vi, s->l1 + vi, err);
        s->l1_dirty = true;
    }
    struct qsnap sn = {
        .id = id,
        .name = info->name ? info->name : "",
        .l1_size = n,
        .date_sec = (uint32_t)info->date_sec,
        .date_nsec = info->date_nsec,
        .vm_clock_nsec = info->vm_clock_nsec,
        .vm_state_size = take_vmstate ? info->vm_state_size : 0,
        .disk_size = s->size,
        .icount = -1,
    };
    ok = ok && write_l1(s, nl1, n, &sn.l1_offset, err) &&
         free_clusters_now(s, fz->l1_offset, l1_clusters(s, vi), err);
    free(nl1);
    int nb = 0;
    struct qsnap *v = ok ? qcow2_snaps_copy(s, &sn, &nb, err) : NULL;
    if (!v) {
        qcow2_txn_abort(s);
        return false;
    }
    if (!commit(s, v, nb, err))
        return false;
    snprintf(info->id, sizeof info->id, "%s", id);
    info->disk_size = s->size;
    info->icount = -1;
    return true;
}

bool sg_block_vmstate_share_from(struct sg_block *bs, const char *id, struct sg_error *err)
{
    struct qcow2 *s = writable_qcow2(bs, err);
    if (!s)
        return false;
    struct qsnap *sn = snap_by_id(s, id, err);
    if (!sn)
        return false;
    if (sn->disk_size != s->size) {
        sg_error_set(err, "qcow2: snapshot '%s' has another disk size", id);
        return false;
    }
    uint32_t vi = (uint32_t)qcow2_size_to_l1(s, s->size);
    uint64_t *sl1;
    if (!qcow2_read_l1(s, sn->l1_offset, sn->l1_size, &sl1, err))
        return false;
    uint32_t sn_n = sn->l1_size, act = s->l1_size;
    uint32_t n = sn_n > act ? sn_n : act;
    n = n < vi ? vi : n;
    uint64_t *nl1 = calloc(n, 8);
    bool ok = nl1 && qcow2_txn_begin(s, err);
    if (!nl1)
        sg_error_set(err, "out of memory");
    if (ok) {
        /* The new L1 replaces the old in memory (it may be longer); the
         * commit writes it to a new place and frees the old one. */
        memcpy(nl1, s->l1, (size_t)(act < vi ? act : vi) * 8);
        ok = (act <= vi || qcow2_txn_drop_tree(s, s->l1 + vi, act - vi, err)) &&
             (sn_n <= vi || qcow2_txn_copy_tree(s, sl1 + vi, sn_n - vi, nl1 + vi, err));
        if (!ok) {
            qcow2_txn_abort(s);
        } else {
            uint64_t *keep = s->l1;
            /* An abort copies l1_size entries back from the txn's copy:
             * give that copy the new length. */
            uint64_t *t = realloc(s->txn_l1, (size_t)n * 8);
            if (t) {
                memset(t + act, 0, (size_t)(n - act) * 8);
                s->txn_l1 = t;
                s->l1 = nl1;
                s->l1_size = n;
                s->l1_dirty = true;
                ok = commit(s, NULL, 0, err);
            } else {
                sg_error_set(err, "out of memory");
                qcow2_txn_abort(s);
                ok = false;
            }
            if (ok) {
                free(keep);
                nl1 = NULL;
            } else {
                s->l1 = keep;
                s->l1_size = act;
            }
        }
    }
    free(nl1);
    free(sl1);
    return ok;
}

bool sg_block_vmstate_host_map(struct sg_block *bs, const char *id, uint64_t off, uint64_t len,
                               uint64_t *host, struct sg_error *err)
{
    if (strcmp(sg_block_format(bs), "qcow2") != 0) {
        sg_error_set(err, "VM state map: not a qcow2 image");
        return false;
    }
    struct qcow2 *s = qcow2_state(bs);
    struct qsnap *sn = snap_by_id(s, id, err);
    if (!sn)
        return false;
    uint64_t cs = s->cluster_size;
    if (off % cs || len % cs || off > sn->vm_state_size || len > sn->vm_state_size - off + cs) {
        sg_error_set(err, "VM state map: bad range");
        return false;
    }
    uint64_t *l1;
    if (!qcow2_read_l1(s, sn->l1_offset, sn->l1_size, &l1, err))
        return false;
    uint64_t base = qcow2_size_to_l1(s, sn->disk_size) << (s->cluster_bits + s->l2_bits);
    bool ok = qcow2_xlate_run(s, l1, sn->l1_size, base + off, len / cs, host, err);
    free(l1);
    return ok;
}

int sg_block_host_fd(struct sg_block *bs)
{
    return bs->fd;
}

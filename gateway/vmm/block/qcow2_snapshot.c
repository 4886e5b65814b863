/* qcow2_snapshot.c: the snapshot table (read, validate, encode), internal
 * snapshot create / goto / delete, and the vmstate area.
 *
 * Create, goto and delete each run as one transaction (qcow2_txn.c): the
 * new snapshot table, L1 table, changed L2 tables and refcount blocks go to
 * new clusters and one header write switches to them, so a crash leaves
 * either the old image or the new one, each with exact refcounts and
 * COPIED flags.  Refcount rules are QEMU's (see qcow2.h). */
#include "qcow2.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#define MAX_TABLE_BYTES (64ULL << 20)

void qcow2_snapshots_free(struct qcow2 *s)
{
    free(s->snap_l1_id);
    free(s->snap_l1);
    s->snap_l1_id = NULL;
    s->snap_l1 = NULL;
    /* (nb_snapshots holds the header's count until the table is loaded) */
    for (int i = 0; s->snaps && i < s->nb_snapshots; i++) {
        free(s->snaps[i].id);
        free(s->snaps[i].name);
        free(s->snaps[i].unknown_extra);
    }
    free(s->snaps);
    s->snaps = NULL;
    s->nb_snapshots = 0;
}

bool qcow2_read_l1(struct qcow2 *s, uint64_t off, uint32_t n, uint64_t **out,
                   struct sg_error *err)
{
    uint8_t *raw = malloc((size_t)n * 8 + 8);
    uint64_t *l1 = malloc((size_t)n * 8 + 8);
    if (!raw || !l1) {
        free(raw);
        free(l1);
        sg_error_set(err, "out of memory");
        return false;
    }
    if (n && !sg_pread_full(s->fd, raw, (size_t)n * 8, off, "L1 table", err)) {
        free(raw);
        free(l1);
        return false;
    }
    for (uint32_t i = 0; i < n; i++)
        l1[i] = sg_be64(raw + 8 * i);
    free(raw);
    *out = l1;
    return true;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return alen && blen && a < b + blen && b < a + alen;
}

bool qcow2_snapshots_load(struct qcow2 *s, struct sg_error *err)
{
    int nb = s->nb_snapshots;
    s->nb_snapshots = 0;
    s->snapshots_bytes = 0;
    if (nb == 0)
        return true;
    if (!qcow2_check_table(s, s->snapshots_offset, 40, "snapshot table", err))
        return false;
    s->snaps = calloc((size_t)nb, sizeof *s->snaps);
    if (!s->snaps) {
        sg_error_set(err, "out of memory");
        return false;
    }
    uint64_t off = s->snapshots_offset;
    for (int i = 0; i < nb; i++) {
        uint8_t h[40];
        if (off - s->snapshots_offset + 40 > MAX_TABLE_BYTES) {
            sg_error_set(err, "qcow2: snapshot table is too large");
            return false;
        }
        if (off + 40 > s->host_end) {
            sg_error_set(err, "qcow2: snapshot table runs past the end of the file");
            return false;
        }
        if (!sg_pread_full(s->fd, h, sizeof h, off, "snapshot table", err))
            return false;
        struct qsnap *sn = &s->snaps[i];
        s->nb_snapshots = i + 1;   /* so qcow2_snapshots_free sees this entry */
        sn->l1_offset = sg_be64(h);
        sn->l1_size = sg_be32(h + 8);
        uint16_t id_len = sg_be16(h + 12), name_len = sg_be16(h + 14);
        sn->date_sec = sg_be32(h + 16);
        sn->date_nsec = sg_be32(h + 20);
        sn->vm_clock_nsec = sg_be64(h + 24);
        sn->vm_state_size = sg_be32(h + 32);
        uint32_t extra = sg_be32(h + 36);
        if (extra > QCOW2_MAX_EXTRA) {
            sg_error_set(err, "qcow2: snapshot %d has too much extra data (%u bytes)", i, extra);
            return false;
        }
        if (id_len >= 128) {
            sg_error_set(err, "qcow2: snapshot %d has an ID of %u bytes (at most 127)", i,
                         id_len);
            return false;
        }
        uint64_t body = (uint64_t)extra + id_len + name_len;
        uint64_t ent = (40 + body + 7) & ~7ULL;
        /* QEMU does not write the padding after the last entry. */
        if (off + 40 + body > s->host_end || off - s->snapshots_offset + ent > MAX_TABLE_BYTES) {
            sg_error_set(err, "qcow2: snapshot table runs past the end of the file");
            return false;
        }
        uint8_t *b = malloc(body + 1);
        sn->id = calloc(1, (size_t)id_len + 1);
        sn->name = calloc(1, (size_t)name_len + 1);
        if (!b || !sn->id || !sn->name) {
            free(b);
            sg_error_set(err, "out of memory");
            return false;
        }
        if (!sg_pread_full(s->fd, b, body, off + 40, "snapshot table", err)) {
            free(b);
            return false;
        }
        sn->disk_size = s->size;
        sn->icount = -1;
        if (extra >= 8)
            sn->vm_state_size = sg_be64(b);
        if (extra >= 16)
            sn->disk_size = sg_be64(b + 8);
        if (extra >= 24)
            sn->icount = (int64_t)sg_be64(b + 16);
        if (extra > QCOW2_SNAP_EXTRA_SIZE) {
            sn->unknown_extra_size = extra - QCOW2_SNAP_EXTRA_SIZE;
            sn->unknown_extra = malloc(sn->unknown_extra_size);
            if (!sn->unknown_extra) {
                free(b);
                sg_error_set(err, "out of memory");
                return false;
            }
            memcpy(sn->unknown_extra, b + QCOW2_SNAP_EXTRA_SIZE, sn->unknown_extra_size);
        }
        memcpy(sn->id, b + extra, id_len);
        memcpy(sn->name, b + extra + id_len, name_len);
        free(b);
        if (strlen(sn->id) != id_len || strlen(sn->name) != name_len) {
            sg_error_set(err, "qcow2: snapshot %d has a NUL byte in its ID or name", i);
            return false;
        }
        if ((uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
            sg_error_set(err, "qcow2: snapshot %d (ID '%s') has an L1 table that is too large",
                         i, sn->id);
            return false;
        }
        if (sn->disk_size > (1ULL << 60) || qcow2_size_to_l1(s, sn->disk_size) > sn->l1_size) {
            sg_error_set(err, "qcow2: snapshot %d (ID '%s'): L1 table too small for its disk "
                         "size", i, sn->id);
            return false;
        }
        if (!qcow2_check_table(s, sn->l1_offset, (uint64_t)sn->l1_size * 8,
                               "snapshot L1 table", err)) {
            sg_error_prefix(err, "snapshot %d (ID '%s')", i, sn->id);
            return false;
        }
        off += ent;
    }
    s->snapshots_bytes = off - s->snapshots_offset;
    if (s->snapshots_offset & (s->cluster_size - 1)) {
        sg_error_set(err, "qcow2: snapshot table offset is not cluster aligned");
        return false;
    }
    uint64_t rtb = (uint64_t)s->rt_clusters * s->cluster_size;
    uint64_t l1b = (uint64_t)s->l1_size * 8;
    if (overlaps(s->snapshots_offset, s->snapshots_bytes, s->rt_offset, rtb)) {
        sg_error_set(err, "qcow2: snapshot table overlaps the refcount table");
        return false;
    }
    if (overlaps(s->snapshots_offset, s->snapshots_bytes, s->l1_offset, l1b)) {
        sg_error_set(err, "qcow2: snapshot table overlaps the active L1 table");
        return false;
    }
    return true;
}

uint64_t qcow2_snapshot_table_bytes(const struct qsnap *snaps, int nb)
{
    uint64_t bytes = 0;
    for (int i = 0; i < nb; i++)
        bytes += (40 + QCOW2_SNAP_EXTRA_SIZE + snaps[i].unknown_extra_size + strlen(snaps[i].id) +
                  strlen(snaps[i].name) + 7) & ~7ULL;
    return bytes;
}

void qcow2_snapshot_table_encode(const struct qsnap *snaps, int nb, uint8_t *p)
{
    for (int i = 0; i < nb; i++) {
        const struct qsnap *sn = &snaps[i];
        size_t il = strlen(sn->id), nl = strlen(sn->name);
        uint32_t extra = QCOW2_SNAP_EXTRA_SIZE + sn->unknown_extra_size;
        sg_put_be64(p, sn->l1_offset);
        sg_put_be32(p + 8, sn->l1_size);
        sg_put_be16(p + 12, (uint16_t)il);
        sg_put_be16(p + 14, (uint16_t)nl);
        sg_put_be32(p + 16, sn->date_sec);
        sg_put_be32(p + 20, sn->date_nsec);
        sg_put_be64(p + 24, sn->vm_clock_nsec);
        /* The 32-bit field saturates; QEMU reads the large one when present. */
        sg_put_be32(p + 32, sn->vm_state_size > UINT32_MAX ? 0 : (uint32_t)sn->vm_state_size);
        sg_put_be32(p + 36, extra);
        sg_put_be64(p + 40, sn->vm_state_size);
        sg_put_be64(p + 48, sn->disk_size);
        sg_put_be64(p + 56, (uint64_t)sn->icount);
        uint8_t *q = p + 40 + QCOW2_SNAP_EXTRA_SIZE;
        if (sn->unknown_extra_size)
            memcpy(q, sn->unknown_extra, sn->unknown_extra_size);
        q += sn->unknown_extra_size;
        memcpy(q, sn->id, il);
        memcpy(q + il, sn->name, nl);
        p += (40 + extra + il + nl + 7) & ~7ULL;
    }
}

static struct qsnap *find_id(struct qcow2 *s, const char *id, struct sg_error *err)
{
    for (int i = 0; i < s->nb_snapshots; i++)
        if (strcmp(s->snaps[i].id, id) == 0)
            return &s->snaps[i];
    sg_error_set(err, "Can't find snapshot with ID '%s'", id);
    return NULL;
}

uint64_t sg_qcow2_cluster_size(const struct sg_block *bs)
{
    return qcow2_state(bs)->cluster_size;
}

int sg_qcow2_snapshot_list(struct sg_block *bs, struct sg_snapshot_info **out,
                           struct sg_error *err)
{
    struct qcow2 *s = qcow2_state(bs);
    *out = NULL;
    if (s->nb_snapshots == 0)
        return 0;
    struct sg_snapshot_info *l = calloc((size_t)s->nb_snapshots, sizeof *l);
    if (!l) {
        sg_error_set(err, "out of memory");
        return -1;
    }
    for (int i = 0; i < s->nb_snapshots; i++) {
        struct qsnap *sn = &s->snaps[i];
        snprintf(l[i].id, sizeof l[i].id, "%s", sn->id);
        l[i].name = strdup(sn->name);
        if (!l[i].name) {
            sg_snapshot_info_free_list(l, i);
            sg_error_set(err, "out of memory");
            return -1;
        }
        l[i].vm_state_size = sn->vm_state_size;
        l[i].date_sec = sn->date_sec;
        l[i].date_nsec = sn->date_nsec;
        l[i].vm_clock_nsec = sn->vm_clock_nsec;
        l[i].disk_size = sn->disk_size;
        l[i].icount = sn->icount;
    }
    *out = l;
    return s->nb_snapshots;
}

/* Drops the active vmstate area: L1 entries past the disk.  The decrements
 * of the subtrees are queued and applied after the L1 write (meta_flush). */
static bool drop_vmstate(struct qcow2 *s, struct sg_error *err)
{
    uint64_t from = qcow2_size_to_l1(s, s->size);
    /* An empty area (the usual case: a save drops it when it commits) needs
     * no flush; every save starts with a discard, so this keeps it free. */
    bool any = false;
    for (uint64_t i = from; i < s->l1_size && !any; i++)
        any = s->l1[i] != 0;
    if (!any)
        return true;
    if (!qcow2_begin_change(s, err) ||
        !qcow2_tree_free_later(s, s->l1, s->l1_size, (uint32_t)from, err))
        return false;
    for (uint64_t i = from; i < s->l1_size; i++) {
        if (s->l1[i]) {
            /* Its newest contents need not reach the disk: the L1 entry
             * that reaches it goes first, and until then the disk holds
             * an older version consistent with the refcounts on disk (or
             * nothing reaches it).  Not writing it spares a failed save on
             * a full disk the one write that would need new space. */
            qcache_drop(&s->l2c, s->l1[i] & QCOW2_OFFSET_MASK);
            s->l1[i] = 0;
            s->l1_dirty = true;
        }
    }
    return qcow2_meta_flush(s, err);
}

static bool copy_snap(struct qsnap *dst, const struct qsnap *src)
{
    *dst = *src;
    dst->id = strdup(src->id);
    dst->name = strdup(src->name);
    dst->unknown_extra = NULL;
    if (src->unknown_extra_size) {
        dst->unknown_extra = malloc(src->unknown_extra_size);
        if (dst->unknown_extra)
            memcpy(dst->unknown_extra, src->unknown_extra, src->unknown_extra_size);
    }
    return dst->id && dst->name && (!src->unknown_extra_size || dst->unknown_extra);
}

static void free_snaps(struct qsnap *v, int n)
{
    for (int i = 0; i < n; i++) {
        free(v[i].id);
        free(v[i].name);
        free(v[i].unknown_extra);
    }
    free(v);
}

/* The new snapshot table: the current one with `drop` left out (-1: none)
 * and `add` appended (NULL: none). */
static struct qsnap *new_table(struct qcow2 *s, int drop, const struct qsnap *add, int *nb,
                               struct sg_error *err)
{
    struct qsnap *v = calloc((size_t)s->nb_snapshots + 1, sizeof *v);
    int n = 0;
    bool ok = v != NULL;
    for (int i = 0; ok && i < s->nb_snapshots; i++)
        if (i != drop)
            ok = copy_snap(&v[n++], &s->snaps[i]);
    if (ok && add)
        ok = copy_snap(&v[n++], add);
    if (!ok) {
        if (v)
            free_snaps(v, n);
        sg_error_set(err, "out of memory");
        return NULL;
    }
    *nb = n;
    return v;
}

static void install_table(struct qcow2 *s, struct qsnap *v, int nb)
{
    qcow2_snapshots_free(s);   /* also drops the cached snapshot L1 */
    s->snaps = v;
    s->nb_snapshots = nb;
    /* What query-block shows from now on (block.h). */
    sg_block_publish_snapshots(s->bs);
}

/* Creating a snapshot, as one transaction (qcow2_txn.c):
 *   - the snapshot takes over the current L1 table as it is on disk (its
 *     COPIED bits do not matter in a snapshot) and with it every L2 table;
 *   - the active image gets a new L1 table and a private copy of each L2
 *     table of the disk (COPIED cleared: every data cluster is now reached
 *     twice, refcount + 1); its vmstate part is left to the snapshot alone,
 *     as QEMU drops the active vmstate after a save;
 *   - refcounts of L2 tables do not change (one tree leaves each, one
 *     arrives), the copies are new (refcount 1, so COPIED in the new L1).
 * Copying the L2 tables up front costs one cluster per 512 MiB of disk (64
 * KiB clusters) and spares the copy-on-write of the first write after. */
bool sg_qcow2_snapshot_create(struct sg_block *bs, struct sg_snapshot_info *info,
                              struct sg_error *err)
{
    struct qcow2 *s = qcow2_state(bs);
    if (s->nb_snapshots >= QCOW2_MAX_SNAPSHOTS) {
        sg_error_set(err, "qcow2: too many snapshots");
        return false;
    }
    if (!sg_snapshot_tag_check(info->name, err))
        return false;
    unsigned long max = 0;
    for (int i = 0; i < s->nb_snapshots; i++) {
        unsigned long v = strtoul(s->snaps[i].id, NULL, 10);
        if (v > max)
            max = v;
    }
    char id[32];
    snprintf(id, sizeof id, "%lu", max + 1);
    struct qsnap sn = {
        .id = id,
        .name = info->name ? info->name : "",
        .l1_offset = s->l1_offset,
        .l1_size = s->l1_size,
        .date_sec = (uint32_t)info->date_sec,
        .date_nsec = info->date_nsec,
        .vm_clock_nsec = info->vm_clock_nsec,
        .vm_state_size = info->vm_state_size,
        .disk_size = s->size,
        .icount = info->has_icount ? info->icount : -1,
    };
    int nb;
    struct qsnap *v = new_table(s, -1, &sn, &nb, err);
    if (!v)
        return false;
    uint8_t *copy = malloc(s->cluster_size);
    if (!copy || !qcow2_txn_begin(s, err)) {
        if (!copy)
            sg_error_set(err, "out of memory");
        free(copy);
        free_snaps(v, nb);
        return false;
    }
    uint64_t vm_index = qcow2_size_to_l1(s, s->size);
    if (vm_index > s->l1_size)
        vm_index = s->l1_size;
    bool ok = qcow2_txn_copy_tree(s, s->l1, (uint32_t)vm_index, s->l1, err);
    for (uint32_t i = (uint32_t)vm_index; i < s->l1_size; i++)
        s->l1[i] = 0;
    free(copy);
    if (!ok || !qcow2_txn_commit(s, v, nb, false, s->size, err)) {
        qcow2_txn_abort(s);
        free_snaps(v, nb);
        return false;
    }
    install_table(s, v, nb);
    snprintf(info->id, sizeof info->id, "%s", id);
    info->disk_size = s->size;
    info->icount = sn.icount;
    return true;
}

/* Applying a snapshot in place (issue 17: loading must work on a full disk,
 * so it may need no new cluster).  The active tree comes to share the
 * snapshot's L2 tables, as after QEMU's goto; the first guest write under
 * each one copies it (l2_for_write), which is the copy-on-write any later
 * write needs anyway.  Nothing is written but the refcount blocks, the
 * snapshot's L2 tables and one sector of the active L1 table, all in place
 * (no new cluster, no write past the end of the file), in this order:
 *   1. +1 on everything the snapshot's disk part reaches, and COPIED cleared
 *      in its L2 tables (they are about to be shared: nothing they reach has
 *      refcount 1 any more); flushed.  The committed image is unchanged (its
 *      clusters that the snapshot also reaches were shared already, and
 *      COPIED in a snapshot's tables means nothing): refcounts too high at
 *      worst, a leak.
 *   2. The L1 entries switch to the snapshot's L2 tables in one write of
 *      which only one 512-byte sector changes (the rest is rewritten as it
 *      is), so it is atomic as the header writes are; flushed.  A crash
 *      leaves the old disk or the snapshot's, never a mix.
 *   3. -1 on everything the old active tree (disk and vmstate parts)
 *      reached, after the L1 write (qcow2_meta_flush step 5); the clusters
 *      that drop to zero are punched, so a full disk gets space back.
 * Used whenever it applies: same disk size, an L1 table large enough, and
 * the changed L1 entries within one sector (64 entries: with 64 KiB
 * clusters, disk plus active vmstate up to 32 GiB); otherwise the
 * transaction below runs (it needs free space for its new tables). */

/* The new active L1 (nl1, l1_size entries) if the in-place apply may run. */
static bool in_place_l1(const struct qcow2 *s, const struct qsnap *sn, const uint64_t *sl1,
                        uint64_t n, uint64_t *nl1)
{
    if (s->txn || sn->disk_size != s->size || n > s->l1_size)
        return false;
    int64_t first = -1, last = -1;
    for (uint32_t i = 0; i < s->l1_size; i++) {
        /* Shared from now on (refcount 2 at least): no COPIED. */
        nl1[i] = i < n ? sl1[i] & QCOW2_OFFSET_MASK : 0;
        if (nl1[i] != s->l1[i]) {
            if (first < 0)
                first = i;
            last = i;
        }
    }
    return first < 0 || first / 64 == last / 64;
}

static bool goto_in_place(struct qcow2 *s, const uint64_t *sl1, uint64_t n, uint64_t *nl1,
                          struct sg_error *err)
{
    if (!qcow2_begin_change(s, err) || !qcow2_meta_flush(s, err))
        return false;
    uint64_t done = 0;
    if (!qcow2_tree_ref(s, sl1, n, 1, UINT64_MAX, &done, err)) {
        /* Take back the increments made (too high is harmless on disk;
         * in memory it would leak them for good). */
        uint64_t undone = 0;
        (void)qcow2_tree_ref(s, sl1, n, -1, done, &undone, NULL);
        return false;
    }
    if (!qcow2_meta_flush(s, err))   /* 1. */
        return false;
    size_t np = s->npending;
    if (!qcow2_tree_free_later(s, s->l1, s->l1_size, 0, err)) {
        s->npending = np;   /* no decrement may outlive the pointers it is for */
        return false;
    }
    uint64_t *old = malloc((size_t)s->l1_size * 8 + 8);
    if (!old) {
        s->npending = np;
        sg_error_set(err, "out of memory");
        return false;
    }
    memcpy(old, s->l1, (size_t)s->l1_size * 8);
    memcpy(s->l1, nl1, (size_t)s->l1_size * 8);
    s->l1_dirty = true;
    bool ok = qcow2_meta_flush(s, err);   /* 2. and 3. */
    if (!ok && s->l1_dirty) {
        /* The switch did not happen: the old tree stays, its decrements go. */
        memcpy(s->l1, old, (size_t)s->l1_size * 8);
        s->npending = np;
    }
    free(old);
    return ok;
}

/* Applying a snapshot, as one transaction: the active image gets private
 * copies of the snapshot's L2 tables for the disk part (its vmstate stays
 * the snapshot's alone), the old active tree loses its references, and the
 * header write switches L1 table and virtual size together. */
bool sg_qcow2_snapshot_goto(struct sg_block *bs, const char *id, struct sg_error *err)
{
    struct qcow2 *s = qcow2_state(bs);
    struct qsnap *sn = find_id(s, id, err);
    if (!sn)
        return false;
    uint64_t *l1;
    if (!qcow2_read_l1(s, sn->l1_offset, sn->l1_size, &l1, err))
        return false;
    uint64_t n = qcow2_size_to_l1(s, sn->disk_size);
    if (n > sn->l1_size)
        n = sn->l1_size;
    uint64_t *ipl1 = malloc((size_t)s->l1_size * 8 + 8);
    if (ipl1 && in_place_l1(s, sn, l1, n, ipl1)) {
        bool ok = goto_in_place(s, l1, n, ipl1, err);
        free(ipl1);
        free(l1);
        return ok;
    }
    free(ipl1);
    int nb;
    struct qsnap *v = new_table(s, -1, NULL, &nb, err);
    uint64_t *nl1 = calloc(n ? n : 1, 8);
    if (!v || !nl1 || !qcow2_txn_begin(s, err)) {
        if (!nl1)
            sg_error_set(err, "out of memory");
        if (v)
            free_snaps(v, nb);
        free(nl1);
        free(l1);
        return false;
    }
    bool ok = qcow2_txn_copy_tree(s, l1, (uint32_t)n, nl1, err) &&
              qcow2_txn_drop_tree(s, s->l1, s->l1_size, err);
    uint64_t l1_cl = ((uint64_t)s->l1_size * 8 + s->cluster_size - 1) / s->cluster_size;
    for (uint64_t o = 0; ok && o < l1_cl; o++)
        ok = qcow2_dec_refcount_now(s, (s->l1_offset >> s->cluster_bits) + o, err);
    free(l1);
    if (ok) {
        /* The new table replaces the old one in memory; the commit writes it
         * to a new place (the old place is already free above). */
        uint64_t *old = s->l1;
        s->l1 = nl1;
        uint32_t old_size = s->l1_size;
        s->l1_size = (uint32_t)n;
        ok = qcow2_txn_commit(s, v, nb, false, sn->disk_size, err);
        if (!ok) {
            s->l1 = old;   /* as its abort left it */
            s->l1_size = old_size;
            free(nl1);
        } else {
            free(old);
        }
    } else {
        qcow2_txn_abort(s);
        free(nl1);
    }
    if (!ok) {
        free_snaps(v, nb);
        return false;
    }
    install_table(s, v, nb);
    return true;
}

/* Deleting a snapshot, as one transaction (qcow2_txn.c): its tree loses
 * one reference everywhere, its L1 table is freed, and every active L2
 * table left with refcount 1 whose entries need COPIED set moves to a new
 * cluster with the right bits (the old place is freed), so the switch to
 * exact COPIED happens with the header write and never on its own. */
bool sg_qcow2_snapshot_delete(struct sg_block *bs, const char *id, struct sg_error *err)
{
    struct qcow2 *s = qcow2_state(bs);
    struct qsnap *sn = find_id(s, id, err);
    if (!sn)
        return false;
    int idx = (int)(sn - s->snaps), nb;
    uint64_t *l1;
    if (!qcow2_read_l1(s, sn->l1_offset, sn->l1_size, &l1, err))
        return false;
    struct qsnap *v = new_table(s, idx, NULL, &nb, err);
    uint8_t *copy = malloc(s->cluster_size);
    if (!v || !copy || !qcow2_txn_begin(s, err)) {
        if (!copy)
            sg_error_set(err, "out of memory");
        if (v)
            free_snaps(v, nb);
        free(copy);
        free(l1);
        return false;
    }
    uint64_t per = 1ULL << s->l2_bits;
    /* The snapshot's references go. */
    bool ok = qcow2_txn_drop_tree(s, l1, sn->l1_size, err);
    uint64_t l1_bytes = ((uint64_t)sn->l1_size * 8 + s->cluster_size - 1) &
                        ~(s->cluster_size - 1);
    for (uint64_t o = 0; ok && o < l1_bytes; o += s->cluster_size)
        ok = qcow2_dec_refcount_now(s, (sn->l1_offset + o) >> s->cluster_bits, err);
    free(l1);
    /* COPIED in the active tables, against the new refcounts. */
    for (uint32_t i = 0; ok && i < s->l1_size; i++) {
        uint64_t l2off, rc;
        ok = qcow2_l2_offset(s, s->l1[i], &l2off, err);
        if (!ok || !l2off)
            continue;
        ok = qcow2_get_refcount(s, l2off >> s->cluster_bits, &rc, err);
        if (!ok)
            break;
        if (rc != 1) {
            s->l1[i] = l2off;   /* still shared: nothing in it is private */
            continue;
        }
        uint8_t *t = qcache_get(s, &s->l2c, l2off, "L2 table", err);
        ok = t != NULL;
        if (!ok)
            break;
        memcpy(copy, t, s->cluster_size);
        bool changed = false;
        for (uint64_t j = 0; ok && j < per; j++) {
            uint64_t e = sg_be64(copy + 8 * j), host = e & QCOW2_OFFSET_MASK, drc;
            if (!host || (e & QCOW2_OFLAG_COMPRESSED))
                continue;
            ok = qcow2_get_refcount(s, host >> s->cluster_bits, &drc, err);
            uint64_t ne = (e & ~QCOW2_OFLAG_COPIED) | (drc == 1 ? QCOW2_OFLAG_COPIED : 0);
            if (ok && ne != e) {
                sg_put_be64(copy + 8 * j, ne);
                changed = true;
            }
        }
        if (ok && changed) {
            uint64_t nl2 = qcow2_alloc_clusters(s, 1, err);
            ok = nl2 && qcache_new(s, &s->l2c, nl2, copy, err) &&
                 qcow2_dec_refcount_now(s, l2off >> s->cluster_bits, err);
            l2off = nl2;
        }
        if (ok)
            s->l1[i] = l2off | QCOW2_OFLAG_COPIED;
    }
    free(copy);
    if (!ok || !qcow2_txn_commit(s, v, nb, true, s->size, err)) {
        qcow2_txn_abort(s);
        free_snaps(v, nb);
        return false;
    }
    install_table(s, v, nb);
    return true;
}

/* A save runs while the guest does (live snapshots), and each guest write
 * after a snapshot needs a new cluster (COW).  A save that took the last
 * free byte would stop the guest with an ENOSPC I/O error (werror=enospc)
 * before failing and giving its clusters back (issue 17: the VM must go on
 * running after a failed save on a full disk).  So VM state never takes
 * the last VMSTATE_KEEP_FREE bytes of the host file system (at least 32
 * clusters): the save fails first, with ENOSPC, and the guest keeps room. */
#define VMSTATE_KEEP_FREE (2ULL << 20)

static bool vmstate_room(const struct qcow2 *s, size_t len, struct sg_error *err)
{
    struct statvfs st;
    if (fstatvfs(s->fd, &st) != 0)
        return true;   /* unknown: the write itself will tell */
    uint64_t keep = VMSTATE_KEEP_FREE > 32 * s->cluster_size ? VMSTATE_KEEP_FREE
                                                             : 32 * s->cluster_size;
    uint64_t avail = (uint64_t)st.f_bavail * st.f_frsize;
    if (avail >= keep + len)
        return true;
    sg_error_set_errno(err, ENOSPC, "qcow2: VM state: %llu KiB left on the host file system, "
                       "kept for the guest's writes", (unsigned long long)(avail >> 10));
    return false;
}

bool sg_qcow2_vmstate_write(struct sg_block *bs, uint64_t off, const void *buf, size_t len,
                            struct sg_error *err)
{
    struct qcow2 *s = qcow2_state(bs);
    if (!vmstate_room(s, len, err))
        return false;
    uint64_t base = qcow2_vmstate_offset(s);
    uint64_t limit = (QCOW2_MAX_L1_BYTES / 8) << (s->cluster_bits + s->l2_bits);
    if (off > limit - base || len > limit - base - off) {
        sg_error_set(err, "qcow2: vmstate write at %llu+%zu exceeds the image's limits",
                     (unsigned long long)off, len);
        return false;
    }
    return qcow2_begin_change(s, err) && qcow2_write_at(s, base + off, buf, len, true, err);
}

/* Finds snapshot `id`, checks off+len against its vm_state_size, and makes
 * s->snap_l1 its L1 table (kept: a load reads one snapshot piece by piece).
 * *base is where its vmstate area starts in its guest address space. */
static struct qsnap *vmstate_snapshot(struct qcow2 *s, const char *id, uint64_t off, uint64_t len,
                                      uint64_t *base, struct sg_error *err)
{
    struct qsnap *sn = find_id(s, id, err);
    if (!sn)
        return NULL;
    *base = qcow2_size_to_l1(s, sn->disk_size) << (s->cluster_bits + s->l2_bits);
    if (off > sn->vm_state_size || len > sn->vm_state_size - off) {
        sg_error_set(err, "qcow2: vmstate read at %llu+%llu is past the %llu bytes saved in "
                     "snapshot %s", (unsigned long long)off, (unsigned long long)len,
                     (unsigned long long)sn->vm_state_size, id);
        return NULL;
    }
    if (!s->snap_l1_id || strcmp(s->snap_l1_id, id) != 0) {
        uint64_t *l1;
        char *cid = strdup(id);
        if (!cid || !qcow2_read_l1(s, sn->l1_offset, sn->l1_size, &l1, err)) {
            if (!cid)
                sg_error_set(err, "out of memory");
            free(cid);
            return NULL;
        }
        free(s->snap_l1_id);
        free(s->snap_l1);
        s->snap_l1_id = cid;
        s->snap_l1 = l1;
    }
    return sn;
}

bool sg_qcow2_vmstate_read_snapshot(struct sg_block *bs, const char *id, uint64_t off,
                                    void *buf, size_t len, struct sg_error *err)
{
    struct qcow2 *s = qcow2_state(bs);
    uint64_t base;
    struct qsnap *sn = vmstate_snapshot(s, id, off, len, &base, err);
    return sn && qcow2_read_tree(s, s->snap_l1, sn->l1_size, base + off, buf, len, err);
}

/* Allocation is decided per cluster from the L2 entry alone (no data is
 * read): a zero-flag or absent cluster reads as zeros.  An L1 entry without
 * an L2 table answers for its whole span at once, so the unallocated tail of
 * a mostly-empty RAM image costs a few steps, not one per cluster. */
int sg_qcow2_vmstate_map_snapshot(struct sg_block *bs, const char *id, uint64_t off,
                                  uint64_t len, struct sg_block_extent *ext, int max,
                                  struct sg_error *err)
{
    struct qcow2 *s = qcow2_state(bs);
    uint64_t base;
    struct qsnap *sn = vmstate_snapshot(s, id, off, len, &base, err);
    if (!sn)
        return -1;
    int n = 0;
    uint64_t g = base + off, end = base + off + len;
    uint64_t l1_span = 1ULL << (s->cluster_bits + s->l2_bits);
    while (g < end) {
        uint64_t l1i = g >> (s->cluster_bits + s->l2_bits);
        uint64_t l2off = 0;
        if (l1i < sn->l1_size && !qcow2_l2_offset(s, s->snap_l1[l1i], &l2off, err))
            return -1;
        uint64_t step;
        bool alloc;
        if (!l2off) {
            step = l1_span - (g & (l1_span - 1));
            alloc = false;
        } else {
            enum qcow2_ctype t;
            uint64_t host;
            if (!qcow2_xlate(s, s->snap_l1, sn->l1_size, g, &t, &host, err))
                return -1;
            step = s->cluster_size - (g & (s->cluster_size - 1));
            alloc = t == QC_NORMAL;
        }
        if (step > end - g)
            step = end - g;
        if (n > 0 && ext[n - 1].allocated == alloc) {
            ext[n - 1].len += step;
        } else {
            if (n == max)
                break;
            ext[n++] = (struct sg_block_extent){ g - base, step, alloc };
        }
        g += step;
    }
    return n;
}

bool sg_qcow2_vmstate_discard(struct sg_block *bs, struct sg_error *err)
{
    return drop_vmstate(qcow2_state(bs), err);
}

/* For qcow2_vmstate_share.c: a copy of the snapshot table to change (with
 * `add` appended unless NULL), and installing or freeing it. */
struct qsnap *qcow2_snaps_copy(struct qcow2 *s, const struct qsnap *add, int *nb,
                               struct sg_error *err)
{
    return new_table(s, -1, add, nb, err);
}

void qcow2_snaps_install(struct qcow2 *s, struct qsnap *v, int nb)
{
    install_table(s, v, nb);
}

void qcow2_snaps_free_array(struct qsnap *v, int nb)
{
    free_snaps(v, nb);
}

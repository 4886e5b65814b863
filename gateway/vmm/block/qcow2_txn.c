/* qcow2_txn.c: atomic metadata transactions for snapshot create/delete.
 *
 * Why: creating or deleting a snapshot changes refcounts between 1 and 2
 * on clusters the active tables reach, and COPIED must follow.  A refcount
 * block and an L2 table are different sectors, so updating them in place
 * always leaves a moment where `qemu-img check` sees COPIED disagree with
 * the refcount (QEMU has that window).  Instead, a transaction never writes
 * over anything the committed image uses:
 *
 *   - all clusters the committed image may use lie below txn_floor (the end
 *     of the file when the transaction starts); new clusters come from above;
 *   - refcount changes are made in the cached refcount blocks and kept in
 *     memory (the caches grow rather than write back);
 *   - at the commit, every changed refcount block moves to a new cluster,
 *     and a new refcount table, a new L1 table and a new snapshot table are
 *     written, all above the floor, then flushed;
 *   - one write of header bytes 24..71 (size, l1_size, l1_table_offset,
 *     refcount_table_offset, refcount_table_clusters, nb_snapshots,
 *     snapshots_offset: one sector) switches to the new state, and a flush.
 *
 * A crash before that write leaves the old image intact (the new clusters
 * past its end are unreferenced: at most leaks); after it, the new one. */
#include "qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool qcow2_txn_begin(struct qcow2 *s, struct sg_error *err)
{
    /* Room for the new copies without growing the refcount table inside. */
    uint64_t cl = (s->host_end + s->cluster_size - 1) / s->cluster_size;
    if (!qcow2_begin_change(s, err) || !qcow2_meta_flush(s, err) || !qcow2_rc_reserve(s, cl + 64, err))
        return false;
    s->txn_l1 = malloc((size_t)s->l1_size * 8 + 8);
    s->txn_rt = malloc((size_t)s->rt_size * 8);
    if (!s->txn_l1 || !s->txn_rt) {
        free(s->txn_l1);
        free(s->txn_rt);
        s->txn_l1 = s->txn_rt = NULL;
        sg_error_set(err, "out of memory");
        return false;
    }
    memcpy(s->txn_l1, s->l1, (size_t)s->l1_size * 8);
    memcpy(s->txn_rt, s->rt, (size_t)s->rt_size * 8);
    s->txn_l1_table = s->l1;
    s->txn_l1_size = s->l1_size;
    s->txn_host_end = s->host_end;
    s->txn_floor = (s->host_end + s->cluster_size - 1) / s->cluster_size;
    s->txn = true;
    return true;
}

static void txn_end(struct qcow2 *s)
{
    free(s->txn_l1);
    free(s->txn_rt);
    s->txn_l1 = s->txn_rt = NULL;
    s->txn = false;
}

/* Nothing was written: forget the in-memory changes.  The L1 table goes
 * back to the array and size the transaction began with: a goto has put
 * the snapshot's (of another size) in their place, which stays its own to
 * free. */
void qcow2_txn_abort(struct qcow2 *s)
{
    if (!s->txn)
        return;
    s->l1 = s->txn_l1_table;
    s->l1_size = s->txn_l1_size;
    memcpy(s->l1, s->txn_l1, (size_t)s->l1_size * 8);
    memcpy(s->rt, s->txn_rt, (size_t)s->rt_size * 8);
    s->l1_dirty = false;
    s->rt_dirty = false;
    s->host_end = s->txn_host_end;
    qcache_drop_all(&s->l2c);
    qcache_drop_all(&s->rbc);
    s->free_hint = 1;
    qcow2_forget_freed(s);   /* the old state still uses them */
    txn_end(s);
}

static uint64_t bytes_to_clusters(const struct qcow2 *s, uint64_t b)
{
    return (b + s->cluster_size - 1) / s->cluster_size;
}

static bool free_now(struct qcow2 *s, uint64_t off, uint64_t bytes, struct sg_error *err)
{
    for (uint64_t o = 0; o < bytes; o += s->cluster_size)
        if (!qcow2_dec_refcount_now(s, (off + o) >> s->cluster_bits, err))
            return false;
    return true;
}

bool qcow2_txn_commit(struct qcow2 *s, struct qsnap *snaps, int nb, bool free_old_l1,
                      uint64_t vsize, struct sg_error *err)
{
    uint64_t cs = s->cluster_size, floor_off = s->txn_floor * cs;
    uint8_t *tbl = NULL;
    bool ok = false;

    /* 1. New places for the tables; the old ones are free in the new state. */
    uint64_t tbl_bytes = qcow2_snapshot_table_bytes(snaps, nb);
    uint64_t tbl_cl = bytes_to_clusters(s, tbl_bytes);
    uint64_t tbl_off = 0;
    if (tbl_cl && !(tbl_off = qcow2_alloc_clusters(s, tbl_cl, err)))
        goto out;
    if (s->snapshots_bytes &&
        !free_now(s, s->snapshots_offset, bytes_to_clusters(s, s->snapshots_bytes) * cs, err))
        goto out;
    uint64_t l1_cl = bytes_to_clusters(s, (uint64_t)s->l1_size * 8);
    uint64_t l1_off = 0;
    if (l1_cl && !(l1_off = qcow2_alloc_clusters(s, l1_cl, err)))
        goto out;
    if (free_old_l1 && l1_cl && !free_now(s, s->l1_offset, l1_cl * cs, err))
        goto out;
    uint64_t rt_off = qcow2_alloc_clusters(s, s->rt_clusters, err);
    if (!rt_off || !free_now(s, s->rt_offset, (uint64_t)s->rt_clusters * cs, err))
        goto out;

    /* 2. Every changed refcount block below the floor moves up.  Moving one
     *    changes refcounts (its new cluster, its old one), possibly in
     *    another old block: repeat until none is left; each block moves at
     *    most once, so this ends. */
    for (;;) {
        uint64_t old = qcache_dirty_below(&s->rbc, floor_off);
        if (!old)
            break;
        uint64_t r;
        for (r = 0; r < s->rt_size && s->rt[r] != old; r++)
            ;
        if (r == s->rt_size) {
            sg_error_set(err, "qcow2: cached refcount block %#llx is not in the table",
                         (unsigned long long)old);
            goto out;
        }
        uint64_t nw = qcow2_alloc_clusters(s, 1, err);
        if (!nw)
            goto out;
        if (s->rt[r] != old) {   /* moved meanwhile (its own range) */
            if (!qcow2_dec_refcount_now(s, nw >> s->cluster_bits, err))
                goto out;
            continue;
        }
        qcache_rekey(&s->rbc, old, nw);
        s->rt[r] = nw;
        if (!qcow2_dec_refcount_now(s, old >> s->cluster_bits, err))
            goto out;
    }
    if (qcache_dirty_below(&s->l2c, floor_off)) {
        sg_error_set(err, "qcow2: internal error: L2 table changed in place in a transaction");
        goto out;
    }

    /* 3. Write the new state, all above the floor, and flush it. */
    tbl = calloc(tbl_cl ? tbl_cl : 1, cs);
    if (!tbl) {
        sg_error_set(err, "out of memory");
        goto out;
    }
    qcow2_snapshot_table_encode(snaps, nb, tbl);
    s->in_flush = true;
    ok = qcache_write_dirty(s, &s->rbc, "refcount block", err) >= 0 &&
         qcache_write_dirty(s, &s->l2c, "L2 table", err) >= 0 &&
         (!tbl_cl || qcow2_pwrite_meta(s, QOL_SNAPSHOT_TABLE, tbl, tbl_cl * cs, tbl_off,
                                        "snapshot table", err)) &&
         (!l1_cl || qcow2_write_l1_at(s, l1_off, err)) && qcow2_write_rt_at(s, rt_off, err);
    s->in_flush = false;
    if (!ok)
        goto out;
    /* The L1 cluster tail and anything past the written end must exist. */
    if (!qcow2_sync(s, err)) {
        ok = false;
        goto out;
    }

    /* 4. The switch: size, crypt_method (0), l1_size, l1_table_offset,
     *    refcount_table_offset, refcount_table_clusters, nb_snapshots,
     *    snapshots_offset -- bytes 24..71, one sector. */
    uint8_t h[48];
    sg_put_be64(h, vsize);
    sg_put_be32(h + 8, 0);
    sg_put_be32(h + 12, s->l1_size);
    sg_put_be64(h + 16, l1_off);
    sg_put_be64(h + 24, rt_off);
    sg_put_be32(h + 32, s->rt_clusters);
    sg_put_be32(h + 36, (uint32_t)nb);
    sg_put_be64(h + 40, tbl_off);
    ok = qcow2_header_update(s, QH_SIZE, h, sizeof h, err);
    if (!ok)
        goto out;
    s->l1_offset = l1_off;
    s->size = vsize;
    s->bs->size = vsize;
    s->rt_offset = rt_off;
    s->snapshots_offset = tbl_off;
    s->snapshots_bytes = tbl_bytes;
    s->l1_dirty = false;
    s->rt_dirty = false;
    s->free_hint = 1;
    txn_end(s);
    qcow2_punch_freed(s);   /* the old tables, and whatever the new state dropped */
out:
    free(tbl);
    if (!ok)
        qcow2_txn_abort(s);
    return ok;
}

bool qcow2_txn_copy_tree(struct qcow2 *s, const uint64_t *l1, uint32_t n, uint64_t *dst,
                         struct sg_error *err)
{
    uint64_t per = 1ULL << s->l2_bits;
    uint8_t *copy = malloc(s->cluster_size);
    if (!copy) {
        sg_error_set(err, "out of memory");
        return false;
    }
    bool ok = true;
    for (uint32_t i = 0; ok && i < n; i++) {
        uint64_t l2off;
        ok = qcow2_l2_offset(s, l1[i], &l2off, err);
        if (!ok)
            break;
        if (!l2off) {
            dst[i] = 0;
            continue;
        }
        uint8_t *src = qcache_get(s, &s->l2c, l2off, "L2 table", err);
        ok = src != NULL;
        if (!ok)
            break;
        memcpy(copy, src, s->cluster_size);
        for (uint64_t j = 0; ok && j < per; j++) {
            uint64_t e = sg_be64(copy + 8 * j), host = e & QCOW2_OFFSET_MASK;
            if (e & QCOW2_OFLAG_COMPRESSED) {
                sg_error_set(err, "unsupported qcow2 feature: compressed clusters");
                ok = false;
            } else if (host) {
                if ((host & (s->cluster_size - 1)) || host >= s->host_end) {
                    sg_error_set(err, "qcow2: data cluster offset %#llx is invalid",
                                 (unsigned long long)host);
                    ok = false;
                } else {
                    /* reached once more (by the copy): shared, no COPIED */
                    sg_put_be64(copy + 8 * j, e & ~QCOW2_OFLAG_COPIED);
                    ok = qcow2_inc_refcount(s, host >> s->cluster_bits, err);
                }
            }
        }
        uint64_t nl2 = ok ? qcow2_alloc_clusters(s, 1, err) : 0;
        ok = nl2 && qcache_new(s, &s->l2c, nl2, copy, err);
        if (ok)
            dst[i] = nl2 | QCOW2_OFLAG_COPIED;
    }
    free(copy);
    return ok;
}

/* Adds `addend` (+1/-1) to the refcount of every cluster the tree l1[0..n)
 * reaches, at most `limit` changes (*done counts them); on the way up,
 * clears COPIED in its L2 tables (about to be shared). */
bool qcow2_tree_ref(struct qcow2 *s, const uint64_t *l1, uint64_t n, int addend, uint64_t limit,
                    uint64_t *done, struct sg_error *err)
{
    uint64_t per = 1ULL << s->l2_bits;
    bool (*op)(struct qcow2 *, uint64_t, struct sg_error *) =
        addend > 0 ? qcow2_inc_refcount : qcow2_dec_refcount_now;
    for (uint64_t i = 0; i < n && *done < limit; i++) {
        uint64_t l2off;
        if (!qcow2_l2_offset(s, l1[i], &l2off, err))
            return false;
        if (!l2off)
            continue;
        for (uint64_t j = 0; j < per && *done < limit; j++) {
            uint8_t *t = qcache_get(s, &s->l2c, l2off, "L2 table", err);
            if (!t)
                return false;
            uint64_t e = sg_be64(t + 8 * j), host = e & QCOW2_OFFSET_MASK;
            if (e & QCOW2_OFLAG_COMPRESSED) {
                sg_error_set(err, "unsupported qcow2 feature: compressed clusters");
                return false;
            }
            if (addend > 0 && (e & QCOW2_OFLAG_COPIED)) {
                sg_put_be64(t + 8 * j, e & ~QCOW2_OFLAG_COPIED);
                qcache_mark_dirty(&s->l2c, l2off);
            }
            if (!host)
                continue;
            if (!op(s, host >> s->cluster_bits, err))
                return false;
            ++*done;
        }
        if (*done < limit) {
            if (!op(s, l2off >> s->cluster_bits, err))
                return false;
            ++*done;
        }
    }
    return true;
}

bool qcow2_txn_drop_tree(struct qcow2 *s, const uint64_t *l1, uint32_t n, struct sg_error *err)
{
    uint64_t done = 0;
    return qcow2_tree_ref(s, l1, n, -1, UINT64_MAX, &done, err);
}

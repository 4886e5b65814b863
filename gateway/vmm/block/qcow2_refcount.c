/* qcow2_refcount.c: refcounts, cluster allocation, deferred frees and the
 * ordered metadata flush that makes the image crash safe.
 *
 * Crash safety rests on one rule, applied in qcow2_meta_flush():
 *   a pointer (refcount-table entry, L2 entry, L1 entry, header field) only
 *   reaches the disk after what it points to and the refcount increment that
 *   owns it are on the disk; a refcount decrement only reaches the disk
 *   after the pointers it accounted for are gone from the disk.
 * A crash between the steps can therefore leave refcounts too high (a leak,
 * which qemu-img check reports as harmless) but never too low. */
#include "qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t rc_get(const struct qcow2 *s, const uint8_t *blk, uint64_t i)
{
    switch (s->refcount_order) {
    case 0: return (blk[i / 8] >> (i % 8)) & 1;
    case 1: return (blk[i / 4] >> (2 * (i % 4))) & 3;
    case 2: return (blk[i / 2] >> (4 * (i % 2))) & 15;
    case 3: return blk[i];
    case 4: return sg_be16(blk + 2 * i);
    case 5: return sg_be32(blk + 4 * i);
    default: return sg_be64(blk + 8 * i);
    }
}

static void rc_set(const struct qcow2 *s, uint8_t *blk, uint64_t i, uint64_t v)
{
    unsigned sh;
    switch (s->refcount_order) {
    case 0: sh = i % 8; blk[i / 8] = (uint8_t)((blk[i / 8] & ~(1u << sh)) | (v << sh)); break;
    case 1: sh = 2 * (i % 4); blk[i / 4] = (uint8_t)((blk[i / 4] & ~(3u << sh)) | (v << sh)); break;
    case 2: sh = 4 * (i % 2); blk[i / 2] = (uint8_t)((blk[i / 2] & ~(15u << sh)) | (v << sh)); break;
    case 3: blk[i] = (uint8_t)v; break;
    case 4: sg_put_be16(blk + 2 * i, (uint16_t)v); break;
    case 5: sg_put_be32(blk + 4 * i, (uint32_t)v); break;
    default: sg_put_be64(blk + 8 * i, v); break;
    }
}

static uint64_t rc_max(const struct qcow2 *s)
{
    return s->refcount_order == 6 ? UINT64_MAX : (1ULL << (1u << s->refcount_order)) - 1;
}

bool qcow2_rc_load(struct qcow2 *s, struct sg_error *err)
{
    uint64_t bytes = (uint64_t)s->rt_clusters * s->cluster_size;
    uint8_t *raw = malloc(bytes);
    s->rt_size = bytes / 8;
    s->rt = malloc(bytes);
    if (!raw || !s->rt) {
        free(raw);
        sg_error_set(err, "out of memory");
        return false;
    }
    if (!sg_pread_full(s->fd, raw, bytes, s->rt_offset, "refcount table", err)) {
        free(raw);
        return false;
    }
    for (uint64_t i = 0; i < s->rt_size; i++) {
        s->rt[i] = sg_be64(raw + 8 * i);
        if (s->rt[i])
            s->rt_hi = i + 1;
        if (s->rt[i] & QCOW2_REFT_RESERVED) {
            free(raw);
            sg_error_set(err, "qcow2: refcount table entry %llu has reserved bits set",
                         (unsigned long long)i);
            return false;
        }
    }
    free(raw);
    return true;
}

/* The block holding cluster's refcount, or NULL (with no error) if none. */
static uint8_t *rb_find(struct qcow2 *s, uint64_t cluster, uint64_t *idx, struct sg_error *err,
                        bool *failed)
{
    uint64_t r = cluster >> s->rb_bits;
    *idx = cluster & ((1ULL << s->rb_bits) - 1);
    *failed = false;
    if (r >= s->rt_size || s->rt[r] == 0)
        return NULL;
    uint8_t *b = qcache_get(s, &s->rbc, s->rt[r], "refcount block", err);
    if (!b)
        *failed = true;
    return b;
}

bool qcow2_get_refcount(struct qcow2 *s, uint64_t cluster, uint64_t *rc, struct sg_error *err)
{
    uint64_t i;
    bool failed;
    uint8_t *b = rb_find(s, cluster, &i, err, &failed);
    if (failed)
        return false;
    *rc = b ? rc_get(s, b, i) : 0;
    return true;
}

static bool add_refcount(struct qcow2 *s, uint64_t cluster, int addend, struct sg_error *err)
{
    uint64_t i;
    bool failed;
    uint8_t *b = rb_find(s, cluster, &i, err, &failed);
    if (failed)
        return false;
    if (!b) {
        sg_error_set(err, "qcow2: cluster %#llx has no refcount block",
                     (unsigned long long)(cluster << s->cluster_bits));
        return false;
    }
    uint64_t v = rc_get(s, b, i);
    if (addend > 0 && v == rc_max(s)) {
        sg_error_set(err, "qcow2: refcount overflow on cluster %#llx",
                     (unsigned long long)(cluster << s->cluster_bits));
        return false;
    }
    if (addend < 0 && v == 0) {
        sg_error_set(err, "qcow2: refcount of cluster %#llx would drop below zero (image "
                     "corrupt)", (unsigned long long)(cluster << s->cluster_bits));
        return false;
    }
    rc_set(s, b, i, addend > 0 ? v + 1 : v - 1);
    qcache_mark_dirty(&s->rbc, s->rt[cluster >> s->rb_bits]);
    if (addend < 0 && v == 1) {
        qcow2_note_freed(s, cluster);
        if (cluster < s->free_hint)
            s->free_hint = cluster;
        /* A stale cached L2 table must not be written over the next owner. */
        qcache_drop(&s->l2c, cluster << s->cluster_bits);
    }
    return true;
}

bool qcow2_dec_refcount_now(struct qcow2 *s, uint64_t cluster, struct sg_error *err)
{
    return add_refcount(s, cluster, -1, err);
}

bool qcow2_inc_refcount(struct qcow2 *s, uint64_t cluster, struct sg_error *err)
{
    return add_refcount(s, cluster, 1, err);
}


/* Grows the refcount table so that index `need` exists.  The new table and
 * the refcount blocks describing it are placed past everything the old
 * table covers (all free there), written and flushed, and only then does
 * one header write switch to them.  The old table is freed afterwards. */
static bool grow_rt(struct qcow2 *s, uint64_t need, struct sg_error *err)
{
    if (s->txn) {
        sg_error_set(err, "qcow2: refcount table full during a snapshot operation (block %llu, "
                     "table of %llu, floor %llu)", (unsigned long long)need,
                     (unsigned long long)s->rt_size, (unsigned long long)s->txn_floor);
        return false;
    }
    uint64_t per = 1ULL << s->rb_bits;
    uint64_t cs = s->cluster_size;
    /* New blocks and table go right after the end of the file, from a block
     * boundary on, where no refcount block exists yet. */
    uint64_t end_cl = (s->host_end + cs - 1) / cs;
    uint64_t base = (end_cl + per - 1) / per * per;
    uint64_t new_size = need + 1 > s->rt_size ? need + 1 : s->rt_size;
    new_size += new_size / 2;
    uint64_t k = 1, t, first_ri;
    for (int guard = 0;; guard++) {
        first_ri = base >> s->rb_bits;
        t = (new_size * 8 + cs - 1) / cs;
        uint64_t k2 = ((base + k + t - 1) >> s->rb_bits) - first_ri + 1;
        bool taken = false;
        for (uint64_t b = 0; b < k2 && first_ri + b < s->rt_size; b++)
            taken |= s->rt[first_ri + b] != 0;
        if (taken && guard < 1000) {
            base += per;
            continue;
        }
        uint64_t want = first_ri + k2;
        if (k2 == k && want <= new_size)
            break;
        k = k2;
        if (want > new_size)
            new_size = want;
    }
    new_size = t * cs / 8;
    if (t * cs > QCOW2_MAX_RT_BYTES) {
        sg_error_set(err, "qcow2: image too large (refcount table would exceed %llu bytes)",
                     (unsigned long long)QCOW2_MAX_RT_BYTES);
        return false;
    }
    /* The old blocks the new table points at must be on disk first. */
    if (qcache_write_dirty(s, &s->rbc, "refcount block", err) < 0)
        return false;
    uint8_t *blocks = calloc(k, cs);
    uint8_t *table = calloc(t, cs);
    uint64_t *nrt = calloc(new_size, 8);
    if (!blocks || !table || !nrt) {
        free(blocks);
        free(table);
        free(nrt);
        sg_error_set(err, "out of memory");
        return false;
    }
    for (uint64_t x = base; x < base + k + t; x++)
        rc_set(s, blocks + ((x >> s->rb_bits) - first_ri) * cs, x & (per - 1), 1);
    memcpy(nrt, s->rt, s->rt_size * 8);
    for (uint64_t b = 0; b < k; b++)
        nrt[first_ri + b] = (base + b) * cs;
    for (uint64_t i = 0; i < new_size; i++)
        sg_put_be64(table + 8 * i, nrt[i]);
    unsigned self = QOL_REFCOUNT_BLOCK | QOL_REFCOUNT_TABLE;
    bool ok = qcow2_pwrite_meta(s, self, blocks, k * cs, base * cs, "refcount block", err) &&
              qcow2_pwrite_meta(s, self, table, t * cs, (base + k) * cs, "refcount table",
                                err) &&
              qcow2_sync(s, err);
    uint8_t h[12];
    sg_put_be64(h, (base + k) * cs);
    sg_put_be32(h + 8, (uint32_t)t);
    if (ok)
        ok = qcow2_header_update(s, QH_RT_OFFSET, h, sizeof h, err);
    free(blocks);
    free(table);
    if (!ok) {
        free(nrt);
        return false;
    }
    uint64_t old_off = s->rt_offset, old_bytes = (uint64_t)s->rt_clusters * cs;
    free(s->rt);
    s->rt = nrt;
    s->rt_size = new_size;
    if (first_ri + k > s->rt_hi)
        s->rt_hi = first_ri + k;
    s->rt_offset = (base + k) * cs;
    s->rt_clusters = (uint32_t)t;
    s->rt_dirty = false;
    if ((base + k + t) * cs > s->host_end)
        s->host_end = (base + k + t) * cs;
    return qcow2_free_range_later(s, old_off, old_bytes, err);
}

/* Makes sure the refcount table covers `extra` clusters past the end of
 * the file, so a transaction never needs to grow it. */
bool qcow2_rc_reserve(struct qcow2 *s, uint64_t extra, struct sg_error *err)
{
    uint64_t last = (s->host_end + s->cluster_size - 1) / s->cluster_size + extra;
    uint64_t r = last >> s->rb_bits;
    return r < s->rt_size || grow_rt(s, r, err);
}

uint64_t qcow2_alloc_clusters(struct qcow2 *s, uint64_t n, struct sg_error *err)
{
    uint64_t cs = s->cluster_size;
    for (int rounds = 0; rounds < 1000000; rounds++) {
        uint64_t start = 0, run = 0, first_free = 0;
        uint64_t from = s->free_hint ? s->free_hint : 1;
        if (s->txn && from < s->txn_floor)
            from = s->txn_floor;   /* never reuse what the committed image may use */
        for (uint64_t c = from; run < n; c++) {
            uint64_t rc;
            if (!qcow2_get_refcount(s, c, &rc, err))
                return 0;
            if (rc) {
                run = 0;
                continue;
            }
            if (!first_free)
                first_free = c;
            if (run++ == 0)
                start = c;
        }
        /* Nothing below the first free cluster seen is free. */
        if (!s->txn)
            s->free_hint = first_free;
        bool restart = false;
        for (uint64_t c = start; c < start + n && !restart; c++) {
            uint64_t r = c >> s->rb_bits;
            if (r >= s->rt_size) {
                if (!grow_rt(s, r, err))
                    return 0;
                restart = true;
            } else if (s->rt[r] == 0) {
                /* A block for an undescribed range goes inside that range
                 * (all of it is free) and counts itself. */
                uint8_t *b = qcache_new(s, &s->rbc, c * cs, NULL, err);
                if (!b)
                    return 0;
                rc_set(s, b, c & ((1ULL << s->rb_bits) - 1), 1);
                s->rt[r] = c * cs;
                if (r + 1 > s->rt_hi)
                    s->rt_hi = r + 1;
                s->rt_dirty = true;
                if ((c + 1) * cs > s->host_end)
                    s->host_end = (c + 1) * cs;
                restart = true;
            }
        }
        if (restart)
            continue;
        for (uint64_t c = start; c < start + n; c++)
            if (!add_refcount(s, c, 1, err))
                return 0;
        if (start == s->free_hint)
            s->free_hint = start + n;
        if ((start + n) * cs > s->host_end)
            s->host_end = (start + n) * cs;
        return start * cs;
    }
    sg_error_set(err, "qcow2: cluster allocation did not converge");
    return 0;
}

bool qcow2_free_later(struct qcow2 *s, uint64_t host_off, struct sg_error *err)
{
    if (s->npending == s->cap_pending) {
        size_t nc = s->cap_pending ? s->cap_pending * 2 : 256;
        uint64_t *p = realloc(s->pending, nc * sizeof *p);
        if (!p) {
            sg_error_set(err, "out of memory");
            return false;
        }
        s->pending = p;
        s->cap_pending = nc;
    }
    s->pending[s->npending++] = host_off & ~(s->cluster_size - 1);
    return true;
}

bool qcow2_free_range_later(struct qcow2 *s, uint64_t host_off, uint64_t bytes,
                            struct sg_error *err)
{
    for (uint64_t o = 0; o < bytes; o += s->cluster_size)
        if (!qcow2_free_later(s, host_off + o, err))
            return false;
    return true;
}

bool qcow2_sync(struct qcow2 *s, struct sg_error *err)
{
    if (s->broken)
        return qcow2_begin_change(s, err);   /* fails with the first cause */
    if (fdatasync(s->fd) < 0) {
        sg_error_set_errno(err, errno, "qcow2: flush");
        /* Inside a transaction only new, unreferenced clusters are unsynced
         * (qcow2_txn_begin flushed the rest): an abort is enough. */
        if (!s->txn)
            qcow2_set_broken(s, errno);
        return false;
    }
    s->data_dirty = false;
    return true;
}

bool qcow2_write_l1_at(struct qcow2 *s, uint64_t off, struct sg_error *err)
{
    size_t bytes = (size_t)s->l1_size * 8;
    uint8_t *raw = malloc(bytes ? bytes : 1);
    if (!raw) {
        sg_error_set(err, "out of memory");
        return false;
    }
    for (uint32_t i = 0; i < s->l1_size; i++)
        sg_put_be64(raw + 8 * i, s->l1[i]);
    bool ok = qcow2_pwrite_meta(s, QOL_ACTIVE_L1, raw, bytes, off, "L1 table", err);
    free(raw);
    return ok;
}

bool qcow2_write_rt_at(struct qcow2 *s, uint64_t off, struct sg_error *err)
{
    size_t bytes = (size_t)s->rt_size * 8;
    uint8_t *raw = malloc(bytes);
    if (!raw) {
        sg_error_set(err, "out of memory");
        return false;
    }
    for (uint64_t i = 0; i < s->rt_size; i++)
        sg_put_be64(raw + 8 * i, s->rt[i]);
    bool ok = qcow2_pwrite_meta(s, QOL_REFCOUNT_TABLE, raw, bytes, off, "refcount table", err);
    free(raw);
    return ok;
}

static bool write_rt(struct qcow2 *s, struct sg_error *err)
{
    return qcow2_write_rt_at(s, s->rt_offset, err);
}

/* The ordered flush.  Each step is followed by fdatasync only when it wrote
 * something, so a quiet image costs one sync (guest data) or none. */
bool qcow2_meta_flush(struct qcow2 *s, struct sg_error *err)
{
    if (s->rdonly)
        return true;
    if (s->broken)
        return qcow2_begin_change(s, err);   /* a failed sync stays failed */
    bool ok = false;
    s->in_flush = true;
    /* 1. Guest data and refcount increments: both must precede the L2
     *    entries that make new clusters reachable. */
    int n = qcache_write_dirty(s, &s->rbc, "refcount block", err);
    if (n < 0 || ((n > 0 || s->data_dirty) && !qcow2_sync(s, err)))
        goto out;
    /* 2. Refcount table entries for new blocks (the blocks are on disk). */
    if (s->rt_dirty) {
        if (!write_rt(s, err) || !qcow2_sync(s, err))
            goto out;
        s->rt_dirty = false;
    }
    /* 3. L2 tables, now that everything they point at is counted. */
    n = qcache_write_dirty(s, &s->l2c, "L2 table", err);
    if (n < 0 || (n > 0 && !qcow2_sync(s, err)))
        goto out;
    /* 4. L1 entries for new or copied L2 tables. */
    if (s->l1_dirty) {
        if (!qcow2_write_l1_at(s, s->l1_offset, err) || !qcow2_sync(s, err))
            goto out;
        s->l1_dirty = false;
    }
    /* 5. Decrements: the pointers they accounted for are gone on disk. */
    if (s->npending) {
        size_t np = s->npending;
        s->npending = 0;
        for (size_t i = 0; i < np; i++)
            if (!add_refcount(s, s->pending[i] >> s->cluster_bits, -1, err))
                goto out;
        n = qcache_write_dirty(s, &s->rbc, "refcount block", err);
        if (n < 0 || (n > 0 && !qcow2_sync(s, err)))
            goto out;
    }
    ok = true;
out:
    s->in_flush = false;
    /* Whatever reached refcount 0 is unreachable on disk now. */
    if (ok && !s->txn)
        qcow2_punch_freed(s);
    return ok;
}

/* qcow2_cluster.c: guest offset -> host cluster (xlate through L1 and L2),
 * allocation with copy-on-write (mkcluster, copy_cluster), L1 growth, and
 * the whole-tree refcount walks snapshots need.
 *
 * A request is cut at cluster boundaries:
 *
 *     off                                              off+len
 *      |  head  |      middle (whole clusters)      | tail |
 *   ---+--------+-----------+-----------+-----------+------+---
 *      cluster k           k+1         k+2         k+3
 *
 * Each piece is translated on its own; only a partial piece of a cluster
 * that must be allocated needs the old contents (copy_cluster). */
#include "qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Validates a host offset taken from an L1 or L2 entry. */
static bool check_host(struct qcow2 *s, uint64_t off, const char *what, struct sg_error *err)
{
    if (off & (s->cluster_size - 1)) {
        sg_error_set(err, "qcow2: %s offset %#llx is not cluster aligned", what,
                     (unsigned long long)off);
        return false;
    }
    if (off == 0 || off >= s->host_end) {
        sg_error_set(err, "qcow2: %s offset %#llx is outside the image file", what,
                     (unsigned long long)off);
        return false;
    }
    return true;
}

bool qcow2_l2_offset(struct qcow2 *s, uint64_t l1e, uint64_t *l2off, struct sg_error *err)
{
    if (l1e & QCOW2_L1E_RESERVED) {
        sg_error_set(err, "qcow2: L1 entry %#llx has reserved bits set",
                     (unsigned long long)l1e);
        return false;
    }
    *l2off = l1e & QCOW2_OFFSET_MASK;
    return *l2off == 0 || check_host(s, *l2off, "L2 table", err);
}

static uint64_t l2_entry(const uint8_t *l2, uint64_t i) { return sg_be64(l2 + 8 * i); }
static void set_l2_entry(uint8_t *l2, uint64_t i, uint64_t v) { sg_put_be64(l2 + 8 * i, v); }

/* Classifies an L2 entry; errors for what we must not misread. */
static bool classify(struct qcow2 *s, uint64_t e, enum qcow2_ctype *type, uint64_t *host,
                     struct sg_error *err)
{
    if (e & QCOW2_OFLAG_COMPRESSED) {
        sg_error_set(err, "unsupported qcow2 feature: compressed clusters");
        return false;
    }
    if (e & QCOW2_L2E_RESERVED) {
        sg_error_set(err, "qcow2: L2 entry %#llx has reserved bits set", (unsigned long long)e);
        return false;
    }
    *host = e & QCOW2_OFFSET_MASK;
    if (s->version >= 3 && (e & QCOW2_OFLAG_ZERO))
        *type = QC_ZERO;
    else
        *type = *host ? QC_NORMAL : QC_UNALLOC;
    return *host == 0 || check_host(s, *host, "data cluster", err);
}

bool qcow2_xlate(struct qcow2 *s, const uint64_t *l1, uint32_t l1_size, uint64_t goff,
                 enum qcow2_ctype *type, uint64_t *host, struct sg_error *err)
{
    uint64_t l1i = goff >> (s->cluster_bits + s->l2_bits);
    uint64_t l2i = (goff >> s->cluster_bits) & ((1ULL << s->l2_bits) - 1);
    uint64_t l2off;
    *type = QC_UNALLOC;
    *host = 0;
    if (l1i >= l1_size)
        return true;
    if (!qcow2_l2_offset(s, l1[l1i], &l2off, err))
        return false;
    if (!l2off)
        return true;
    uint8_t *l2 = qcache_get(s, &s->l2c, l2off, "L2 table", err);
    return l2 && classify(s, l2_entry(l2, l2i), type, host, err);
}

bool qcow2_xlate_run(struct qcow2 *s, const uint64_t *l1, uint32_t l1_size, uint64_t goff,
                     uint64_t n, uint64_t *host, struct sg_error *err)
{
    uint64_t per = 1ULL << s->l2_bits;
    for (uint64_t i = 0; i < n;) {
        uint64_t g = goff + i * s->cluster_size;
        uint64_t l1i = g >> (s->cluster_bits + s->l2_bits);
        uint64_t l2i = (g >> s->cluster_bits) & (per - 1);
        uint64_t m = per - l2i < n - i ? per - l2i : n - i;   /* entries in this table */
        uint64_t l2off = 0;
        if (l1i < l1_size && !qcow2_l2_offset(s, l1[l1i], &l2off, err))
            return false;
        const uint8_t *l2 = l2off ? qcache_get(s, &s->l2c, l2off, "L2 table", err) : NULL;
        if (l2off && !l2)
            return false;
        for (uint64_t k = 0; k < m; k++) {
            enum qcow2_ctype t = QC_UNALLOC;
            uint64_t h = 0;
            if (l2 && !classify(s, l2_entry(l2, l2i + k), &t, &h, err))
                return false;
            host[i + k] = t == QC_NORMAL ? h : 0;
        }
        i += m;
    }
    return true;
}

/* Reads data of an allocated cluster; a file that ends inside the cluster
 * (QEMU leaves the last one short) reads as zeros past its end. */
static bool read_data(struct qcow2 *s, uint64_t host, void *buf, size_t len,
                      struct sg_error *err)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t n = pread(s->fd, p, len, (off_t)host);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            sg_error_set_errno(err, errno, "qcow2: read at %#llx", (unsigned long long)host);
            return false;
        }
        if (n == 0) {
            memset(p, 0, len);
            break;
        }
        p += n;
        host += (uint64_t)n;
        len -= (size_t)n;
    }
    return true;
}

bool qcow2_read_tree(struct qcow2 *s, const uint64_t *l1, uint32_t l1_size, uint64_t goff,
                     void *buf, size_t len, struct sg_error *err)
{
    uint8_t *p = buf;
    while (len) {
        uint64_t in = goff & (s->cluster_size - 1);
        size_t n = s->cluster_size - in < len ? (size_t)(s->cluster_size - in) : len;
        enum qcow2_ctype t;
        uint64_t host;
        if (!qcow2_xlate(s, l1, l1_size, goff, &t, &host, err))
            return false;
        if (t == QC_NORMAL) {
            if (!read_data(s, host + in, p, n, err))
                return false;
        } else {
            memset(p, 0, n);
        }
        p += n;
        goff += n;
        len -= n;
    }
    return true;
}

/* Replaces the active L1 table by a copy of l1 (size new_size, zero padded)
 * at a newly allocated place.  The copy and its refcounts are flushed, then
 * one header write switches l1_size and l1_table_offset together (adjacent
 * fields), then the old table is freed. */
bool qcow2_install_l1(struct qcow2 *s, const uint64_t *l1, uint32_t l1_size, uint64_t new_size,
                      uint64_t vsize, struct sg_error *err)
{
    if (new_size * 8 > QCOW2_MAX_L1_BYTES) {
        sg_error_set(err, "qcow2: L1 table would exceed %llu bytes",
                     (unsigned long long)QCOW2_MAX_L1_BYTES);
        return false;
    }
    uint64_t bytes = new_size * 8;
    uint64_t nclus = (bytes + s->cluster_size - 1) / s->cluster_size;
    uint64_t *nl1 = calloc(new_size ? new_size : 1, 8);
    uint8_t *raw = calloc(nclus ? nclus : 1, s->cluster_size);
    if (!nl1 || !raw) {
        free(nl1);
        free(raw);
        sg_error_set(err, "out of memory");
        return false;
    }
    uint32_t keep = l1_size < new_size ? l1_size : (uint32_t)new_size;
    memcpy(nl1, l1, (size_t)keep * 8);
    for (uint64_t i = 0; i < new_size; i++)
        sg_put_be64(raw + 8 * i, nl1[i]);
    uint64_t off = nclus ? qcow2_alloc_clusters(s, nclus, err) : 0;
    bool ok = (!nclus || off) &&
              (!nclus || qcow2_pwrite_meta(s, QOL_ACTIVE_L1, raw, nclus * s->cluster_size, off,
                                           "L1 table", err));
    free(raw);
    if (!ok) {
        free(nl1);
        return false;
    }
    s->data_dirty = true;
    if (!qcow2_meta_flush(s, err)) {
        free(nl1);
        return false;
    }
    /* size, crypt_method (0), l1_size, l1_table_offset: one write, so the
     * virtual size never disagrees with the L1 table that backs it. */
    uint8_t h[24];
    sg_put_be64(h, vsize);
    sg_put_be32(h + 8, 0);
    sg_put_be32(h + 12, (uint32_t)new_size);
    sg_put_be64(h + 16, off);
    if (!qcow2_header_update(s, QH_SIZE, h, sizeof h, err)) {
        free(nl1);
        return false;
    }
    uint64_t old_off = s->l1_offset, old_bytes = (uint64_t)s->l1_size * 8;
    s->size = vsize;
    s->bs->size = vsize;
    free(s->l1);
    s->l1 = nl1;
    s->l1_size = (uint32_t)new_size;
    s->l1_offset = off;
    s->l1_dirty = false;
    if (old_bytes)
        return qcow2_free_range_later(s, old_off,
                                      (old_bytes + s->cluster_size - 1) & ~(s->cluster_size - 1),
                                      err);
    return true;
}

bool qcow2_grow_l1(struct qcow2 *s, uint64_t min_size, struct sg_error *err)
{
    uint64_t n = s->l1_size ? s->l1_size : 1;
    while (n < min_size)
        n = n + (n + 1) / 2;
    uint64_t max = QCOW2_MAX_L1_BYTES / 8;
    if (n > max)
        n = min_size > max ? min_size : max;
    /* The current table must be complete on disk before it is copied. */
    if (!qcow2_meta_flush(s, err))
        return false;
    uint64_t *copy = malloc((size_t)s->l1_size * 8 + 8);
    if (!copy) {
        sg_error_set(err, "out of memory");
        return false;
    }
    memcpy(copy, s->l1, (size_t)s->l1_size * 8);
    bool ok = qcow2_install_l1(s, copy, s->l1_size, n, s->size, err);
    free(copy);
    return ok && qcow2_meta_flush(s, err);
}

/* Returns the active L2 table for L1 index l1i, ready to be modified:
 * allocated if absent, copied (COW) if shared with a snapshot. */
static bool l2_for_write(struct qcow2 *s, uint64_t l1i, uint64_t *l2off, struct sg_error *err)
{
    if (l1i >= s->l1_size && !qcow2_grow_l1(s, l1i + 1, err))
        return false;
    uint64_t e = s->l1[l1i], old;
    if (!qcow2_l2_offset(s, e, &old, err))
        return false;
    if (old && (e & QCOW2_OFLAG_COPIED)) {
        *l2off = old;
        return true;
    }
    if (old) {
        uint64_t rc;
        if (!qcow2_get_refcount(s, old >> s->cluster_bits, &rc, err))
            return false;
        if (rc == 1) {   /* a stale flag, not a shared table */
            s->l1[l1i] = old | QCOW2_OFLAG_COPIED;
            s->l1_dirty = true;
            *l2off = old;
            return true;
        }
    }
    uint8_t *copy = NULL;
    if (old) {
        uint8_t *src = qcache_get(s, &s->l2c, old, "L2 table", err);
        if (!src || !(copy = malloc(s->cluster_size))) {
            if (src)
                sg_error_set(err, "out of memory");
            return false;
        }
        memcpy(copy, src, s->cluster_size);
        /* Every cluster a shared table reaches is shared too. */
        for (uint64_t i = 0; i < (1ULL << s->l2_bits); i++)
            set_l2_entry(copy, i, l2_entry(copy, i) & ~QCOW2_OFLAG_COPIED);
    }
    uint64_t n = qcow2_alloc_clusters(s, 1, err);
    bool ok = n && qcache_new(s, &s->l2c, n, copy, err) != NULL;
    free(copy);
    if (!ok)
        return false;
    s->l1[l1i] = n | QCOW2_OFLAG_COPIED;
    s->l1_dirty = true;
    if (old && !qcow2_free_later(s, old, err))
        return false;
    *l2off = n;
    return true;
}

/* Writes the n guest bytes at offset `in` of the newly allocated cluster at
 * host, whose other bytes must read as zero, without writing those zeros
 * when the file system can give them for free (as QEMU does):
 *   - a cluster at or past the end of the file: the file is extended over
 *     the whole cluster (ftruncate, a hole, reading as zero), then only the
 *     guest bytes are written;
 *   - a cluster inside the file (a freed one reused, or an owned zero
 *     cluster): FALLOC_FL_ZERO_RANGE over it, then the guest bytes; when the
 *     file system refuses that, the whole cluster is written as before.
 * Crash safety is unchanged: the size change, the zeroed range and the data
 * are all covered by the fdatasync of step 1 of qcow2_meta_flush
 * (data_dirty), which precedes the L2 entry that makes the cluster
 * reachable; reads past the end of a short file return zeros (read_data). */
static bool write_new(struct qcow2 *s, uint64_t host, uint64_t in, const uint8_t *buf,
                      size_t n, struct sg_error *err)
{
    uint64_t cs = s->cluster_size;
    /* Checked before the file is touched: ZERO_RANGE over metadata would
     * do the damage the write is refused for. */
    if (!qcow2_pwrite_data(s, NULL, 0, host, err))
        return false;
    if (host >= s->file_size_lb) {
        struct stat st;
        if (fstat(s->fd, &st) < 0) {
            sg_error_set_errno(err, errno, "qcow2: stat of the image file");
            return false;
        }
        s->file_size_lb = (uint64_t)st.st_size;
    }
    if (host >= s->file_size_lb) {
        /* Only grows the file: host is at or past its end. */
        if (ftruncate(s->fd, (off_t)(host + cs)) < 0) {
            sg_error_set_errno(err, errno, "qcow2: extending the image file to %#llx",
                               (unsigned long long)(host + cs));
            return false;
        }
        s->file_size_lb = host + cs;
    } else if (s->no_zero_range ||
               fallocate(s->fd, FALLOC_FL_ZERO_RANGE, (off_t)host, (off_t)cs) < 0) {
        if (!s->no_zero_range &&
            (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL))
            s->no_zero_range = true;
        /* Any failure: write the zeros (a real error shows again there). */
        uint8_t *full = calloc(1, cs);
        if (!full) {
            sg_error_set(err, "out of memory");
            return false;
        }
        memcpy(full + in, buf, n);
        bool ok = qcow2_pwrite_data(s, full, cs, host, err);
        free(full);
        return ok;
    }
    return qcow2_pwrite_data(s, buf, n, host + in, err);
}

/* Writes one piece inside a single cluster. */
static bool write_piece(struct qcow2 *s, uint64_t goff, const uint8_t *buf, size_t n,
                        bool skip_zero, struct sg_error *err)
{
    uint64_t l1i = goff >> (s->cluster_bits + s->l2_bits);
    uint64_t l2i = (goff >> s->cluster_bits) & ((1ULL << s->l2_bits) - 1);
    uint64_t in = goff & (s->cluster_size - 1);
    uint64_t cs = s->cluster_size;
    enum qcow2_ctype t;
    uint64_t host;

    if (skip_zero && sg_buffer_is_zero(buf, n)) {
        /* vmstate: zero pages stay unallocated (or become so when whole). */
        if (!qcow2_xlate(s, s->l1, s->l1_size, goff, &t, &host, err))
            return false;
        if (t == QC_UNALLOC || t == QC_ZERO)
            return true;
        if (n == cs)
            return qcow2_discard_at(s, goff, cs, err);
    }

    uint64_t l2off;
    if (!l2_for_write(s, l1i, &l2off, err))
        return false;
    uint8_t *l2 = qcache_get(s, &s->l2c, l2off, "L2 table", err);
    if (!l2)
        return false;
    uint64_t e = l2_entry(l2, l2i);
    if (!classify(s, e, &t, &host, err))
        return false;
    bool own = host && (e & QCOW2_OFLAG_COPIED);
    if (host && !own) {
        uint64_t rc;
        if (!qcow2_get_refcount(s, host >> s->cluster_bits, &rc, err))
            return false;
        own = rc == 1;
    }
    if (own && t == QC_NORMAL) {
        if (!qcow2_pwrite_data(s, buf, n, host + in, err))
            return false;
        s->data_dirty = true;
        if (!(e & QCOW2_OFLAG_COPIED)) {
            l2 = qcache_get(s, &s->l2c, l2off, "L2 table", err);
            if (!l2)
                return false;
            set_l2_entry(l2, l2i, host | QCOW2_OFLAG_COPIED);
            qcache_mark_dirty(&s->l2c, l2off);
        }
        return true;
    }

    /* mkcluster: a whole new cluster, old contents around the piece.  Only
     * a shared normal cluster (COW) has old contents to copy; around a
     * piece of an unallocated or zero cluster the new one reads as zero
     * (write_new). */
    uint8_t *full = NULL;
    const uint8_t *src = buf;
    bool cow = n != cs && t == QC_NORMAL;
    if (cow) {
        full = calloc(1, cs);
        if (!full) {
            sg_error_set(err, "out of memory");
            return false;
        }
        if (!read_data(s, host, full, cs, err)) {
            free(full);
            return false;
        }
        memcpy(full + in, buf, n);
        src = full;
    }
    uint64_t target = own ? host : 0;   /* an owned zero cluster is reused */
    bool fresh = !target;
    if (fresh)
        target = qcow2_alloc_clusters(s, 1, err);
    bool ok = target && (n != cs && !cow
                             ? write_new(s, target, in, buf, n, err)
                             : qcow2_pwrite_data(s, src, cs, target, err));
    free(full);
    if (!ok && fresh && target) {
        /* Nothing points at it yet: give it back, so a write retried after
         * ENOSPC (werror=enospc) does not leak the cluster. */
        qcow2_dec_refcount_now(s, target >> s->cluster_bits, NULL);
    }
    if (!ok)
        return false;
    s->data_dirty = true;
    l2 = qcache_get(s, &s->l2c, l2off, "L2 table", err);
    if (!l2)
        return false;
    set_l2_entry(l2, l2i, target | QCOW2_OFLAG_COPIED);
    qcache_mark_dirty(&s->l2c, l2off);
    if (host && !own)
        return qcow2_free_later(s, host, err);
    return true;
}

bool qcow2_write_at(struct qcow2 *s, uint64_t goff, const void *buf, size_t len,
                    bool skip_zero, struct sg_error *err)
{
    const uint8_t *p = buf;
    while (len) {
        uint64_t in = goff & (s->cluster_size - 1);
        size_t n = s->cluster_size - in < len ? (size_t)(s->cluster_size - in) : len;
        if (!write_piece(s, goff, p, n, skip_zero, err))
            return false;
        p += n;
        goff += n;
        len -= n;
    }
    return true;
}

/* Zeroes a range.  Whole clusters are deallocated (the L2 entry becomes
 * unallocated -- we never have a backing file -- and the old cluster is
 * freed after that reaches the disk); partial ones are written as zeros. */
bool qcow2_discard_at(struct qcow2 *s, uint64_t goff, uint64_t len, struct sg_error *err)
{
    uint64_t cs = s->cluster_size;
    while (len) {
        uint64_t in = goff & (cs - 1);
        uint64_t n = cs - in < len ? cs - in : len;
        enum qcow2_ctype t;
        uint64_t host;
        if (!qcow2_xlate(s, s->l1, s->l1_size, goff, &t, &host, err))
            return false;
        if (t == QC_UNALLOC) {
            /* already reads as zero */
        } else if (n < cs) {
            if (t == QC_NORMAL) {
                uint8_t *z = calloc(1, (size_t)n);
                bool ok = z && qcow2_write_at(s, goff, z, (size_t)n, false, err);
                if (!z)
                    sg_error_set(err, "out of memory");
                free(z);
                if (!ok)
                    return false;
            }
        } else {
            uint64_t l1i = goff >> (s->cluster_bits + s->l2_bits);
            uint64_t l2i = (goff >> s->cluster_bits) & ((1ULL << s->l2_bits) - 1);
            uint64_t l2off;
            if (!l2_for_write(s, l1i, &l2off, err))
                return false;
            uint8_t *l2 = qcache_get(s, &s->l2c, l2off, "L2 table", err);
            if (!l2)
                return false;
            set_l2_entry(l2, l2i, 0);
            qcache_mark_dirty(&s->l2c, l2off);
            if (host && !qcow2_free_later(s, host, err))
                return false;
        }
        goff += n;
        len -= n;
    }
    return true;
}

/* Queues one decrement for every cluster an L1 tree reaches from L1 index
 * `from` on (each data cluster and each L2 table): the caller removes the
 * pointers first, and qcow2_meta_flush applies the decrements after those
 * removals are on disk. */
bool qcow2_tree_free_later(struct qcow2 *s, const uint64_t *l1, uint32_t l1_size, uint32_t from,
                           struct sg_error *err)
{
    uint64_t per = 1ULL << s->l2_bits;
    for (uint32_t i = from; i < l1_size; i++) {
        uint64_t l2off;
        if (!qcow2_l2_offset(s, l1[i], &l2off, err))
            return false;
        if (!l2off)
            continue;
        for (uint64_t j = 0; j < per; j++) {
            uint8_t *l2 = qcache_get(s, &s->l2c, l2off, "L2 table", err);
            if (!l2)
                return false;
            enum qcow2_ctype t;
            uint64_t host;
            if (!classify(s, l2_entry(l2, j), &t, &host, err))
                return false;
            if (host && !qcow2_free_later(s, host, err))
                return false;
        }
        if (!qcow2_free_later(s, l2off, err))
            return false;
    }
    return true;
}

/* qcow2_overlap.c: what keeps a damaged image from getting worse.
 *
 * - Overlap checks (QEMU's qcow2_check_metadata_overlap with its default
 *   "cached" set): before any write, the target range is compared with the
 *   header, the active L1 table and the L2 tables it points at, the
 *   refcount table and every refcount block, the snapshot table and each
 *   snapshot's L1 table.  A hit means the image's pointers are wrong (a
 *   data cluster or a table is also some other table): the write is
 *   refused with EIO, the image is marked corrupt (incompatible bit 1, as
 *   QEMU) and goes into the error state, so the damage never grows.
 * - The error state: after a failed metadata write (other than for a full
 *   disk, see qcow2_pwrite_meta) or fdatasync the bytes on disk are unknown (Linux may drop the dirty pages of a failed
 *   fsync and report success on the next one), so, like SQLite's pager,
 *   we write nothing more; the handle only reads.  Reopening the image
 *   goes through the usual path (leaks at worst, see qcow2_refcount.c).
 * - Freed clusters: a cluster whose refcount reached zero is punched out
 *   of the file (FALLOC_FL_PUNCH_HOLE) once the state that freed it is on
 *   disk, as QEMU's qcow2 discards on snapshot delete; the file keeps its
 *   size, the host gets the space back. */
#include "qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const ol_names[] = {
    "qcow2_header", "active L1 table", "active L2 table", "refcount table",
    "refcount block", "snapshot table", "inactive L1 table",
};

static uint64_t round_up(const struct qcow2 *s, uint64_t bytes)
{
    return (bytes + s->cluster_size - 1) & ~(s->cluster_size - 1);
}

/* A table owns the whole clusters it starts in and runs through. */
static bool hits(const struct qcow2 *s, uint64_t off, uint64_t len, uint64_t t, uint64_t tlen)
{
    if (!tlen)
        return false;
    t &= ~(s->cluster_size - 1);
    tlen = round_up(s, tlen);
    return off < t + tlen && t < off + len;
}

unsigned qcow2_overlap(const struct qcow2 *s, unsigned ign, uint64_t off, uint64_t len)
{
    if (!len)
        return 0;
    if (!(ign & QOL_HEADER) && off < s->cluster_size)
        return QOL_HEADER;
    if (!(ign & QOL_ACTIVE_L1) && hits(s, off, len, s->l1_offset, (uint64_t)s->l1_size * 8))
        return QOL_ACTIVE_L1;
    if (!(ign & QOL_REFCOUNT_TABLE) &&
        hits(s, off, len, s->rt_offset, (uint64_t)s->rt_clusters * s->cluster_size))
        return QOL_REFCOUNT_TABLE;
    if (!(ign & QOL_SNAPSHOT_TABLE) && s->nb_snapshots &&
        hits(s, off, len, s->snapshots_offset, s->snapshots_bytes))
        return QOL_SNAPSHOT_TABLE;
    if (!(ign & QOL_INACTIVE_L1))
        for (int i = 0; i < s->nb_snapshots && s->snaps; i++)
            if (hits(s, off, len, s->snaps[i].l1_offset, (uint64_t)s->snaps[i].l1_size * 8))
                return QOL_INACTIVE_L1;
    if (!(ign & QOL_ACTIVE_L2))
        for (uint32_t i = 0; i < s->l1_size; i++) {
            uint64_t l2 = s->l1[i] & QCOW2_OFFSET_MASK;
            if (l2 && hits(s, off, len, l2, s->cluster_size))
                return QOL_ACTIVE_L2;
        }
    if (!(ign & QOL_REFCOUNT_BLOCK))
        for (uint64_t i = 0; i < s->rt_hi && i < s->rt_size; i++) {
            uint64_t rb = s->rt[i] & ~QCOW2_REFT_RESERVED;
            if (rb && hits(s, off, len, rb, s->cluster_size))
                return QOL_REFCOUNT_BLOCK;
        }
    return 0;
}

void qcow2_set_broken(struct qcow2 *s, int errnum)
{
    if (!s->broken)
        s->broken = errnum ? errnum : EIO;
}

/* QEMU's qcow2_signal_corruption: one message, the corrupt bit on disk
 * (version 3; version 2 has no place for it), no more writes. */
static void mark_corrupt(struct qcow2 *s, const char *msg)
{
    if (!s->corrupt_reported) {
        fprintf(stderr, "qcow2: Marking image as corrupt: %s; further corruption events will "
                "be suppressed\n", msg);
        s->corrupt_reported = true;
    }
    if (s->version >= 3 && !(s->incompat & (1ULL << 1)) && !s->broken) {
        uint8_t b[8];
        sg_put_be64(b, s->incompat | (1ULL << 1));
        /* Straight to the header: this is the one write the error state allows. */
        if (sg_pwrite_full(s->fd, b, sizeof b, QH_INCOMPAT, "qcow2 header", NULL))
            s->incompat |= 1ULL << 1;
        (void)fdatasync(s->fd);
    }
    qcow2_set_broken(s, EIO);
}

static bool guard(struct qcow2 *s, unsigned ign, uint64_t off, uint64_t len,
                  struct sg_error *err)
{
    if (s->broken) {
        sg_error_set_errno(err, s->broken, "qcow2: %s: image is in an error state after an "
                           "earlier failed write or flush (no more writes until it is reopened)",
                           s->fn);
        return false;
    }
    unsigned hit = qcow2_overlap(s, ign, off, len);
    if (hit) {
        char msg[160];
        snprintf(msg, sizeof msg, "Preventing invalid write on metadata (overlaps with %s)",
                 ol_names[__builtin_ctz(hit)]);
        mark_corrupt(s, msg);
        sg_error_set_errno(err, EIO, "%s", msg);
        return false;
    }
    return true;
}

bool qcow2_pwrite_meta(struct qcow2 *s, unsigned self, const void *buf, size_t len,
                       uint64_t off, const char *what, struct sg_error *err)
{
    if (!guard(s, self, off, len, err))
        return false;
    struct sg_error e = {0};
    if (!sg_pwrite_full(s->fd, buf, len, off, what, &e)) {
        /* In a transaction the target is a new cluster nothing reaches
         * (qcow2_txn.c); the abort restores the state, no damage is done.
         * A full disk (ENOSPC, EDQUOT) put nothing into the page cache that
         * a later sync could lose: the table stays dirty and is written
         * again once there is room (as QEMU's cache does; werror=enospc
         * relies on it).  Any other failure, and any failed sync, breaks. */
        if (!s->txn && e.errnum != ENOSPC && e.errnum != EDQUOT)
            qcow2_set_broken(s, e.errnum);
        if (err && !err->set)
            *err = e;
        return false;
    }
    return true;
}

bool qcow2_pwrite_data(struct qcow2 *s, const void *buf, size_t len, uint64_t off,
                       struct sg_error *err)
{
    uint64_t span = round_up(s, (off & (s->cluster_size - 1)) + len);
    return guard(s, 0, off & ~(s->cluster_size - 1), span ? span : s->cluster_size, err) &&
           sg_pwrite_full(s->fd, buf, len, off, "guest data", err);
}

bool qcow2_begin_change(struct qcow2 *s, struct sg_error *err)
{
    if (s->rdonly) {
        sg_error_set(err, "%s: image is read-only", s->fn);
        return false;
    }
    if (!guard(s, QOL_ALL, 0, 0, err))
        return false;
    if (s->autoclear) {
        /* We keep none of the autoclear features (bitmaps) up to date;
         * clearing the bits before the first change tells QEMU so. */
        uint8_t z[8] = {0};
        if (!qcow2_header_update(s, QH_AUTOCLEAR, z, sizeof z, err))
            return false;
        s->autoclear = 0;
    }
    return true;
}

void qcow2_note_freed(struct qcow2 *s, uint64_t cluster)
{
    if (s->no_punch)
        return;
    if (s->nfreed == s->cap_freed) {
        size_t nc = s->cap_freed ? s->cap_freed * 2 : 256;
        uint64_t *p = realloc(s->freed, nc * sizeof *p);
        if (!p)
            return;   /* the space stays allocated: harmless */
        s->freed = p;
        s->cap_freed = nc;
    }
    s->freed[s->nfreed++] = cluster;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void qcow2_forget_freed(struct qcow2 *s)
{
    s->nfreed = 0;
}

void qcow2_punch_freed(struct qcow2 *s)
{
    if (!s->nfreed || s->broken)
        return;
    qsort(s->freed, s->nfreed, sizeof *s->freed, cmp_u64);
    uint64_t start = 0, run = 0;
    for (size_t i = 0; i <= s->nfreed && !s->no_punch; i++) {
        uint64_t c = UINT64_MAX;
        if (i < s->nfreed) {
            uint64_t rc;
            c = s->freed[i];
            /* Reused since it was freed (the same flush or transaction)? */
            if (!qcow2_get_refcount(s, c, &rc, NULL) || rc != 0)
                continue;
            if (run && c < start + run)
                continue;   /* listed twice */
            if (run && c == start + run) {
                run++;
                continue;
            }
        }
        if (run && fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                             (off_t)(start << s->cluster_bits),
                             (off_t)(run << s->cluster_bits)) < 0 &&
            (errno == EOPNOTSUPP || errno == ENOSYS))
            s->no_punch = true;
        start = c;
        run = 1;
    }
    s->nfreed = 0;
}

/* Compressed clusters (QCOW2_OFLAG_COMPRESSED) are not implemented: a
 * write over one, a snapshot or a delete would mis-count the clusters it
 * spans.  A writable open reads every distinct L2 table once (snapshots
 * made by QEMU share theirs: 100 snapshots of 512 tables cost 512 reads,
 * not 51,712) and refuses the image up front instead of failing the guest's
 * writes later. */
struct l2ref {
    uint64_t off;
    int tree;   /* -1: the active image, else the snapshot's index */
};

static int cmp_l2ref(const void *a, const void *b)
{
    const struct l2ref *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off ? 1 : (x->tree > y->tree) - (x->tree < y->tree);
}

bool qcow2_refuse_compressed(struct qcow2 *s, struct sg_error *err)
{
    /* Tables that cannot be read are skipped here: the I/O that needs
     * them reports them, as before. */
    uint64_t per = 1ULL << s->l2_bits;
    struct l2ref *v = NULL;
    size_t n = 0, cap = 0;
    for (int t = -1; t < s->nb_snapshots; t++) {
        uint64_t *l1 = s->l1;
        uint32_t m = s->l1_size;
        if (t >= 0) {
            m = s->snaps[t].l1_size;
            if (!qcow2_read_l1(s, s->snaps[t].l1_offset, m, &l1, NULL))
                continue;
        }
        for (uint32_t i = 0; i < m; i++) {
            uint64_t l2off;
            if (!qcow2_l2_offset(s, l1[i], &l2off, NULL) || !l2off)
                continue;
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 256;
                struct l2ref *g = realloc(v, nc * sizeof *v);
                if (!g)
                    break;   /* what was gathered is still scanned */
                v = g;
                cap = nc;
            }
            v[n++] = (struct l2ref){l2off, t};
        }
        if (t >= 0)
            free(l1);
    }
    /* Sorted by offset, the active image's reference first. */
    if (n)
        qsort(v, n, sizeof *v, cmp_l2ref);
    /* Once a snapshot is found to hold some, only the active image's tables
     * are read on (the message says where, the active image first). */
    bool found = false;
    int where = 0;
    for (size_t k = 0; k < n && where >= 0; k++) {
        if ((k && v[k].off == v[k - 1].off) || (found && v[k].tree >= 0))
            continue;
        const uint8_t *l2 = qcache_get(s, &s->l2c, v[k].off, "L2 table", NULL);
        bool here = false;
        for (uint64_t j = 0; l2 && !here && j < per; j++)
            here = sg_be64(l2 + 8 * j) & QCOW2_OFLAG_COMPRESSED;
        if (here) {
            found = true;
            where = v[k].tree;
        }
    }
    free(v);
    if (found)
        sg_error_set(err, "unsupported qcow2 feature: compressed clusters (%s); convert "
                     "the image with 'qemu-img convert -O qcow2', or open it read-only",
                     where < 0 ? "in the active image" : "in a snapshot");
    return !found;
}

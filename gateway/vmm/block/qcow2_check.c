/* qcow2_check.c: our own consistency checker.  Like qemu-img check it
 * recomputes every cluster's refcount by walking all metadata and all L1
 * trees (the active one and each snapshot's), compares with the stored
 * refcounts (too low = corruption, too high = leak), and checks that
 * COPIED is exact in the active tables. */
#include "qcow2.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static bool fix_leak(struct qcow2 *s, uint64_t cl, uint64_t rc, uint64_t want,
                     struct sg_error *err);

struct chk {
    struct qcow2 *s;
    /* A targeted check (sg_block_check_touched): only the active tree and
     * the snapshot `only` (NULL: none) are walked, and only refcounts that
     * are too low for what was walked are reported (leaks cannot be told). */
    bool targeted;
    const char *only;
    struct sg_block_check_result *res;
    FILE *out;
    uint32_t *refs;
    uint8_t *act;       /* reached from the active tables (COPIED matters) */
    uint64_t nclusters;
    uint64_t next_contig;   /* where the next active cluster would not be fragmented */
};

static void say(struct chk *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct chk *c, const char *fmt, ...)
{
    if (!c->out)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(c->out, fmt, ap);
    va_end(ap);
}

/* Counts n references to each cluster of [off, off+bytes). */
static bool ref_n(struct chk *c, uint64_t off, uint64_t bytes, const char *what, uint32_t n)
{
    if (!bytes)
        return true;
    uint64_t cs = c->s->cluster_size;
    if (off & (cs - 1) && strcmp(what, "data") != 0) {
        say(c, "ERROR %s offset %#llx is not cluster aligned\n", what, (unsigned long long)off);
        c->res->corruptions++;
        return false;
    }
    uint64_t first = off / cs, last = (off + bytes - 1) / cs;
    if (last >= c->nclusters) {
        say(c, "ERROR %s at offset %#llx is beyond the end of the image file\n", what,
            (unsigned long long)off);
        c->res->corruptions++;
        return false;
    }
    for (uint64_t i = first; i <= last; i++)
        c->refs[i] = c->refs[i] > UINT32_MAX - n ? UINT32_MAX : c->refs[i] + n;
    return true;
}

static bool ref(struct chk *c, uint64_t off, uint64_t bytes, const char *what)
{
    return ref_n(c, off, bytes, what, 1);
}

/* The entries of the L2 table at l2off (L1 index i), each reference counted
 * mult times (that many L1 entries of trees not walked one by one point at
 * this table). */
static void walk_l2(struct chk *c, uint64_t l2off, uint32_t i, bool active, uint32_t mult)
{
    struct qcow2 *s = c->s;
    uint64_t per = 1ULL << s->l2_bits;
    uint64_t vclusters = (s->size + s->cluster_size - 1) >> s->cluster_bits;
    /* Nothing below uses the L2 cache, so the table stays put. */
    struct sg_error e2 = {0};
    const uint8_t *l2 = qcache_get(s, &s->l2c, l2off, "L2 table", &e2);
    if (!l2) {
        say(c, "ERROR %s\n", e2.msg);
        c->res->corruptions++;
        return;
    }
    for (uint64_t j = 0; j < per; j++) {
        uint64_t le = sg_be64(l2 + 8 * j);
        uint64_t guest_cl = ((uint64_t)i << s->l2_bits) + j;
        bool counted = active && guest_cl < vclusters;
        if (le & QCOW2_OFLAG_COMPRESSED) {
            /* Counted as qemu-img counts them (the engine reads none,
             * see qcow2_refuse_compressed): every cluster the
             * compressed bytes touch is referenced once. */
            if (le & QCOW2_OFLAG_COPIED) {
                say(c, "ERROR: coffset=%#llx: copied flag must never be set for compressed "
                    "clusters\n", (unsigned long long)(le & QCOW2_OFFSET_MASK));
                c->res->corruptions++;
            }
            unsigned shift = 62 - (s->cluster_bits - 8);
            uint64_t coff = le & ((1ULL << shift) - 1);
            uint64_t nsec = ((le >> shift) & ((1ULL << (s->cluster_bits - 8)) - 1)) + 1;
            uint64_t first = coff & ~(s->cluster_size - 1);
            if (!ref_n(c, first, coff + nsec * 512 - (coff & 511) - first,
                       "compressed cluster", mult))
                continue;
            if (counted) {
                c->res->allocated_clusters++;
                c->res->compressed_clusters++;
                c->res->fragmented_clusters++;   /* by nature, as qemu-img says */
            }
            continue;
        }
        if (le & QCOW2_L2E_RESERVED) {
            say(c, "ERROR L2 entry %#llx has reserved bits set\n", (unsigned long long)le);
            c->res->corruptions++;
            continue;
        }
        uint64_t host = le & QCOW2_OFFSET_MASK;
        if (!host)
            continue;
        if (host & (s->cluster_size - 1)) {
            say(c, "ERROR data cluster offset %#llx is not cluster aligned\n",
                (unsigned long long)host);
            c->res->corruptions++;
            continue;
        }
        if (!ref_n(c, host, s->cluster_size, "data", mult))
            continue;
        if (active)
            c->act[host / s->cluster_size] = 1;
        if (counted && !(s->version >= 3 && (le & 1))) {
            c->res->allocated_clusters++;
            if (c->next_contig && host != c->next_contig)
                c->res->fragmented_clusters++;
            c->next_contig = host + s->cluster_size;
        }
    }
}

/* One L1 entry's checks and the reference to its L2 table; returns the L2
 * table's offset, 0 for none or a bad entry. */
static uint64_t l1_entry(struct chk *c, uint32_t i, uint64_t e)
{
    if (e & QCOW2_L1E_RESERVED) {
        say(c, "ERROR L1 entry %u has reserved bits set: %#llx\n", i, (unsigned long long)e);
        c->res->corruptions++;
        return 0;
    }
    uint64_t l2off = e & QCOW2_OFFSET_MASK;
    if (!l2off || !ref(c, l2off, c->s->cluster_size, "L2 table"))
        return 0;
    return l2off;
}

static bool walk(struct chk *c, const uint64_t *l1, uint32_t l1_size, bool active,
                 struct sg_error *err)
{
    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t l2off = l1_entry(c, i, l1[i]);
        if (!l2off)
            continue;
        if (active)
            c->act[l2off / c->s->cluster_size] = 1;
        walk_l2(c, l2off, i, active, 1);
    }
    (void)err;
    return true;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The trees a targeted check does not walk one by one (every snapshot but
 * `only`): their L1 tables are read and each L2 table they point at is
 * read ONCE, its references counted as many times as L1 entries point at it.
 * qemu-img's snapshots share their L2 tables, so this costs a few hundred
 * table reads where walking each tree costs trees x tables; and the counts
 * are exact, so a refcount too low because of such a snapshot is seen. */
static void walk_others(struct chk *c)
{
    struct qcow2 *s = c->s;
    uint64_t *v = NULL;
    size_t n = 0, cap = 0;
    for (int t = 0; t < s->nb_snapshots; t++) {
        struct qsnap *sn = &s->snaps[t];
        uint64_t *l1;
        struct sg_error e2 = {0};
        if (c->only && strcmp(c->only, sn->id) == 0)
            continue;
        if (!qcow2_read_l1(s, sn->l1_offset, sn->l1_size, &l1, &e2)) {
            say(c, "ERROR snapshot %s: %s\n", sn->id, e2.msg);
            c->res->corruptions++;
            continue;
        }
        for (uint32_t i = 0; i < sn->l1_size; i++) {
            uint64_t l2off = l1_entry(c, i, l1[i]);
            if (!l2off)
                continue;
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 1024;
                uint64_t *g = realloc(v, nc * sizeof *v);
                if (!g) {
                    say(c, "ERROR out of memory\n");
                    c->res->corruptions++;   /* refuse rather than miss references */
                    free(l1);
                    free(v);
                    return;
                }
                v = g;
                cap = nc;
            }
            v[n++] = l2off;
        }
        free(l1);
    }
    if (n)
        qsort(v, n, sizeof *v, cmp_u64);
    for (size_t k = 0; k < n;) {
        size_t m = 1;
        while (k + m < n && v[k + m] == v[k])
            m++;
        walk_l2(c, v[k], 0, false, (uint32_t)(m > UINT32_MAX ? UINT32_MAX : m));
        k += m;
    }
    free(v);
}

/* A COPIED mismatch that raising the too-low refcount of `off` to its
 * reference count would end (COPIED set, refcount 0, one reference). */
static bool copied_by_low(const struct chk *c, uint64_t off, uint64_t rc, uint64_t entry)
{
    uint64_t want = c->refs[off >> c->s->cluster_bits];
    return rc < want && (entry & QCOW2_OFLAG_COPIED) && want == 1;
}

static void check_copied(struct chk *c)
{
    struct qcow2 *s = c->s;
    uint64_t per = 1ULL << s->l2_bits;
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t e = s->l1[i], l2off = e & QCOW2_OFFSET_MASK, rc;
        struct sg_error e2 = {0};
        if (!l2off || (e & QCOW2_L1E_RESERVED) || (l2off & (s->cluster_size - 1)) ||
            l2off / s->cluster_size >= c->nclusters)
            continue;
        if (!qcow2_get_refcount(s, l2off >> s->cluster_bits, &rc, &e2))
            continue;
        if ((rc == 1) != !!(e & QCOW2_OFLAG_COPIED)) {
            say(c, "ERROR OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%llx refcount=%llu\n", i,
                (unsigned long long)e, (unsigned long long)rc);
            c->res->corruptions++;
            c->res->low_refcounts += copied_by_low(c, l2off, rc, e);
        }
        for (uint64_t j = 0; j < per; j++) {
            uint8_t *l2 = qcache_get(s, &s->l2c, l2off, "L2 table", &e2);
            if (!l2)
                break;
            uint64_t le = sg_be64(l2 + 8 * j), host = le & QCOW2_OFFSET_MASK;
            if (!host || (le & (QCOW2_OFLAG_COMPRESSED | QCOW2_L2E_RESERVED)) ||
                (host & (s->cluster_size - 1)) || host / s->cluster_size >= c->nclusters)
                continue;
            if (!qcow2_get_refcount(s, host >> s->cluster_bits, &rc, &e2))
                continue;
            if ((rc == 1) != !!(le & QCOW2_OFLAG_COPIED)) {
                say(c, "ERROR OFLAG_COPIED data cluster: l2_entry=%llx refcount=%llu\n",
                    (unsigned long long)le, (unsigned long long)rc);
                c->res->corruptions++;
                c->res->low_refcounts += copied_by_low(c, host, rc, le);
            }
        }
    }
}

/* One pass: recomputes references and compares.  With fix_leaks, every
 * leaked cluster's refcount is lowered to its reference count in memory as
 * it is found (written by the caller); res->leaks_fixed counts them. */
static bool check_pass(struct sg_block *bs, struct sg_block_check_result *res, FILE *report,
                       bool fix_leaks, bool fix_low, const struct chk *scope,
                       struct sg_error *err)
{
    memset(res, 0, sizeof *res);
    if (strcmp(bs->drv->name, "qcow2") != 0) {
        sg_error_set(err, "This image format does not support checks");
        return false;
    }
    struct qcow2 *s = qcow2_state(bs);
    if (!qcow2_meta_flush(s, err))
        return false;
    struct stat st;
    if (fstat(s->fd, &st) < 0) {
        sg_error_set(err, "stat failed");
        return false;
    }
    struct chk c = {.s = s, .res = res, .out = report};
    if (scope) {
        c.targeted = scope->targeted;
        c.only = scope->only;
    }
    c.nclusters = ((uint64_t)st.st_size + s->cluster_size - 1) / s->cluster_size;
    c.refs = calloc(c.nclusters ? c.nclusters : 1, sizeof *c.refs);
    c.act = calloc(c.nclusters ? c.nclusters : 1, 1);
    if (!c.refs || !c.act) {
        free(c.refs);
        free(c.act);
        sg_error_set(err, "out of memory");
        return false;
    }
    res->total_clusters = (s->size + s->cluster_size - 1) >> s->cluster_bits;

    ref(&c, 0, s->cluster_size, "header");
    ref(&c, s->l1_offset, (uint64_t)s->l1_size * 8, "active L1 table");
    ref(&c, s->rt_offset, (uint64_t)s->rt_clusters * s->cluster_size, "refcount table");
    bool *rb_ok = calloc(s->rt_size, sizeof *rb_ok);
    if (!rb_ok) {
        free(c.refs);
        free(c.act);
        sg_error_set(err, "out of memory");
        return false;
    }
    for (uint64_t i = 0; i < s->rt_size; i++) {
        uint64_t o = s->rt[i];
        if (!o)
            continue;
        if (o & (s->cluster_size - 1)) {
            say(&c, "ERROR refcount block %llu is not cluster aligned; refcount table entry "
                "corrupted\n", (unsigned long long)i);
            res->corruptions++;
            continue;
        }
        if (o / s->cluster_size >= c.nclusters) {
            say(&c, "ERROR refcount block %llu is outside image\n", (unsigned long long)i);
            res->corruptions++;
            continue;
        }
        rb_ok[i] = true;
        ref(&c, o, s->cluster_size, "refcount block");
    }
    ref(&c, s->snapshots_offset, s->snapshots_bytes, "snapshot table");
    walk(&c, s->l1, s->l1_size, true, err);
    for (int i = 0; i < s->nb_snapshots; i++) {
        struct qsnap *sn = &s->snaps[i];
        uint64_t *l1;
        struct sg_error e2 = {0};
        ref(&c, sn->l1_offset, (uint64_t)sn->l1_size * 8, "snapshot L1 table");
        if (c.targeted && (!c.only || strcmp(c.only, sn->id) != 0))
            continue;   /* not touched by the command: walk_others */
        if (!qcow2_read_l1(s, sn->l1_offset, sn->l1_size, &l1, &e2)) {
            say(&c, "ERROR snapshot %s: %s\n", sn->id, e2.msg);
            res->corruptions++;
            continue;
        }
        walk(&c, l1, sn->l1_size, false, err);
        free(l1);
    }
    if (c.targeted)
        walk_others(&c);

    /* Compare with what is stored. */
    uint64_t per = 1ULL << s->rb_bits;
    uint64_t end = 0;
    for (uint64_t ri = 0; ri < s->rt_size; ri++) {
        uint64_t first = ri * per;
        if (!rb_ok[ri]) {
            for (uint64_t cl = first; cl < first + per && cl < c.nclusters; cl++) {
                if (c.refs[cl]) {
                    say(&c, "ERROR cluster %llu refcount=0 reference=%u\n",
                        (unsigned long long)cl, c.refs[cl]);
                    res->corruptions++;
                }
            }
            continue;
        }
        for (uint64_t cl = first; cl < first + per; cl++) {
            uint64_t rc;
            struct sg_error e2 = {0};
            if (!qcow2_get_refcount(s, cl, &rc, &e2)) {
                say(&c, "ERROR %s\n", e2.msg);
                res->corruptions++;
                break;
            }
            uint64_t want = cl < c.nclusters ? c.refs[cl] : 0;
            if (rc || want)
                end = cl + 1;
            if (rc < want) {
                say(&c, "%s cluster %llu refcount=%llu reference=%llu\n",
                    fix_low ? "Repairing" : "ERROR", (unsigned long long)cl,
                    (unsigned long long)rc, (unsigned long long)want);
                res->corruptions++;
                res->low_refcounts++;
                if (fix_low) {
                    /* Raised in place to the count of references just
                     * walked: each entry holds its old or its new value
                     * after a crash, never less than before. */
                    bool ok = true;
                    for (uint64_t v = rc; ok && v < want; v++)
                        ok = qcow2_inc_refcount(s, cl, &e2);
                    if (ok)
                        res->corruptions_fixed++;
                    else
                        say(&c, "ERROR could not repair cluster %llu: %s\n",
                            (unsigned long long)cl, e2.msg);
                }
            } else if (rc > want && cl < c.nclusters && !c.targeted) {
                /* As qemu-img check: a refcount for a cluster past the end
                 * of the file (an allocation whose data write failed) is
                 * not reported; the cluster is reused or the file grows
                 * over it.  Keeps both checkers' leak counts equal. */
                say(&c, "%s cluster %llu refcount=%llu reference=%llu\n",
                    fix_leaks ? "Repairing" : "Leaked", (unsigned long long)cl,
                    (unsigned long long)rc, (unsigned long long)want);
                res->leaks++;
                if (fix_leaks && want == 1 && c.act[cl]) {
                    /* Refcount 1 would demand OFLAG_COPIED on the active
                     * entry that points here; setting it is not implemented,
                     * so such a leak stays (harmless) rather than become an
                     * error.  Reached from a snapshot or a table only (as a
                     * crash inside an in-place apply leaves it), COPIED
                     * means nothing there: repaired. */
                    say(&c, "Not repaired: cluster %llu would need OFLAG_COPIED\n",
                        (unsigned long long)cl);
                    res->leaks_skipped++;
                } else if (fix_leaks && fix_leak(s, cl, rc, want, &e2)) {
                    res->leaks_fixed++;
                } else if (fix_leaks) {
                    say(&c, "ERROR could not repair cluster %llu: %s\n",
                        (unsigned long long)cl, e2.msg);
                }
            }
        }
    }
    /* Clusters no refcount block covers at all. */
    for (uint64_t cl = s->rt_size * per; cl < c.nclusters; cl++) {
        if (c.refs[cl]) {
            say(&c, "ERROR cluster %llu refcount=0 reference=%u\n", (unsigned long long)cl,
                c.refs[cl]);
            res->corruptions++;
        }
    }
    check_copied(&c);
    res->image_end_offset = end * s->cluster_size;
    if ((uint64_t)st.st_size < res->image_end_offset)
        res->image_end_offset = (uint64_t)st.st_size;
    free(rb_ok);
    free(c.refs);
    free(c.act);
    return true;
}

/* Lowers one leaked cluster's refcount (in the refcount block cache). */
static bool fix_leak(struct qcow2 *s, uint64_t cl, uint64_t rc, uint64_t want,
                     struct sg_error *err)
{
    for (; rc > want; rc--)
        if (!qcow2_dec_refcount_now(s, cl, err))
            return false;
    return true;
}

bool sg_block_check(struct sg_block *bs, struct sg_block_check_result *res, FILE *report,
                    struct sg_error *err)
{
    return check_pass(bs, res, report, false, false, NULL, err);
}

/* What a command that changes the image needs instead of the full check
 * (issue 17: the full one walks every snapshot's tree, 18 s on a 256 GiB
 * image with 100 snapshots): the metadata (header, tables, refcount blocks,
 * every snapshot's L1 table) and the trees the command walks and changes --
 * the active one and snapshot `snap_id` (NULL: none).  It finds what the
 * command would build on: pointers out of the file or unaligned, reserved
 * bits, a cluster reached twice (an L2 entry at a table,
 * a table inside another) or with too low a refcount, COPIED wrong in the
 * active tables.  The references of the snapshots it does not walk one by
 * one are still counted exactly (walk_others: each distinct L2 table they
 * point at is read once, counted once per L1 entry), so a refcount too low
 * only because of an untouched snapshot (issue 17's blind spot: a cluster
 * only it reaches, or one it shares with a walked tree) is seen too.  Its
 * cost is the distinct L2 tables, not trees x tables: qemu-img's snapshots
 * share theirs with the active image.  Errors inside an untouched
 * snapshot's L2 tables are reported too (the image is corrupt either way).
 * Leaks are not counted (qemu-img checks nothing before a change; it trusts
 * the corrupt bit, which this layer sets whenever it meets corruption). */
bool sg_block_check_touched(struct sg_block *bs, const char *snap_id,
                            struct sg_block_check_result *res, FILE *report, struct sg_error *err)
{
    struct chk scope = {.targeted = true, .only = snap_id};
    return check_pass(bs, res, report, false, false, &scope, err);
}

/* Leak repair, crash-safe by construction (with SG_BLOCK_FIX_ERRORS, too-low
 * refcounts are raised first, under the same rules: only when every
 * corruption the pass found is such a refcount, so the reference counts are
 * complete; raised in place, one entry at a time, never below the old value;
 * flushed, then counted again before the leaks are touched):
 *
 *  - Only refcounts that are too HIGH are touched, and only lowered to the
 *    number of references just counted from every L1 tree and all metadata.
 *    Nothing else on disk changes: no L1/L2 entry, no table is moved, and no
 *    cluster is allocated (the refcount blocks are rewritten in place).
 *  - A refcount entry is at most 8 bytes and never crosses a 512-byte
 *    sector, so whatever part of the refcount-block writes reaches the disk
 *    before a crash, each entry holds either its old value (still a leak,
 *    harmless, found again by the next check) or its new one (exact).  No
 *    entry can ever end up below its reference count, the one state that
 *    corrupts data (a later allocation would reuse a cluster in use).
 *  - The counts are only trustworthy when the pass saw every reference: if
 *    it found any corruption (unreadable or out-of-range tables, refcounts
 *    too low, ...) some references may have been skipped and a "leak" could
 *    be a cluster still in use, so nothing is written at all and the
 *    corruption is reported instead.  That is why the check runs twice.
 *  - The image is open read-write by this process alone (the block layer's
 *    lock), so no writer can add a reference between counting and writing.
 *  - qcow2_meta_flush() writes the dirty refcount blocks and fdatasync()s
 *    before we report success; a second check then verifies the result. */
bool sg_block_check_repair(struct sg_block *bs, unsigned fix,
                           struct sg_block_check_result *res, FILE *report,
                           struct sg_error *err)
{
    if (!(fix & SG_BLOCK_FIX_LEAKS))
        return sg_block_check(bs, res, report, err);
    if (!check_pass(bs, res, NULL, false, false, NULL, err))
        return false;
    struct qcow2 *s = qcow2_state(bs);
    uint64_t fixed = 0;
    if (res->corruptions && (fix & SG_BLOCK_FIX_ERRORS) &&
        res->corruptions == res->low_refcounts) {
        /* Every corruption is a refcount too low for references the pass
         * saw all of: raise them first, then count again. */
        if (!qcow2_begin_change(s, err) || !check_pass(bs, res, report, false, true, NULL, err))
            return false;
        fixed = res->corruptions_fixed;
        /* What was raised is exact even if some raise failed: flush it;
         * the recount below reports what is left. */
        if (!qcow2_meta_flush(s, err) || !qcow2_sync(s, err))
            return false;
        if (!check_pass(bs, res, NULL, false, false, NULL, err))
            return false;
        res->corruptions_fixed = fixed;
    }
    if (res->corruptions) {
        /* Report the problems with the normal wording, then refuse. */
        bool ok = check_pass(bs, res, report, false, false, NULL, err);
        res->corruptions_fixed = fixed;
        return ok;
    }
    if (!res->leaks)
        return true;
    if (!qcow2_begin_change(s, err))
        return false;
    if (!check_pass(bs, res, report, true, false, NULL, err))
        return false;
    res->corruptions_fixed = fixed;
    if (res->corruptions || res->leaks_fixed + res->leaks_skipped != res->leaks) {
        /* The image changed between the passes or a decrement failed: drop
         * nothing further, but what was lowered is still exact, so flush it. */
        sg_error_set(err, "leak repair stopped: %llu of %llu leaks repaired",
                     (unsigned long long)res->leaks_fixed, (unsigned long long)res->leaks);
        struct sg_error e2 = {0};
        (void)qcow2_meta_flush(s, &e2);
        return false;
    }
    if (!qcow2_meta_flush(s, err) || !qcow2_sync(s, err))
        return false;
    return true;
}

bool sg_block_qcow2_info(const struct sg_block *bs, struct sg_block_qcow2_info *info)
{
    if (strcmp(bs->drv->name, "qcow2") != 0)
        return false;
    const struct qcow2 *s = qcow2_state(bs);
    info->version = s->version;
    info->refcount_bits = 1u << s->refcount_order;
    info->lazy_refcounts = s->compat & 1;
    info->corrupt = s->incompat & 2;
    return true;
}

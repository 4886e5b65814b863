/* qcow2_cache.c: write-back caches of L2 tables and refcount blocks.
 *
 * Dirty tables reach the disk only through qcow2_meta_flush(), which orders
 * them (refcount blocks before the L2 tables that point at new clusters).
 * Evicting a dirty L2 table therefore runs that ordered flush first; a dirty
 * refcount block can be written on its own outside a flush because it only
 * holds increments then (decrements are queued, see qcow2_refcount.c), and
 * an early increment is at worst a leak. */
#include "qcow2.h"

#include <stdlib.h>
#include <string.h>

bool qcache_init(struct qcache *c, int n, size_t cluster_size)
{
    c->e = calloc((size_t)n, sizeof *c->e);
    c->slot = calloc((size_t)n * 2, sizeof *c->slot);
    if (!c->e || !c->slot) {
        free(c->e);
        free(c->slot);
        c->e = NULL;
        c->slot = NULL;
        return false;
    }
    c->n = n;
    c->tick = 0;
    for (int i = 0; i < n; i++) {
        c->e[i].buf = malloc(cluster_size);
        if (!c->e[i].buf) {
            qcache_free(c);
            return false;
        }
    }
    return true;
}

void qcache_free(struct qcache *c)
{
    if (!c->e)
        return;
    for (int i = 0; i < c->n; i++)
        free(c->e[i].buf);
    free(c->e);
    free(c->slot);
    c->e = NULL;
    c->slot = NULL;
    c->n = 0;
}

static size_t hash(const struct qcache *c, uint64_t off)
{
    return (size_t)((off >> 9) * 0x9e3779b97f4a7c15ULL >> 20) % ((size_t)c->n * 2);
}

static struct qcache_entry *lookup(struct qcache *c, uint64_t off)
{
    size_t h = hash(c, off);
    if (c->e[c->slot[h]].off == off)
        return &c->e[c->slot[h]];
    for (int i = 0; i < c->n; i++) {
        if (c->e[i].off == off) {
            c->slot[h] = i;
            return &c->e[i];
        }
    }
    return NULL;
}

static void remember(struct qcache *c, struct qcache_entry *e)
{
    c->slot[hash(c, e->off)] = (int)(e - c->e);
}

static bool c_is_rb(const struct qcow2 *s, const struct qcache_entry *e)
{
    return e >= s->rbc.e && e < s->rbc.e + s->rbc.n;
}

/* "Clean" means written: after a failed write or sync the image is in the
 * error state (qcow2_overlap.c) and nothing is written again, so a table
 * marked clean before its sync is never taken for one that reached the
 * disk. */
static bool write_entry(struct qcow2 *s, struct qcache_entry *e, const char *what,
                        struct sg_error *err)
{
    unsigned self = c_is_rb(s, e) ? QOL_REFCOUNT_BLOCK : QOL_ACTIVE_L2;
    if (!qcow2_pwrite_meta(s, self, e->buf, s->cluster_size, e->off, what, err))
        return false;
    e->dirty = false;
    return true;
}

/* Adds slots (during a transaction nothing may be written back early). */
static bool grow(struct qcow2 *s, struct qcache *c, struct sg_error *err)
{
    int n = c->n * 2;
    struct qcache_entry *e = realloc(c->e, (size_t)n * sizeof *e);
    if (!e) {
        sg_error_set(err, "out of memory");
        return false;
    }
    c->e = e;
    memset(e + c->n, 0, (size_t)(n - c->n) * sizeof *e);
    for (int i = c->n; i < n; i++) {
        e[i].buf = malloc(s->cluster_size);
        if (!e[i].buf) {
            c->n = i;
            sg_error_set(err, "out of memory");
            return false;
        }
    }
    int *slot = realloc(c->slot, (size_t)n * 2 * sizeof *slot);
    if (!slot) {
        c->n = n;
        sg_error_set(err, "out of memory");
        return false;
    }
    memset(slot, 0, (size_t)n * 2 * sizeof *slot);
    c->slot = slot;
    c->n = n;
    return true;
}

/* Frees a slot: the least recently used one, flushing first if dirty.
 * In a transaction (qcow2_txn_begin) only clean entries are evicted and
 * the cache grows instead: the new metadata must reach the disk only at
 * the commit. */
static struct qcache_entry *victim(struct qcow2 *s, struct qcache *c, struct sg_error *err)
{
    struct qcache_entry *v = NULL;
    for (int i = 0; i < c->n; i++) {
        if (c->e[i].off == 0)
            return &c->e[i];
        if (s->txn && c->e[i].dirty)
            continue;
        if (!v || c->e[i].stamp < v->stamp)
            v = &c->e[i];
    }
    if (!v) {
        int old = c->n;
        if (!grow(s, c, err))
            return NULL;
        return &c->e[old];
    }
    if (v->dirty) {
        if (c == &s->rbc || s->in_flush) {
            if (!write_entry(s, v, c == &s->rbc ? "refcount block" : "L2 table", err))
                return NULL;
        } else if (!qcow2_meta_flush(s, err)) {
            return NULL;
        }
    }
    v->off = 0;
    v->dirty = false;
    return v;
}

uint8_t *qcache_get(struct qcow2 *s, struct qcache *c, uint64_t off, const char *what,
                    struct sg_error *err)
{
    struct qcache_entry *e = lookup(c, off);
    if (!e) {
        if (!qcow2_check_table(s, off, s->cluster_size, what, err))
            return NULL;
        e = victim(s, c, err);
        if (!e)
            return NULL;
        if (!sg_pread_full(s->fd, e->buf, s->cluster_size, off, what, err))
            return NULL;
        e->off = off;
        remember(c, e);
    }
    e->stamp = ++c->tick;
    return e->buf;
}

uint8_t *qcache_new(struct qcow2 *s, struct qcache *c, uint64_t off, const uint8_t *buf,
                    struct sg_error *err)
{
    struct qcache_entry *e = lookup(c, off);
    if (!e) {
        e = victim(s, c, err);
        if (!e)
            return NULL;
    }
    if (buf)
        memmove(e->buf, buf, s->cluster_size);
    else
        memset(e->buf, 0, s->cluster_size);
    e->off = off;
    remember(c, e);
    e->dirty = true;
    e->stamp = ++c->tick;
    return e->buf;
}

void qcache_mark_dirty(struct qcache *c, uint64_t off)
{
    struct qcache_entry *e = lookup(c, off);
    if (e)
        e->dirty = true;
}

void qcache_drop(struct qcache *c, uint64_t off)
{
    struct qcache_entry *e = lookup(c, off);
    if (e) {
        e->off = 0;
        e->dirty = false;
    }
}

int qcache_write_dirty(struct qcow2 *s, struct qcache *c, const char *what,
                       struct sg_error *err)
{
    int n = 0;
    for (int i = 0; i < c->n; i++) {
        if (c->e[i].off && c->e[i].dirty) {
            if (!write_entry(s, &c->e[i], what, err))
                return -1;
            n++;
        }
    }
    return n;
}

bool qcache_rekey(struct qcache *c, uint64_t from, uint64_t to)
{
    struct qcache_entry *e = lookup(c, from);
    if (!e)
        return false;
    e->off = to;
    remember(c, e);
    return true;
}

void qcache_drop_all(struct qcache *c)
{
    for (int i = 0; i < c->n; i++) {
        c->e[i].off = 0;
        c->e[i].dirty = false;
    }
}

/* The offset of a dirty table below `limit`, or 0. */
uint64_t qcache_dirty_below(const struct qcache *c, uint64_t limit)
{
    for (int i = 0; i < c->n; i++)
        if (c->e[i].off && c->e[i].dirty && c->e[i].off < limit)
            return c->e[i].off;
    return 0;
}

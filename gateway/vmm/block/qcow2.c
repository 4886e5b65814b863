/* qcow2.c: the qcow2 driver: open (validate everything the header points
 * at), close, and the guest data entry points. */
#include "qcow2.h"

#include <stdlib.h>
#include <string.h>

static void q_free(struct qcow2 *s)
{
    if (!s)
        return;
    qcache_free(&s->l2c);
    qcache_free(&s->rbc);
    qcow2_snapshots_free(s);
    free(s->l1);
    free(s->rt);
    free(s->pending);
    free(s->freed);
    free(s);
}

static bool q_open(struct sg_block *bs, struct sg_error *err)
{
    struct qcow2 *s = calloc(1, sizeof *s);
    if (!s) {
        sg_error_set(err, "out of memory");
        return false;
    }
    s->bs = bs;
    s->fd = bs->fd;
    s->fn = bs->filename;
    s->rdonly = bs->readonly;
    s->free_hint = 1;
    if (!qcow2_header_parse(s, err) ||
        !qcow2_read_l1(s, s->l1_offset, s->l1_size, &s->l1, err) || !qcow2_rc_load(s, err))
        goto fail;
    /* Caches: 8 MiB of L2 tables (512 GiB of disk at 64 KiB clusters), and
     * enough refcount blocks for allocation runs and snapshot walks. */
    int nl2 = (int)((8u << 20) / s->cluster_size);
    if (nl2 < 16)
        nl2 = 16;
    if (nl2 > 512)
        nl2 = 512;
    if (!qcache_init(&s->l2c, nl2, s->cluster_size) ||
        !qcache_init(&s->rbc, 32, s->cluster_size)) {
        sg_error_set(err, "out of memory");
        goto fail;
    }
    if (!qcow2_snapshots_load(s, err))
        goto fail;
    /* Nothing is written at open: the autoclear bits are cleared by the
     * first change (qcow2_begin_change), so a command that fails or only
     * reads leaves the file byte for byte as it was. */
    if (!s->rdonly && !bs->repair && !qcow2_refuse_compressed(s, err))
        goto fail;
    bs->size = s->size;
    bs->opaque = s;
    return true;
fail:
    q_free(s);
    return false;
}

static void q_close(struct sg_block *bs)
{
    struct qcow2 *s = qcow2_state(bs);
    if (!s)
        return;
    qcow2_meta_flush(s, NULL);
    q_free(s);
    bs->opaque = NULL;
}

static bool q_read(struct sg_block *bs, uint64_t off, void *buf, size_t len,
                   struct sg_error *err)
{
    struct qcow2 *s = qcow2_state(bs);
    return qcow2_read_tree(s, s->l1, s->l1_size, off, buf, len, err);
}

static bool q_write(struct sg_block *bs, uint64_t off, const void *buf, size_t len,
                    struct sg_error *err)
{
    struct qcow2 *s = qcow2_state(bs);
    return qcow2_begin_change(s, err) && qcow2_write_at(s, off, buf, len, false, err);
}

static bool q_discard(struct sg_block *bs, uint64_t off, uint64_t len, struct sg_error *err)
{
    struct qcow2 *s = qcow2_state(bs);
    return qcow2_begin_change(s, err) && qcow2_discard_at(s, off, len, err);
}

static bool q_flush(struct sg_block *bs, struct sg_error *err)
{
    return qcow2_meta_flush(qcow2_state(bs), err);
}

const struct sg_block_driver sg_qcow2_driver = {
    .name = "qcow2",
    .open = q_open,
    .close = q_close,
    .read = q_read,
    .write = q_write,
    .discard = q_discard,
    .flush = q_flush,
};

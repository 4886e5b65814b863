/* test_qcow2_model.c: randomized model test and the 100+ snapshot test.
 *
 * Thousands of random writes, discards, snapshot creates / applies /
 * deletes and reopens run against an in-memory model of the disk; after
 * every step the bytes touched (and every 16 steps the whole disk) must read
 * back as the model says; our checker runs periodically, qemu-img check
 * less often.  SG_QCOW2_MODEL_OPS=N runs longer, SG_QCOW2_MODEL_SEED=S
 * picks the seed (printed so a failure can be replayed). */
#include "qtest_util.h"

struct rng {
    uint64_t s;
};
static uint64_t rnd(struct rng *r)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return r->s;
}
static uint64_t below(struct rng *r, uint64_t n) { return n ? rnd(r) % n : 0; }

#define MAX_SNAPS 12

struct model {
    uint64_t size;
    uint8_t *disk;
    int nsnap;
    char *id[MAX_SNAPS];
    uint8_t *img[MAX_SNAPS];
};

static void compare(struct sg_block *bs, const struct model *m, uint64_t off, uint64_t len)
{
    uint8_t *b = malloc(len);
    struct sg_error err = {0};
    if (!sg_block_read(bs, off, b, len, &err))
        fail_msg("read: %s", err.msg);
    if (memcmp(b, m->disk + off, len) != 0) {
        for (uint64_t i = 0; i < len; i++)
            if (b[i] != m->disk[off + i])
                fail_msg("byte %llu reads %#x, model says %#x", (unsigned long long)(off + i),
                         b[i], m->disk[off + i]);
    }
    free(b);
}

static void run_model(const char *name, uint64_t size, unsigned cbits, long ops, uint64_t seed)
{
    char *p = qt_path(name);
    struct sg_block *bs = qt_create_open(p, size, cbits);
    struct rng r = {seed};
    struct model m = {.size = size, .disk = calloc(1, size)};
    uint64_t cs = 1ULL << cbits;
    struct sg_error err = {0};
    uint8_t *buf = malloc(4 * cs);
    print_message("model %s: seed %llu, %ld ops\n", name, (unsigned long long)seed, ops);
    for (long op = 0; op < ops; op++) {
        uint64_t k = below(&r, 100), off = 0, len = 0;
        if (k < 55) {
            len = 1 + below(&r, 3 * cs);
            off = below(&r, size - len + 1);
            if (below(&r, 4) == 0)
                off &= ~(cs - 1);
            for (uint64_t i = 0; i < len; i++)
                buf[i] = (uint8_t)(op * 7 + i / 97);
            qt_write(bs, off, buf, len);
            memcpy(m.disk + off, buf, len);
        } else if (k < 62) {
            len = 1 + below(&r, 3 * cs);
            off = below(&r, size - len + 1);
            if (!sg_block_discard(bs, off, len, &err))
                fail_msg("discard: %s", err.msg);
            memset(m.disk + off, 0, len);
        } else if (k < 74) {
            if (m.nsnap == MAX_SNAPS)
                continue;
            char tag[32];
            snprintf(tag, sizeof tag, "t%ld", op);
            m.id[m.nsnap] = qt_snap(bs, tag, 0);
            m.img[m.nsnap] = malloc(size);
            memcpy(m.img[m.nsnap], m.disk, size);
            m.nsnap++;
        } else if (k < 84) {
            if (!m.nsnap)
                continue;
            int i = (int)below(&r, (uint64_t)m.nsnap);
            if (!sg_block_snapshot_goto(bs, m.id[i], &err))
                fail_msg("goto %s: %s", m.id[i], err.msg);
            memcpy(m.disk, m.img[i], size);
            off = 0;
            len = size;
        } else if (k < 94) {
            if (!m.nsnap)
                continue;
            int i = (int)below(&r, (uint64_t)m.nsnap);
            if (!sg_block_snapshot_delete(bs, m.id[i], &err))
                fail_msg("delete %s: %s", m.id[i], err.msg);
            free(m.id[i]);
            free(m.img[i]);
            m.nsnap--;
            m.id[i] = m.id[m.nsnap];
            m.img[i] = m.img[m.nsnap];
        } else if (k < 97) {
            if (!sg_block_flush(bs, &err))
                fail_msg("flush: %s", err.msg);
        } else {
            sg_block_close(bs);
            bs = qt_open(p, 0);
        }
        if (len)
            compare(bs, &m, off, len);
        if (op % 16 == 15)
            compare(bs, &m, 0, size);
        if (op % 100 == 99)
            qt_check_clean(bs);
        if (op % 500 == 499) {
            if (!sg_block_flush(bs, &err))
                fail_msg("flush: %s", err.msg);
            qt_qemu_check(p);
        }
    }
    /* Every snapshot still holds its contents. */
    for (int i = 0; i < m.nsnap; i++) {
        if (!sg_block_snapshot_goto(bs, m.id[i], &err))
            fail_msg("goto %s: %s", m.id[i], err.msg);
        memcpy(m.disk, m.img[i], size);
        compare(bs, &m, 0, size);
    }
    qt_check_clean(bs);
    sg_block_close(bs);
    qt_qemu_check(p);
    for (int i = 0; i < m.nsnap; i++) {
        free(m.id[i]);
        free(m.img[i]);
    }
    free(m.disk);
    free(buf);
    qt_cleanup(p);
    free(p);
}

static long env_long(const char *name, long def)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 0) : def;
}

static void test_model_small_clusters(void **state)
{
    (void)state;
    run_model("m512.qcow2", 1 << 20, 9, env_long("SG_QCOW2_MODEL_OPS", 1500),
              (uint64_t)env_long("SG_QCOW2_MODEL_SEED", 12345));
}

static void test_model_64k(void **state)
{
    (void)state;
    run_model("m64k.qcow2", 6 << 20, 16, env_long("SG_QCOW2_MODEL_OPS", 1500),
              (uint64_t)env_long("SG_QCOW2_MODEL_SEED", 777) + 1);
}

/* 120 snapshots, each differing in one cluster, deleted in random order. */
static void test_many_snapshots(void **state)
{
    (void)state;
    char *p = qt_path("many.qcow2");
    struct sg_block *bs = qt_create_open(p, 16 << 20, 0);
    struct sg_error err = {0};
    enum { N = 120 };
    char *ids[N];
    for (int i = 0; i < N; i++) {
        qt_fill(bs, (uint64_t)(i % 64) * 65536 * 2, i + 1, 65536);
        char tag[16];
        snprintf(tag, sizeof tag, "snap%d", i);
        ids[i] = qt_snap(bs, tag, 0);
        char want[16];
        snprintf(want, sizeof want, "%d", i + 1);
        assert_string_equal(ids[i], want);
    }
    assert_true(sg_block_flush(bs, &err));
    qt_check_clean(bs);
    qt_qemu_check(p);
    struct rng r = {424242};
    int order[N];
    for (int i = 0; i < N; i++)
        order[i] = i;
    for (int i = N - 1; i > 0; i--) {
        int j = (int)below(&r, (uint64_t)i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int k = 0; k < N; k++) {
        int i = order[k];
        if (k % 10 == 0) {
            /* the snapshot about to go still has its own data */
            assert_true(sg_block_snapshot_goto(bs, ids[i], &err));
            qt_expect(bs, (uint64_t)(i % 64) * 65536 * 2, i + 1, 65536);
        }
        if (!sg_block_snapshot_delete(bs, ids[i], &err))
            fail_msg("delete %s: %s", ids[i], err.msg);
        if (k % 20 == 0)
            qt_check_clean(bs);
    }
    struct sg_snapshot_info *l;
    assert_int_equal(sg_block_snapshot_list(bs, &l, &err), 0);
    qt_check_clean(bs);
    sg_block_close(bs);
    qt_qemu_check(p);
    for (int i = 0; i < N; i++)
        free(ids[i]);
    qt_cleanup(p);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_small_clusters),
        cmocka_unit_test(test_model_64k),
        cmocka_unit_test(test_many_snapshots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The vmstate allocation map a snapshot load uses to skip zeros
 * (sg_block_vmstate_map_snapshot), and the word-wide zero test the save
 * uses to keep zero clusters unallocated (sg_buffer_is_zero). */
#include <sys/stat.h>

#include "qtest_util.h"

/* Every length and alignment around the word and block edges, with the
 * one non-zero byte at every position: the fast paths must not skip any. */
static void test_is_zero(void **state)
{
    (void)state;
    uint8_t *buf = calloc(1, 4096 + 64);
    for (size_t align = 0; align < 16; align++) {
        for (size_t len = 0; len <= 300; len++) {
            uint8_t *p = buf + align;
            assert_true(sg_buffer_is_zero(p, len));
            for (size_t i = 0; i < len; i++) {
                p[i] = 0x80;
                if (sg_buffer_is_zero(p, len))
                    fail_msg("byte %zu of %zu (align %zu) missed", i, len, align);
                p[i] = 0;
            }
            p[len] = 1;   /* just past the end: not looked at */
            assert_true(sg_buffer_is_zero(p, len));
            p[len] = 0;
        }
    }
    free(buf);
    size_t big = 1 << 20;
    uint8_t *b = calloc(1, big);
    assert_true(sg_buffer_is_zero(b, big));
    b[big - 1] = 1;
    assert_false(sg_buffer_is_zero(b, big));
    b[big - 1] = 0;
    b[big / 2 + 3] = 4;
    assert_false(sg_buffer_is_zero(b, big));
    free(b);
}

static void vm_write(struct sg_block *bs, uint64_t off, int byte, size_t len)
{
    struct sg_error err = {0};
    uint8_t *b = malloc(len);
    memset(b, byte, len);
    if (!sg_block_vmstate_write(bs, off, b, len, &err))
        fail_msg("vmstate write: %s", err.msg);
    free(b);
}

#define K 1024ull
#define M (1024ull * 1024)

static void expect_ext(const struct sg_block_extent *e, uint64_t off, uint64_t len, bool alloc)
{
    if (e->off != off || e->len != len || e->allocated != alloc)
        fail_msg("extent {%llu, %llu, %d}, want {%llu, %llu, %d}", (unsigned long long)e->off,
                 (unsigned long long)e->len, e->allocated, (unsigned long long)off,
                 (unsigned long long)len, alloc);
}

/* 64 KiB clusters: data, a zero write (stays unallocated), two adjacent
 * data clusters (one extent), one page of data in an otherwise empty
 * cluster (the whole cluster counts), and data past a whole empty L1 span
 * (512 MiB), which the map must cross without visiting each cluster. */
static void test_map(void **state)
{
    (void)state;
    char *p = qt_path("map.qcow2");
    struct sg_block *bs = qt_create_open(p, 8 << 20, 0);
    struct sg_error err = {0};
    uint64_t vmsize = 600 * M + 64 * K;
    vm_write(bs, 0, 0x11, 64 * K);
    vm_write(bs, 64 * K, 0, 64 * K);
    vm_write(bs, 192 * K, 0x22, 128 * K);
    vm_write(bs, 1 * M + 8 * K, 0x33, 4 * K);
    vm_write(bs, 600 * M, 0x44, 64 * K);
    char *id = qt_snap(bs, "m", vmsize);

    struct sg_block_extent e[16];
    int n = sg_block_vmstate_map_snapshot(bs, id, 0, vmsize, e, 16, &err);
    assert_int_equal(n, 7);
    expect_ext(&e[0], 0, 64 * K, true);
    expect_ext(&e[1], 64 * K, 128 * K, false);
    expect_ext(&e[2], 192 * K, 128 * K, true);
    expect_ext(&e[3], 320 * K, 704 * K, false);
    expect_ext(&e[4], 1 * M, 64 * K, true);
    expect_ext(&e[5], 1 * M + 64 * K, 600 * M - 1 * M - 64 * K, false);
    expect_ext(&e[6], 600 * M, 64 * K, true);

    /* what the map calls unallocated reads as zeros, allocated as data */
    uint8_t *r = malloc(704 * K);
    assert_true(sg_block_vmstate_read_snapshot(bs, id, 320 * K, r, 704 * K, &err));
    assert_true(sg_buffer_is_zero(r, 704 * K));
    assert_true(sg_block_vmstate_read_snapshot(bs, id, 1 * M + 8 * K, r, 4 * K, &err));
    assert_int_equal(r[0], 0x33);
    free(r);

    /* a full array stops early: continue from the last extent's end */
    n = sg_block_vmstate_map_snapshot(bs, id, 0, vmsize, e, 3, &err);
    assert_int_equal(n, 3);
    expect_ext(&e[2], 192 * K, 128 * K, true);
    n = sg_block_vmstate_map_snapshot(bs, id, 320 * K, vmsize - 320 * K, e, 16, &err);
    assert_int_equal(n, 4);
    expect_ext(&e[0], 320 * K, 704 * K, false);

    /* unaligned ranges are clipped to what was asked */
    n = sg_block_vmstate_map_snapshot(bs, id, 100, 200, e, 16, &err);
    assert_int_equal(n, 1);
    expect_ext(&e[0], 100, 200, true);
    n = sg_block_vmstate_map_snapshot(bs, id, 60 * K, 10 * K, e, 16, &err);
    assert_int_equal(n, 2);
    expect_ext(&e[0], 60 * K, 4 * K, true);
    expect_ext(&e[1], 64 * K, 6 * K, false);

    /* errors: past the saved size, unknown ID, no room */
    assert_int_equal(sg_block_vmstate_map_snapshot(bs, id, vmsize - 10, 20, e, 16, &err), -1);
    assert_non_null(strstr(err.msg, "past the"));
    sg_error_clear(&err);
    assert_int_equal(sg_block_vmstate_map_snapshot(bs, "99", 0, 10, e, 16, &err), -1);
    assert_string_equal(err.msg, "Can't find snapshot with ID '99'");
    sg_error_clear(&err);
    assert_int_equal(sg_block_vmstate_map_snapshot(bs, id, 0, 10, e, 0, &err), -1);
    sg_error_clear(&err);

    /* the map survives a reopen and a goto (it reads the snapshot's tree) */
    vm_write(bs, 64 * K, 0x55, 64 * K);   /* active area only, then dropped */
    assert_true(sg_block_vmstate_discard(bs, &err));
    assert_true(sg_block_snapshot_goto(bs, id, &err));
    sg_block_close(bs);
    bs = qt_open(p, SG_BLOCK_RDONLY);
    n = sg_block_vmstate_map_snapshot(bs, id, 0, vmsize, e, 16, &err);
    assert_int_equal(n, 7);
    expect_ext(&e[1], 64 * K, 128 * K, false);
    qt_check_clean(bs);
    sg_block_close(bs);
    qt_qemu_check(p);
    free(id);
    qt_cleanup(p);
    free(p);
}

/* 512-byte clusters: extents need not be page aligned (the load clears
 * such edges by hand); and a raw image has no vmstate at all. */
static void test_map_small_clusters(void **state)
{
    (void)state;
    char *p = qt_path("small.qcow2");
    struct sg_block *bs = qt_create_open(p, 1 << 20, 9);
    struct sg_error err = {0};
    vm_write(bs, 512, 0x66, 512);
    vm_write(bs, 4096 + 1024, 0x67, 1024);
    char *id = qt_snap(bs, "s", 16 * K);
    struct sg_block_extent e[8];
    int n = sg_block_vmstate_map_snapshot(bs, id, 0, 16 * K, e, 8, &err);
    assert_int_equal(n, 5);
    expect_ext(&e[0], 0, 512, false);
    expect_ext(&e[1], 512, 512, true);
    expect_ext(&e[2], 1024, 4096, false);
    expect_ext(&e[3], 5120, 1024, true);
    expect_ext(&e[4], 6144, 16 * K - 6144, false);
    qt_check_clean(bs);
    sg_block_close(bs);
    free(id);
    qt_cleanup(p);

    char *rp = qt_path("r.raw");
    FILE *f = fopen(rp, "w");
    assert_non_null(f);
    assert_int_equal(ftruncate(fileno(f), 1 << 20), 0);
    fclose(f);
    bs = qt_open(rp, 0);
    assert_int_equal(sg_block_vmstate_map_snapshot(bs, "1", 0, 10, e, 8, &err), -1);
    assert_non_null(err.msg[0] ? err.msg : NULL);
    sg_block_close(bs);
    qt_cleanup(rp);
    free(rp);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_is_zero),
        cmocka_unit_test(test_map),
        cmocka_unit_test(test_map_small_clusters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

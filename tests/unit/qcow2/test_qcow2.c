/* test_qcow2.c: the block layer's raw and qcow2 drivers -- guest data,
 * copy-on-write, growth, internal snapshots, vmstate, name lookup. */
#include "qtest_util.h"

#include <fcntl.h>
#include <sys/stat.h>

static void test_raw(void **state)
{
    (void)state;
    char *p = qt_path("r.raw");
    int fd = open(p, O_CREAT | O_RDWR, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 1 << 20), 0);
    close(fd);
    struct sg_block *bs = qt_open(p, 0);
    assert_string_equal(sg_block_format(bs), "raw");
    assert_int_equal(sg_block_size(bs), 1 << 20);
    assert_false(sg_block_can_snapshot(bs));
    assert_int_equal(sg_block_cluster_size(bs), 0);
    qt_fill(bs, 1000, 0x5a, 5000);
    qt_expect(bs, 1000, 0x5a, 5000);
    qt_expect(bs, 0, 0, 1000);
    struct sg_error err = {0};
    uint8_t b[16];
    assert_false(sg_block_read(bs, (1 << 20) - 8, b, 16, &err));
    assert_non_null(strstr(err.msg, "beyond the end"));
    sg_error_clear(&err);
    assert_true(sg_block_discard(bs, 1000, 4096, &err));
    qt_expect(bs, 1000, 0, 4096);
    assert_true(sg_block_flush(bs, &err));
    struct sg_snapshot_info *l;
    assert_int_equal(sg_block_snapshot_list(bs, &l, &err), 0);
    sg_error_clear(&err);
    struct sg_snapshot_info info = {.name = "x"};
    assert_false(sg_block_snapshot_create(bs, &info, &err));
    assert_non_null(strstr(err.msg, "does not support internal snapshots"));
    sg_block_close(bs);
    bs = qt_open(p, SG_BLOCK_RDONLY);
    sg_error_clear(&err);
    assert_false(sg_block_write(bs, 0, b, 1, &err));
    assert_non_null(strstr(err.msg, "read-only"));
    sg_block_close(bs);
    qt_cleanup(p);
    free(p);
}

static void test_qcow2_data(void **state)
{
    (void)state;
    char *p = qt_path("d.qcow2");
    struct sg_block *bs = qt_create_open(p, 64 << 20, 0);
    assert_string_equal(sg_block_format(bs), "qcow2");
    assert_int_equal(sg_block_size(bs), 64 << 20);
    assert_int_equal(sg_block_cluster_size(bs), 65536);
    assert_true(sg_block_can_snapshot(bs));
    qt_expect(bs, 0, 0, 200000);
    /* head / middle / tail of an unaligned request */
    qt_fill(bs, 65536 - 100, 0x11, 3 * 65536 + 300);
    qt_expect(bs, 0, 0, 65536 - 100);
    qt_expect(bs, 65536 - 100, 0x11, 3 * 65536 + 300);
    qt_expect(bs, 4 * 65536 + 200, 0, 1000);
    /* rewrite in place (COPIED) */
    qt_fill(bs, 65536 + 10, 0x22, 10);
    qt_expect(bs, 65536 + 10, 0x22, 10);
    qt_expect(bs, 65536, 0x11, 10);
    /* last byte of the disk, and one past it */
    qt_fill(bs, (64 << 20) - 1, 0x33, 1);
    struct sg_error err = {0};
    uint8_t b[2];
    assert_false(sg_block_write(bs, (64 << 20) - 1, b, 2, &err));
    /* discard: a whole cluster is deallocated, a partial one zeroed */
    assert_true(sg_block_discard(bs, 2 * 65536, 65536 + 100, &err));
    qt_expect(bs, 2 * 65536, 0, 65536 + 100);
    qt_expect(bs, 3 * 65536 + 100, 0x11, 100);
    assert_true(sg_block_flush(bs, &err));
    qt_check_clean(bs);
    sg_block_close(bs);
    qt_qemu_check(p);
    bs = qt_open(p, 0);
    qt_expect(bs, 65536 - 100, 0x11, 110);
    qt_expect(bs, 65536 + 10, 0x22, 10);
    qt_expect(bs, (64 << 20) - 1, 0x33, 1);
    qt_expect(bs, 2 * 65536, 0, 65536 + 100);
    qt_check_clean(bs);
    sg_block_close(bs);
    qt_cleanup(p);
    free(p);
}

/* 512-byte clusters: refcount blocks cover 128 KiB and the one-cluster
 * refcount table 8 MiB, so filling 24 MiB creates blocks and grows the
 * table twice. */
static void test_qcow2_growth(void **state)
{
    (void)state;
    char *p = qt_path("g.qcow2");
    struct sg_block *bs = qt_create_open(p, 24 << 20, 9);
    assert_int_equal(sg_block_cluster_size(bs), 512);
    size_t chunk = 256 * 1024;
    for (uint64_t off = 0; off < (24 << 20); off += chunk)
        qt_fill(bs, off, (int)(off / chunk) + 1, chunk);
    struct sg_error err = {0};
    assert_true(sg_block_flush(bs, &err));
    qt_check_clean(bs);
    for (uint64_t off = 0; off < (24 << 20); off += chunk)
        qt_expect(bs, off, (int)(off / chunk) + 1, chunk);
    char *id = qt_snap(bs, "big", 0);
    qt_fill(bs, 12345, 0x77, 70000);
    assert_true(sg_block_flush(bs, &err));
    qt_check_clean(bs);
    sg_block_close(bs);
    qt_qemu_check(p);
    bs = qt_open(p, 0);
    assert_true(sg_block_snapshot_goto(bs, id, &err));
    qt_expect(bs, 0, 1, chunk);
    assert_true(sg_block_snapshot_delete(bs, id, &err));
    qt_check_clean(bs);
    sg_block_close(bs);
    qt_qemu_check(p);
    free(id);
    qt_cleanup(p);
    free(p);
}

/* Allocating a cluster for a partial write writes only the guest's bytes;
 * the rest must still read as zero: past the end of the file (a hole), in a
 * freed cluster reused (stale data, FALLOC_FL_ZERO_RANGE or zeros written),
 * in an owned zero cluster QEMU left with stale data; and COW from a
 * snapshot still copies the old data. */
static void alloc_zero_case(const char *dir)
{
    char *p = malloc(strlen(dir) + 32);
    sprintf(p, "%s/sg-alloc-%d.qcow2", dir, (int)getpid());
    unlink(p);
    struct sg_error err = {0};
    struct sg_block *bs = qt_create_open(p, 64 << 20, 0);
    /* past EOF: head and tail of the new cluster are holes / past the end */
    qt_fill(bs, 3 * 65536 + 8192, 0x5a, 4096);
    qt_expect(bs, 3 * 65536, 0, 8192);
    qt_expect(bs, 3 * 65536 + 8192, 0x5a, 4096);
    qt_expect(bs, 3 * 65536 + 12288, 0, 65536 - 12288);
    /* the file was extended over the whole new (last) cluster */
    assert_true(sg_block_flush(bs, &err));
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size % 65536, 0);
    /* stale data in a freed cluster, then reused by a partial write */
    qt_fill(bs, 10 * 65536, 0xaa, 65536);
    assert_true(sg_block_flush(bs, &err));
    assert_true(sg_block_discard(bs, 10 * 65536, 65536, &err));
    assert_true(sg_block_flush(bs, &err));
    for (int i = 0; i < 4; i++)
        qt_fill(bs, (uint64_t)(20 + i) * 65536 + 512, 0x6b, 1024);
    for (int i = 0; i < 4; i++) {
        uint64_t c = (uint64_t)(20 + i) * 65536;
        qt_expect(bs, c, 0, 512);
        qt_expect(bs, c + 512, 0x6b, 1024);
        qt_expect(bs, c + 1536, 0, 65536 - 1536);
    }
    /* COW: a snapshot's cluster is copied around the new piece */
    qt_fill(bs, 30 * 65536, 0x31, 65536);
    char *id = qt_snap(bs, "s", 0);
    qt_fill(bs, 30 * 65536 + 4096, 0x32, 4096);
    qt_expect(bs, 30 * 65536, 0x31, 4096);
    qt_expect(bs, 30 * 65536 + 4096, 0x32, 4096);
    qt_expect(bs, 30 * 65536 + 8192, 0x31, 65536 - 8192);
    assert_true(sg_block_flush(bs, &err));
    qt_check_clean(bs);
    sg_block_close(bs);
    qt_qemu_check(p);
    bs = qt_open(p, 0);
    qt_expect(bs, 3 * 65536, 0, 8192);
    qt_expect(bs, 3 * 65536 + 8192, 0x5a, 4096);
    qt_expect(bs, 3 * 65536 + 12288, 0, 65536 - 12288);
    for (int i = 0; i < 4; i++) {
        uint64_t c = (uint64_t)(20 + i) * 65536;
        qt_expect(bs, c, 0, 512);
        qt_expect(bs, c + 512, 0x6b, 1024);
        qt_expect(bs, c + 1536, 0, 65536 - 1536);
    }
    qt_expect(bs, 30 * 65536 + 8192, 0x31, 65536 - 8192);
    assert_true(sg_block_snapshot_goto(bs, id, &err));
    qt_expect(bs, 30 * 65536, 0x31, 65536);
    qt_check_clean(bs);
    sg_block_close(bs);
    free(id);
    /* an owned zero cluster with stale data (QEMU's write -z keeps it) */
    if (system("command -v qemu-io >/dev/null 2>&1") == 0) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "qemu-io -f qcow2 -c 'write -P 0xcc 40M 64k' "
                 "-c 'write -z 40M 64k' '%s' >/dev/null", p);
        assert_int_equal(system(cmd), 0);
        bs = qt_open(p, 0);
        qt_expect(bs, 40 << 20, 0, 65536);
        qt_fill(bs, (40 << 20) + 32768, 0x7e, 4096);
        qt_expect(bs, 40 << 20, 0, 32768);
        qt_expect(bs, (40 << 20) + 32768, 0x7e, 4096);
        qt_expect(bs, (40 << 20) + 36864, 0, 65536 - 36864);
        assert_true(sg_block_flush(bs, &err));
        qt_check_clean(bs);
        sg_block_close(bs);
        qt_qemu_check(p);
        bs = qt_open(p, 0);
        qt_expect(bs, 40 << 20, 0, 32768);
        qt_expect(bs, (40 << 20) + 36864, 0, 65536 - 36864);
        sg_block_close(bs);
    }
    if (!getenv("SGTEST_KEEP"))
        unlink(p);
    free(p);
}

static void test_alloc_zero(void **state)
{
    (void)state;
    char *p = qt_path("x");
    *strrchr(p, '/') = 0;
    alloc_zero_case(p);          /* ext4 and the like: FALLOC_FL_ZERO_RANGE */
    free(p);
    if (access("/dev/shm", W_OK) == 0)
        alloc_zero_case("/dev/shm");   /* tmpfs: no ZERO_RANGE, zeros written */
}

static void test_snapshots(void **state)
{
    (void)state;
    char *p = qt_path("s.qcow2");
    struct sg_block *bs = qt_create_open(p, 16 << 20, 0);
    struct sg_error err = {0};
    qt_fill(bs, 0, 0xa1, 200000);
    char *s1 = qt_snap(bs, "one", 0);
    assert_string_equal(s1, "1");
    qt_fill(bs, 100000, 0xb2, 100000);    /* COW of shared clusters and L2 */
    qt_expect(bs, 0, 0xa1, 100000);
    qt_expect(bs, 100000, 0xb2, 100000);
    char *s2 = qt_snap(bs, "two", 0);
    assert_string_equal(s2, "2");
    qt_fill(bs, 0, 0xc3, 50);
    qt_check_clean(bs);

    assert_true(sg_block_snapshot_goto(bs, s1, &err));
    qt_expect(bs, 0, 0xa1, 200000);
    qt_check_clean(bs);
    qt_fill(bs, 5, 0xd4, 5);
    assert_true(sg_block_snapshot_goto(bs, s2, &err));
    qt_expect(bs, 0, 0xa1, 100000);
    qt_expect(bs, 100000, 0xb2, 100000);
    assert_true(sg_block_snapshot_delete(bs, s1, &err));
    qt_check_clean(bs);
    /* IDs: max + 1 */
    char *s3 = qt_snap(bs, "three", 0);
    assert_string_equal(s3, "3");
    assert_true(sg_block_snapshot_delete(bs, s3, &err));
    char *s3b = qt_snap(bs, "three-again", 0);
    assert_string_equal(s3b, "3");

    struct sg_snapshot_info *l;
    int n = sg_block_snapshot_list(bs, &l, &err);
    assert_int_equal(n, 2);
    assert_string_equal(l[0].id, "2");
    assert_string_equal(l[0].name, "two");
    assert_int_equal(l[0].date_sec, 1700000000);
    assert_int_equal(l[0].vm_clock_nsec, 1234567890);
    assert_int_equal(l[0].disk_size, 16 << 20);
    assert_int_equal(l[0].icount, -1);
    sg_snapshot_info_free_list(l, n);

    assert_false(sg_block_snapshot_goto(bs, "9", &err));
    assert_non_null(strstr(err.msg, "9"));
    sg_error_clear(&err);
    assert_false(sg_block_snapshot_delete(bs, "1", &err));
    sg_error_clear(&err);
    assert_true(sg_block_flush(bs, &err));
    qt_check_clean(bs);
    sg_block_close(bs);
    qt_qemu_check(p);

    bs = qt_open(p, 0);
    n = sg_block_snapshot_list(bs, &l, &err);
    assert_int_equal(n, 2);
    assert_string_equal(l[1].name, "three-again");
    sg_snapshot_info_free_list(l, n);
    assert_true(sg_block_snapshot_delete(bs, "2", &err));
    assert_true(sg_block_snapshot_delete(bs, "3", &err));
    qt_expect(bs, 0, 0xa1, 100000);
    qt_check_clean(bs);
    sg_block_close(bs);
    qt_qemu_check(p);
    free(s1);
    free(s2);
    free(s3);
    free(s3b);
    qt_cleanup(p);
    free(p);
}

static void test_find(void **state)
{
    (void)state;
    char *p = qt_path("f.qcow2");
    struct sg_block *bs = qt_create_open(p, 1 << 20, 0);
    struct sg_error err = {0};
    free(qt_snap(bs, "2", 0));     /* ID 1, tag "2" */
    free(qt_snap(bs, "dup", 0));   /* ID 2 */
    free(qt_snap(bs, "dup", 0));   /* ID 3 */
    free(qt_snap(bs, "x", 0));     /* ID 4 */
    char id[128];
    assert_true(sg_block_snapshot_find(bs, "2", SG_SNAPSHOT_BY_NAME, id, &err));
    assert_string_equal(id, "1");   /* a tag beats an ID */
    assert_true(sg_block_snapshot_find(bs, "2", SG_SNAPSHOT_BY_ID, id, &err));
    assert_string_equal(id, "2");
    assert_true(sg_block_snapshot_find(bs, "4", SG_SNAPSHOT_BY_NAME, id, &err));
    assert_string_equal(id, "4");
    assert_false(sg_block_snapshot_find(bs, "4", SG_SNAPSHOT_BY_TAG, id, &err));
    assert_string_equal(err.msg, "Snapshot '4' does not exist");
    sg_error_clear(&err);
    assert_false(sg_block_snapshot_find(bs, "dup", SG_SNAPSHOT_BY_NAME, id, &err));
    assert_string_equal(err.msg, "Snapshot tag 'dup' is ambiguous: IDs 2, 3");
    sg_block_close(bs);
    qt_cleanup(p);
    free(p);
}

/* The vmstate area lives past the disk in the snapshot's tree; zero pages
 * are never allocated; the active area is dropped after the snapshot. */
static void test_vmstate(void **state)
{
    (void)state;
    char *p = qt_path("v.qcow2");
    struct sg_block *bs = qt_create_open(p, 8 << 20, 0);
    struct sg_error err = {0};
    qt_fill(bs, 0, 0x42, 4096);
    size_t vlen = 4 << 20;
    uint8_t *v = calloc(1, vlen);
    for (size_t pg = 0; pg < vlen / 4096; pg += 37)
        memset(v + pg * 4096, (int)(pg & 0xff) | 1, 4096);
    struct stat st0, st1;
    assert_true(sg_block_flush(bs, &err));
    assert_int_equal(stat(p, &st0), 0);
    for (size_t off = 0; off < vlen; off += 1 << 20)
        assert_true(sg_block_vmstate_write(bs, off, v + off, 1 << 20, &err));
    char *id = qt_snap(bs, "withvm", vlen);
    assert_true(sg_block_flush(bs, &err));
    assert_int_equal(stat(p, &st1), 0);
    /* 4 MiB of vmstate with 1 page in 37 set touches 28 of 64 clusters */
    assert_true(st1.st_size - st0.st_size < 40 * 65536);
    uint8_t *r = malloc(vlen);
    assert_true(sg_block_vmstate_read_snapshot(bs, id, 0, r, vlen, &err));
    assert_memory_equal(r, v, vlen);
    assert_false(sg_block_vmstate_read_snapshot(bs, id, vlen - 10, r, 20, &err));
    sg_error_clear(&err);
    qt_check_clean(bs);
    /* the disk is untouched by the vmstate area */
    qt_expect(bs, 0, 0x42, 4096);
    qt_expect(bs, 4096, 0, (8 << 20) - 4096);
    struct sg_snapshot_info *l;
    int n = sg_block_snapshot_list(bs, &l, &err);
    assert_int_equal(n, 1);
    assert_int_equal(l[0].vm_state_size, vlen);
    sg_snapshot_info_free_list(l, n);
    /* a cancelled save leaves nothing behind */
    assert_true(sg_block_vmstate_write(bs, 0, v, 65536 * 3, &err));
    assert_true(sg_block_vmstate_discard(bs, &err));
    qt_check_clean(bs);
    /* load after goto still reads the snapshot's vmstate */
    qt_fill(bs, 0, 0x43, 4096);
    assert_true(sg_block_snapshot_goto(bs, id, &err));
    qt_expect(bs, 0, 0x42, 4096);
    memset(r, 0, vlen);
    assert_true(sg_block_vmstate_read_snapshot(bs, id, 0, r, vlen, &err));
    assert_memory_equal(r, v, vlen);
    assert_true(sg_block_flush(bs, &err));
    qt_check_clean(bs);
    sg_block_close(bs);
    qt_qemu_check(p);
    bs = qt_open(p, 0);
    assert_true(sg_block_snapshot_delete(bs, id, &err));
    qt_check_clean(bs);
    sg_block_close(bs);
    qt_qemu_check(p);
    free(id);
    free(v);
    free(r);
    qt_cleanup(p);
    free(p);
}

/* Issue 17: one tag rule (255 bytes of UTF-8), and every stored tag shown. */
static void test_tags(void **state)
{
    (void)state;
    static const struct { const char *s; bool ok; } utf8[] = {
        {"plain", true}, {"caf\xc3\xa9", true}, {"\xe2\x82\xac", true},
        {"\xf0\x9f\x98\x80", true}, {"caf\xe9", false}, {"\xc0\xaf", false},
        {"\xe0\x80\xaf", false}, {"\xed\xa0\x80", false}, {"\xf4\x90\x80\x80", false},
        {"\xc3", false}, {"\x80", false},
    };
    for (size_t i = 0; i < sizeof utf8 / sizeof utf8[0]; i++)
        if (sg_utf8_valid(utf8[i].s) != utf8[i].ok)
            fail_msg("utf8 case %zu", i);
    char *l = sg_utf8_lossy("caf\xe9 \xc3\xa9");
    assert_string_equal(l, "caf\xef\xbf\xbd \xc3\xa9");
    free(l);
    char tag[300];
    memset(tag, 'x', sizeof tag);
    tag[255] = 0;
    struct sg_error err = {0};
    assert_true(sg_snapshot_tag_check(tag, &err));
    tag[255] = 'x';
    tag[256] = 0;
    assert_false(sg_snapshot_tag_check(tag, &err));
    assert_non_null(strstr(err.msg, "at most 255 bytes"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raw),
        cmocka_unit_test(test_qcow2_data),
        cmocka_unit_test(test_qcow2_growth),
        cmocka_unit_test(test_alloc_zero),
        cmocka_unit_test(test_snapshots),
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_vmstate),
        cmocka_unit_test(test_tags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* qtest_util.h: helpers shared by the qcow2 unit tests (temp files, fill
 * patterns, the consistency checks every test ends with). */
#ifndef QTEST_UTIL_H
#define QTEST_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "block.h"

static inline char *qt_path(const char *name)
{
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/sg-qcow2-XXXXXX");
        assert_non_null(mkdtemp(dir));
    }
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    unlink(p);
    return p;
}

static inline void qt_cleanup(const char *path)
{
    if (!getenv("SGTEST_KEEP"))
        unlink(path);
}

static inline struct sg_block *qt_create_open(const char *path, uint64_t size, unsigned cbits)
{
    struct sg_error err = {0};
    if (!sg_block_create_qcow2(path, size, cbits, &err))
        fail_msg("create: %s", err.msg);
    struct sg_block *bs = sg_block_open(path, "qcow2", 0, &err);
    if (!bs)
        fail_msg("open: %s", err.msg);
    return bs;
}

static inline struct sg_block *qt_open(const char *path, unsigned flags)
{
    struct sg_error err = {0};
    struct sg_block *bs = sg_block_open(path, NULL, flags, &err);
    if (!bs)
        fail_msg("open %s: %s", path, err.msg);
    return bs;
}

static inline void qt_write(struct sg_block *bs, uint64_t off, const void *buf, size_t len)
{
    struct sg_error err = {0};
    if (!sg_block_write(bs, off, buf, len, &err))
        fail_msg("write %llu+%zu: %s", (unsigned long long)off, len, err.msg);
}

static inline void qt_fill(struct sg_block *bs, uint64_t off, int byte, size_t len)
{
    uint8_t *b = malloc(len);
    memset(b, byte, len);
    qt_write(bs, off, b, len);
    free(b);
}

/* Asserts that [off, off+len) reads as `byte`. */
static inline void qt_expect(struct sg_block *bs, uint64_t off, int byte, size_t len)
{
    struct sg_error err = {0};
    uint8_t *b = malloc(len);
    if (!sg_block_read(bs, off, b, len, &err))
        fail_msg("read %llu+%zu: %s", (unsigned long long)off, len, err.msg);
    for (size_t i = 0; i < len; i++)
        if (b[i] != (uint8_t)byte)
            fail_msg("byte %llu is %#x, want %#x", (unsigned long long)(off + i), b[i],
                     (uint8_t)byte);
    free(b);
}

/* Our checker must find the image clean (no corruption, no leaks). */
static inline void qt_check_clean(struct sg_block *bs)
{
    struct sg_error err = {0};
    struct sg_block_check_result r;
    if (!sg_block_check(bs, &r, stderr, &err))
        fail_msg("check: %s", err.msg);
    if (r.corruptions || r.leaks)
        fail_msg("check: %llu corruptions, %llu leaks", (unsigned long long)r.corruptions,
                 (unsigned long long)r.leaks);
}

/* qemu-img check too, when installed (the oracle). */
static inline void qt_qemu_check(const char *path)
{
    if (system("command -v qemu-img >/dev/null 2>&1") != 0)
        return;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "qemu-img check -U -q '%s'", path);
    int rc = system(cmd);
    if (rc != 0)
        fail_msg("qemu-img check %s failed (status %d)", path, rc);
}

static inline char *qt_snap(struct sg_block *bs, const char *name, uint64_t vmsize)
{
    struct sg_error err = {0};
    struct sg_snapshot_info info = {.name = (char *)name, .date_sec = 1700000000,
                                    .vm_state_size = vmsize, .vm_clock_nsec = 1234567890};
    if (!sg_block_snapshot_create(bs, &info, &err))
        fail_msg("snapshot create %s: %s", name, err.msg);
    return strdup(info.id);
}

#endif

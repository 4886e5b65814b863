/* raw.c: the raw format driver -- guest offset == file offset. */
#include "block_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool raw_open(struct sg_block *bs, struct sg_error *err)
{
    struct stat st;
    if (fstat(bs->fd, &st) < 0) {
        sg_error_set_errno(err, errno, "%s", bs->filename);
        return false;
    }
    if (S_ISBLK(st.st_mode)) {
        off_t end = lseek(bs->fd, 0, SEEK_END);
        if (end < 0) {
            sg_error_set_errno(err, errno, "%s", bs->filename);
            return false;
        }
        bs->size = (uint64_t)end;
    } else {
        bs->size = (uint64_t)st.st_size;
    }
    return true;
}

static void raw_close(struct sg_block *bs)
{
    (void)bs;
}

static bool raw_read(struct sg_block *bs, uint64_t off, void *buf, size_t len,
                     struct sg_error *err)
{
    /* A sparse or shrunk file reads as zeros past its end (the size was
     * fixed at open; another process may have truncated it). */
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pread(bs->fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            sg_error_set_errno(err, errno, "%s: read at %llu", bs->filename,
                               (unsigned long long)off);
            return false;
        }
        if (n == 0) {
            memset(p, 0, len);
            return true;
        }
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return true;
}

static bool raw_write(struct sg_block *bs, uint64_t off, const void *buf, size_t len,
                      struct sg_error *err)
{
    return sg_pwrite_full(bs->fd, buf, len, off, bs->filename, err);
}

static bool raw_discard(struct sg_block *bs, uint64_t off, uint64_t len, struct sg_error *err)
{
    /* Punching a hole keeps the size and reads back zeros; fall back to
     * writing zeros where the file system cannot punch. */
    if (fallocate(bs->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
                  (off_t)len) == 0)
        return true;
    static const uint8_t zero[65536];
    while (len > 0) {
        size_t n = len < sizeof zero ? (size_t)len : sizeof zero;
        if (!sg_pwrite_full(bs->fd, zero, n, off, bs->filename, err))
            return false;
        off += n;
        len -= n;
    }
    return true;
}

static bool raw_flush(struct sg_block *bs, struct sg_error *err)
{
    if (fdatasync(bs->fd) < 0) {
        sg_error_set_errno(err, errno, "%s: flush", bs->filename);
        return false;
    }
    return true;
}

const struct sg_block_driver sg_raw_driver = {
    .name = "raw",
    .open = raw_open,
    .close = raw_close,
    .read = raw_read,
    .write = raw_write,
    .discard = raw_discard,
    .flush = raw_flush,
};

/* block.c: the sg_block handle -- opens a file, probes its format and
 * dispatches to the raw or qcow2 driver.  Range checks on guest requests
 * live here so the drivers can trust off + len <= size. */
#include "block_int.h"
#include "qcow2.h"

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool sg_pread_full(int fd, void *buf, size_t len, uint64_t off, const char *what,
                   struct sg_error *err)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            sg_error_set_errno(err, errno, "read of %s at offset %llu failed", what,
                               (unsigned long long)off);
            return false;
        }
        if (n == 0) {
            sg_error_set(err, "%s at offset %llu runs past the end of the file", what,
                         (unsigned long long)off);
            return false;
        }
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return true;
}

bool sg_pwrite_full(int fd, const void *buf, size_t len, uint64_t off, const char *what,
                    struct sg_error *err)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            sg_error_set_errno(err, errno, "write of %s at offset %llu failed", what,
                               (unsigned long long)off);
            return false;
        }
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return true;
}

static const struct sg_block_driver *probe(int fd)
{
    uint8_t magic[4];
    ssize_t n = pread(fd, magic, sizeof magic, 0);
    if (n == 4 && memcmp(magic, "QFI\xfb", 4) == 0)
        return &sg_qcow2_driver;
    return &sg_raw_driver;
}

struct sg_block *sg_block_open(const char *path, const char *format, unsigned flags,
                               struct sg_error *err)
{
    const struct sg_block_driver *drv = NULL;
    if (format) {
        if (strcmp(format, "qcow2") == 0)
            drv = &sg_qcow2_driver;
        else if (strcmp(format, "raw") == 0)
            drv = &sg_raw_driver;
        else {
            sg_error_set(err, "Unknown driver '%s'", format);
            return NULL;
        }
    }
    bool ro = flags & SG_BLOCK_RDONLY;
    if ((flags & SG_BLOCK_FORCE_SHARE) && !ro) {
        sg_error_set(err, "force-share=on can only be used with read-only images");
        return NULL;
    }
    int fd = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) {
        sg_error_set_errno(err, errno, "Could not open '%s'", path);
        return NULL;
    }
    if (!sg_block_lock(fd, path, ro, flags & SG_BLOCK_FORCE_SHARE, err)) {
        close(fd);
        return NULL;
    }
    struct sg_block *bs = calloc(1, sizeof *bs);
    if (!bs || !(bs->filename = strdup(path))) {
        free(bs);
        close(fd);
        sg_error_set(err, "out of memory");
        return NULL;
    }
    bs->fd = fd;
    pthread_mutex_init(&bs->pub_lock, NULL);
    bs->readonly = ro;
    bs->repair = !ro && (flags & SG_BLOCK_REPAIR);
    bs->drv = drv ? drv : probe(fd);
    if (!bs->drv->open(bs, err)) {
        sg_error_prefix(err, "%s", path);
        close(fd);
        pthread_mutex_destroy(&bs->pub_lock);
        free(bs->filename);
        free(bs);
        return NULL;
    }
    sg_block_publish_snapshots(bs);
    return bs;
}

void sg_block_close(struct sg_block *bs)
{
    if (!bs)
        return;
    bs->drv->close(bs);
    close(bs->fd);
    sg_snapshot_info_free_list(bs->pub, bs->pub_n);
    pthread_mutex_destroy(&bs->pub_lock);
    free(bs->filename);
    free(bs);
}

const char *sg_block_format(const struct sg_block *bs) { return bs->drv->name; }
const char *sg_block_filename(const struct sg_block *bs) { return bs->filename; }
uint64_t sg_block_size(const struct sg_block *bs) { return bs->size; }
bool sg_block_readonly(const struct sg_block *bs) { return bs->readonly; }
bool sg_block_can_snapshot(const struct sg_block *bs) { return bs->drv == &sg_qcow2_driver; }

uint64_t sg_block_cluster_size(const struct sg_block *bs)
{
    return bs->drv == &sg_qcow2_driver ? sg_qcow2_cluster_size(bs) : 0;
}

int64_t sg_block_actual_size(const struct sg_block *bs)
{
    struct stat st;
    if (fstat(bs->fd, &st) < 0)
        return -1;
    return (int64_t)st.st_blocks * 512;
}

static bool check_range(const struct sg_block *bs, uint64_t off, uint64_t len,
                        struct sg_error *err)
{
    if (off > bs->size || len > bs->size - off) {
        sg_error_set(err, "%s: request at offset %llu length %llu is beyond the end of the "
                     "disk (%llu bytes)", bs->filename, (unsigned long long)off,
                     (unsigned long long)len, (unsigned long long)bs->size);
        return false;
    }
    return true;
}

static bool check_writable(const struct sg_block *bs, struct sg_error *err)
{
    if (bs->readonly) {
        sg_error_set(err, "%s: image is read-only", bs->filename);
        return false;
    }
    return true;
}

bool sg_block_read(struct sg_block *bs, uint64_t off, void *buf, size_t len,
                   struct sg_error *err)
{
    if (!check_range(bs, off, len, err))
        return false;
    return len == 0 || bs->drv->read(bs, off, buf, len, err);
}

bool sg_block_write(struct sg_block *bs, uint64_t off, const void *buf, size_t len,
                    struct sg_error *err)
{
    if (!check_writable(bs, err) || !check_range(bs, off, len, err))
        return false;
    return len == 0 || bs->drv->write(bs, off, buf, len, err);
}

bool sg_block_discard(struct sg_block *bs, uint64_t off, uint64_t len, struct sg_error *err)
{
    if (!check_writable(bs, err) || !check_range(bs, off, len, err))
        return false;
    return len == 0 || bs->drv->discard(bs, off, len, err);
}

bool sg_block_flush(struct sg_block *bs, struct sg_error *err)
{
    if (bs->readonly)
        return true;
    return bs->drv->flush(bs, err);
}

int sg_block_io_error(const struct sg_block *bs)
{
    return bs->drv == &sg_qcow2_driver ? qcow2_state(bs)->broken : 0;
}

/* ---- snapshots: qcow2 only ---------------------------------------------- */

size_t sg_utf8_seq(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    unsigned c = s[0], n;
    uint32_t cp;
    if (c < 0x80)
        return c ? 1 : 0;
    if (c >= 0xc2 && c <= 0xdf)
        n = 1, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        n = 2, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 3, cp = c & 0x07;
    else
        return 0;
    for (unsigned i = 1; i <= n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n + 1;
}

bool sg_utf8_valid(const char *s)
{
    while (*s) {
        size_t n = sg_utf8_seq(s);
        if (!n)
            return false;
        s += n;
    }
    return true;
}

char *sg_utf8_lossy(const char *s)
{
    size_t o = 0;
    char *t = malloc(strlen(s) * 3 + 1);
    if (!t)
        return NULL;
    while (*s) {
        size_t n = sg_utf8_seq(s);
        if (n) {
            memcpy(t + o, s, n);
            o += n;
            s += n;
        } else {
            memcpy(t + o, "\xef\xbf\xbd", 3);
            o += 3;
            s++;
        }
    }
    t[o] = 0;
    return t;
}

bool sg_snapshot_tag_check(const char *tag, struct sg_error *err)
{
    size_t n = tag ? strlen(tag) : 0;
    if (n > SG_SNAPSHOT_TAG_MAX) {
        sg_error_set(err, "Snapshot name is too long (%zu bytes; at most %d bytes)", n,
                     SG_SNAPSHOT_TAG_MAX);
        return false;
    }
    if (tag && !sg_utf8_valid(tag)) {
        sg_error_set(err, "Snapshot name is not valid UTF-8");
        return false;
    }
    return true;
}

static bool need_qcow2(const struct sg_block *bs, struct sg_error *err)
{
    if (bs->drv != &sg_qcow2_driver) {
        sg_error_set(err, "Block format '%s' used by device '%s' does not support internal "
                     "snapshots", bs->drv->name, bs->filename);
        return false;
    }
    return true;
}

int sg_block_snapshot_list(struct sg_block *bs, struct sg_snapshot_info **out,
                           struct sg_error *err)
{
    *out = NULL;
    if (bs->drv != &sg_qcow2_driver)
        return 0;
    return sg_qcow2_snapshot_list(bs, out, err);
}

void sg_block_publish_snapshots(struct sg_block *bs)
{
    struct sg_snapshot_info *list = NULL;
    int n = sg_block_snapshot_list(bs, &list, NULL);
    pthread_mutex_lock(&bs->pub_lock);
    struct sg_snapshot_info *old = bs->pub;
    int old_n = bs->pub_n;
    bs->pub = list;
    bs->pub_n = n;
    pthread_mutex_unlock(&bs->pub_lock);
    sg_snapshot_info_free_list(old, old_n);
}

int sg_block_snapshot_list_published(struct sg_block *bs, struct sg_snapshot_info **out,
                                     struct sg_error *err)
{
    *out = NULL;
    pthread_mutex_lock(&bs->pub_lock);
    int n = bs->pub_n;
    struct sg_snapshot_info *l = n > 0 ? calloc((size_t)n, sizeof *l) : NULL;
    for (int i = 0; l && i < n; i++) {
        l[i] = bs->pub[i];
        if (!(l[i].name = strdup(bs->pub[i].name ? bs->pub[i].name : ""))) {
            sg_snapshot_info_free_list(l, i);
            l = NULL;
        }
    }
    pthread_mutex_unlock(&bs->pub_lock);
    if (n < 0 || (n > 0 && !l)) {
        sg_error_set(err, "out of memory");
        return -1;
    }
    *out = l;
    return n;
}

void sg_snapshot_info_free_list(struct sg_snapshot_info *list, int n)
{
    if (!list)
        return;
    for (int i = 0; i < n; i++)
        free(list[i].name);
    free(list);
}

bool sg_block_snapshot_create(struct sg_block *bs, struct sg_snapshot_info *info,
                              struct sg_error *err)
{
    return need_qcow2(bs, err) && check_writable(bs, err) &&
           sg_qcow2_snapshot_create(bs, info, err);
}

bool sg_block_snapshot_goto(struct sg_block *bs, const char *id, struct sg_error *err)
{
    return need_qcow2(bs, err) && check_writable(bs, err) && sg_qcow2_snapshot_goto(bs, id, err);
}

bool sg_block_snapshot_delete(struct sg_block *bs, const char *id, struct sg_error *err)
{
    return need_qcow2(bs, err) && check_writable(bs, err) &&
           sg_qcow2_snapshot_delete(bs, id, err);
}

bool sg_block_vmstate_write(struct sg_block *bs, uint64_t off, const void *buf, size_t len,
                            struct sg_error *err)
{
    return need_qcow2(bs, err) && check_writable(bs, err) &&
           sg_qcow2_vmstate_write(bs, off, buf, len, err);
}

bool sg_block_vmstate_read_snapshot(struct sg_block *bs, const char *id, uint64_t off,
                                    void *buf, size_t len, struct sg_error *err)
{
    return need_qcow2(bs, err) && sg_qcow2_vmstate_read_snapshot(bs, id, off, buf, len, err);
}

int sg_block_vmstate_map_snapshot(struct sg_block *bs, const char *id, uint64_t off,
                                  uint64_t len, struct sg_block_extent *ext, int max,
                                  struct sg_error *err)
{
    if (max < 1) {
        sg_error_set(err, "vmstate map: no room for an extent");
        return -1;
    }
    return need_qcow2(bs, err) ? sg_qcow2_vmstate_map_snapshot(bs, id, off, len, ext, max, err)
                               : -1;
}

bool sg_block_vmstate_discard(struct sg_block *bs, struct sg_error *err)
{
    return need_qcow2(bs, err) && check_writable(bs, err) && sg_qcow2_vmstate_discard(bs, err);
}

bool sg_block_snapshot_find(struct sg_block *bs, const char *name, enum sg_snapshot_match how,
                            char id_out[128], struct sg_error *err)
{
    struct sg_snapshot_info *l;
    int n = sg_block_snapshot_list(bs, &l, err);
    if (n < 0)
        return false;
    int found = -1, nt = 0;
    char ids[512] = "";
    if (how != SG_SNAPSHOT_BY_ID) {
        for (int i = 0; i < n; i++) {
            if (strcmp(l[i].name, name) != 0)
                continue;
            if (nt++ == 0)
                found = i;
            size_t u = strlen(ids);
            snprintf(ids + u, sizeof ids - u, "%s%s", u ? ", " : "", l[i].id);
        }
    }
    if (nt > 1) {
        sg_error_set(err, "Snapshot tag '%s' is ambiguous: IDs %s", name, ids);
        sg_snapshot_info_free_list(l, n);
        return false;
    }
    if (found < 0 && how != SG_SNAPSHOT_BY_TAG) {
        for (int i = 0; i < n; i++)
            if (strcmp(l[i].id, name) == 0)
                found = i;
    }
    if (found < 0) {
        sg_error_set(err, "Snapshot '%s' does not exist", name);
        sg_snapshot_info_free_list(l, n);
        return false;
    }
    snprintf(id_out, 128, "%s", l[found].id);
    sg_snapshot_info_free_list(l, n);
    return true;
}

/* qcow2_create.c: a new, empty qcow2 v3 image laid out as qemu-img does:
 * header, refcount table, one refcount block, L1 table. */
#include "qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool sg_block_create_qcow2(const char *path, uint64_t size, unsigned cluster_bits,
                           struct sg_error *err)
{
    if (cluster_bits == 0)
        cluster_bits = 16;
    if (cluster_bits < 9 || cluster_bits > 21) {
        sg_error_set(err, "Cluster size must be a power of two between 512 and 2048k");
        return false;
    }
    uint64_t cs = 1ULL << cluster_bits;
    if (size > (1ULL << 60)) {
        sg_error_set(err, "Image size is too large");
        return false;
    }
    size = (size + 511) & ~511ULL;   /* qemu-img rounds up to whole sectors */
    unsigned shift = cluster_bits + cluster_bits - 3;
    uint64_t l1_size = (size + (1ULL << shift) - 1) >> shift;
    if (l1_size * 8 > QCOW2_MAX_L1_BYTES) {
        sg_error_set(err, "Image size is too large for this cluster size");
        return false;
    }
    uint64_t l1_clusters = (l1_size * 8 + cs - 1) / cs;
    uint64_t nclus = 3 + l1_clusters;
    uint64_t rb_entries = cs * 8 / 16;
    if (nclus > rb_entries) {
        sg_error_set(err, "Image size is too large for this cluster size");
        return false;
    }
    uint8_t *img = calloc(nclus, cs);
    if (!img) {
        sg_error_set(err, "out of memory");
        return false;
    }
    uint8_t *h = img;
    sg_put_be32(h, QCOW2_MAGIC);
    sg_put_be32(h + 4, 3);
    sg_put_be32(h + 20, cluster_bits);
    sg_put_be64(h + 24, size);
    sg_put_be32(h + 36, (uint32_t)l1_size);
    sg_put_be64(h + 40, l1_size ? 3 * cs : 0);
    sg_put_be64(h + 48, cs);
    sg_put_be32(h + 56, 1);
    sg_put_be32(h + 96, 4);     /* refcount_order: 16-bit */
    sg_put_be32(h + 100, 112);  /* header_length, incl. compression type byte */
    /* No extensions: the end marker (type 0) at 112 is already zero. */
    sg_put_be64(img + cs, 2 * cs);      /* refcount table -> block at cluster 2 */
    for (uint64_t c = 0; c < nclus; c++)
        sg_put_be16(img + 2 * cs + 2 * c, 1);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        sg_error_set_errno(err, errno, "Could not create '%s'", path);
        free(img);
        return false;
    }
    bool ok = sg_pwrite_full(fd, img, nclus * cs, 0, path, err);
    if (ok && fsync(fd) < 0) {
        sg_error_set_errno(err, errno, "%s: fsync", path);
        ok = false;
    }
    close(fd);
    free(img);
    if (!ok)
        unlink(path);
    return ok;
}

/* qcow2_header.c: parsing and validating the qcow2 header and its
 * extensions, and the single-write header updates every metadata switch
 * relies on. */
#include "qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

uint64_t sg_be64(const uint8_t *p)
{
    return (uint64_t)sg_be32(p) << 32 | sg_be32(p + 4);
}
uint32_t sg_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
uint16_t sg_be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}
void sg_put_be64(uint8_t *p, uint64_t v)
{
    sg_put_be32(p, (uint32_t)(v >> 32));
    sg_put_be32(p + 4, (uint32_t)v);
}
void sg_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
void sg_put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

uint64_t qcow2_size_to_l1(const struct qcow2 *s, uint64_t size)
{
    unsigned shift = s->cluster_bits + s->l2_bits;
    return (size + (1ULL << shift) - 1) >> shift;
}

/* QEMU keeps the VM state after the disk, from the first L1 entry that no
 * guest byte uses; snapshots made by either program then agree. */
uint64_t qcow2_vmstate_offset(const struct qcow2 *s)
{
    return qcow2_size_to_l1(s, s->size) << (s->cluster_bits + s->l2_bits);
}

/* A table must start on a cluster boundary and lie inside the file. */
bool qcow2_check_table(const struct qcow2 *s, uint64_t off, uint64_t bytes, const char *what,
                       struct sg_error *err)
{
    if (off & (s->cluster_size - 1)) {
        sg_error_set(err, "qcow2: %s offset %#llx is not cluster aligned", what,
                     (unsigned long long)off);
        return false;
    }
    if (off == 0 && bytes) {
        sg_error_set(err, "qcow2: %s overlaps the header", what);
        return false;
    }
    if (off > s->host_end || bytes > s->host_end - off) {
        sg_error_set(err, "qcow2: %s (offset %#llx, %llu bytes) runs past the end of the "
                     "file", what, (unsigned long long)off, (unsigned long long)bytes);
        return false;
    }
    return true;
}

/* Every header change is one pwrite of a few adjacent fields inside the
 * first sector followed by fdatasync: a sector write is atomic on the disks
 * we care about, so the image switches from the old structure to the new one
 * at that moment and never shows a mix. */
bool qcow2_header_update(struct qcow2 *s, unsigned off, const void *buf, size_t len,
                         struct sg_error *err)
{
    if (!qcow2_pwrite_meta(s, QOL_HEADER, buf, len, off, "qcow2 header", err))
        return false;
    if (fdatasync(s->fd) < 0) {
        sg_error_set_errno(err, errno, "qcow2: flush after header update");
        qcow2_set_broken(s, errno);
        return false;
    }
    return true;
}

static bool unsupported(struct sg_error *err, const char *feature)
{
    sg_error_set(err, "unsupported qcow2 feature: %s", feature);
    return false;
}

static bool parse_extensions(struct qcow2 *s, const uint8_t *hdr, size_t hdr_len,
                             struct sg_error *err)
{
    /* Extensions follow the header inside the first cluster. */
    size_t off = s->header_length;
    while (off + 8 <= hdr_len) {
        uint32_t type = sg_be32(hdr + off);
        uint32_t len = sg_be32(hdr + off + 4);
        off += 8;
        if (type == 0)
            return true;
        if (len > hdr_len - off) {
            sg_error_set(err, "qcow2: header extension %#x runs past the first cluster", type);
            return false;
        }
        switch (type) {
        case 0xe2792aca: /* backing file format: harmless without a backing file */
        case 0x6803f857: /* feature name table */
            break;
        case 0x0537be77:
            return unsupported(err, "encryption");
        case 0x44415441:
            return unsupported(err, "external data file");
        case 0x23852875:
            /* Bitmaps: we do not keep them up to date, so the autoclear bit
             * is cleared on a writable open and QEMU will ignore them. */
            break;
        default:
            break;  /* unknown extensions are optional by definition */
        }
        off += ((size_t)len + 7) & ~(size_t)7;
    }
    return true;
}

bool qcow2_header_parse(struct qcow2 *s, struct sg_error *err)
{
    struct stat st;
    if (fstat(s->fd, &st) < 0) {
        sg_error_set_errno(err, errno, "qcow2: stat");
        return false;
    }
    s->host_end = (uint64_t)st.st_size;

    uint8_t h[112];
    if (s->host_end < 72) {
        sg_error_set(err, "qcow2: file is too short for a qcow2 header (%llu bytes)",
                     (unsigned long long)s->host_end);
        return false;
    }
    memset(h, 0, sizeof h);
    size_t hl = s->host_end < sizeof h ? (size_t)s->host_end : sizeof h;
    if (!sg_pread_full(s->fd, h, hl, 0, "qcow2 header", err))
        return false;
    if (sg_be32(h) != QCOW2_MAGIC) {
        sg_error_set(err, "qcow2: bad magic (not a qcow2 image)");
        return false;
    }
    s->version = sg_be32(h + 4);
    if (s->version != 2 && s->version != 3) {
        sg_error_set(err, "unsupported qcow2 version %u", s->version);
        return false;
    }
    if (sg_be64(h + 8) != 0)
        return unsupported(err, "backing file");
    s->cluster_bits = sg_be32(h + 20);
    if (s->cluster_bits < 9 || s->cluster_bits > 21) {
        sg_error_set(err, "qcow2: cluster size 2^%u is not between 512 and 2 MiB",
                     s->cluster_bits);
        return false;
    }
    s->cluster_size = 1ULL << s->cluster_bits;
    s->l2_bits = s->cluster_bits - 3;
    s->size = sg_be64(h + 24);
    if (sg_be32(h + 32) != 0)
        return unsupported(err, "encryption");
    s->l1_size = sg_be32(h + 36);
    s->l1_offset = sg_be64(h + 40);
    s->rt_offset = sg_be64(h + 48);
    s->rt_clusters = sg_be32(h + 56);
    uint32_t nb = sg_be32(h + 60);
    s->snapshots_offset = sg_be64(h + 64);
    s->refcount_order = 4;
    s->header_length = 72;
    if (s->version == 3) {
        if (hl < 104) {
            sg_error_set(err, "qcow2: file is too short for a version 3 header");
            return false;
        }
        s->incompat = sg_be64(h + 72);
        s->compat = sg_be64(h + 80);
        s->autoclear = sg_be64(h + 88);
        s->refcount_order = sg_be32(h + 96);
        s->header_length = sg_be32(h + 100);
        if (s->header_length < 104 || s->header_length > s->cluster_size) {
            sg_error_set(err, "qcow2: bad header length %u", s->header_length);
            return false;
        }
        if (s->header_length > 104 && h[104] != 0 && (s->incompat & (1ULL << 3)))
            return unsupported(err, "compression type zstd");
    }
    /* As QEMU: a corrupt image opens read-only only (for check and info). */
    if ((s->incompat & (1ULL << 1)) && !s->rdonly) {
        sg_error_set(err, "qcow2: Image is corrupt; cannot be opened read/write (run "
                     "'qemu-img check -r all')");
        return false;
    }
    if (s->incompat & (1ULL << 2))
        return unsupported(err, "external data file");
    if (s->incompat & (1ULL << 4))
        return unsupported(err, "extended L2 entries");
    if (s->incompat & (1ULL << 3))
        return unsupported(err, "compression type");
    if ((s->incompat & 1) && !s->rdonly)
        return unsupported(err, "dirty bit (lazy refcounts; run 'qemu-img check -r all')");
    if (s->incompat & ~0x1fULL) {
        sg_error_set(err, "unsupported qcow2 feature: unknown incompatible feature bits %#llx",
                     (unsigned long long)(s->incompat & ~0x1fULL));
        return false;
    }
    if (s->refcount_order > 6) {
        sg_error_set(err, "qcow2: refcount width 2^%u bits is invalid", s->refcount_order);
        return false;
    }
    s->rb_bits = s->cluster_bits + 3 - s->refcount_order;

    /* Sizes: QEMU's own limits, and nothing that overflows our arithmetic. */
    if (s->size > (1ULL << 60)) {
        sg_error_set(err, "qcow2: virtual size %llu is too large", (unsigned long long)s->size);
        return false;
    }
    if ((uint64_t)s->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
        sg_error_set(err, "qcow2: active L1 table too large (%u entries)", s->l1_size);
        return false;
    }
    if (s->l1_size < qcow2_size_to_l1(s, s->size)) {
        sg_error_set(err, "qcow2: L1 table is too small for the virtual size");
        return false;
    }
    if ((uint64_t)s->rt_clusters * s->cluster_size > QCOW2_MAX_RT_BYTES || s->rt_clusters == 0) {
        sg_error_set(err, "qcow2: bad refcount table size (%u clusters)", s->rt_clusters);
        return false;
    }
    if (!qcow2_check_table(s, s->rt_offset, (uint64_t)s->rt_clusters * s->cluster_size,
                           "refcount table", err))
        return false;
    if (s->l1_size && !qcow2_check_table(s, s->l1_offset, (uint64_t)s->l1_size * 8,
                                         "active L1 table", err))
        return false;
    if (nb > QCOW2_MAX_SNAPSHOTS) {
        sg_error_set(err, "qcow2: too many snapshots (%u)", nb);
        return false;
    }
    s->nb_snapshots = (int)nb;
    /* The refcount table and the L1 table must not overlap. */
    if (s->l1_size) {
        uint64_t a0 = s->l1_offset, a1 = a0 + (uint64_t)s->l1_size * 8;
        uint64_t b0 = s->rt_offset, b1 = b0 + (uint64_t)s->rt_clusters * s->cluster_size;
        if (a0 < b1 && b0 < a1) {
            sg_error_set(err, "qcow2: active L1 table overlaps the refcount table");
            return false;
        }
    }

    /* Header extensions live in the rest of cluster 0. */
    size_t ext_len = (size_t)(s->host_end < s->cluster_size ? s->host_end : s->cluster_size);
    uint8_t *c0 = malloc(ext_len);
    if (!c0) {
        sg_error_set(err, "out of memory");
        return false;
    }
    bool ok = sg_pread_full(s->fd, c0, ext_len, 0, "qcow2 header", err) &&
              parse_extensions(s, c0, ext_len, err);
    free(c0);
    return ok;
}

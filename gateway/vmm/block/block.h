/* block.h: the block layer seen by the rest of snapgate-vmm (virtio-blk,
 * vmstate, QMP commands, snapgate-img).  One opaque handle per image; the
 * format (qcow2 or raw) is a driver behind it.  Knows nothing of KVM.
 *
 * All functions return false / -1 on failure and fill *err (may be NULL).
 * Not thread-safe: the caller serialises access to one sg_block (the VMM
 * holds a per-disk lock shared by the virtio-blk path and the job engine).
 * Exceptions, safe without that lock while the image is open: the
 * constant properties (format, filename, size, read-only, cluster size),
 * sg_block_actual_size (an fstat) and sg_block_snapshot_list_published. */
#ifndef SG_BLOCK_H
#define SG_BLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "sg_error.h"

struct sg_block;

enum sg_block_open_flags {
    SG_BLOCK_RDONLY = 1 << 0,
    /* Share every permission with other users (qemu-img -U): read-only only. */
    SG_BLOCK_FORCE_SHARE = 1 << 1,
    /* Writable open for sg_block_check_repair only (snapgate-img check -r):
     * images with compressed clusters are not refused, since a repair only
     * rewrites refcount blocks (guest I/O on a compressed cluster still
     * fails, qcow2_cluster.c). */
    SG_BLOCK_REPAIR = 1 << 2,
};

/* format: "qcow2", "raw" or NULL to probe (qcow2 magic, else raw).
 * Takes QEMU's image locks (block_lock.c): fails with QEMU's
 * 'Failed to get "write" lock' when another process (QEMU, qemu-img,
 * snapgate) holds a permission this open needs or refuses to share. */
struct sg_block *sg_block_open(const char *path, const char *format,
                               unsigned flags, struct sg_error *err);
void sg_block_close(struct sg_block *bs);

const char *sg_block_format(const struct sg_block *bs);   /* "qcow2" | "raw" */
const char *sg_block_filename(const struct sg_block *bs);
uint64_t sg_block_size(const struct sg_block *bs);        /* virtual size, bytes */
bool sg_block_readonly(const struct sg_block *bs);
bool sg_block_can_snapshot(const struct sg_block *bs);    /* qcow2 only */
uint64_t sg_block_cluster_size(const struct sg_block *bs); /* 0 for raw */
int64_t sg_block_actual_size(const struct sg_block *bs);  /* bytes used on the host */

/* Guest data.  Offsets and lengths need not be aligned. */
bool sg_block_read(struct sg_block *bs, uint64_t off, void *buf, size_t len,
                   struct sg_error *err);
bool sg_block_write(struct sg_block *bs, uint64_t off, const void *buf,
                    size_t len, struct sg_error *err);
/* Zero (and deallocate when whole clusters are covered). */
bool sg_block_discard(struct sg_block *bs, uint64_t off, uint64_t len,
                      struct sg_error *err);
bool sg_block_flush(struct sg_block *bs, struct sg_error *err);
/* The errno that put the image into its error state (a failed metadata
 * write or flush, or a refused overlapping write: EIO), else 0.  In that
 * state every write and flush fails; reopen the image to recover. */
int sg_block_io_error(const struct sg_block *bs);

/* ---- Internal snapshots (qcow2) ---------------------------------------- */

struct sg_snapshot_info {
    char id[128];            /* numeric string, unique in the image */
    char *name;              /* tag, malloc'ed; may be "" */
    uint64_t vm_state_size;  /* bytes of VM state saved with it (0: disk only) */
    uint64_t date_sec;       /* wall clock when taken */
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;  /* guest clock when taken */
    uint64_t disk_size;      /* virtual disk size when taken */
    int64_t icount;          /* -1 */
    /* create: record `icount` (qemu-img snapshot -c writes 0); false
     * records -1, as savevm does. */
    bool has_icount;
};

/* A snapshot tag is at most 255 bytes of valid UTF-8 (QEMU keeps 255 bytes
 * of a name in memory; the qcow2 field would hold 65535).  Longer or
 * non-UTF-8 tags are refused before anything is written, never cut.
 * Tags already in an image (e.g. Latin-1 ones made by qemu-img, or longer
 * ones) are listed and matched as they are. */
#define SG_SNAPSHOT_TAG_MAX 255
bool sg_snapshot_tag_check(const char *tag, struct sg_error *err);
/* Whether s is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
bool sg_utf8_valid(const char *s);
/* Length of the valid UTF-8 sequence at s, 0 if none (or at the NUL). */
size_t sg_utf8_seq(const char *s);
/* A malloc'ed copy of s in which each byte that is not part of valid UTF-8
 * is U+FFFD, as QEMU's JSON writer shows such a tag; NULL when out of
 * memory. */
char *sg_utf8_lossy(const char *s);

/* Returns the number of snapshots (table order) and a malloc'ed array in *out,
 * or -1.  Free with sg_snapshot_info_free_list. */
int sg_block_snapshot_list(struct sg_block *bs, struct sg_snapshot_info **out,
                           struct sg_error *err);
void sg_snapshot_info_free_list(struct sg_snapshot_info *list, int n);
/* The same list as sg_block_snapshot_list returned after the last change
 * of the snapshot table (a copy made under a small lock of its own when
 * the table changed), without touching the image: for the monitor, which
 * must not wait for a writer holding the image (a save's vmstate writes,
 * guest I/O).  A snapshot appears here once its creation has committed
 * and disappears once its deletion has. */
int sg_block_snapshot_list_published(struct sg_block *bs, struct sg_snapshot_info **out,
                                     struct sg_error *err);

/* Creates a snapshot of the current state (and of the vmstate area written so
 * far with sg_block_vmstate_write; vm_state_size bytes of it count).  The new
 * ID is max(existing IDs) + 1, written to info->id.  info->name, date_*,
 * vm_clock_nsec, vm_state_size are taken from *info.  Afterwards the active
 * vmstate area is discarded (as QEMU does).  Crash-safe: the snapshot exists
 * after one header/table switch, or not at all. */
bool sg_block_snapshot_create(struct sg_block *bs, struct sg_snapshot_info *info,
                              struct sg_error *err);
/* Reverts the active disk to the snapshot with this exact ID. */
bool sg_block_snapshot_goto(struct sg_block *bs, const char *id,
                            struct sg_error *err);
/* Deletes the snapshot with this exact ID. */
bool sg_block_snapshot_delete(struct sg_block *bs, const char *id,
                              struct sg_error *err);

/* ---- VM state area (after the virtual disk, as QEMU) --------------------
 * Before a snapshot is created these access the active image's vmstate area;
 * sg_block_vmstate_read_snapshot reads the one saved in snapshot `id`
 * (off + len must lie within its vm_state_size).  The area starts at the
 * first L1-table boundary after the virtual disk, exactly where QEMU puts it
 * (a QEMU savevm's state reads back here, starting with "QEVM").
 * All-zero clusters written here stay unallocated. */
bool sg_block_vmstate_write(struct sg_block *bs, uint64_t off, const void *buf,
                            size_t len, struct sg_error *err);
bool sg_block_vmstate_read_snapshot(struct sg_block *bs, const char *id,
                                    uint64_t off, void *buf, size_t len,
                                    struct sg_error *err);
/* Drops whatever the active vmstate area holds (e.g. a cancelled save). */
bool sg_block_vmstate_discard(struct sg_block *bs, struct sg_error *err);

/* Allocation map of a snapshot's vmstate, so a reader can skip what reads
 * as zeros without reading it.  Describes [off, off+len) (same bounds as
 * sg_block_vmstate_read_snapshot) as consecutive extents in order, adjacent
 * ones of the same kind merged; fills at most `max` and returns how many
 * (then the last one may end before off+len: ask again from its end), or -1.
 * Granularity is the cluster; "allocated" means the cluster has data on the
 * host (which may still be zero bytes), unallocated means it reads as zeros. */
struct sg_block_extent {
    uint64_t off, len;       /* bytes, within the vmstate area */
    bool allocated;
};
int sg_block_vmstate_map_snapshot(struct sg_block *bs, const char *id, uint64_t off,
                                  uint64_t len, struct sg_block_extent *ext, int max,
                                  struct sg_error *err);

/* True when all `len` bytes are zero; word-at-a-time (buffer_zero.c). */
bool sg_buffer_is_zero(const void *buf, size_t len);

/* ---- Additions for snapgate-img and the VMM (issue 3) ------------------- */

/* Creates a qcow2 v3 image: 16-bit refcounts, cluster size 2^cluster_bits
 * (0 means 64 KiB; 9..21 allowed).  Fails if the file exists. */
bool sg_block_create_qcow2(const char *path, uint64_t size, unsigned cluster_bits,
                           struct sg_error *err);

enum sg_snapshot_match {
    SG_SNAPSHOT_BY_NAME,   /* tag first, then ID (INTERFACES.md section 3) */
    SG_SNAPSHOT_BY_TAG,
    SG_SNAPSHOT_BY_ID,
};
/* Resolves a snapshot name on this image into its ID (written to id_out).
 * Duplicate tags are an error naming the IDs.  Returns false with
 * "Snapshot 'NAME' does not exist" when nothing matches. */
bool sg_block_snapshot_find(struct sg_block *bs, const char *name,
                            enum sg_snapshot_match how, char id_out[128],
                            struct sg_error *err);

struct sg_block_check_result {
    uint64_t corruptions;      /* refcount too low, bad pointers, COPIED wrong */
    uint64_t leaks;            /* refcount too high */
    uint64_t allocated_clusters;
    uint64_t fragmented_clusters;   /* as qemu-img: not right after the previous one */
    uint64_t compressed_clusters;
    uint64_t total_clusters;   /* of the virtual disk */
    uint64_t image_end_offset;
    uint64_t leaks_fixed;      /* by sg_block_check_repair */
    uint64_t leaks_skipped;    /* left: would need an OFLAG_COPIED repair */
    /* Corruptions that are only a refcount too low (or COPIED wrong because
     * of one): SG_BLOCK_FIX_ERRORS can raise them; and how many it did. */
    uint64_t low_refcounts;
    uint64_t corruptions_fixed;
};
/* qemu-img-check-like consistency check of a qcow2 image: refcounts are
 * recomputed from every L1 tree and all metadata.  Each problem found is
 * printed as one line to `report` (may be NULL).  Returns false only when
 * the check could not run. */
bool sg_block_check(struct sg_block *bs, struct sg_block_check_result *res, FILE *report,
                    struct sg_error *err);
/* The cheap check before a change: metadata, the active tree and snapshot
 * snap_id's (NULL: none) walked, the other snapshots' L2 tables read once
 * each (exact refcounts, qcow2_check.c); corruptions counted, leaks not. */
bool sg_block_check_touched(struct sg_block *bs, const char *snap_id,
                            struct sg_block_check_result *res, FILE *report, struct sg_error *err);

/* Repairs like qemu-img check -r: SG_BLOCK_FIX_LEAKS lowers every leaked
 * cluster's refcount (refcount > references) to its reference count.  The
 * image must be open read-write.  Nothing is written when the check finds
 * any corruption (res then describes it), except with SG_BLOCK_FIX_ERRORS
 * (-r all) when every corruption is a refcount too low: those are raised
 * to the reference count first (then leaks are lowered).
 * res describes the image as found; run sg_block_check again for the state
 * after the repair.  Crash safety is argued in qcow2_check.c. */
enum { SG_BLOCK_FIX_LEAKS = 1u << 0, SG_BLOCK_FIX_ERRORS = 1u << 1 };
bool sg_block_check_repair(struct sg_block *bs, unsigned fix,
                           struct sg_block_check_result *res, FILE *report,
                           struct sg_error *err);

struct sg_block_qcow2_info {
    uint32_t version;          /* 2 or 3 */
    uint32_t refcount_bits;
    bool lazy_refcounts;
    bool corrupt;
};
/* Fills *info for a qcow2 image; false for raw. */
bool sg_block_qcow2_info(const struct sg_block *bs, struct sg_block_qcow2_info *info);

/* ---- Live snapshots (qcow2_vmstate_share.c; snapgate-vmm's live,
 * incremental and lazy snapshots).  Each call is one crash-safe
 * transaction. ------------------------------------------------------------- */

/* The disk at this instant, held aside while the active image goes on.  A
 * crash while it is held leaves only leaked clusters. */
struct sg_block_frozen {
    uint64_t l1_offset;
    uint32_t l1_size;
    uint64_t disk_size;
};
bool sg_block_freeze(struct sg_block *bs, struct sg_block_frozen *fz, struct sg_error *err);
/* Makes it a snapshot (as sg_block_snapshot_create: info in, info->id out);
 * with take_vmstate the snapshot also gets the active vmstate area
 * (vm_state_size bytes of it count) and the active image keeps a copy that
 * shares its clusters.  Without, vm_state_size is 0. */
bool sg_block_frozen_snapshot(struct sg_block *bs, struct sg_block_frozen *fz,
                              struct sg_snapshot_info *info, bool take_vmstate,
                              struct sg_error *err);
/* Lets go of it (a failed save). */
bool sg_block_frozen_drop(struct sg_block *bs, struct sg_block_frozen *fz, struct sg_error *err);
/* The active vmstate area becomes a copy of snapshot `id`'s sharing its
 * clusters (refcount + 1), so writing it never changes the snapshot. */
bool sg_block_vmstate_share_from(struct sg_block *bs, const char *id, struct sg_error *err);
/* Host file offset of each cluster of snapshot `id`'s vmstate [off, off+len)
 * (both cluster aligned) into host[len / cluster size]; 0 = reads as zeros.
 * The offsets stay valid while the snapshot exists. */
bool sg_block_vmstate_host_map(struct sg_block *bs, const char *id, uint64_t off, uint64_t len,
                               uint64_t *host, struct sg_error *err);
/* The image file's descriptor: pread of mapped clusters and an fdatasync
 * ahead of a flush may use it without the caller's lock. */
int sg_block_host_fd(struct sg_block *bs);

#endif

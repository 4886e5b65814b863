/* qcow2.h: the qcow2 driver's private state and the functions its files
 * share.  The on-disk format is QEMU's docs/interop/qcow2.txt (version 2 and 3).
 *
 * Refcount model (QEMU's): the refcount of a host cluster is the number of
 * times it is reached when every L1 tree (the active one and each
 * snapshot's) is walked, plus one for each metadata structure that owns it.
 * A shared L2 table therefore adds one to each of its data clusters per tree
 * that reaches it.  In the active tables, COPIED (bit 63) is set exactly when
 * the refcount is 1, i.e. when the cluster may be written in place. */
#ifndef SG_QCOW2_H
#define SG_QCOW2_H

#include "block_int.h"

#define QCOW2_MAGIC 0x514649fbu
#define QCOW2_OFLAG_COPIED     (1ULL << 63)
#define QCOW2_OFLAG_COMPRESSED (1ULL << 62)
#define QCOW2_OFLAG_ZERO       1ULL
#define QCOW2_OFFSET_MASK      0x00fffffffffffe00ULL
#define QCOW2_L1E_RESERVED     0x7f000000000001ffULL
#define QCOW2_L2E_RESERVED     0x3f000000000001feULL
#define QCOW2_REFT_RESERVED    0x1ffULL
#define QCOW2_MAX_L1_BYTES     (32ULL << 20)  /* QEMU's QCOW_MAX_L1_SIZE */
#define QCOW2_MAX_RT_BYTES     (8ULL << 20)   /* QEMU's QCOW_MAX_REFTABLE_SIZE */
#define QCOW2_MAX_SNAPSHOTS    65536
#define QCOW2_MAX_EXTRA        1024
#define QCOW2_SNAP_EXTRA_SIZE  24

/* Header field offsets that are updated in place. */
#define QH_SIZE        24
#define QH_L1_SIZE     36
#define QH_L1_OFFSET   40
#define QH_RT_OFFSET   48
#define QH_RT_CLUSTERS 56
#define QH_NB_SNAP     60
#define QH_SNAP_OFFSET 64
#define QH_INCOMPAT    72
#define QH_AUTOCLEAR   88

/* A small write-back cache of cluster-sized metadata tables (L2 tables or
 * refcount blocks), least recently used out. */
struct qcache_entry {
    uint64_t off;     /* host offset; 0 = empty slot */
    uint8_t *buf;
    bool dirty;
    uint64_t stamp;
};
struct qcache {
    struct qcache_entry *e;
    int *slot;        /* direct-mapped index: hash(off) -> likely entry */
    int n;
    uint64_t tick;
};

struct qsnap {
    uint64_t l1_offset;
    uint32_t l1_size;
    char *id;
    char *name;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    uint64_t disk_size;
    int64_t icount;
    uint32_t unknown_extra_size;  /* extra data past our 24 bytes, kept as is */
    uint8_t *unknown_extra;
};

struct qcow2 {
    struct sg_block *bs;
    int fd;
    const char *fn;
    bool rdonly;

    uint32_t version;
    uint32_t cluster_bits;
    uint64_t cluster_size;
    uint32_t l2_bits;           /* log2 of entries per L2 table */
    uint32_t refcount_order;
    uint32_t rb_bits;           /* log2 of entries per refcount block */
    uint64_t size;
    uint32_t header_length;
    uint64_t incompat, compat, autoclear;

    uint64_t l1_offset;
    uint32_t l1_size;
    uint64_t *l1;               /* host order, may hold unflushed entries */
    bool l1_dirty;

    uint64_t rt_offset;
    uint32_t rt_clusters;
    uint64_t rt_size;           /* entries */
    uint64_t *rt;
    bool rt_dirty;
    /* No refcount-table entry at or above this index is nonzero (only ever
     * raised, so the overlap checks never miss a refcount block; keeps
     * them from walking an 8 MiB table of zeros on every write). */
    uint64_t rt_hi;

    uint64_t snapshots_offset;
    uint64_t snapshots_bytes;
    int nb_snapshots;
    struct qsnap *snaps;

    struct qcache l2c, rbc;
    bool in_flush;              /* evictions write directly (see qcow2_meta_flush) */
    bool data_dirty;            /* guest data written since the last fdatasync */

    uint64_t *pending;          /* clusters whose refcount drops at the next flush */
    size_t npending, cap_pending;

    uint64_t free_hint;         /* no free cluster below this index */

    /* The L1 table of the snapshot last read by vmstate_read_snapshot
     * (a lazy load reads page by page); dropped when the table changes. */
    char *snap_l1_id;
    uint64_t *snap_l1;

    /* Transaction (qcow2_txn.c): everything the committed image uses lies
     * below txn_floor; new metadata goes above it and refcount changes stay
     * in memory until one header write switches to the new state. */
    bool txn;
    uint64_t txn_floor;         /* cluster index */
    uint64_t *txn_l1, *txn_rt;  /* copies for an abort */
    uint64_t *txn_l1_table;     /* the active L1 array at begin, txn_l1_size entries */
    uint32_t txn_l1_size;       /* (a goto swaps in another before the commit) */
    uint64_t txn_host_end;
    uint64_t host_end;          /* bytes: max(file size, allocated end) */
    /* Allocating writes (qcow2_cluster.c, write_new): the file is at least
     * this long (it never shrinks, so an old fstat stays a lower bound), and
     * whether FALLOC_FL_ZERO_RANGE proved unsupported. */
    uint64_t file_size_lb;
    bool no_zero_range;

    /* Error state (qcow2_overlap.c): the errno of the first failed
     * metadata write or sync; from then on nothing more is written (the
     * on-disk state is unknown, as after a failed fsync in SQLite). */
    int broken;
    bool corrupt_reported;
    /* Clusters whose refcount dropped to zero, handed back to the host
     * (punched) once nothing on disk can reach them any more. */
    uint64_t *freed;
    size_t nfreed, cap_freed;
    bool no_punch;
};

static inline struct qcow2 *qcow2_state(const struct sg_block *bs)
{
    return (struct qcow2 *)bs->opaque;
}

uint64_t sg_be64(const uint8_t *p);
uint32_t sg_be32(const uint8_t *p);
uint16_t sg_be16(const uint8_t *p);
void sg_put_be64(uint8_t *p, uint64_t v);
void sg_put_be32(uint8_t *p, uint32_t v);
void sg_put_be16(uint8_t *p, uint16_t v);

/* qcow2_header.c */
bool qcow2_header_parse(struct qcow2 *s, struct sg_error *err);
bool qcow2_header_update(struct qcow2 *s, unsigned off, const void *buf, size_t len,
                         struct sg_error *err);
uint64_t qcow2_size_to_l1(const struct qcow2 *s, uint64_t size);
uint64_t qcow2_vmstate_offset(const struct qcow2 *s);
bool qcow2_check_table(const struct qcow2 *s, uint64_t off, uint64_t bytes, const char *what,
                       struct sg_error *err);

/* qcow2_cache.c */
bool qcache_init(struct qcache *c, int n, size_t cluster_size);
void qcache_free(struct qcache *c);
/* Returns the table at host offset off, reading it when absent. */
uint8_t *qcache_get(struct qcow2 *s, struct qcache *c, uint64_t off, const char *what,
                    struct sg_error *err);
/* Puts a new table (a copy of buf, or zeros when NULL) at off, dirty. */
uint8_t *qcache_new(struct qcow2 *s, struct qcache *c, uint64_t off, const uint8_t *buf,
                    struct sg_error *err);
void qcache_mark_dirty(struct qcache *c, uint64_t off);
void qcache_drop(struct qcache *c, uint64_t off);
void qcache_drop_all(struct qcache *c);
bool qcache_rekey(struct qcache *c, uint64_t from, uint64_t to);
uint64_t qcache_dirty_below(const struct qcache *c, uint64_t limit);
/* Writes dirty tables; returns the number written or -1. */
int qcache_write_dirty(struct qcow2 *s, struct qcache *c, const char *what,
                       struct sg_error *err);

/* qcow2_refcount.c */
bool qcow2_rc_load(struct qcow2 *s, struct sg_error *err);
bool qcow2_get_refcount(struct qcow2 *s, uint64_t cluster, uint64_t *rc, struct sg_error *err);
bool qcow2_inc_refcount(struct qcow2 *s, uint64_t cluster, struct sg_error *err);
/* Immediate decrement: only for clusters nothing on disk points at, or
 * inside a transaction (the change stays in memory until the commit). */
bool qcow2_dec_refcount_now(struct qcow2 *s, uint64_t cluster, struct sg_error *err);
bool qcow2_rc_reserve(struct qcow2 *s, uint64_t extra, struct sg_error *err);
bool qcow2_write_rt_at(struct qcow2 *s, uint64_t off, struct sg_error *err);
bool qcow2_write_l1_at(struct qcow2 *s, uint64_t off, struct sg_error *err);
/* Allocates n contiguous clusters (refcount 1); returns the host offset or 0. */
uint64_t qcow2_alloc_clusters(struct qcow2 *s, uint64_t n, struct sg_error *err);
/* Queues a refcount decrement, applied after the pointers are gone. */
bool qcow2_free_later(struct qcow2 *s, uint64_t host_off, struct sg_error *err);
bool qcow2_free_range_later(struct qcow2 *s, uint64_t host_off, uint64_t bytes,
                            struct sg_error *err);
bool qcow2_meta_flush(struct qcow2 *s, struct sg_error *err);
bool qcow2_sync(struct qcow2 *s, struct sg_error *err);

/* qcow2_cluster.c */
enum qcow2_ctype { QC_UNALLOC, QC_ZERO, QC_NORMAL };
bool qcow2_l2_offset(struct qcow2 *s, uint64_t l1e, uint64_t *l2off, struct sg_error *err);
bool qcow2_xlate(struct qcow2 *s, const uint64_t *l1, uint32_t l1_size, uint64_t goff,
                 enum qcow2_ctype *type, uint64_t *host, struct sg_error *err);
/* The host offsets of the n clusters from goff (0 where not QC_NORMAL):
 * one cache lookup per L2 table instead of one per cluster. */
bool qcow2_xlate_run(struct qcow2 *s, const uint64_t *l1, uint32_t l1_size, uint64_t goff,
                     uint64_t n, uint64_t *host, struct sg_error *err);
bool qcow2_read_tree(struct qcow2 *s, const uint64_t *l1, uint32_t l1_size, uint64_t goff,
                     void *buf, size_t len, struct sg_error *err);
bool qcow2_write_at(struct qcow2 *s, uint64_t goff, const void *buf, size_t len,
                    bool skip_zero, struct sg_error *err);
bool qcow2_discard_at(struct qcow2 *s, uint64_t goff, uint64_t len, struct sg_error *err);
bool qcow2_grow_l1(struct qcow2 *s, uint64_t min_size, struct sg_error *err);
/* Replaces the active L1 with a new table at a new place in one header write. */
bool qcow2_install_l1(struct qcow2 *s, const uint64_t *l1, uint32_t l1_size, uint64_t new_size,
                      uint64_t vsize, struct sg_error *err);
/* Queues a decrement for every cluster of an L1 tree (from index `from`). */
bool qcow2_tree_free_later(struct qcow2 *s, const uint64_t *l1, uint32_t l1_size, uint32_t from,
                           struct sg_error *err);

/* qcow2_overlap.c: QEMU's metadata overlap checks, the error state, and
 * returning freed clusters to the host. */
enum {
    QOL_HEADER = 1 << 0,
    QOL_ACTIVE_L1 = 1 << 1,
    QOL_ACTIVE_L2 = 1 << 2,
    QOL_REFCOUNT_TABLE = 1 << 3,
    QOL_REFCOUNT_BLOCK = 1 << 4,
    QOL_SNAPSHOT_TABLE = 1 << 5,
    QOL_INACTIVE_L1 = 1 << 6,
    QOL_ALL = (1 << 7) - 1,
};
/* The first metadata structure (QOL_* bit, outside `ign`) that
 * [off, off+len) overlaps, or 0. */
unsigned qcow2_overlap(const struct qcow2 *s, unsigned ign, uint64_t off, uint64_t len);
/* Writes metadata of kind `self` (not checked against itself).  An overlap
 * marks the image corrupt and writes nothing; any failure is EIO-like and
 * puts the image into the error state. */
bool qcow2_pwrite_meta(struct qcow2 *s, unsigned self, const void *buf, size_t len,
                       uint64_t off, const char *what, struct sg_error *err);
/* Writes guest data (or vmstate) at a host offset, checked against all
 * metadata; a failed write does not break the image (nothing points at
 * the new bytes yet, or they are the guest's own). */
bool qcow2_pwrite_data(struct qcow2 *s, const void *buf, size_t len, uint64_t off,
                       struct sg_error *err);
void qcow2_set_broken(struct qcow2 *s, int errnum);
/* The gate of every modifying entry point: refuses in the error state,
 * and clears the autoclear bits on the first change (never at open: a
 * failed or read-only command leaves the header as it was). */
bool qcow2_begin_change(struct qcow2 *s, struct sg_error *err);
/* Remembers a cluster whose refcount reached zero. */
void qcow2_note_freed(struct qcow2 *s, uint64_t cluster);
/* Punches the remembered clusters that are still free (after the state
 * that freed them is on disk), or forgets them (after an abort). */
void qcow2_punch_freed(struct qcow2 *s);
void qcow2_forget_freed(struct qcow2 *s);
/* Refuses a writable open of an image with compressed clusters. */
bool qcow2_refuse_compressed(struct qcow2 *s, struct sg_error *err);

/* qcow2_txn.c */
bool qcow2_txn_begin(struct qcow2 *s, struct sg_error *err);
void qcow2_txn_abort(struct qcow2 *s);
/* Writes the new state (L1 table, refcount table, refcount blocks, L2
 * tables, snapshot table snaps[0..nb)) to new clusters and switches to it. */
bool qcow2_txn_commit(struct qcow2 *s, struct qsnap *snaps, int nb, bool free_old_l1,
                      uint64_t vsize, struct sg_error *err);

/* Gives the active image private copies (COPIED cleared, data refcounts
 * + 1) of the L2 tables of `l1` below index n; new L1 entries go to dst. */
bool qcow2_txn_copy_tree(struct qcow2 *s, const uint64_t *l1, uint32_t n, uint64_t *dst,
                         struct sg_error *err);
/* Adds addend (+1/-1) to the refcount of everything the tree l1[0..n)
 * reaches, at most `limit` changes (counted in *done); +1 also clears
 * COPIED in its L2 tables (they are about to be shared). */
bool qcow2_tree_ref(struct qcow2 *s, const uint64_t *l1, uint64_t n, int addend, uint64_t limit,
                    uint64_t *done, struct sg_error *err);
/* Takes one reference off everything an L1 tree reaches (in a txn). */
bool qcow2_txn_drop_tree(struct qcow2 *s, const uint64_t *l1, uint32_t n, struct sg_error *err);

/* qcow2_snapshot.c */
uint64_t qcow2_snapshot_table_bytes(const struct qsnap *snaps, int nb);
void qcow2_snapshot_table_encode(const struct qsnap *snaps, int nb, uint8_t *out);
bool qcow2_snapshots_load(struct qcow2 *s, struct sg_error *err);
void qcow2_snapshots_free(struct qcow2 *s);
bool qcow2_read_l1(struct qcow2 *s, uint64_t off, uint32_t n, uint64_t **out,
                   struct sg_error *err);

struct qsnap *qcow2_snaps_copy(struct qcow2 *s, const struct qsnap *add, int *nb,
                               struct sg_error *err);
void qcow2_snaps_install(struct qcow2 *s, struct qsnap *v, int nb);
void qcow2_snaps_free_array(struct qsnap *v, int nb);
/* entry points used by block.c */
uint64_t sg_qcow2_cluster_size(const struct sg_block *bs);
int sg_qcow2_snapshot_list(struct sg_block *bs, struct sg_snapshot_info **out,
                           struct sg_error *err);
bool sg_qcow2_snapshot_create(struct sg_block *bs, struct sg_snapshot_info *info,
                              struct sg_error *err);
bool sg_qcow2_snapshot_goto(struct sg_block *bs, const char *id, struct sg_error *err);
bool sg_qcow2_snapshot_delete(struct sg_block *bs, const char *id, struct sg_error *err);
bool sg_qcow2_vmstate_write(struct sg_block *bs, uint64_t off, const void *buf, size_t len,
                            struct sg_error *err);
bool sg_qcow2_vmstate_read_snapshot(struct sg_block *bs, const char *id, uint64_t off,
                                    void *buf, size_t len, struct sg_error *err);
bool sg_qcow2_vmstate_discard(struct sg_block *bs, struct sg_error *err);
int sg_qcow2_vmstate_map_snapshot(struct sg_block *bs, const char *id, uint64_t off,
                                  uint64_t len, struct sg_block_extent *ext, int max,
                                  struct sg_error *err);

#endif

/* block_int.h: what a format driver (raw, qcow2) provides to block.c.
 * Private to gateway/vmm/block/. */
#ifndef SG_BLOCK_INT_H
#define SG_BLOCK_INT_H

#include "block.h"

#include <pthread.h>

struct sg_block_driver {
    const char *name;
    /* Fills bs->opaque and bs->size; fd is already open (O_RDWR unless rdonly). */
    bool (*open)(struct sg_block *bs, struct sg_error *err);
    void (*close)(struct sg_block *bs);
    bool (*read)(struct sg_block *bs, uint64_t off, void *buf, size_t len, struct sg_error *err);
    bool (*write)(struct sg_block *bs, uint64_t off, const void *buf, size_t len,
                  struct sg_error *err);
    bool (*discard)(struct sg_block *bs, uint64_t off, uint64_t len, struct sg_error *err);
    bool (*flush)(struct sg_block *bs, struct sg_error *err);
};

struct sg_block {
    const struct sg_block_driver *drv;
    char *filename;
    int fd;
    bool readonly;
    bool repair;      /* SG_BLOCK_REPAIR */
    uint64_t size;    /* virtual size */
    void *opaque;     /* driver state */
    /* The snapshot table as last published (sg_block_publish_snapshots),
     * under its own small lock: what sg_block_snapshot_list_published
     * returns without the caller's lock on the image. */
    pthread_mutex_t pub_lock;
    struct sg_snapshot_info *pub;
    int pub_n;        /* -1: not known (out of memory when publishing) */
};

/* Copies the driver's snapshot table into bs->pub; called (with the
 * caller's lock on the image held) after the open and after every change
 * of the in-memory table (qcow2_snapshot.c install_table). */
void sg_block_publish_snapshots(struct sg_block *bs);

/* QEMU's byte-range image locks (block_lock.c). */
bool sg_block_lock(int fd, const char *path, bool readonly, bool force_share,
                   struct sg_error *err);

extern const struct sg_block_driver sg_raw_driver;
extern const struct sg_block_driver sg_qcow2_driver;

/* pread/pwrite that loop over short transfers; a read past EOF is an error
 * naming `what` (metadata must never be silently zero-filled). */
bool sg_pread_full(int fd, void *buf, size_t len, uint64_t off, const char *what,
                   struct sg_error *err);
bool sg_pwrite_full(int fd, const void *buf, size_t len, uint64_t off, const char *what,
                    struct sg_error *err);

#endif

/* ram_hash.h: what guest RAM held at the incremental base (the snapshot
 * last saved or loaded), one 128-bit hash per chunk, so the next save
 * writes exactly the chunks whose content differs (ram_hash.c says why this
 * replaced KVM's dirty log). */
#ifndef SG_VMM_RAM_HASH_H
#define SG_VMM_RAM_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sg_ram_hash {
    uint64_t a, b;
};

struct sg_ram_hashes {
    size_t chunk;        /* bytes per hash: the vmstate chunk of the save/load */
    uint64_t n;          /* chunks: ceil(RAM size / chunk) */
    struct sg_ram_hash *h;
};

struct sg_ram_hashes *sg_ram_hashes_new(uint64_t ram_size, size_t chunk);
void sg_ram_hashes_free(struct sg_ram_hashes *hs);
struct sg_ram_hash sg_ram_hash(const void *p, size_t len);
static inline bool sg_ram_hash_eq(struct sg_ram_hash x, struct sg_ram_hash y)
{
    return x.a == y.a && x.b == y.b;
}

#endif

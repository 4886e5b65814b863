/* ram_hash.c: content hashes of guest RAM chunks for incremental saves.
 *
 * Why not KVM's dirty log (measured here, gateway/vmm/README.md): with
 * KVM_MEM_LOG_DIRTY_PAGES on its memory slots this host's KVM (kvm_pvm,
 * shadow paging) ran a guest that rewrites its RAM at 2-4 % of its speed
 * for as long as logging stayed on -- that is, from the first save on,
 * between saves too.  A save reads every chunk of RAM at the instant
 * anyway under write-protect (ram_wp.c), so hashing it costs one more pass
 * over memory already in cache, on the save's writer thread, while the
 * guest runs at full speed; and a content hash sees every writer (guest,
 * KVM, the VMM's devices) without any of them marking anything.
 *
 * The hash: four 64-bit multiply-rotate lanes over 32-byte blocks, folded
 * into 128 bits; chunks are whole clusters, so lengths are multiples of 32
 * (a tail is handled anyway).  Not cryptographic: RAM is not an adversary
 * here (the guest gains nothing by making its own snapshot skip a chunk),
 * and two different chunks agree on 128 bits by accident about once in
 * 2^128. */
#include <stdlib.h>
#include <string.h>

#include "ram_hash.h"

#define K1 0x9e3779b185ebca87ull
#define K2 0xc2b2ae3d27d4eb4full
#define K3 0x165667b19e3779f9ull
#define K4 0x85ebca77c2b2ae63ull

static inline uint64_t rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t lane(uint64_t acc, uint64_t w)
{
    acc += w * K2;
    acc = rotl(acc, 31);
    return acc * K1;
}

static inline uint64_t fmix(uint64_t x)
{
    x ^= x >> 33;
    x *= K2;
    x ^= x >> 29;
    x *= K3;
    x ^= x >> 32;
    return x;
}

struct sg_ram_hash sg_ram_hash(const void *p, size_t len)
{
    const unsigned char *s = p;
    uint64_t v1 = K1 + K2, v2 = K2, v3 = 0, v4 = 0 - K1;
    size_t i = 0;
    for (; i + 32 <= len; i += 32) {
        uint64_t w[4];
        memcpy(w, s + i, 32);
        v1 = lane(v1, w[0]);
        v2 = lane(v2, w[1]);
        v3 = lane(v3, w[2]);
        v4 = lane(v4, w[3]);
    }
    uint64_t tail = 0;
    for (size_t k = 0; i < len; i++, k++)
        tail ^= (uint64_t)s[i] << ((k % 8) * 8) ^ (uint64_t)(k / 8) * K4;
    uint64_t a = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
    uint64_t b = rotl(v1, 29) ^ rotl(v2, 41) ^ rotl(v3, 47) ^ rotl(v4, 59);
    a = fmix(a ^ tail ^ (uint64_t)len * K3);
    b = fmix(b + a + (uint64_t)len * K4);
    return (struct sg_ram_hash){ a, b };
}

struct sg_ram_hashes *sg_ram_hashes_new(uint64_t ram_size, size_t chunk)
{
    struct sg_ram_hashes *hs = calloc(1, sizeof(*hs));
    if (!hs || !chunk)
        goto fail;
    hs->chunk = chunk;
    hs->n = (ram_size + chunk - 1) / chunk;
    hs->h = calloc(hs->n ? hs->n : 1, sizeof(*hs->h));
    if (!hs->h)
        goto fail;
    return hs;
fail:
    sg_ram_hashes_free(hs);
    return NULL;
}

void sg_ram_hashes_free(struct sg_ram_hashes *hs)
{
    if (!hs)
        return;
    free(hs->h);
    free(hs);
}

/* ram_dirty.c: which pages of guest RAM changed since the last snapshot
 * saved or loaded (the "base"), so the next save rewrites only those.
 *
 * Two writers change guest RAM: the guest, through KVM (tracked by KVM's
 * dirty log: KVM_MEM_LOG_DIRTY_PAGES on both memory slots, read and
 * cleared with KVM_GET_DIRTY_LOG, exact on this host), and the VMM itself
 * (devices reach guest memory only through sg_vm_gpa, which marks what it
 * hands out -- reads too, an over-approximation that costs a few pages).
 * Anything else that rewrites RAM wholesale (reset, a load) marks all of it
 * (sg_ram_dirty_all) or sets a new base.  `acc` holds the pages changed
 * since the base that a harvest has collected; a failed save leaves them
 * there, so nothing is lost until a save succeeds. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "ram_dirty.h"
#include "vm.h"

struct sg_ram_dirty {
    uint64_t npages, words;
    size_t page_size;
    _Atomic uint64_t *host;   /* set by sg_vm_gpa's users (any thread) */
    uint64_t *acc;
    uint64_t *kvm;            /* one slot's bitmap */
    bool logging;
};

bool sg_ram_dirty_start(struct sg_vm *vm, struct sg_error *err)
{
    if (vm->dirty)
        return true;
    struct sg_ram_dirty *d = calloc(1, sizeof(*d));
    long ps = sysconf(_SC_PAGESIZE);
    if (!d) {
        sg_error_set(err, "out of memory");
        return false;
    }
    d->page_size = ps > 0 ? (size_t)ps : 4096;
    d->npages = vm->ram_size / d->page_size;
    d->words = (d->npages + 63) / 64;
    d->host = calloc(d->words, sizeof(uint64_t));
    d->acc = malloc(d->words * sizeof(uint64_t));
    d->kvm = calloc(d->words, sizeof(uint64_t));
    if (!d->host || !d->acc || !d->kvm) {
        sg_error_set(err, "out of memory");
        sg_ram_dirty_free(d);
        return false;
    }
    memset(d->acc, 0xff, d->words * sizeof(uint64_t));   /* no base yet: all changed */
    if (!sg_vm_set_ram_slots(vm, KVM_MEM_LOG_DIRTY_PAGES, err)) {
        sg_ram_dirty_free(d);
        return false;
    }
    d->logging = true;
    vm->dirty = d;
    return true;
}

void sg_ram_dirty_free(struct sg_ram_dirty *d)
{
    if (!d)
        return;
    free((void *)d->host);
    free(d->acc);
    free(d->kvm);
    free(d);
}

void sg_ram_dirty_mark(struct sg_vm *vm, uint64_t index, uint64_t len)
{
    struct sg_ram_dirty *d = vm->dirty;
    if (!d || !len)
        return;
    uint64_t first = index / d->page_size, last = (index + len - 1) / d->page_size;
    for (uint64_t p = first; p <= last && p < d->npages; p++)
        atomic_fetch_or(&d->host[p / 64], 1ull << (p % 64));
}

void sg_ram_dirty_all(struct sg_vm *vm)
{
    if (vm->dirty)
        memset(vm->dirty->acc, 0xff, vm->dirty->words * sizeof(uint64_t));
}

/* ORs one slot's KVM log into acc at page offset `first` (a multiple of 64
 * pages: the slots split at 3 GiB at most, or not at all). */
static bool harvest_slot(struct sg_vm *vm, struct sg_ram_dirty *d, uint32_t slot, uint64_t first,
                         uint64_t npages, struct sg_error *err)
{
    if (!npages)
        return true;
    memset(d->kvm, 0, ((npages + 63) / 64) * 8);
    struct kvm_dirty_log log = { .slot = slot, .dirty_bitmap = d->kvm };
    if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) {
        sg_error_set_errno(err, errno, "KVM_GET_DIRTY_LOG (slot %u)", slot);
        return false;
    }
    for (uint64_t w = 0; w < (npages + 63) / 64; w++)
        d->acc[first / 64 + w] |= d->kvm[w];
    return true;
}

static bool sg_ram_dirty_harvest(struct sg_vm *vm, struct sg_error *err)
{
    struct sg_ram_dirty *d = vm->dirty;
    if (!d) {
        sg_error_set(err, "RAM dirty tracking is off");
        return false;
    }
    uint64_t low = vm->ram_low / d->page_size;
    if (!harvest_slot(vm, d, 0, 0, low, err) ||
        !harvest_slot(vm, d, 1, low, d->npages - low, err))
        return false;
    for (uint64_t w = 0; w < d->words; w++)
        d->acc[w] |= atomic_exchange(&d->host[w], 0);
    return true;
}

uint64_t *sg_ram_dirty_take(struct sg_vm *vm, struct sg_error *err)
{
    if (!sg_ram_dirty_harvest(vm, err))
        return NULL;
    struct sg_ram_dirty *d = vm->dirty;
    uint64_t *bits = malloc(d->words * sizeof(uint64_t));
    if (!bits) {
        sg_error_set(err, "out of memory");
        return NULL;
    }
    memcpy(bits, d->acc, d->words * sizeof(uint64_t));
    memset(d->acc, 0, d->words * sizeof(uint64_t));
    return bits;
}

void sg_ram_dirty_giveback(struct sg_vm *vm, const uint64_t *bits)
{
    if (!vm->dirty || !bits)
        return;
    for (uint64_t w = 0; w < vm->dirty->words; w++)
        vm->dirty->acc[w] |= bits[w];
}

bool sg_ram_dirty_test(const uint64_t *bits, size_t page_size, uint64_t index, uint64_t len)
{
    uint64_t first = index / page_size, last = (index + len - 1) / page_size;
    for (uint64_t p = first; p <= last; p++)
        if (bits[p / 64] & (1ull << (p % 64)))
            return true;
    return false;
}

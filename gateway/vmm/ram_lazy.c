/* ram_lazy.c: a snapshot load whose guest runs before its RAM is read.
 *
 * Guest RAM is swapped for empty memory registered with userfaultfd
 * (MISSING mode) and the guest resumes at once; a filler thread then
 * serves every first touch (the guest through KVM, whose get_user_pages
 * waits on the fault like any user access; the VMM's own devices alike)
 * by copying in the 64 KiB cluster it falls in (UFFDIO_COPY, or
 * UFFDIO_ZEROPAGE for clusters the snapshot leaves unallocated), and
 * between faults fills the rest in order until all of RAM is there.
 *
 * Why userfaultfd and not a private mapping of the image: after an
 * incremental save the vmstate clusters are not contiguous in the file,
 * and a MAP_PRIVATE page keeps reading the file until written, so the
 * clusters would have to stay untouched for as long as the guest runs.
 * Here RAM is ordinary anonymous memory once the fill ends.
 *
 * The filler reads the image with pread at host offsets mapped before the
 * guest resumed (sg_block_vmstate_host_map) and takes no lock: the vCPU
 * that faults may hold its drive's lock (virtio-blk copying into guest
 * memory).  Those offsets stay valid because the snapshot cannot change
 * while the load job runs: every other snapshot job and the internal
 * snapshot commands are refused while a job is active, and nothing else
 * writes a cluster with a reference from a snapshot (copy-on-write).
 *
 * The old RAM is moved aside with mremap (page tables move, nothing is
 * freed in the pause) into a place reserved beforehand (vm->ram_aside);
 * the filler frees its pages and keeps the place for the next load. */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ram_hash.h"
#include "ram_lazy.h"
#include "ram_live.h"
#include "trace.h"
#include "vmstate.h"
#include "vm.h"

#define BATCH 16   /* clusters per background read */

struct sg_ram_lazy {
    struct sg_vm *vm;
    int fd;                  /* the image (not ours: never closed here) */
    int uffd;
    uint64_t cs, nclusters;
    uint64_t *host;          /* per RAM cluster: file offset, 0 = zeros */
    uint8_t *filled;
    char *buf;
    struct sg_ram_hashes *hashes;   /* of what was filled: the next save's base */
    struct sg_ram_hash zero_hash;   /* of a zero chunk */
    void *old_ram;           /* moved aside, unmapped by the filler */
    size_t old_len;
    void *aside;             /* reserved for old_ram (PROT_NONE), aside_len long */
    size_t aside_len;
    uint64_t reg_len;        /* registered from vm->ram */
    pthread_t thread;
    bool started;
    atomic_bool stop, finished;
    atomic_bool armed;       /* RAM swapped: the filler cleans up after itself */
    atomic_bool go;          /* the guest runs: fill in the background too */
    int wake_fd;             /* eventfd: go or stop */
    pthread_mutex_t fill_lock;   /* fill() and its buffer: the filler, or arm's prefill */
    uint64_t pv[8 * SG_VM_MAX_VCPUS];   /* RAM offsets of the pages arm puts in */
    int npv;
    char *stage;             /* their bytes, 4 KiB each */
    _Atomic uint64_t done;   /* clusters filled */
    uint64_t next;           /* background cursor */
    bool failed;
    struct sg_error err;
};

static void *filler(void *arg);

/* The hash of a zero chunk, worked out once (64 KiB of hashing was a
 * good part of the 1.6-4.7 ms prepare took in the kvm bed). */
static bool zero_hash(size_t chunk, struct sg_ram_hash *out)
{
    static size_t have_chunk;
    static struct sg_ram_hash have;
    if (have_chunk != chunk) {
        void *zeros = calloc(1, chunk);
        if (!zeros)
            return false;
        have = sg_ram_hash(zeros, chunk);
        have_chunk = chunk;
        free(zeros);
    }
    *out = have;
    return true;
}


/* Reads `len` bytes of the image at `off` into dst; zeros past its end
 * (QEMU leaves the file's last cluster short). */
static bool read_at(struct sg_ram_lazy *lz, char *dst, uint64_t off, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(lz->fd, dst + got, len - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            sg_error_set_errno(&lz->err, errno, "lazy load: reading the VM state");
            return false;
        }
        if (r == 0) {
            memset(dst + got, 0, len - got);
            break;
        }
        got += (size_t)r;
    }
    return true;
}

/* The guest pages at `first` (what KVM touches as the state is applied),
 * read now so that arm only copies them in.  Pages, not their clusters:
 * in the kvm bed each page UFFDIO_COPY placed cost ~20 us of the pause
 * (1-1.7 ms for the clusters of a Linux guest's 1 vCPU).  Their clusters
 * stay unfilled (the fill skips the pages already there, prefilled()) and
 * are hashed when filled, from the file. */
static bool stage(struct sg_ram_lazy *lz, const uint64_t *first, int npages)
{
    const uint64_t pg = 4096;
    for (int i = 0; i < npages && lz->npv < (int)(sizeof(lz->pv) / sizeof(lz->pv[0])); i++) {
        const char *p = sg_vm_gpa(lz->vm, first[i] & ~(pg - 1), pg);
        if (p)
            lz->pv[lz->npv++] = (uint64_t)(p - (const char *)lz->vm->ram);
    }
    if (!lz->npv)
        return true;
    lz->stage = malloc((size_t)lz->npv * pg);
    if (!lz->stage) {
        sg_error_set(&lz->err, "out of memory");
        return false;
    }
    for (int i = 0; i < lz->npv; i++) {
        uint64_t c = lz->pv[i] / lz->cs, in = lz->pv[i] % lz->cs;
        char *dst = lz->stage + (size_t)i * pg;
        if (!lz->host[c])
            memset(dst, 0, pg);
        else if (!read_at(lz, dst, lz->host[c] + in, pg))
            return false;
    }
    return true;
}

/* Whether RAM offset `off` is one of the pages arm put in. */
static bool prefilled(const struct sg_ram_lazy *lz, uint64_t off)
{
    for (int i = 0; i < lz->npv; i++)
        if (lz->pv[i] == off)
            return true;
    return false;
}

struct sg_ram_lazy *sg_ram_lazy_prepare(struct sg_vm *vm, struct sg_block *bs, const char *snap_id,
                                        uint64_t ram_offset, const uint64_t *first, int npages,
                                        struct sg_error *err)
{
    uint64_t cs = sg_block_cluster_size(bs);
    long ps = sysconf(_SC_PAGESIZE);
    if (!cs || cs < (uint64_t)ps || ram_offset % cs || vm->ram_size % cs) {
        sg_error_set(err, "lazy load: cluster size %llu does not fit guest pages",
                     (unsigned long long)cs);
        return NULL;
    }
    struct sg_ram_lazy *lz = calloc(1, sizeof(*lz));
    if (!lz) {
        sg_error_set(err, "out of memory");
        return NULL;
    }
    lz->vm = vm;
    lz->uffd = -1;
    lz->wake_fd = -1;
    pthread_mutex_init(&lz->fill_lock, NULL);
    lz->cs = cs;
    lz->nclusters = vm->ram_size / cs;
    lz->host = malloc(lz->nclusters * sizeof(uint64_t));
    lz->filled = calloc(lz->nclusters, 1);
    lz->buf = malloc(BATCH * cs);
    size_t chunk = cs > SG_VMSTATE_RAM_OFFSET ? SG_VMSTATE_RAM_OFFSET : (size_t)cs;
    lz->hashes = sg_ram_hashes_new(vm->ram_size, chunk);
    bool zh = zero_hash(chunk, &lz->zero_hash);
    if (!lz->host || !lz->filled || !lz->buf || !lz->hashes || !zh) {
        sg_error_set(err, "out of memory");
        sg_ram_lazy_free(lz);
        return NULL;
    }
    sg_trace_mark("prepare-alloc");
    if (!sg_block_vmstate_host_map(bs, snap_id, ram_offset, vm->ram_size, lz->host, err)) {
        sg_ram_lazy_free(lz);
        return NULL;
    }
    sg_trace_mark("prepare-map");
    lz->fd = sg_block_host_fd(bs);
    if (!stage(lz, first, npages)) {
        *err = lz->err;
        sg_ram_lazy_free(lz);
        return NULL;
    }
    sg_trace_mark("prepare-stage");
    /* Where the old RAM moves in the pause: mremap moves whole page tables
     * (one PMD or PUD entry each) only between equally aligned places,
     * elsewhere every PTE.  Reserved beforehand (vm.h); made here only if
     * that failed. */
    lz->aside_len = sg_vm_ram_span(vm);
    lz->aside = vm->ram_aside ? vm->ram_aside : sg_vm_aligned_space(lz->aside_len, PROT_NONE);
    vm->ram_aside = NULL;
    if (!lz->aside) {
        sg_error_set_errno(err, errno, "lazy load: address space");
        sg_ram_lazy_free(lz);
        return NULL;
    }
    /* Without privilege (vm.unprivileged_userfaultfd = 0) only user-mode
     * faults could be handled, and KVM's are kernel faults: eager load. */
    lz->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    struct uffdio_api api = { .api = UFFD_API };
    if (lz->uffd < 0 || ioctl(lz->uffd, UFFDIO_API, &api) < 0) {
        sg_error_set_errno(err, errno, "lazy load: userfaultfd");
        sg_ram_lazy_free(lz);
        return NULL;
    }
    sg_trace_mark("prepare-uffd");
    /* The filler exists before the pause (a thread created in it started
     * 0.3-0.7 ms later in the kvm bed) and serves only faults until
     * sg_ram_lazy_go. */
    lz->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int e = lz->wake_fd < 0 ? errno : pthread_create(&lz->thread, NULL, filler, lz);
    if (e) {
        sg_error_set_errno(err, e, "lazy load: filler thread");
        sg_ram_lazy_free(lz);
        return NULL;
    }
    lz->started = true;
    return lz;
}

/* The hashes of clusters [c, c+n) as filled: from buf, or zeros. */
static void hash_run(struct sg_ram_lazy *lz, uint64_t c, uint64_t n, const char *buf)
{
    size_t chunk = lz->hashes->chunk;
    uint64_t first = c * lz->cs / chunk, count = n * lz->cs / chunk;
    for (uint64_t k = 0; k < count; k++)
        lz->hashes->h[first + k] = buf ? sg_ram_hash(buf + k * chunk, chunk) : lz->zero_hash;
}

/* Puts `len` bytes at dst: from src, or zeros when src is NULL.  One
 * UFFDIO_COPY/ZEROPAGE normally; but either stops at the first page that
 * is already there (EEXIST; EAGAIN when some went in before it), and the
 * pages after it would be left missing while the cluster counts as filled:
 * the faults on them would only ever be woken, never served.  So then
 * page by page: a missing page is placed, a present one written in place
 * (no fault: it is mapped) unless arm put it in, and every waiter on the
 * range woken. */
static bool place(struct sg_ram_lazy *lz, char *dst, const char *src, uint64_t len)
{
    int r;
    if (src) {
        struct uffdio_copy cp = { .dst = (uint64_t)(uintptr_t)dst, .src = (uint64_t)(uintptr_t)src, .len = len };
        r = ioctl(lz->uffd, UFFDIO_COPY, &cp);
    } else {
        struct uffdio_zeropage z = { .range = { (uint64_t)(uintptr_t)dst, len } };
        r = ioctl(lz->uffd, UFFDIO_ZEROPAGE, &z);
    }
    if (r == 0)
        return true;
    if (errno != EEXIST && errno != EAGAIN) {
        sg_error_set_errno(&lz->err, errno, src ? "lazy load: UFFDIO_COPY" : "lazy load: UFFDIO_ZEROPAGE");
        return false;
    }
    const uint64_t pg = 4096;
    for (uint64_t off = 0; off < len; off += pg) {
        if (src) {
            struct uffdio_copy cp = { .dst = (uint64_t)(uintptr_t)(dst + off),
                                      .src = (uint64_t)(uintptr_t)(src + off), .len = pg,
                                      .mode = UFFDIO_COPY_MODE_DONTWAKE };
            r = ioctl(lz->uffd, UFFDIO_COPY, &cp);
        } else {
            struct uffdio_zeropage z = { .range = { (uint64_t)(uintptr_t)(dst + off), pg },
                                         .mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE };
            r = ioctl(lz->uffd, UFFDIO_ZEROPAGE, &z);
        }
        if (r < 0 && errno == EEXIST) {
            if (prefilled(lz, (uint64_t)(dst + off - (char *)lz->vm->ram)))
                continue;   /* arm's, and KVM or the guest may have written it since */
            if (src)
                memcpy(dst + off, src + off, pg);
            else
                memset(dst + off, 0, pg);
        } else if (r < 0) {
            sg_error_set_errno(&lz->err, errno, "lazy load: placing a page");
            return false;
        }
    }
    struct uffdio_range w = { (uint64_t)(uintptr_t)dst, len };
    ioctl(lz->uffd, UFFDIO_WAKE, &w);
    return true;
}

/* Reads clusters [c, c+n) of the snapshot into lz->buf: one run of the
 * file (their offsets follow each other); 0 < n <= BATCH. */
static bool read_run(struct sg_ram_lazy *lz, uint64_t c, uint64_t n)
{
    return read_at(lz, lz->buf, lz->host[c], n * lz->cs);
}

/* Copies clusters [c, c+n) in (none filled yet) and records their hashes. */
static bool fill(struct sg_ram_lazy *lz, uint64_t c, uint64_t n)
{
    char *dst = (char *)lz->vm->ram + c * lz->cs;
    uint64_t len = n * lz->cs;
    if (!lz->host[c]) {
        if (!place(lz, dst, NULL, len))
            return false;
        hash_run(lz, c, n, NULL);
    } else {
        if (!read_run(lz, c, n))
            return false;
        hash_run(lz, c, n, lz->buf);
        if (!place(lz, dst, lz->buf, len))
            return false;
    }
    memset(lz->filled + c, 1, n);
    atomic_fetch_add(&lz->done, n);
    return true;
}

/* A run of unfilled clusters from c that one read can bring in. */
static uint64_t run_from(struct sg_ram_lazy *lz, uint64_t c)
{
    uint64_t n = 1;
    while (n < BATCH && c + n < lz->nclusters && !lz->filled[c + n] &&
           (lz->host[c] ? lz->host[c + n] == lz->host[c] + n * lz->cs : !lz->host[c + n]))
        n++;
    return n;
}

static bool serve_faults(struct sg_ram_lazy *lz)
{
    struct uffd_msg msg[16];
    for (;;) {
        ssize_t r = read(lz->uffd, msg, sizeof(msg));
        if (r < 0)
            return errno == EAGAIN || errno == EINTR;
        for (size_t i = 0; i < (size_t)r / sizeof(msg[0]); i++) {
            if (msg[i].event != UFFD_EVENT_PAGEFAULT)
                continue;
            uint64_t a = msg[i].arg.pagefault.address - (uint64_t)(uintptr_t)lz->vm->ram;
            uint64_t c = a / lz->cs;
            if (c >= lz->nclusters) {   /* past RAM, in the span: never used */
                struct uffdio_zeropage z = { .range = { msg[i].arg.pagefault.address & ~4095ull, 4096 } };
                ioctl(lz->uffd, UFFDIO_ZEROPAGE, &z);
                continue;
            }
            if (!lz->filled[c]) {
                if (!fill(lz, c, 1))
                    return false;
            } else {
                /* Filled meanwhile (several threads faulted on it). */
                struct uffdio_range w = { (uint64_t)(uintptr_t)lz->vm->ram + c * lz->cs, lz->cs };
                ioctl(lz->uffd, UFFDIO_WAKE, &w);
            }
        }
    }
}

static void wake(struct sg_ram_lazy *lz)
{
    uint64_t one = 1;
    if (lz->wake_fd >= 0)
        (void)!write(lz->wake_fd, &one, sizeof(one));
}

static void *filler(void *arg)
{
    struct sg_ram_lazy *lz = arg;
    bool ok = true;
    while (ok && !atomic_load(&lz->stop) && atomic_load(&lz->done) < lz->nclusters) {
        /* Until go: faults only, so the pause keeps its CPU. */
        bool bg = atomic_load(&lz->go);
        bool more = bg && lz->next < lz->nclusters;
        struct pollfd p[2] = { { lz->uffd, POLLIN, 0 }, { lz->wake_fd, POLLIN, 0 } };
        if (poll(p, 2, more ? 0 : 50) > 0) {
            uint64_t v;
            if (p[1].revents & POLLIN)
                (void)!read(lz->wake_fd, &v, sizeof(v));
            if (p[0].revents & POLLIN) {
                pthread_mutex_lock(&lz->fill_lock);
                ok = serve_faults(lz);
                pthread_mutex_unlock(&lz->fill_lock);
            }
        }
        if (!bg)
            continue;
        pthread_mutex_lock(&lz->fill_lock);
        while (ok && lz->next < lz->nclusters && lz->filled[lz->next])
            lz->next++;
        if (ok && lz->next < lz->nclusters)
            ok = fill(lz, lz->next, run_from(lz, lz->next));
        pthread_mutex_unlock(&lz->fill_lock);
    }
    if (!ok)
        lz->failed = true;
    if (!atomic_load(&lz->armed)) {   /* stopped before RAM was swapped */
        atomic_store(&lz->finished, true);
        return NULL;
    }
    /* Closing the descriptor lets every waiting fault go on as an ordinary
     * one (after a failure: zeros; the job then stops the guest). */
    struct uffdio_range all = { (uint64_t)(uintptr_t)lz->vm->ram, lz->reg_len };
    ioctl(lz->uffd, UFFDIO_UNREGISTER, &all);
    close(lz->uffd);
    lz->uffd = -1;
    /* The old RAM's pages go; its place stays reserved for the next load
     * (an mmap over it: one call, here in the background). */
    if (lz->old_ram && lz->old_len == sg_vm_ram_span(lz->vm) && !lz->vm->ram_aside &&
        mmap(lz->old_ram, lz->old_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
             -1, 0) == lz->old_ram)
        lz->vm->ram_aside = lz->old_ram;
    else if (lz->old_ram)
        munmap(lz->old_ram, lz->old_len);
    lz->old_ram = NULL;
    /* UFFDIO_COPY maps small pages; huge ones keep the next live save's
     * instant cheap.  Only where data was copied in: a collapse of the
     * zero-page ranges would allocate and clear them (4 GiB guest, 16 MiB
     * used: 20 s of clear_page and 4 GiB more resident).  And only after a
     * whole fill: a stopped one leaves RAM to the eager load. */
    uint64_t per = (2u << 20) / lz->cs ? (2u << 20) / lz->cs : 1;
    for (uint64_t c = 0; ok && atomic_load(&lz->done) == lz->nclusters && c < lz->nclusters; c += per) {
        bool data = false;
        for (uint64_t k = c; k < c + per && k < lz->nclusters && !data; k++)
            data = lz->host[k] != 0;
        uint64_t n = lz->nclusters - c < per ? lz->nclusters - c : per;
        if (data)
            sg_ram_collapse((char *)lz->vm->ram + c * lz->cs, n * lz->cs);
    }
    atomic_store(&lz->finished, true);
    return NULL;
}

void sg_ram_lazy_go(struct sg_ram_lazy *lz)
{
    if (!lz)
        return;
    atomic_store(&lz->go, true);
    wake(lz);
}

/* The old RAM moves aside, empty memory registered with userfaultfd takes
 * its place, and the filler serves its faults.  The move makes KVM drop its mappings
 * of the old RAM (its MMU notifier): 0.7-1.5 ms for 1 GiB here.  The
 * 8-39 ms the first load after boot used to spend in this mremap was KSM's
 * page-by-page unmerge of a MADV_MERGEABLE mapping (kvm/vm_kvm.c no longer
 * asks for it).  Deleting and re-creating the memory slots around the move
 * was measured too: 1-15 ms per slot change on this loaded host. */
bool sg_ram_lazy_arm(struct sg_ram_lazy *lz, struct sg_error *err)
{
    struct sg_vm *vm = lz->vm;
    /* The whole span (vm.h): one entry per GiB moves.  It is one mapping
     * unless something split it (a flag set on part of it): then the
     * RAM alone, entry by entry. */
    size_t len = lz->aside_len;
    void *aside = lz->aside;
    lz->aside = NULL;   /* the mapping below takes its place */
    void *moved = mremap(vm->ram, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, aside);
    if (moved == MAP_FAILED && len != vm->ram_size) {
        sg_trace_printf("trace: load: the RAM mapping is split (%s): moving RAM alone", strerror(errno));
        munmap((char *)aside + vm->ram_size, len - vm->ram_size);
        len = vm->ram_size;
        moved = mremap(vm->ram, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, aside);
    }
    if (moved == MAP_FAILED) {
        sg_error_set_errno(err, errno, "lazy load: moving guest RAM");
        munmap(aside, len);
        return false;
    }
    lz->old_ram = moved;
    lz->old_len = len;
    sg_trace_mark("arm-mremap");
    void *fresh = mmap(vm->ram, len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    if (fresh != vm->ram) {
        /* Put the old RAM back: the VM must keep a mapping there. */
        sg_error_set_errno(err, errno, "lazy load: new guest RAM");
        mremap(moved, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, vm->ram);
        lz->old_ram = NULL;
        return false;
    }
    madvise(vm->ram, len, MADV_HUGEPAGE);
    sg_trace_mark("arm-move");
    /* All of it (a part would split the mapping); nothing past ram_size
     * is touched, and a fault there gets a zero page (serve_faults). */
    lz->reg_len = len;
    struct uffdio_register reg = {
        .range = { (uint64_t)(uintptr_t)vm->ram, len },
        .mode = UFFDIO_REGISTER_MODE_MISSING,
    };
    if (ioctl(lz->uffd, UFFDIO_REGISTER, &reg) < 0) {
        sg_error_set_errno(err, errno, "lazy load: UFFDIO_REGISTER");
        return false;   /* the fresh RAM is empty: the caller loads eagerly */
    }
    sg_trace_mark("arm-register");
    /* Here, not through a fault: KVM_SET_MSRS of the pvclock MSR maps its
     * page at once, and a fault there waited 11-14 ms for the filler thread
     * to wake (in the kvm bed, 2026-12-03).  Read and hashed in prepare. */
    bool ok = true;
    pthread_mutex_lock(&lz->fill_lock);
    for (int i = 0; ok && i < lz->npv; i++) {
        struct uffdio_copy cp = { .dst = (uint64_t)(uintptr_t)((char *)vm->ram + lz->pv[i]),
                                  .src = (uint64_t)(uintptr_t)(lz->stage + (size_t)i * 4096), .len = 4096 };
        if (ioctl(lz->uffd, UFFDIO_COPY, &cp) < 0 && errno != EEXIST) {
            sg_error_set_errno(&lz->err, errno, "lazy load: UFFDIO_COPY");
            ok = false;
        }
    }
    pthread_mutex_unlock(&lz->fill_lock);
    if (!ok) {
        *err = lz->err;
        struct uffdio_range all = { (uint64_t)(uintptr_t)vm->ram, lz->reg_len };
        ioctl(lz->uffd, UFFDIO_UNREGISTER, &all);
        return false;
    }
    sg_trace_mark("arm-prefill");
    atomic_store(&lz->armed, true);
    return true;
}

struct sg_ram_hashes *sg_ram_lazy_take_hashes(struct sg_ram_lazy *lz)
{
    struct sg_ram_hashes *hs = lz->hashes;
    lz->hashes = NULL;
    return hs;
}

uint64_t sg_ram_lazy_progress(struct sg_ram_lazy *lz)
{
    return atomic_load(&lz->done) * lz->cs;
}

int sg_ram_lazy_poll(struct sg_ram_lazy *lz, struct sg_error *err)
{
    if (!atomic_load(&lz->finished))
        return 0;
    if (lz->started) {
        pthread_join(lz->thread, NULL);
        lz->started = false;
    }
    if (lz->failed) {
        *err = lz->err;
        return -1;
    }
    return 1;
}

void sg_ram_lazy_free(struct sg_ram_lazy *lz)
{
    if (!lz)
        return;
    if (lz->started) {
        atomic_store(&lz->stop, true);
        wake(lz);
        pthread_join(lz->thread, NULL);
    }
    if (lz->uffd >= 0)
        close(lz->uffd);
    if (lz->wake_fd >= 0)
        close(lz->wake_fd);
    pthread_mutex_destroy(&lz->fill_lock);
    if (lz->old_ram)
        munmap(lz->old_ram, lz->old_len);
    if (lz->aside && !lz->vm->ram_aside)
        lz->vm->ram_aside = lz->aside;   /* not used: kept for the next load */
    else if (lz->aside)
        munmap(lz->aside, lz->aside_len);
    free(lz->host);
    free(lz->filled);
    free(lz->buf);
    free(lz->stage);
    sg_ram_hashes_free(lz->hashes);
    free(lz);
}

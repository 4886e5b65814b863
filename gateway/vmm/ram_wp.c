/* ram_wp.c: the instant of a live save kept by userfaultfd write-protect,
 * 2 MiB at a time.
 *
 * Why (measured here, gateway/vmm/README.md has the numbers): after a
 * fork every first guest write to a 4 KiB page is a copy-on-write fault
 * that also splits its huge page, ~7 us each, so a guest that rewrites all
 * of its RAM runs at 3-5 % of its speed until every page was copied once.
 * Here all of RAM is write-protected at the instant (huge pages stay huge;
 * set just before the pause, and the pause protects again the few regions
 * written in between);
 * the first write into a 2 MiB region stops that one writer until the
 * handler thread has copied the region as it was (one memcpy) and lifted
 * the protection of the whole region: one fault per 2 MiB instead of 512.
 * The save's writer takes regions in order the same way (copy, then lift),
 * so each region is copied exactly once, at its first write or when the
 * writer reaches it, whichever comes first: either way the copy is the
 * region at the instant.  Every writer is caught: the guest through KVM
 * (KVM's MMU notifier drops its writable mappings when the protection is
 * set, so its next write faults through get_user_pages on the host
 * mapping, and KVM's own writes into guest memory go through that
 * mapping too), the VMM's devices alike; pages never touched are
 * protected as well (UFFD_FEATURE_WP_UNPOPULATED).
 *
 * What the guest still pays (measured, README.md): each protect and lift
 * makes KVM drop its mappings of the range, so the guest's next accesses,
 * reads too, fault through KVM again (the wp-limit probe, which only
 * lifts: 76-87 % of the guest's writing speed); and a copy into fresh
 * memory runs at 0.3-1.9 GB/s here (first touches of pages this nested
 * VM's host backs lazily) against 5-7 GB/s into memory in use.  So the
 * handler copies into buffers that are already faulted in (a stock the
 * save's prepare worker faults in before the pause, while the guest runs,
 * for the burst of first writes right after the instant; kept full by the
 * handler while idle; and the copies the writer is done with), and with no
 * fault waiting it copies ahead the regions after the last fault, where a
 * sequential writer goes next, so that writer mostly finds them lifted.
 * Its nice value (SNAPGATE_VMM_WP_NICE, default 0): -5 showed no gain.
 *
 * The handler never takes a lock that a faulting thread may hold (drive
 * locks, io_lock): only this module's own mutex, held for one memcpy.
 * Whatever happens, sg_ram_wp_end lifts every protection before it
 * returns, so no writer stays blocked. */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ram_live.h"
#include "ram_wp.h"
#include "trace.h"
#include "vm.h"

#define REGION (2u << 20)
#ifndef MADV_POPULATE_READ
#define SG_MADV_POPULATE_READ 22   /* Linux 5.14 */
#else
#define SG_MADV_POPULATE_READ MADV_POPULATE_READ
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)   /* Linux 6.4; older headers lack it */
#endif

/* EARLY: lifted by a write before the instant (sg_ram_wp_open protects all
 * of RAM already, so that the pause re-protects only what was written
 * since); protected again in the pause. */
enum { PROTECTED, COPIED, TAKEN, EARLY };

struct sg_ram_wp {
    struct sg_vm *vm;
    int uffd;
    int stop_fd;             /* eventfd: wakes the handler to stop */
    size_t nregions;
    pthread_mutex_t lock;
    uint8_t *state;          /* per region */
    char **copy;             /* COPIED: the handler's copy, until taken */
    char **pool;             /* copies done with, kept for the next (already faulted in) */
    size_t npool, pool_cap;
    size_t last_fault;       /* region of the last guest fault: copy-ahead goes on from it */
    int ahead;               /* regions copied ahead of a fault (0: off) */
    pthread_t thread;
    bool started, registered;
    bool lift_only;          /* the bench's limit probe: lift, never copy */
    bool populate;           /* no UFFD_FEATURE_WP_UNPOPULATED: holes mapped to the zero page */
    _Atomic uint64_t faults; /* regions the handler copied */
    uint64_t serve_ns;       /* the handler's time in serve() (trace) */
    _Atomic uint64_t ahead_copies;
    uint64_t fresh;          /* copies into a buffer made then (lock held; trace) */
    int handler_nice;
    uint64_t copy_ns, lift_ns; /* trace: memcpy and lift time of every capture */
    int stock;               /* spare buffers the handler keeps faulted in */
    atomic_bool go;          /* the guest runs: stocking may begin (not in the pause) */
    bool instant;            /* sg_ram_wp_protect ran (lock): faults copy from here on */
    size_t early;            /* regions EARLY */
    size_t reprotected;      /* trace: regions the pause protected again */
    atomic_bool failed;
};

static bool wp_range(struct sg_ram_wp *wp, uint64_t start, uint64_t len, bool on)
{
    struct uffdio_writeprotect w = {
        .range = { (uint64_t)(uintptr_t)wp->vm->ram + start, len },
        .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
    };
    while (ioctl(wp->uffd, UFFDIO_WRITEPROTECT, &w) < 0) {
        if (errno != EAGAIN && errno != EINTR)
            return false;
    }
    return true;
}

static uint64_t region_len(struct sg_ram_wp *wp, size_t r)
{
    uint64_t off = (uint64_t)r * REGION;
    return wp->vm->ram_size - off < REGION ? wp->vm->ram_size - off : REGION;
}

/* Region r as it was at the instant, into dst (lock held, r PROTECTED),
 * and its protection lifted (which wakes whoever waits on it). */
static uint64_t now_ns(void);

static void capture(struct sg_ram_wp *wp, size_t r, char *dst)
{
    uint64_t len = region_len(wp, r);
    uint64_t t0 = now_ns();
    memcpy(dst, (char *)wp->vm->ram + (uint64_t)r * REGION, len);
    uint64_t t1 = now_ns();
    if (!wp_range(wp, (uint64_t)r * REGION, len, false))
        atomic_store(&wp->failed, true);
    wp->copy_ns += t1 - t0;   /* lock held */
    wp->lift_ns += now_ns() - t1;
}

/* A 2 MiB buffer for a copy (lock held): one done with if any (its pages
 * are in: a fresh one costs 512 page faults and their zeroing, 1-3 ms
 * here, while a guest write waits), else a new huge-page-aligned one. */
static char *buf_new(void)
{
    void *m = mmap(NULL, 2 * REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    uintptr_t a = ((uintptr_t)m + REGION - 1) & ~(uintptr_t)(REGION - 1);
    if (a > (uintptr_t)m)
        munmap(m, a - (uintptr_t)m);
    if ((uintptr_t)m + 2 * REGION > a + REGION)
        munmap((void *)(a + REGION), (uintptr_t)m + 2 * REGION - (a + REGION));
    madvise((void *)a, REGION, MADV_HUGEPAGE);
    return (char *)a;
}

/* A new buffer, its pages faulted in (NULL without memory). */
static char *buf_touched(void)
{
    char *c = buf_new();
    if (c)
        memset(c, 0, REGION);
    return c;
}

static int stock_size(void)
{
    const char *knob = getenv("SNAPGATE_VMM_WP_STOCK");
    int n = knob ? atoi(knob) : 32;
    return n < 0 ? 0 : n > 4096 ? 4096 : n;
}

void sg_ram_wp_stock_fill(struct sg_ram_wp_stock *st, uint64_t ram_size)
{
    size_t want = (size_t)stock_size(), regions = (size_t)((ram_size + REGION - 1) / REGION);
    want = want < regions ? want : regions;
    st->buf = want ? calloc(want, sizeof(*st->buf)) : NULL;
    st->n = 0;
    for (char *c; st->buf && st->n < want && (c = buf_touched());)
        st->buf[st->n++] = c;
}

void sg_ram_wp_stock_drop(struct sg_ram_wp_stock *st)
{
    while (st->n)
        munmap(st->buf[--st->n], REGION);
    free(st->buf);
    st->buf = NULL;
}

static char *buf_get(struct sg_ram_wp *wp)
{
    if (wp->npool)
        return wp->pool[--wp->npool];
    wp->fresh++;
    return buf_new();
}

static void buf_put(struct sg_ram_wp *wp, char *c)
{
    if (!c)
        return;
    if (wp->npool == wp->pool_cap) {
        size_t cap = wp->pool_cap ? 2 * wp->pool_cap : 64;
        char **p = realloc(wp->pool, cap * sizeof(*p));
        if (!p) {
            munmap(c, REGION);
            return;
        }
        wp->pool = p;
        wp->pool_cap = cap;
    }
    wp->pool[wp->npool++] = c;
}

/* Region r (PROTECTED, lock held) copied aside and lifted: COPIED.  Without
 * memory for the copy the save fails, and the region is lifted anyway. */
static bool copy_aside(struct sg_ram_wp *wp, size_t r)
{
    char *c = buf_get(wp);
    if (!c) {
        atomic_store(&wp->failed, true);
        wp_range(wp, (uint64_t)r * REGION, region_len(wp, r), false);
        wp->state[r] = TAKEN;
        return false;
    }
    capture(wp, r, c);
    wp->copy[r] = c;
    wp->state[r] = COPIED;
    return true;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void serve(struct sg_ram_wp *wp, uint64_t addr)
{
    uint64_t t0 = now_ns();
    uint64_t a = addr - (uint64_t)(uintptr_t)wp->vm->ram;
    size_t r = (size_t)(a / REGION);
    if (r >= wp->nregions)
        return;
    pthread_mutex_lock(&wp->lock);
    if (wp->state[r] == PROTECTED && !wp->instant) {
        /* Before the instant: nothing to keep, the pause protects it again. */
        if (!wp_range(wp, (uint64_t)r * REGION, region_len(wp, r), false))
            atomic_store(&wp->failed, true);
        wp->state[r] = EARLY;
        wp->early++;
    } else if (wp->state[r] == PROTECTED && wp->lift_only) {
        if (!wp_range(wp, (uint64_t)r * REGION, region_len(wp, r), false))
            atomic_store(&wp->failed, true);
        wp->state[r] = TAKEN;
        atomic_fetch_add(&wp->faults, 1);
    } else if (wp->state[r] == PROTECTED) {
        if (copy_aside(wp, r))
            atomic_fetch_add(&wp->faults, 1);
        wp->last_fault = r;
    } else {
        /* Lifted meanwhile: only wake the writer. */
        struct uffdio_range w = { (uint64_t)(uintptr_t)wp->vm->ram + (uint64_t)r * REGION,
                                  region_len(wp, r) };
        ioctl(wp->uffd, UFFDIO_WAKE, &w);
    }
    pthread_mutex_unlock(&wp->lock);
    wp->serve_ns += now_ns() - t0;
}

/* With no fault waiting: the next still-protected region within `ahead`
 * of the last fault copied and lifted before the guest gets there (a guest
 * writes on from where it faulted), so its next write need not wait.
 * false when there is none. */
static bool copy_ahead(struct sg_ram_wp *wp)
{
    if (wp->lift_only || wp->ahead <= 0 || wp->last_fault == SIZE_MAX)
        return false;
    bool did = false;
    pthread_mutex_lock(&wp->lock);
    for (size_t r = wp->last_fault + 1; r < wp->nregions && r <= wp->last_fault + (size_t)wp->ahead;
         r++) {
        if (wp->state[r] == PROTECTED) {
            did = copy_aside(wp, r);
            if (did)
                atomic_fetch_add(&wp->ahead_copies, 1);
            break;
        }
    }
    pthread_mutex_unlock(&wp->lock);
    return did;
}

/* With nothing else to do: one more buffer faulted in for the stock
 * (first touches of fresh memory run at 0.3-1.9 GB/s here against 5-7 GB/s
 * for memory in use, so a copy into a fresh buffer takes 1-5 ms while the
 * guest waits; from the stock, 0.3-0.4 ms).  false when stocked up. */
static bool stock_up(struct sg_ram_wp *wp)
{
    if (wp->lift_only || !atomic_load(&wp->go))
        return false;
    pthread_mutex_lock(&wp->lock);
    bool full = wp->npool >= (size_t)wp->stock;
    pthread_mutex_unlock(&wp->lock);
    if (full)
        return false;
    char *c = buf_touched();
    if (!c)
        return false;
    pthread_mutex_lock(&wp->lock);
    buf_put(wp, c);
    pthread_mutex_unlock(&wp->lock);
    return true;
}

static void *handler(void *arg)
{
    struct sg_ram_wp *wp = arg;
    struct uffd_msg msg[16];
    /* SNAPGATE_VMM_WP_NICE: the guest waits on this thread; -5 (which
     * needs CAP_SYS_NICE) measured no better than 0, the default. */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), wp->handler_nice);
    for (;;) {
        struct pollfd p[2] = { { wp->uffd, POLLIN, 0 }, { wp->stop_fd, POLLIN, 0 } };
        int pr;
        while ((pr = poll(p, 2, 0)) == 0 && (copy_ahead(wp) || stock_up(wp)))
            ;
        if (pr == 0)
            pr = poll(p, 2, atomic_load(&wp->go) || wp->lift_only ? -1 : 5);
        if (pr == 0)
            continue;
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0)
            break;
        if (p[1].revents)
            break;
        ssize_t n = read(wp->uffd, msg, sizeof(msg));
        for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof(msg[0]); i++)
            if (msg[i].event == UFFD_EVENT_PAGEFAULT)
                serve(wp, msg[i].arg.pagefault.address);
    }
    return NULL;
}

struct sg_ram_wp *sg_ram_wp_open(struct sg_vm *vm, bool lift_only, struct sg_ram_wp_stock *stock,
                                 struct sg_error *err)
{
    if ((uintptr_t)vm->ram % REGION) {
        sg_error_set(err, "live save: guest RAM is not 2 MiB aligned");
        return NULL;
    }
    struct sg_ram_wp *wp = calloc(1, sizeof(*wp));
    if (!wp) {
        sg_error_set(err, "out of memory");
        return NULL;
    }
    wp->vm = vm;
    wp->lift_only = lift_only;
    wp->last_fault = SIZE_MAX;   /* no fault yet: nothing to copy ahead of */
    const char *knob = getenv("SNAPGATE_VMM_WP_AHEAD");
    wp->ahead = knob ? atoi(knob) : 8;
    wp->stock = stock_size();
    knob = getenv("SNAPGATE_VMM_WP_NICE");
    wp->handler_nice = knob ? atoi(knob) : 0;
    wp->nregions = (size_t)((vm->ram_size + REGION - 1) / REGION);
    wp->state = calloc(wp->nregions, 1);
    wp->copy = calloc(wp->nregions, sizeof(char *));
    pthread_mutex_init(&wp->lock, NULL);
    /* The stock faulted in beforehand: it moves here, so that
     * sg_ram_wp_end unmaps it whatever happens next. */
    pthread_mutex_lock(&wp->lock);
    while (stock && stock->n)
        buf_put(wp, stock->buf[--stock->n]);
    pthread_mutex_unlock(&wp->lock);
    wp->stop_fd = eventfd(0, EFD_CLOEXEC);
    wp->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    struct uffdio_api api = { .api = UFFD_API,
                              .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP |
                                          UFFD_FEATURE_WP_UNPOPULATED };
    bool api_ok = wp->uffd >= 0 && ioctl(wp->uffd, UFFDIO_API, &api) == 0;
    if (!api_ok && wp->uffd >= 0 && errno == EINVAL) {
        /* Before Linux 6.4 (Debian 12's 6.1): write-protect, but not of
         * pages never touched (a write there would allocate unseen).  Map
         * them first to the shared zero page (MADV_POPULATE_READ: no
         * memory; a huge zero page per 2 MiB hole), whose write-protect
         * bit then catches the write.  This runs before the pause, while
         * the guest runs: a hole it fills meanwhile is a page like any
         * other, and nothing makes new holes until the protection is set
         * (a reset's discard runs on the main thread, as the pause does).
         * A fresh descriptor: some kernels take UFFDIO_API once per
         * descriptor. */
        close(wp->uffd);
        wp->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        api = (struct uffdio_api){ .api = UFFD_API, .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP };
        api_ok = wp->uffd >= 0 && ioctl(wp->uffd, UFFDIO_API, &api) == 0;
        wp->populate = api_ok;
    }
    if (!wp->state || !wp->copy || wp->stop_fd < 0 || !api_ok ||
        !(api.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP)) {
        sg_error_set_errno(err, api_ok ? EOPNOTSUPP : errno,
                           "live save: userfaultfd write-protect");
        sg_ram_wp_end(wp);
        return NULL;
    }
    sg_trace_mark("wp-open");
    if (wp->populate && madvise(vm->ram, vm->ram_size, SG_MADV_POPULATE_READ) != 0) {
        sg_error_set_errno(err, errno, "live save: MADV_POPULATE_READ (write-protect before 6.4)");
        sg_ram_wp_end(wp);
        return NULL;
    }
    if (wp->populate)
        sg_trace_mark("wp-populate");
    struct uffdio_register reg = {
        /* the whole mapping: a part would split it (vm.h, ram_span) */
        .range = { (uint64_t)(uintptr_t)vm->ram, sg_vm_ram_span(vm) },
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    if (ioctl(wp->uffd, UFFDIO_REGISTER, &reg) < 0) {
        sg_error_set_errno(err, errno, "live save: UFFDIO_REGISTER (write-protect)");
        sg_ram_wp_end(wp);
        return NULL;
    }
    wp->registered = true;
    sg_trace_mark("wp-register");
    int e = pthread_create(&wp->thread, NULL, handler, wp);
    if (e) {
        sg_error_set_errno(err, e, "live save: write-protect handler");
        sg_ram_wp_end(wp);
        return NULL;
    }
    wp->started = true;
    sg_trace_mark("wp-thread");
    /* All of RAM protected now, while the guest runs: this is what makes
     * KVM drop its mappings of RAM (1.5-4.9 ms for a 512 MiB Linux guest
     * in the kvm bed when it was done in the pause).  A write before the
     * instant only lifts its region (EARLY); the pause protects those
     * again, a few regions instead of all of RAM. */
    if (!wp_range(wp, 0, vm->ram_size, true)) {
        sg_error_set_errno(err, errno, "live save: UFFDIO_WRITEPROTECT");
        sg_ram_wp_end(wp);
        return NULL;
    }
    sg_trace_mark("wp-preprotect");
    /* SNAPGATE_VMM_WP_EARLY_MS (tests): a wider gap before the instant, so
     * that a writing guest lifts regions the pause must protect again. */
    const char *gap = getenv("SNAPGATE_VMM_WP_EARLY_MS");
    long ms = gap ? strtol(gap, NULL, 10) : 0;
    if (ms > 1000)
        ms = 1000;
    if (ms > 0)
        nanosleep(&(struct timespec){ ms / 1000, (ms % 1000) * 1000000 }, NULL);
    return wp;
}

bool sg_ram_wp_protect(struct sg_ram_wp *wp, struct sg_error *err)
{
    pthread_mutex_lock(&wp->lock);
    bool ok = !atomic_load(&wp->failed);   /* a lift before the instant failed */
    size_t again = wp->early;
    if (wp->early > wp->nregions / 4) {   /* most of RAM: one call */
        ok = ok && wp_range(wp, 0, wp->vm->ram_size, true);
        for (size_t r = 0; r < wp->nregions; r++)
            wp->state[r] = PROTECTED;
    } else {
        for (size_t r = 0; ok && r < wp->nregions && wp->early; r++) {
            if (wp->state[r] != EARLY)
                continue;
            ok = wp_range(wp, (uint64_t)r * REGION, region_len(wp, r), true);
            wp->state[r] = PROTECTED;
            wp->early--;
        }
    }
    wp->early = 0;
    wp->instant = ok;
    pthread_mutex_unlock(&wp->lock);
    if (!ok) {
        sg_error_set_errno(err, errno, "live save: UFFDIO_WRITEPROTECT");
        return false;
    }
    wp->reprotected = again;   /* traced at the end: nothing is printed in the pause */
    sg_trace_mark("wp-protect");
    return true;
}

bool sg_ram_wp_read(struct sg_ram_wp *wp, uint64_t off, void *buf, size_t len,
                    struct sg_error *err)
{
    char *dst = buf;
    while (len) {
        size_t r = (size_t)(off / REGION);
        uint64_t in = off - (uint64_t)r * REGION, rl = region_len(wp, r);
        size_t n = rl - in < len ? (size_t)(rl - in) : len;
        pthread_mutex_lock(&wp->lock);
        if (wp->state[r] == PROTECTED && in == 0 && n == rl) {
            capture(wp, r, dst);   /* straight into the caller's buffer */
            wp->state[r] = TAKEN;
        } else {
            if (wp->state[r] == PROTECTED)
                copy_aside(wp, r);
            if (wp->state[r] != COPIED) {
                pthread_mutex_unlock(&wp->lock);
                sg_error_set(err, "live save: RAM region %zu: %s", r,
                             atomic_load(&wp->failed) ? "out of memory" : "read twice");
                return false;
            }
            memcpy(dst, wp->copy[r] + in, n);
            if (in + n == rl) {   /* the region's last bytes: its copy is done with */
                buf_put(wp, wp->copy[r]);
                wp->copy[r] = NULL;
                wp->state[r] = TAKEN;
            }
        }
        pthread_mutex_unlock(&wp->lock);
        if (atomic_load(&wp->failed)) {
            sg_error_set(err, "live save: lifting a write protection failed");
            return false;
        }
        dst += n;
        off += n;
        len -= n;
    }
    return true;
}

void sg_ram_wp_before_discard(struct sg_ram_wp *wp)
{
    for (size_t r = 0; wp && r < wp->nregions; r++) {
        pthread_mutex_lock(&wp->lock);
        if (wp->state[r] == PROTECTED)
            copy_aside(wp, r);
        pthread_mutex_unlock(&wp->lock);
    }
}

void sg_ram_wp_go(struct sg_ram_wp *wp)
{
    if (!wp)
        return;
    atomic_store(&wp->go, true);   /* the handler looks every 5 ms until then */
}

size_t sg_ram_wp_protected(struct sg_ram_wp *wp)
{
    size_t n = 0;
    if (!wp)
        return 0;
    pthread_mutex_lock(&wp->lock);
    for (size_t r = 0; r < wp->nregions; r++)
        n += wp->state[r] == PROTECTED;
    pthread_mutex_unlock(&wp->lock);
    return n;
}

uint64_t sg_ram_wp_faults(struct sg_ram_wp *wp)
{
    return wp ? atomic_load(&wp->faults) : 0;
}

void sg_ram_wp_finish(struct sg_ram_wp *wp)
{
    if (!wp)
        return;
    pthread_mutex_lock(&wp->lock);
    for (size_t r = 0; r < wp->nregions; r++) {
        if (wp->state[r] == PROTECTED && !wp_range(wp, (uint64_t)r * REGION, region_len(wp, r), false))
            atomic_store(&wp->failed, true);
        if (wp->copy[r])
            munmap(wp->copy[r], REGION);
        wp->copy[r] = NULL;
        wp->state[r] = TAKEN;
    }
    while (wp->npool)
        munmap(wp->pool[--wp->npool], REGION);
    pthread_mutex_unlock(&wp->lock);
    if (wp->registered) {
        /* Clears every write-protect bit of the range, so KVM drops its
         * mappings of all of RAM: tens of ms after a guest touched a GiB,
         * which is why this runs on the save's writer, not the monitor. */
        struct uffdio_range all = { (uint64_t)(uintptr_t)wp->vm->ram, sg_vm_ram_span(wp->vm) };
        uint64_t t0 = now_ns();
        ioctl(wp->uffd, UFFDIO_UNREGISTER, &all);
        sg_trace_printf("trace: wp: unregister %.1f ms", (double)(now_ns() - t0) / 1e6);
        wp->registered = false;
    }
    if (wp->started) {
        sg_trace_printf("trace: wp: %llu faults served, %.1f ms in the handler, %llu copied"
                    " ahead, %llu into fresh memory; copy %.1f lift %.1f ms; %zu regions written"
                    " before the instant",
                    (unsigned long long)atomic_load(&wp->faults), (double)wp->serve_ns / 1e6,
                    (unsigned long long)atomic_load(&wp->ahead_copies),
                    (unsigned long long)wp->fresh, wp->copy_ns / 1e6, wp->lift_ns / 1e6,
                    wp->reprotected);
        uint64_t one = 1;
        if (write(wp->stop_fd, &one, sizeof(one)) < 0) {
            /* an eventfd write of 1 cannot fail short of a full counter */
        }
        pthread_join(wp->thread, NULL);
        wp->started = false;
    }
}

void sg_ram_wp_end(struct sg_ram_wp *wp)
{
    if (!wp)
        return;
    sg_ram_wp_finish(wp);
    if (wp->stop_fd >= 0)
        close(wp->stop_fd);
    if (wp->uffd >= 0)
        close(wp->uffd);   /* wakes any fault still queued: it retries unprotected */
    free(wp->copy);
    free(wp->pool);
    free(wp->state);
    pthread_mutex_destroy(&wp->lock);
    free(wp);
}

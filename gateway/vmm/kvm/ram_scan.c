/* ram_scan.c: which pages of guest RAM the guest never touched, found
 * without reading them, so a save can skip them.
 *
 * Why this is correct.  Guest RAM is one private anonymous mapping
 * (vm_kvm.c).  A page of such a mapping that has no page-table entry at
 * all -- never faulted in, or dropped by MADV_DONTNEED (reset, load) --
 * reads as zeros: the next access maps the shared zero page or a freshly
 * zeroed page.  /proc/self/pagemap reports, per page, "present" (bit 63)
 * and "swapped" (bit 62); the kernel sets bit 62 for every non-present
 * entry that is not empty (swap, migration, other swap-type entries), so a
 * page with neither bit has an empty entry and is zero.  The guest cannot
 * write behind our back: KVM fills guest memory through the same host page
 * tables (get_user_pages faults the page in), and the vCPU is parked while
 * a save reads RAM.  Pages that are present but zero (the zero page after a
 * read, or written back to zero) are not skipped here; the block layer's
 * zero test still keeps them unallocated.
 *
 * mincore() would be cheaper to call but is wrong here: it reports a
 * swapped-out anonymous page as "not resident", which would drop real data.
 * If pagemap cannot be read, every page counts as touched (slower, still
 * correct). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "vm.h"

#define PM_PRESENT (1ull << 63)
#define PM_SWAP (1ull << 62)
#define SCAN_BATCH 4096u   /* pagemap entries per pread (32 KiB) */

bool sg_ram_scan_open(struct sg_ram_scan *rs)
{
    return sg_ram_scan_open_pid(rs, 0);
}

/* A live save scans the child that holds the saved instant (ram_live.c):
 * its pages are guest RAM at that instant, at the same addresses. */
bool sg_ram_scan_open_pid(struct sg_ram_scan *rs, int pid)
{
    char path[64];
    if (pid > 0)
        snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
    else
        snprintf(path, sizeof(path), "/proc/self/pagemap");
    rs->buf = malloc(SCAN_BATCH * sizeof(uint64_t));
    rs->fd = rs->buf ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    long ps = sysconf(_SC_PAGESIZE);
    rs->page_size = ps > 0 ? (size_t)ps : 4096;
    return rs->fd >= 0;
}

void sg_ram_scan_close(struct sg_ram_scan *rs)
{
    if (rs->fd >= 0)
        close(rs->fd);
    rs->fd = -1;
    free(rs->buf);
    rs->buf = NULL;
}

bool sg_ram_scan_untouched(struct sg_ram_scan *rs, const void *addr, size_t npages,
                           bool *untouched)
{
    uintptr_t first = (uintptr_t)addr / rs->page_size;
    if (rs->fd < 0 || (uintptr_t)addr % rs->page_size)
        goto all_touched;
    for (size_t done = 0; done < npages;) {
        size_t want = npages - done < SCAN_BATCH ? npages - done : SCAN_BATCH;
        off_t pos = (off_t)((first + done) * sizeof(uint64_t));
        ssize_t n = pread(rs->fd, rs->buf, want * sizeof(uint64_t), pos);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || n % (ssize_t)sizeof(uint64_t))
            goto all_touched;
        size_t got = (size_t)n / sizeof(uint64_t);
        for (size_t i = 0; i < got; i++)
            untouched[done + i] = !(rs->buf[i] & (PM_PRESENT | PM_SWAP));
        done += got;
    }
    return true;
all_touched:
    for (size_t i = 0; i < npages; i++)
        untouched[i] = false;
    return false;
}

/* ram_live.c: the instant a live save captures, kept by fork().
 *
 * Why fork (measured here, gateway/vmm/README.md has the numbers): the
 * kernel's copy-on-write gives a consistent image of all of RAM at the
 * moment of the fork, for any writer -- the guest through KVM (the parent's
 * page tables are write-protected and KVM's MMU notifier drops its own
 * mappings, so a guest write faults and copies the page in the parent) and
 * the VMM's devices alike -- and the cost of the fork is one copy of the
 * page tables: with guest RAM in transparent huge pages, well under a
 * millisecond for 1 GiB.  userfaultfd write-protect would need every page
 * registered and a fault round trip per first write; KVM dirty-log
 * pre-copy makes the final pause proportional to what the guest dirtied in
 * the last round.
 *
 * The child is forked from a multi-threaded process, so it calls only
 * async-signal-safe functions: it closes every descriptor but its pipe
 * (no image, KVM or socket stays open in it, so image locks and the
 * monitor behave as before), asks to die with its parent, and blocks on
 * the pipe until the parent closes it.  The parent reads its memory with
 * process_vm_readv (same user, a descendant: allowed under Yama's default
 * policy too). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ram_live.h"
#include "trace.h"

void sg_ram_collapse(void *addr, size_t len)
{
    const char *v = getenv("SNAPGATE_VMM_COLLAPSE");
    if (v && !strcmp(v, "0"))
        return;
    madvise(addr, len, SG_MADV_COLLAPSE);
}

bool sg_ram_child_fork(struct sg_ram_child *c, struct sg_error *err)
{
    int p[2];
    c->pid = 0;
    c->pipe_wr = -1;
    if (pipe2(p, O_CLOEXEC) < 0) {
        sg_error_set_errno(err, errno, "live save: pipe");
        return false;
    }
    pid_t parent = getpid();
    sg_trace_mark("pipe");
    pid_t pid = fork();
    if (pid < 0) {
        sg_error_set_errno(err, errno, "live save: fork");
        close(p[0]);
        close(p[1]);
        return false;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(0);
        if (p[0] > 0)
            close_range(0, (unsigned)p[0] - 1, 0);
        close_range((unsigned)p[0] + 1, ~0u, 0);
        char b;
        while (read(p[0], &b, 1) < 0 && errno == EINTR)
            ;
        _exit(0);
    }
    close(p[0]);
    c->pid = pid;
    c->pipe_wr = p[1];
    sg_trace_mark("fork");
    return true;
}

bool sg_ram_child_read(struct sg_ram_child *c, const void *addr, void *buf, size_t len,
                       struct sg_error *err)
{
    char *dst = buf;
    const char *src = addr;
    while (len) {
        struct iovec l = { dst, len }, r = { (void *)src, len };
        ssize_t n = process_vm_readv(c->pid, &l, 1, &r, 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            sg_error_set_errno(err, n < 0 ? errno : EIO, "live save: reading guest RAM");
            return false;
        }
        dst += n;
        src += n;
        len -= (size_t)n;
    }
    return true;
}

void sg_ram_child_end(struct sg_ram_child *c)
{
    if (c->pid <= 0)
        return;
    kill(c->pid, SIGKILL);
    while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    close(c->pipe_wr);
    c->pid = 0;
    c->pipe_wr = -1;
}

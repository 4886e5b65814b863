/* rl_fault.c: the --wrap'ed write-class calls (see rl_fault.h).
 *
 * The plan is process-wide state on purpose: the wrapped libc calls have no
 * context argument to carry it, and the driver is single-threaded. */
#include "rl_fault.h"

#include <errno.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

ssize_t __real_pwrite(int fd, const void *buf, size_t n, off_t off);
int __real_fdatasync(int fd);
int __real_fsync(int fd);
ssize_t __wrap_pwrite(int fd, const void *buf, size_t n, off_t off);
int __wrap_fdatasync(int fd);
int __wrap_fsync(int fd);

static struct {
    struct rl_fault_plan plan;
    bool armed;
    long calls;
    long failed;
    long writes_after;
} rl;

void rl_fault_arm(const struct rl_fault_plan *plan)
{
    rl.plan = *plan;
    rl.armed = true;
    rl.calls = 0;
    rl.failed = 0;
    rl.writes_after = 0;
}

void rl_fault_disarm(void)
{
    rl.armed = false;
}

long rl_fault_calls(void)
{
    return rl.calls;
}

long rl_fault_failed(void)
{
    return rl.failed;
}

long rl_fault_writes_after_failure(void)
{
    return rl.writes_after;
}

/* Decides the fate of the next write-class call: true means "fail it". */
static bool next_call_fails(bool is_sync)
{
    if (!rl.armed)
        return false;
    if (!is_sync && rl.failed)
        rl.writes_after++;
    if (!is_sync && rl.plan.sync_only)
        return false;
    long n = ++rl.calls;
    if (rl.plan.kill_at && n == rl.plan.kill_at)
        kill(getpid(), SIGKILL);
    if (rl.plan.fail_at && (n == rl.plan.fail_at || (rl.plan.sticky && n > rl.plan.fail_at))) {
        rl.failed++;
        errno = rl.plan.fail_errno;
        return true;
    }
    return false;
}

ssize_t __wrap_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (next_call_fails(false))
        return -1;
    uint64_t lim = rl.armed ? rl.plan.enospc_above : 0;
    if (lim && off >= 0 && (uint64_t)off + n > lim) {
        /* A full file system: the part that fits is written, then ENOSPC. */
        if ((uint64_t)off >= lim) {
            rl.failed++;
            errno = ENOSPC;
            return -1;
        }
        n = (size_t)(lim - (uint64_t)off);
    }
    return __real_pwrite(fd, buf, n, off);
}

int __wrap_fdatasync(int fd)
{
    return next_call_fails(true) ? -1 : __real_fdatasync(fd);
}

int __wrap_fsync(int fd)
{
    return next_call_fails(true) ? -1 : __real_fsync(fd);
}

/* rl_fault.h: I/O fault injection for the crash driver, without touching the
 * block layer: the driver links with -Wl,--wrap=pwrite,--wrap=fdatasync,
 * --wrap=fsync, so every write-class call libsgblock makes comes through
 * here first.  Reads are not counted: only writes change what a crash leaves. */
#ifndef RL_FAULT_H
#define RL_FAULT_H

#include <stdbool.h>
#include <stdint.h>

struct rl_fault_plan {
    long kill_at;          /* SIGKILL ourselves just before write-class call N (1-based); 0: never */
    long fail_at;          /* call N fails with fail_errno; 0: never */
    int fail_errno;        /* EIO, ENOSPC, ... */
    bool sticky;           /* after fail_at, every later call fails too (a dead disk) */
    uint64_t enospc_above; /* pwrite past this file size fails with ENOSPC (a full disk); 0: off */
    bool sync_only;        /* count (and fail) only fdatasync/fsync calls: a failed flush */
};

void rl_fault_arm(const struct rl_fault_plan *plan);
void rl_fault_disarm(void);
/* Write-class calls seen since the last arm, and how many were failed. */
long rl_fault_calls(void);
long rl_fault_failed(void);
/* pwrite calls made after the first injected failure (the engine's error
 * state promises none after a failed sync). */
long rl_fault_writes_after_failure(void);

#endif

/* vmm.h: snapgate-vmm's application context (owned by main): options, the
 * VM, the QMP server, the run state seen by QMP, and the job engine. */
#ifndef SG_VMM_H
#define SG_VMM_H

#include <stdbool.h>
#include <stdint.h>

#include "vm.h"

struct sg_qmp_server;
struct sg_job;
struct sg_hmp_link;
struct sg_snap_tree;

struct sg_drive_opt {
    char file[512];
    char format[16];
    char node_name[64];
    bool readonly;
};

struct sg_vmm_opts {
    uint64_t ram_size;
    int smp;
    char name[128];
    char append[2048];
    char kernel[512];       /* -kernel BZIMAGE ("" = demo guest) */
    char initrd[512];
    struct sg_drive_opt drives[SG_VM_MAX_DRIVES];
    int nr_drives;
    char qmp[512];          /* "" = no QMP */
    char serial[512];       /* "stdio" (default), "none", "file:P", "unix:P[,server=on]" */
    bool start_paused;      /* -S */
    char loadvm[256];
    bool daemonize;
    char pidfile[512];
    bool help;              /* -h / -help / --help: print usage, exit 0 */
    bool version;           /* -version / --version */
};

/* Parses argv; on error fills err with the one-line message (no prefix). */
bool sg_vmm_parse_args(int argc, char **argv, struct sg_vmm_opts *o, struct sg_error *err);

enum { SG_VMM_MAX_JOBS = 16 };

struct sg_vmm {
    struct sg_vmm_opts opts;
    struct sg_vm vm;
    struct sg_qmp_server *qmp;
    struct sg_hmp_link *hmp_link;   /* human-monitor-command (NULL without gateway/hmp) */
    bool prelaunch;          /* -S and never continued: status "prelaunch" */
    bool running;            /* what the user asked for (stop/cont) */
    bool quit;
    bool wrote_pidfile;
    int exit_code;
    int serial_listen_fd, serial_conn_fd, serial_in_fd;
    struct sg_job *jobs[SG_VMM_MAX_JOBS];
    int nr_jobs;
    uint64_t vm_clock_base_ns;   /* guest run time before the current run */
    uint64_t run_started_ns;     /* monotonic time the guest last resumed (0 if stopped) */
    bool io_error_stopped;       /* stopped by werror=enospc: status "io-error" */
    struct sg_snap_tree *tree;   /* snapshot_tree.c: each snapshot's parent, read once */
};

/* ---- vmm_run.c: run state shared by QMP commands and jobs --------------- */
/* Pauses the guest (emits STOP unless quiet). */
void sg_vmm_stop(struct sg_vmm *vmm, bool emit_event);
void sg_vmm_cont(struct sg_vmm *vmm, bool emit_event);
const char *sg_vmm_status(const struct sg_vmm *vmm);
/* Main loop: BLOCK_IO_ERROR for each failed guest request virtio-blk
 * reported, and QEMU's default werror=enospc: a write that found the disk
 * full stops the VM ("io-error") and is retried by cont. */
void sg_vmm_block_io_errors(struct sg_vmm *vmm);
uint64_t sg_vmm_vm_clock_ns(const struct sg_vmm *vmm);
uint64_t sg_now_ns(void);

/* ---- qmp_cmds.c ---------------------------------------------------------- */
bool sg_vmm_qmp_init(struct sg_vmm *vmm, struct sg_error *err);
struct sg_drive *sg_vmm_find_node(struct sg_vmm *vmm, const char *node_name);
struct sg_drive *sg_vmm_find_device(struct sg_vmm *vmm, const char *device);

/* ---- jobs.c -------------------------------------------------------------- */
/* Advances the running job by one bounded step; returns the poll timeout
 * the job needs (ms): -1 no job, 0 more work now, >0 background I/O. */
int sg_vmm_jobs_step(struct sg_vmm *vmm);
void sg_vmm_jobs_free(struct sg_vmm *vmm);
/* snapshot_cmds.c: registers the job and snapshot commands. */
bool sg_vmm_jobs_init(struct sg_vmm *vmm, struct sg_error *err);
/* snapshot_op.c: empties the active vmstate area of `d`'s image (a no-op
 * when empty): at start-up and at the end (deleted_id NULL), and after
 * snapshot `deleted_id` of `d` was deleted, unless the area is still the
 * next save's base (vm.pos) for another snapshot. */
void sg_snap_drop_area(struct sg_vmm *vmm, struct sg_drive *d, const char *deleted_id);
/* snapshot_tree.c: frees what the tree query keeps. */
void sg_snap_tree_free(struct sg_vmm *vmm);

#endif

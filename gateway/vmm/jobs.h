/* jobs.h: the job engine — QEMU's job state machine and events, driven in
 * bounded steps from the main loop so the monitor keeps answering.
 *
 *   created -> running -> waiting -> pending -> concluded   (success)
 *   created -> running -> aborting -> concluded             (failure/cancel)
 *   concluded -> null                                       (job-dismiss)
 * Every transition emits JOB_STATUS_CHANGE {id, status}.  Jobs are
 * auto-finalized and manually dismissed, like QEMU's snapshot jobs. */
#ifndef SG_JOBS_H
#define SG_JOBS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "sg_error.h"

struct sg_vmm;
struct sg_job;

enum sg_job_status {
    SG_JOB_CREATED, SG_JOB_RUNNING, SG_JOB_WAITING, SG_JOB_PENDING,
    SG_JOB_ABORTING, SG_JOB_CONCLUDED, SG_JOB_NULL,
};

/* MORE: call again at once; WAIT: background I/O runs, call again soon. */
enum sg_job_step { SG_JOB_STEP_MORE, SG_JOB_STEP_WAIT, SG_JOB_STEP_DONE, SG_JOB_STEP_FAILED };

struct sg_job_driver {
    const char *type;      /* "snapshot-save", ... */
    /* One bounded piece of work (keep it well under 50 ms).  On FAILED the
     * job's err is set.  `cancelled` is true once job-cancel was asked:
     * the step should undo and return FAILED. */
    enum sg_job_step (*step)(struct sg_job *job, bool cancelled);
    void (*free)(void *priv);
};

struct sg_job {
    char id[128];
    const struct sg_job_driver *drv;
    enum sg_job_status status;
    uint64_t cur, total;    /* progress in bytes */
    struct sg_error err;
    bool cancel_req;
    struct sg_vmm *vmm;
    void *priv;
};

/* Checks the id (well formed, unused) and that no other job is active;
 * the job starts at the next main-loop turn.  `priv` is owned by the job
 * from now on (freed with drv->free even when this fails). */
struct sg_job *sg_job_create(struct sg_vmm *vmm, const char *id, const struct sg_job_driver *drv,
                             void *priv, struct sg_error *err);
/* The job that is not concluded yet, if any. */
struct sg_job *sg_job_active(struct sg_vmm *vmm);

bool sg_vmm_jobs_register(struct sg_vmm *vmm, struct sg_error *err);

#endif

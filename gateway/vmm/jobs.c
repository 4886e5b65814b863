/* jobs.c: the job engine and its QMP commands (query-jobs, job-dismiss,
 * job-cancel, job-finalize) with QEMU 7.2's texts. */
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs.h"
#include "qmp_server.h"
#include "vmm.h"

static const char *const status_names[] = {
    "created", "running", "waiting", "pending", "aborting", "concluded", "null",
};

static void transition(struct sg_job *job, enum sg_job_status st)
{
    job->status = st;
    if (job->vmm->qmp)
        sg_qmp_server_emit_event(job->vmm->qmp, "JOB_STATUS_CHANGE",
                                 json_pack("{s:s, s:s}", "id", job->id, "status", status_names[st]));
}

static void job_free(struct sg_job *job)
{
    if (job->drv->free)
        job->drv->free(job->priv);
    free(job);
}

/* QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'. */
static bool id_wellformed(const char *id)
{
    if (!isalpha((unsigned char)id[0]))
        return false;
    for (const char *p = id + 1; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("-._", *p))
            return false;
    return true;
}

static struct sg_job *find(struct sg_vmm *vmm, const char *id)
{
    for (int i = 0; i < vmm->nr_jobs; i++)
        if (!strcmp(vmm->jobs[i]->id, id))
            return vmm->jobs[i];
    return NULL;
}

struct sg_job *sg_job_active(struct sg_vmm *vmm)
{
    for (int i = 0; i < vmm->nr_jobs; i++)
        if (vmm->jobs[i]->status != SG_JOB_CONCLUDED)
            return vmm->jobs[i];
    return NULL;
}

struct sg_job *sg_job_create(struct sg_vmm *vmm, const char *id, const struct sg_job_driver *drv,
                             void *priv, struct sg_error *err)
{
    struct sg_job *active;
    if (!id_wellformed(id) || strlen(id) >= sizeof(((struct sg_job *)0)->id)) {
        sg_error_set(err, "Invalid job ID '%s'", id);
    } else if (find(vmm, id)) {
        sg_error_set(err, "Job ID '%s' already in use", id);
    } else if ((active = sg_job_active(vmm))) {
        sg_error_set(err, "Job '%s' (%s) is still active; one snapshot job at a time", active->id,
                     active->drv->type);
    } else if (vmm->nr_jobs >= SG_VMM_MAX_JOBS) {
        sg_error_set(err, "Too many concluded jobs; dismiss some with job-dismiss");
    } else {
        struct sg_job *job = calloc(1, sizeof(*job));
        if (job) {
            snprintf(job->id, sizeof(job->id), "%s", id);
            job->drv = drv;
            job->priv = priv;
            job->vmm = vmm;
            job->total = 1;   /* as QEMU before any progress is known */
            vmm->jobs[vmm->nr_jobs++] = job;
            transition(job, SG_JOB_CREATED);
            transition(job, SG_JOB_RUNNING);
            return job;
        }
        sg_error_set(err, "out of memory");
    }
    if (drv->free)
        drv->free(priv);
    return NULL;
}

int sg_vmm_jobs_step(struct sg_vmm *vmm)
{
    struct sg_job *job = sg_job_active(vmm);
    if (!job || job->status != SG_JOB_RUNNING)
        return -1;
    enum sg_job_step r = job->drv->step(job, job->cancel_req);
    if (r == SG_JOB_STEP_MORE)
        return 0;
    if (r == SG_JOB_STEP_WAIT)
        return 5;
    if (r == SG_JOB_STEP_DONE && !job->cancel_req) {
        if (job->cur < job->total)
            job->cur = job->total;
        transition(job, SG_JOB_WAITING);
        transition(job, SG_JOB_PENDING);
    } else {
        if (!job->err.set)
            sg_error_set(&job->err, "%s", strerror(ECANCELED));
        transition(job, SG_JOB_ABORTING);
    }
    transition(job, SG_JOB_CONCLUDED);
    return 0;
}

static json_t *job_info(const struct sg_job *job)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I}", "id", job->id, "type", job->drv->type,
                          "status", status_names[job->status],
                          "current-progress", (json_int_t)job->cur,
                          "total-progress", (json_int_t)job->total);
    if (job->status == SG_JOB_CONCLUDED && job->err.set)
        json_object_set_new(o, "error", json_string(job->err.msg));
    return o;
}

static void cmd_query_jobs(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    json_t *arr = json_array();
    for (int i = 0; i < vmm->nr_jobs; i++)
        json_array_append_new(arr, job_info(vmm->jobs[i]));
    sg_qmp_req_return(req, arr);
}

static struct sg_job *find_for_verb(struct sg_qmp_req *req, struct sg_vmm *vmm, json_t *args,
                                    const char *verb, bool (*allowed)(enum sg_job_status))
{
    const char *id = json_string_value(json_object_get(args, "id"));
    struct sg_job *job = id ? find(vmm, id) : NULL;
    if (!job) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "Job not found");
        return NULL;
    }
    if (!allowed(job->status)) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "Job '%s' in state '%s' cannot accept command verb '%s'",
                          job->id, status_names[job->status], verb);
        return NULL;
    }
    return job;
}

static bool can_dismiss(enum sg_job_status s) { return s == SG_JOB_CONCLUDED; }
static bool can_cancel(enum sg_job_status s) { return s == SG_JOB_CREATED || s == SG_JOB_RUNNING || s == SG_JOB_WAITING || s == SG_JOB_PENDING; }
static bool can_finalize(enum sg_job_status s) { return s == SG_JOB_PENDING; }

static void cmd_job_dismiss(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    struct sg_job *job = find_for_verb(req, vmm, args, "dismiss", can_dismiss);
    if (!job)
        return;
    sg_qmp_req_return(req, NULL);
    transition(job, SG_JOB_NULL);
    for (int i = 0; i < vmm->nr_jobs; i++) {
        if (vmm->jobs[i] == job) {
            memmove(&vmm->jobs[i], &vmm->jobs[i + 1], (size_t)(vmm->nr_jobs - i - 1) * sizeof(job));
            vmm->nr_jobs--;
            break;
        }
    }
    job_free(job);
}

static void cmd_job_cancel(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    struct sg_job *job = find_for_verb(req, vmm, args, "cancel", can_cancel);
    if (!job)
        return;
    job->cancel_req = true;    /* the next step undoes and concludes */
    sg_qmp_req_return(req, NULL);
}

static void cmd_job_finalize(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    /* Snapshot jobs finalize themselves, so there is never a pending one to
     * finalize by hand; QEMU answers the same in that case. */
    if (find_for_verb(req, vmm, args, "finalize", can_finalize))
        sg_qmp_req_return(req, NULL);
}

static const struct sg_qmp_arg id_args[] = {
    { "id", SG_QMP_T_STR },
    { NULL },
};
static const struct sg_qmp_arg cancel_args[] = {
    { "id", SG_QMP_T_STR },
    { "force", SG_QMP_T_BOOL, .optional = true },
    { NULL },
};

bool sg_vmm_jobs_register(struct sg_vmm *vmm, struct sg_error *err)
{
    const struct sg_qmp_command cmds[] = {
        { "query-jobs", cmd_query_jobs, NULL, 0, vmm },
        { "job-dismiss", cmd_job_dismiss, id_args, 0, vmm },
        { "job-cancel", cmd_job_cancel, cancel_args, 0, vmm },
        { "job-finalize", cmd_job_finalize, id_args, 0, vmm },
        { NULL },
    };
    return sg_qmp_server_add_commands(vmm->qmp, cmds, err);
}

void sg_vmm_jobs_free(struct sg_vmm *vmm)
{
    /* An unfinished job gets one last cancelled step so it can undo. */
    struct sg_job *job = sg_job_active(vmm);
    if (job && job->status == SG_JOB_RUNNING) {
        job->cancel_req = true;
        while (job->drv->step(job, true) == SG_JOB_STEP_WAIT)
            poll(NULL, 0, 2);
    }
    for (int i = 0; i < vmm->nr_jobs; i++)
        job_free(vmm->jobs[i]);
    vmm->nr_jobs = 0;
}

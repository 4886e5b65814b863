/* snapshot_delete.c: the snapshot-delete job, which removes a tag from the
 * listed devices in one main-loop step, without a worker thread. */
#include <pthread.h>

#include "snapshot_op.h"

static enum sg_job_step delete_step(struct sg_job *job, bool cancelled)
{
    struct snap_op *op = job->priv;
    if (cancelled)
        return SG_JOB_STEP_FAILED;
    if (!sg_snap_resolve_devices(op, false, &job->err) || !sg_snap_all_can_snapshot(op, &job->err))
        return SG_JOB_STEP_FAILED;
    /* Like QEMU 7.2 (bdrv_all_delete_snapshot): per device entry only the
     * first snapshot with the tag goes; a duplicate made by qemu-img stays,
     * so HMP delvm removes one per call, as QEMU's does.  Devices without
     * the tag are skipped. */
    for (int i = 0; i < op->n; i++) {
        struct sg_drive *d = op->drives[i];
        char id[128];
        int r = sg_snap_find_tag(d, op->tag, id, sizeof(id), NULL, &job->err);
        if (r < 0)
            return SG_JOB_STEP_FAILED;
        if (r == 0)
            continue;
        sg_drive_lock(d);
        bool ok = sg_block_snapshot_delete(d->bs, id, &job->err);
        sg_drive_unlock(d);
        if (!ok) {
            sg_error_prefix(&job->err, "Could not delete snapshot '%s' on '%s'", op->tag,
                            d->device_name);
            return SG_JOB_STEP_FAILED;
        }
        sg_snap_drop_area(op->vmm, d, id);   /* its RAM's space goes too */
    }
    return SG_JOB_STEP_DONE;
}

const struct sg_job_driver sg_snap_delete_drv = { "snapshot-delete", delete_step, sg_snap_op_free };

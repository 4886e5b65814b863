/* snapshot_cmds.c: the snapshot QMP commands and their schemas (QEMU 7.2's,
 * plus x-replace), and sg_vmm_jobs_init, which registers them with the job
 * commands.  snapshot-save/load/delete start a job (snapshot_save.c,
 * snapshot_load.c, snapshot_delete.c); the internal snapshot commands and
 * transaction are in snapshot_internal.c. */
#include <stdio.h>
#include <stdlib.h>

#include "qmp_server.h"
#include "snapshot_internal.h"
#include "snapshot_op.h"

/* ---- QMP commands ---------------------------------------------------------- */

static struct snap_op *op_from_args(struct sg_vmm *vmm, json_t *args)
{
    struct snap_op *op = calloc(1, sizeof(*op));
    if (!op)
        return NULL;
    op->vmm = vmm;
    snprintf(op->tag, sizeof(op->tag), "%s", json_string_value(json_object_get(args, "tag")));
    op->replace = json_is_true(json_object_get(args, "x-replace"));
    const char *vs = json_string_value(json_object_get(args, "vmstate"));
    if (vs) {
        op->has_vmstate = true;
        snprintf(op->vmstate, sizeof(op->vmstate), "%s", vs);
    }
    json_t *devs = json_object_get(args, "devices");
    op->has_devices = devs != NULL;
    size_t i;
    json_t *v;
    json_array_foreach(devs, i, v) {
        if (op->n_names >= SG_VM_MAX_DRIVES)
            break;
        snprintf(op->dev_names[op->n_names++], 64, "%s", json_string_value(v));
    }
    return op;
}

static void start_job(struct sg_qmp_req *req, json_t *args, struct sg_vmm *vmm,
                      const struct sg_job_driver *drv)
{
    struct sg_error err = { 0 };
    /* One limit, checked before anything runs (op->tag is never cut). */
    if (!sg_snapshot_tag_check(json_string_value(json_object_get(args, "tag")), &err)) {
        sg_qmp_req_error(req, &err);
        return;
    }
    struct snap_op *op = op_from_args(vmm, args);
    if (!op) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "out of memory");
        return;
    }
    if (json_array_size(json_object_get(args, "devices")) > SG_VM_MAX_DRIVES) {
        sg_snap_op_free(op);
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "too many devices");
        return;
    }
    if (!sg_job_create(vmm, json_string_value(json_object_get(args, "job-id")), drv, op, &err)) {
        sg_qmp_req_error(req, &err);
        return;
    }
    /* Replies at once (QEMU 7.2 waits for the job); progress via query-jobs. */
    sg_qmp_req_return(req, NULL);
}

static void cmd_snapshot_save(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    start_job(req, args, opaque, &sg_snap_save_drv);
}

static void cmd_snapshot_load(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    start_job(req, args, opaque, &sg_snap_load_drv);
}

static void cmd_snapshot_delete(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    start_job(req, args, opaque, &sg_snap_delete_drv);
}

/* ---- registration ---------------------------------------------------------- */

static const struct sg_qmp_arg str_elem = { NULL, SG_QMP_T_STR };
static const struct sg_qmp_arg load_args[] = {
    { "job-id", SG_QMP_T_STR },
    { "tag", SG_QMP_T_STR },
    { "vmstate", SG_QMP_T_STR },
    { "devices", SG_QMP_T_ARRAY, .elem = &str_elem },
    { NULL },
};
/* x-replace (snapgate extension): an existing tag is replaced atomically
 * instead of being an error; the old snapshot survives a failed save. */
static const struct sg_qmp_arg save_args[] = {
    { "job-id", SG_QMP_T_STR },
    { "tag", SG_QMP_T_STR },
    { "vmstate", SG_QMP_T_STR },
    { "devices", SG_QMP_T_ARRAY, .elem = &str_elem },
    { "x-replace", SG_QMP_T_BOOL, .optional = true },
    { NULL },
};
static const struct sg_qmp_arg delete_args[] = {
    { "job-id", SG_QMP_T_STR },
    { "tag", SG_QMP_T_STR },
    { "devices", SG_QMP_T_ARRAY, .elem = &str_elem },
    { NULL },
};
static const struct sg_qmp_arg internal_args[] = {
    { "device", SG_QMP_T_STR },
    { "name", SG_QMP_T_STR },
    { NULL },
};
static const struct sg_qmp_arg internal_delete_args[] = {
    { "device", SG_QMP_T_STR },
    { "id", SG_QMP_T_STR, .optional = true },
    { "name", SG_QMP_T_STR, .optional = true },
    { NULL },
};
static const char *const action_types[] = { "blockdev-snapshot-internal-sync", NULL };
static const struct sg_qmp_arg action_base[] = {
    { "type", SG_QMP_T_ENUM, .values = action_types },
    { NULL },
};
static const struct sg_qmp_arg action_data_obj[] = {
    { "data", SG_QMP_T_OBJECT, .members = internal_args },
    { NULL },
};
static const struct sg_qmp_variant action_variants[] = {
    { "blockdev-snapshot-internal-sync", action_data_obj },
    { NULL },
};
static const struct sg_qmp_arg action_elem = {
    NULL, SG_QMP_T_UNION, .members = action_base, .discriminator = "type",
    .variants = action_variants,
};
static const struct sg_qmp_arg transaction_args[] = {
    { "actions", SG_QMP_T_ARRAY, .elem = &action_elem },
    { "properties", SG_QMP_T_OBJECT, .optional = true },
    { NULL },
};

bool sg_vmm_jobs_init(struct sg_vmm *vmm, struct sg_error *err)
{
    const struct sg_qmp_command cmds[] = {
        { "snapshot-save", cmd_snapshot_save, save_args, 0, vmm },
        { "snapshot-load", cmd_snapshot_load, load_args, 0, vmm },
        { "snapshot-delete", cmd_snapshot_delete, delete_args, 0, vmm },
        { "blockdev-snapshot-internal-sync", sg_snap_cmd_internal_sync, internal_args, 0, vmm },
        { "blockdev-snapshot-delete-internal-sync", sg_snap_cmd_internal_delete, internal_delete_args, 0, vmm },
        { "transaction", sg_snap_cmd_transaction, transaction_args, 0, vmm },
        { NULL },
    };
    return sg_vmm_jobs_register(vmm, err) && sg_qmp_server_add_commands(vmm->qmp, cmds, err) &&
           sg_snap_tree_register(vmm, err);
}

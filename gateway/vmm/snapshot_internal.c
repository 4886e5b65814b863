/* snapshot_internal.c: internal snapshots of one device outside the job
 * engine, answered at once: blockdev-snapshot-internal-sync,
 * blockdev-snapshot-delete-internal-sync, and transaction (of internal
 * snapshot actions only), with QEMU 7.2's checks and texts. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qmp_server.h"
#include "snapshot_internal.h"
#include "snapshot_op.h"

json_t *sg_vmm_snapshot_info_json(const struct sg_snapshot_info *si);

static struct sg_drive *root_bs(struct sg_vmm *vmm, const char *name, struct sg_error *err)
{
    struct sg_drive *d = sg_vmm_find_device(vmm, name);
    if (!d)
        d = sg_vmm_find_node(vmm, name);
    if (!d)
        sg_error_set(err, "Cannot find device='%s' nor node-name='%s'", name, name);
    return d;
}

static bool internal_prepare(struct sg_vmm *vmm, const char *device, const char *name,
                             struct sg_drive **out, struct sg_error *err)
{
    struct sg_drive *d = root_bs(vmm, device, err);
    if (!d)
        return false;
    if (d->readonly) {
        sg_error_set(err, "Device '%s' is read only", device);
        return false;
    }
    if (!sg_block_can_snapshot(d->bs)) {
        sg_error_set(err, "Block format '%s' used by device '%s' does not support internal snapshots",
                     sg_block_format(d->bs), device);
        return false;
    }
    if (!*name) {
        sg_error_set(err, "Name is empty");
        return false;
    }
    int r = sg_snap_find_tag(d, name, NULL, 0, NULL, err);
    if (r < 0)
        return false;
    if (r) {
        sg_error_set(err, "Snapshot with name '%s' already exists on device '%s'", name, device);
        return false;
    }
    if (sg_job_active(vmm)) {
        sg_error_set(err, "Job '%s' is active; try again when it has concluded", sg_job_active(vmm)->id);
        return false;
    }
    *out = d;
    return true;
}

static bool internal_create(struct sg_vmm *vmm, struct sg_drive *d, const char *device, const char *name,
                            char *id_out, size_t id_len, struct sg_error *err)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct sg_snapshot_info si;
    memset(&si, 0, sizeof(si));
    si.name = (char *)name;
    si.date_sec = (uint64_t)now.tv_sec;
    si.date_nsec = (uint32_t)(now.tv_nsec / 1000 * 1000);
    si.vm_clock_nsec = sg_vmm_vm_clock_ns(vmm);
    si.icount = -1;
    sg_drive_lock(d);
    bool ok = sg_block_flush(d->bs, err) && sg_block_snapshot_create(d->bs, &si, err);
    sg_drive_unlock(d);
    if (!ok) {
        /* QEMU 7.2 appends the cause (error_setg_errno): ": No space left on
         * device"; ours is the errno when there is one, else the message. */
        struct sg_error e2 = { 0 };
        sg_error_set(&e2, "Failed to create snapshot '%s' on device '%s': %s", name, device,
                     err->errnum ? strerror(err->errnum) : err->msg);
        e2.errnum = err->errnum;
        *err = e2;
        return false;
    }
    snprintf(id_out, id_len, "%s", si.id);
    return true;
}

void sg_snap_cmd_internal_sync(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    struct sg_error err = { 0 };
    const char *device = json_string_value(json_object_get(args, "device"));
    const char *name = json_string_value(json_object_get(args, "name"));
    struct sg_drive *d;
    char id[128];
    if (!internal_prepare(vmm, device, name, &d, &err) ||
        !internal_create(vmm, d, device, name, id, sizeof(id), &err)) {
        sg_qmp_req_error(req, &err);
        return;
    }
    sg_qmp_req_return(req, NULL);
}

void sg_snap_cmd_internal_delete(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    struct sg_error err = { 0 };
    const char *device = json_string_value(json_object_get(args, "device"));
    const char *id = json_string_value(json_object_get(args, "id"));
    const char *name = json_string_value(json_object_get(args, "name"));
    struct sg_drive *d = root_bs(vmm, device, &err);
    if (!d) {
        sg_qmp_req_error(req, &err);
        return;
    }
    /* QEMU 7.2's order: no read-only check up front (a read-only disk fails
     * only when the snapshot table is written), and a format without
     * snapshots fails when its list is read. */
    if (!id && !name) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "Name or id must be provided");
        return;
    }
    if (sg_job_active(vmm)) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "Job '%s' is active; try again when it has concluded",
                          sg_job_active(vmm)->id);
        return;
    }
    if (!sg_block_can_snapshot(d->bs)) {
        sg_error_set_errno(&err, ENOTSUP, "Failed to get a snapshot list");
        sg_qmp_req_error(req, &err);
        return;
    }
    json_t *info = NULL;
    char found_id[128] = "";
    struct sg_snapshot_info *list = NULL;
    sg_drive_lock(d);
    int n = sg_block_snapshot_list(d->bs, &list, &err);
    sg_drive_unlock(d);
    if (n < 0) {
        sg_qmp_req_error(req, &err);
        return;
    }
    for (int i = 0; i < n && !info; i++) {
        if ((!id || !strcmp(list[i].id, id)) && (!name || (list[i].name && !strcmp(list[i].name, name)))) {
            info = sg_vmm_snapshot_info_json(&list[i]);
            snprintf(found_id, sizeof(found_id), "%s", list[i].id);
        }
    }
    sg_snapshot_info_free_list(list, n);
    if (!info) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC,
                          "Snapshot with id '%s' and name '%s' does not exist on device '%s'",
                          id ? id : "null", name ? name : "null", device);
        return;
    }
    if (d->readonly) {
        /* QEMU's text (its write of the snapshot table gets EPERM); unlike
         * QEMU 7.2 we keep listing the snapshot, which is still there. */
        json_decref(info);
        sg_error_set_errno(&err, EPERM, "Failed to remove snapshot from snapshot list");
        sg_qmp_req_error(req, &err);
        return;
    }
    sg_drive_lock(d);
    bool ok = sg_block_snapshot_delete(d->bs, found_id, &err);
    sg_drive_unlock(d);
    if (!ok) {
        json_decref(info);
        sg_qmp_req_error(req, &err);
        return;
    }
    sg_qmp_req_return(req, info);
}

/* transaction: only internal snapshot actions; all prepared first, then
 * created; a failure deletes the ones already made (all or nothing). */
void sg_snap_cmd_transaction(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    struct sg_error err = { 0 };
    json_t *actions = json_object_get(args, "actions");
    size_t n = json_array_size(actions);
    struct act { const char *device, *name; struct sg_drive *d; char id[128]; bool done; } *a =
        calloc(n ? n : 1, sizeof(*a));
    if (!a) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "out of memory");
        return;
    }
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *data = json_object_get(json_array_get(actions, i), "data");
        a[i].device = json_string_value(json_object_get(data, "device"));
        a[i].name = json_string_value(json_object_get(data, "name"));
        ok = internal_prepare(vmm, a[i].device, a[i].name, &a[i].d, &err);
        for (size_t j = 0; ok && j < i; j++) {
            if (a[j].d == a[i].d && !strcmp(a[j].name, a[i].name)) {
                sg_error_set(&err, "Snapshot with name '%s' already exists on device '%s'",
                             a[i].name, a[i].device);
                ok = false;
            }
        }
    }
    for (size_t i = 0; ok && i < n; i++) {
        ok = internal_create(vmm, a[i].d, a[i].device, a[i].name, a[i].id, sizeof(a[i].id), &err);
        a[i].done = ok;
    }
    if (!ok) {
        for (size_t i = 0; i < n; i++) {
            if (a[i].done) {
                sg_drive_lock(a[i].d);
                sg_block_snapshot_delete(a[i].d->bs, a[i].id, NULL);
                sg_drive_unlock(a[i].d);
            }
        }
        sg_qmp_req_error(req, &err);
    } else {
        sg_qmp_req_return(req, NULL);
    }
    free(a);
}


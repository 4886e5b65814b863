/* snapshot_tree.c: snapgate's QMP extensions for the snapshot tree and for
 * checking RAM after a load.  QEMU's schemas stay as they are, so these
 * are separate x-snapgate- commands (man snapgate-vmm(1)):
 *
 *   x-snapgate-query-snapshot-tree [vmstate: NODE]
 *     -> {"node", "device", "snapshots": [{"id", "name", "parent"?}],
 *         "current"?}
 *   Every snapshot on the vmstate disk in table order; "parent" is the ID
 *   of the snapshot the VM was last saved as or loaded from when it was
 *   taken (recorded in its VM state header by ID and date, so a reused ID
 *   is not mistaken for it; absent: a root, or its parent was deleted);
 *   "current" the snapshot the VM was last saved as or loaded from, absent
 *   when unknown (a fresh start) or deleted.
 *
 *   x-snapgate-ram-checksum -> {"fnv1a64": "HEX", "size"}
 *   A hash of all guest RAM, for tests (a lazy load must restore exactly
 *   what was saved).  Runs on the main loop: meant for small guests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qmp_server.h"
#include "ram_dump.h"
#include "snapshot_internal.h"
#include "snapshot_op.h"

static struct sg_drive *tree_drive(struct sg_vmm *vmm, json_t *args)
{
    const char *node = json_string_value(json_object_get(args, "vmstate"));
    for (int i = 0; i < vmm->vm.nr_drives; i++) {
        struct sg_drive *d = &vmm->vm.drives[i];
        if (node ? !strcmp(node, d->node_name)
                 : !d->readonly && sg_block_can_snapshot(d->bs))
            return d;
    }
    return NULL;
}

/* The parent recorded in snapshot `s`'s header, as an index into list. */
static int parent_of(struct sg_drive *d, struct sg_snapshot_info *list, int n, int s)
{
    if (!list[s].vm_state_size)
        return -1;
    uint8_t page[SG_VMSTATE_HEADER_SIZE];
    struct sg_vmstate_header h;
    struct sg_error err = { 0 };
    if (!sg_block_vmstate_read_snapshot(d->bs, list[s].id, 0, page, sizeof(page), &err) ||
        !sg_vmstate_header_decode(page, &h, list[s].name, &err) || !h.has_parent)
        return -1;
    h.parent_id[sizeof(h.parent_id) - 1] = 0;
    for (int i = 0; i < n; i++)
        if (i != s && !strcmp(list[i].id, h.parent_id) && list[i].date_sec == h.parent_date_sec &&
            list[i].date_nsec == h.parent_date_nsec)
            return i;
    return -1;
}

static void cmd_tree(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    struct sg_drive *d = tree_drive(vmm, args);
    if (!d || !sg_block_can_snapshot(d->bs)) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "no block device can store vmstate for snapshot");
        return;
    }
    struct sg_error err = { 0 };
    struct sg_snapshot_info *list = NULL;
    json_t *snaps = json_array();
    const struct sg_snap_pos *pos = &vmm->vm.pos;
    const char *current = NULL;
    pthread_mutex_lock(&d->lock);
    int n = sg_block_snapshot_list(d->bs, &list, &err);
    for (int i = 0; i < n; i++) {
        json_t *o = json_pack("{s:s, s:s}", "id", list[i].id, "name", list[i].name);
        int p = parent_of(d, list, n, i);
        if (o && p >= 0)
            json_object_set_new(o, "parent", json_string(list[p].id));
        json_array_append_new(snaps, o);
        if (pos->valid && !strcmp(pos->node, d->node_name) && !strcmp(pos->id, list[i].id) &&
            pos->date_sec == list[i].date_sec && pos->date_nsec == list[i].date_nsec)
            current = list[i].id;
    }
    pthread_mutex_unlock(&d->lock);
    if (n < 0) {
        json_decref(snaps);
        sg_qmp_req_error(req, &err);
        return;
    }
    json_t *ret = json_pack("{s:s, s:s, s:o}", "node", d->node_name, "device", d->device_name,
                            "snapshots", snaps);
    if (ret && current)
        json_object_set_new(ret, "current", json_string(current));
    sg_snapshot_info_free_list(list, n);
    sg_qmp_req_return(req, ret);
}

static void cmd_ram_checksum(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    (void)args;
    const uint64_t *p = vmm->vm.ram;
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint64_t i = 0; i < vmm->vm.ram_size / 8; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    char hex[20];
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)h);
    sg_qmp_req_return(req, json_pack("{s:s, s:I}", "fnv1a64", hex, "size",
                                     (json_int_t)vmm->vm.ram_size));
}

static const struct sg_qmp_arg tree_args[] = {
    { "vmstate", SG_QMP_T_STR, .optional = true },
    { NULL },
};

bool sg_snap_tree_register(struct sg_vmm *vmm, struct sg_error *err)
{
    const struct sg_qmp_command cmds[] = {
        { "x-snapgate-query-snapshot-tree", cmd_tree, tree_args, 0, vmm },
        { "x-snapgate-ram-checksum", cmd_ram_checksum, NULL, 0, vmm },
        { NULL },
    };
    return sg_qmp_server_add_commands(vmm->qmp, cmds, err) && sg_ram_dump_register(vmm, err);
}

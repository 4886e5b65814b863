/* qmp_cmds.c: snapgate-vmm's QMP commands of the machine and its block
 * devices, with QEMU 7.2's schemas (the job/snapshot commands are in
 * jobs.c and snapshot_*.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "devices/acpi_pm.h"
#include "qmp_server.h"
#include "vmm.h"

struct sg_drive *sg_vmm_find_node(struct sg_vmm *vmm, const char *node_name)
{
    for (int i = 0; i < vmm->vm.nr_drives; i++)
        if (!strcmp(vmm->vm.drives[i].node_name, node_name))
            return &vmm->vm.drives[i];
    return NULL;
}

struct sg_drive *sg_vmm_find_device(struct sg_vmm *vmm, const char *device)
{
    for (int i = 0; i < vmm->vm.nr_drives; i++)
        if (!strcmp(vmm->vm.drives[i].device_name, device))
            return &vmm->vm.drives[i];
    return NULL;
}

/* A tag as JSON text whatever its bytes: as QEMU's JSON writer, each byte
 * that is not part of valid UTF-8 becomes U+FFFD (a Latin-1 tag made by
 * qemu-img, "caf\xe9", reads "caf\ufffd"); control characters are escaped
 * by jansson.  Without this json_pack fails and the snapshot vanishes
 * from every list (issue 17). */
static json_t *json_text(const char *s)
{
    char *t = sg_utf8_lossy(s);
    json_t *j = t ? json_string(t) : NULL;
    free(t);
    return j;
}

json_t *sg_vmm_snapshot_info_json(const struct sg_snapshot_info *si)
{
    json_t *o = json_pack("{s:s, s:o, s:I, s:I, s:I, s:I, s:I}",
                          "id", si->id, "name", json_text(si->name ? si->name : ""),
                          "vm-state-size", (json_int_t)si->vm_state_size,
                          "date-sec", (json_int_t)si->date_sec,
                          "date-nsec", (json_int_t)si->date_nsec,
                          "vm-clock-sec", (json_int_t)(si->vm_clock_nsec / 1000000000ull),
                          "vm-clock-nsec", (json_int_t)(si->vm_clock_nsec % 1000000000ull));
    if (o && si->icount >= 0)
        json_object_set_new(o, "icount", json_integer(si->icount));
    return o;
}

/* ImageInfo of a drive, taking no drive lock: the monitor never waits for
 * whoever holds the image (a save's vmstate writer, guest I/O, a load's
 * revert).  Everything read here is constant while the drive is open, an
 * fstat (actual-size, as QEMU's), or the snapshot table as published at its
 * last change (block.h sg_block_snapshot_list_published).  So a save shows
 * its snapshot once it has committed, never the held disk or a half-written
 * table, as QEMU's query-block before and after its savevm. */
static json_t *image_info(struct sg_drive *d)
{
    struct sg_block *bs = d->bs;
    const char *fmt = sg_block_format(bs);
    json_t *img = json_object();
    json_object_set_new(img, "virtual-size", json_integer((json_int_t)sg_block_size(bs)));
    json_object_set_new(img, "filename", json_string(sg_block_filename(bs)));
    if (sg_block_cluster_size(bs))
        json_object_set_new(img, "cluster-size", json_integer((json_int_t)sg_block_cluster_size(bs)));
    json_object_set_new(img, "format", json_string(fmt));
    int64_t actual = sg_block_actual_size(bs);
    if (actual >= 0)
        json_object_set_new(img, "actual-size", json_integer(actual));
    json_object_set_new(img, "dirty-flag", json_false());
    if (sg_block_can_snapshot(bs)) {
        struct sg_snapshot_info *list = NULL;
        int n = sg_block_snapshot_list_published(bs, &list, NULL);
        if (n > 0) {
            json_t *arr = json_array();
            for (int i = 0; i < n; i++)
                json_array_append_new(arr, sg_vmm_snapshot_info_json(&list[i]));
            json_object_set_new(img, "snapshots", arr);
        }
        if (n >= 0)
            sg_snapshot_info_free_list(list, n);
        json_object_set_new(img, "format-specific",
            json_pack("{s:s, s:{s:s, s:s, s:b, s:b, s:b, s:i}}", "type", "qcow2", "data",
                      "compat", "1.1", "compression-type", "zlib", "lazy-refcounts", 0,
                      "corrupt", 0, "extended-l2", 0, "refcount-bits", 16));
    }
    return img;
}

/* BlockDeviceInfo: the "inserted" member / one query-named-block-nodes
 * entry (no drive lock: see image_info). */
static json_t *block_device_info(struct sg_drive *d)
{
    json_t *o = json_object();
    json_object_set_new(o, "file", json_string(sg_block_filename(d->bs)));
    json_object_set_new(o, "node-name", json_string(d->node_name));
    json_object_set_new(o, "ro", json_boolean(d->readonly));
    json_object_set_new(o, "drv", json_string(sg_block_format(d->bs)));
    json_object_set_new(o, "backing_file_depth", json_integer(0));
    json_object_set_new(o, "encrypted", json_false());
    json_object_set_new(o, "detect_zeroes", json_string("off"));
    static const char *const zero[] = { "bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr" };
    for (size_t i = 0; i < sizeof(zero) / sizeof(zero[0]); i++)
        json_object_set_new(o, zero[i], json_integer(0));
    json_object_set_new(o, "write_threshold", json_integer(0));
    json_object_set_new(o, "cache", json_pack("{s:b, s:b, s:b}", "writeback", 1, "direct", 0, "no-flush", 0));
    json_object_set_new(o, "image", image_info(d));
    return o;
}

static void cmd_query_block(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    json_t *arr = json_array();
    for (int i = 0; i < vmm->vm.nr_drives; i++) {
        struct sg_drive *d = &vmm->vm.drives[i];
        char qdev[96];
        snprintf(qdev, sizeof(qdev), "/machine/peripheral-anon/device[%d]/virtio-backend", i);
        json_t *o = json_pack("{s:s, s:s, s:b, s:b, s:s, s:s}", "device", d->device_name,
                              "qdev", qdev, "locked", 0, "removable", 0, "type", "unknown",
                              "io-status", !d->iostatus ? "ok"
                                           : d->iostatus == ENOSPC ? "nospace" : "failed");
        json_object_set_new(o, "inserted", block_device_info(d));
        json_array_append_new(arr, o);
    }
    sg_qmp_req_return(req, arr);
}

static void cmd_query_named_block_nodes(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    json_t *arr = json_array();
    for (int i = 0; i < vmm->vm.nr_drives; i++)
        json_array_append_new(arr, block_device_info(&vmm->vm.drives[i]));
    sg_qmp_req_return(req, arr);
}

static void cmd_query_version(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    sg_qmp_req_return(req, json_pack("{s:{s:i, s:i, s:i}, s:s}", "qemu", "micro", 0, "minor", 2,
                                     "major", 7, "package", "snapgate-vmm " SG_VMM_VERSION));
}

static void cmd_query_commands(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    sg_qmp_req_return(req, sg_qmp_server_query_commands(vmm->qmp));
}

static void cmd_query_status(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    const char *st = sg_vmm_status(vmm);
    sg_qmp_req_return(req, json_pack("{s:s, s:b, s:b}", "status", st, "singlestep", 0,
                                     "running", !strcmp(st, "running")));
}

static void cmd_stop(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    vmm->running = false;
    if (vmm->vm.state == SG_RUN_NORMAL)
        sg_vmm_stop(vmm, true);
    /* QEMU: stop during -S prelaunch just leaves it paused. */
    sg_qmp_req_return(req, NULL);
}

static void cmd_cont(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    if (vmm->vm.state == SG_RUN_SHUTDOWN) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "Resetting the Virtual Machine is required");
        return;
    }
    vmm->running = true;
    /* A snapshot job resumes the guest itself when it ends. */
    if (vmm->vm.state == SG_RUN_NORMAL)
        sg_vmm_cont(vmm, true);
    sg_qmp_req_return(req, NULL);
}

static void cmd_system_reset(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    if (vmm->vm.state != SG_RUN_NORMAL && vmm->vm.state != SG_RUN_SHUTDOWN) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "Cannot reset while a snapshot job is active");
        return;
    }
    bool was_running = vmm->run_started_ns != 0;
    struct sg_error err = { 0 };
    sg_vmm_stop(vmm, false);
    if (!sg_vm_reset(&vmm->vm, &err)) {
        sg_qmp_req_error(req, &err);
        return;
    }
    sg_qmp_req_return(req, NULL);
    sg_qmp_server_emit_event(vmm->qmp, "RESET",
                             json_pack("{s:b, s:s}", "guest", 0, "reason", "host-qmp-system-reset"));
    if (was_running || vmm->running)
        sg_vmm_cont(vmm, false);
}

/* QEMU 7.2's system_powerdown: the ACPI power button is pressed (a -kernel
 * guest's OS decides what follows; the demo guest has no ACPI hardware), in
 * any run state.  POWERDOWN (no data) comes before the reply, as QEMU 7.2's
 * main loop sends it while the command's reply waits for the monitor. */
static void cmd_system_powerdown(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    sg_qmp_server_emit_event(vmm->qmp, "POWERDOWN", NULL);
    sg_acpi_pm_power_button(&vmm->vm);
    sg_qmp_req_return(req, NULL);
}

static void cmd_quit(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    sg_qmp_req_return(req, NULL);
    sg_vmm_stop(vmm, false);
    sg_qmp_server_emit_event(vmm->qmp, "SHUTDOWN",
                             json_pack("{s:b, s:s}", "guest", 0, "reason", "host-qmp-quit"));
    vmm->quit = true;
}

static const struct sg_qmp_arg named_nodes_args[] = {
    { "flat", SG_QMP_T_BOOL, .optional = true },
    { NULL },
};

bool sg_vmm_qmp_init(struct sg_vmm *vmm, struct sg_error *err)
{
    json_t *ver = json_pack("{s:{s:i, s:i, s:i}, s:s}", "qemu", "micro", 0, "minor", 2, "major", 7,
                            "package", "snapgate-vmm " SG_VMM_VERSION);
    vmm->qmp = sg_qmp_server_new(ver, NULL, vmm);
    json_decref(ver);
    if (!vmm->qmp) {
        sg_error_set(err, "out of memory");
        return false;
    }
    const struct sg_qmp_command cmds[] = {
        { "query-version", cmd_query_version, NULL, 0, vmm },
        { "query-commands", cmd_query_commands, NULL, 0, vmm },
        { "query-status", cmd_query_status, NULL, 0, vmm },
        { "stop", cmd_stop, NULL, 0, vmm },
        { "cont", cmd_cont, NULL, 0, vmm },
        { "system_reset", cmd_system_reset, NULL, 0, vmm },
        { "system_powerdown", cmd_system_powerdown, NULL, 0, vmm },
        { "quit", cmd_quit, NULL, 0, vmm },
        { "query-block", cmd_query_block, NULL, 0, vmm },
        { "query-named-block-nodes", cmd_query_named_block_nodes,
          named_nodes_args, 0, vmm },
        { NULL },
    };
    if (!sg_qmp_server_add_commands(vmm->qmp, cmds, err))
        return false;
    if (vmm->opts.qmp[0] && !sg_qmp_server_listen(vmm->qmp, vmm->opts.qmp, err)) {
        sg_error_prefix(err, "-qmp %s", vmm->opts.qmp);
        return false;
    }
    return true;
}

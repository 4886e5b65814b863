#include "fake_backend.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool fake_last_quit;

void fake_init(struct fake_vm *vm)
{
    memset(vm, 0, sizeof *vm);
    snprintf(vm->status, sizeof vm->status, "prelaunch");
    vm->jobs = json_array();
}

void fake_free(struct fake_vm *vm)
{
    while (vm->qhead != vm->qtail) {
        json_decref(vm->q[vm->qhead].msg);
        vm->qhead = (vm->qhead + 1) % 256;
    }
    json_decref(vm->jobs);
}

struct fake_disk *fake_disk(struct fake_vm *vm, const char *device, const char *node,
                            const char *drv, bool ro)
{
    struct fake_disk *d = &vm->disks[vm->ndisks++];
    memset(d, 0, sizeof *d);
    snprintf(d->device, sizeof d->device, "%s", device);
    snprintf(d->node, sizeof d->node, "%s", node);
    snprintf(d->drv, sizeof d->drv, "%s", drv);
    d->ro = ro;
    d->next_id = 1;
    return d;
}

void fake_snap(struct fake_disk *d, const char *tag, uint64_t vmsize, int64_t date, bool icount)
{
    struct fake_snap *s = &d->snaps[d->n++];
    snprintf(s->id, sizeof s->id, "%d", d->next_id++);
    snprintf(s->tag, sizeof s->tag, "%s", tag);
    s->vmsize = vmsize;
    s->date = date;
    s->icount = icount;
}

int fake_find(const struct fake_disk *d, const char *tag)
{
    for (int i = 0; i < d->n; i++)
        if (strcmp(d->snaps[i].tag, tag) == 0)
            return i;
    return -1;
}

static void push(struct fake_vm *vm, sg_hmp_reply_fn cb, void *op, json_t *msg, bool event)
{
    if (!vm->defer) {
        if (event)
            sg_hmp_on_event(vm->h, msg);
        else
            cb(op, msg);
        json_decref(msg);
        return;
    }
    vm->q[vm->qtail].cb = cb;
    vm->q[vm->qtail].op = op;
    vm->q[vm->qtail].msg = msg;
    vm->q[vm->qtail].event = event;
    vm->qtail = (vm->qtail + 1) % 256;
}

void fake_drain(struct fake_vm *vm)
{
    for (int guard = 0; guard < 10000 && vm->qhead != vm->qtail; guard++) {
        int i = vm->qhead;
        vm->qhead = (vm->qhead + 1) % 256;
        if (vm->q[i].event)
            sg_hmp_on_event(vm->h, vm->q[i].msg);
        else
            vm->q[i].cb(vm->q[i].op, vm->q[i].msg);
        json_decref(vm->q[i].msg);
    }
}

static json_t *snaps_json(const struct fake_disk *d)
{
    json_t *a = json_array();
    for (int i = 0; i < d->n; i++) {
        const struct fake_snap *s = &d->snaps[i];
        json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:i, s:i, s:i}", "id", s->id, "name", s->tag,
                              "vm-state-size", (json_int_t)s->vmsize, "date-sec",
                              (json_int_t)s->date, "date-nsec", 0, "vm-clock-sec", 0,
                              "vm-clock-nsec", 0);
        if (s->icount)
            json_object_set_new(o, "icount", json_integer(0));
        json_array_append_new(a, o);
    }
    return a;
}

json_t *fake_query_block(struct fake_vm *vm, bool with_snaps)
{
    json_t *a = json_array();
    for (int i = 0; i < vm->ndisks; i++) {
        struct fake_disk *d = &vm->disks[i];
        json_t *image = json_pack("{s:s, s:s}", "filename", "x.img", "format", d->drv);
        if (with_snaps && d->n)
            json_object_set_new(image, "snapshots", snaps_json(d));
        json_t *ins = json_pack("{s:s, s:s, s:s, s:b, s:b, s:s, s:o, s:{s:b, s:b, s:b}}",
                                "node-name", d->node, "drv", d->drv, "file", "x.img", "ro", d->ro,
                                "encrypted", 0, "detect_zeroes", "off", "image", image, "cache",
                                "writeback", 1, "direct", 0, "no-flush", 0);
        json_array_append_new(a, json_pack("{s:s, s:b, s:b, s:o, s:s}", "device", d->device,
                                           "locked", 0, "removable", 1, "inserted", ins, "type",
                                           "unknown"));
    }
    return a;
}

json_t *fake_named_nodes(struct fake_vm *vm)
{
    json_t *a = json_array();
    for (int i = 0; i < vm->ndisks; i++) {
        struct fake_disk *d = &vm->disks[i];
        json_t *image = json_pack("{s:s}", "format", d->drv);
        if (d->n)
            json_object_set_new(image, "snapshots", snaps_json(d));
        json_array_append_new(a, json_pack("{s:s, s:s, s:b, s:o}", "node-name", d->node, "drv",
                                           d->drv, "ro", d->ro, "image", image));
        json_array_append_new(a, json_pack("{s:s, s:s, s:b, s:{s:s}}", "node-name", "#block1",
                                           "drv", "file", "ro", d->ro, "image", "format",
                                           "file"));
    }
    return a;
}

static void logf_(struct fake_vm *vm, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(struct fake_vm *vm, const char *fmt, ...)
{
    if (vm->nlog >= 64)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(vm->log[vm->nlog++], sizeof vm->log[0], fmt, ap);
    va_end(ap);
}

static struct fake_disk *by_node(struct fake_vm *vm, const char *node)
{
    for (int i = 0; i < vm->ndisks; i++)
        if (strcmp(vm->disks[i].node, node) == 0)
            return &vm->disks[i];
    return NULL;
}

/* Runs a snapshot job on the model; returns its error text or NULL. */
static const char *run_job(struct fake_vm *vm, const char *type, json_t *args, char *buf,
                           size_t n)
{
    const char *tag = json_string_value(json_object_get(args, "tag"));
    const char *vms = json_string_value(json_object_get(args, "vmstate"));
    json_t *devs = json_object_get(args, "devices");
    size_t i;
    json_t *dv;
    if (vm->fail_next_job) {
        const char *e = vm->fail_next_job;
        vm->fail_next_job = NULL;
        return e;
    }
    if (strcmp(type, "snapshot-save") == 0) {
        if (!by_node(vm, vms)) {
            snprintf(buf, n, "vmstate block device '%s' does not exist", vms);
            return buf;
        }
        json_array_foreach(devs, i, dv) {
            struct fake_disk *d = by_node(vm, json_string_value(dv));
            int k = fake_find(d, tag);
            /* Like snapgate-vmm: a replacing back end replaces only when asked. */
            if (k >= 0 && vm->replaces && json_is_true(json_object_get(args, "x-replace"))) {
                memmove(&d->snaps[k], &d->snaps[k + 1], (size_t)(d->n - k - 1) * sizeof d->snaps[0]);
                d->n--;
                k = -1;
            }
            if (k >= 0) {
                snprintf(buf, n, "Snapshot '%s' already exists in one or more devices", tag);
                return buf;
            }
        }
        json_array_foreach(devs, i, dv) {
            struct fake_disk *d = by_node(vm, json_string_value(dv));
            fake_snap(d, tag, strcmp(d->node, vms) == 0 ? 461434 : 0, 1795314587, false);
        }
    } else if (strcmp(type, "snapshot-load") == 0) {
        json_array_foreach(devs, i, dv) {
            if (fake_find(by_node(vm, json_string_value(dv)), tag) < 0) {
                snprintf(buf, n, "Snapshot '%s' does not exist in one or more devices", tag);
                return buf;
            }
        }
    } else {
        json_array_foreach(devs, i, dv) {
            struct fake_disk *d = by_node(vm, json_string_value(dv));
            int k = fake_find(d, tag);
            if (k >= 0) {
                memmove(&d->snaps[k], &d->snaps[k + 1], (size_t)(d->n - k - 1) * sizeof d->snaps[0]);
                d->n--;
            }
        }
    }
    return NULL;
}

static void event(struct fake_vm *vm, const char *id, const char *status)
{
    if (vm->no_events)
        return;
    push(vm, NULL, NULL,
         json_pack("{s:s, s:{s:s, s:s}, s:{s:i, s:i}}", "event", "JOB_STATUS_CHANGE", "data",
                   "id", id, "status", status, "timestamp", "seconds", 1, "microseconds", 2),
         true);
}

static void conclude(struct fake_vm *vm, json_t *job)
{
    json_object_set_new(job, "status", json_string("concluded"));
    json_object_set_new(job, "current-progress", json_integer(100));
    event(vm, json_string_value(json_object_get(job, "id")), "concluded");
}

void fake_release_jobs(struct fake_vm *vm)
{
    size_t i;
    json_t *j;
    json_array_foreach(vm->jobs, i, j) {
        if (strcmp(json_string_value(json_object_get(j, "status")), "running") == 0)
            conclude(vm, j);
    }
}

static void qmp(void *opaque, json_t *cmd, sg_hmp_reply_fn cb, void *cb_opaque)
{
    struct fake_vm *vm = opaque;
    const char *ex = json_string_value(json_object_get(cmd, "execute"));
    json_t *args = json_object_get(cmd, "arguments");
    json_t *ret = NULL;
    char err[512] = "";
    vm->ncmds++;
    if (vm->dead) {
        json_decref(cmd);
        if (vm->defer)
            push(vm, cb, cb_opaque, NULL, false);
        else
            cb(cb_opaque, NULL);
        return;
    }
    if (strcmp(ex, "query-block") == 0) {
        ret = fake_query_block(vm, true);
    } else if (strcmp(ex, "query-named-block-nodes") == 0) {
        ret = fake_named_nodes(vm);
    } else if (strcmp(ex, "query-version") == 0) {
        ret = json_pack("{s:{s:i, s:i, s:i}, s:s}", "qemu", "micro", 22, "minor", 2, "major", 7,
                        "package", "Debian 1:7.2+dfsg-7+deb12u18+b3");
    } else if (strcmp(ex, "query-status") == 0) {
        ret = json_pack("{s:s, s:b, s:b}", "status", vm->status, "running", vm->running,
                        "singlestep", 0);
    } else if (strcmp(ex, "stop") == 0) {
        if (vm->running)
            snprintf(vm->status, sizeof vm->status, "paused");
        vm->running = false;
        ret = json_object();
    } else if (strcmp(ex, "cont") == 0) {
        vm->running = true;
        snprintf(vm->status, sizeof vm->status, "running");
        ret = json_object();
    } else if (strcmp(ex, "system_reset") == 0 || strcmp(ex, "system_powerdown") == 0) {
        ret = json_object();
    } else if (strcmp(ex, "query-commands") == 0) {
        ret = json_pack("[{s:s}, {s:s}]", "name", "query-status", "name",
                        vm->has_hmc ? "human-monitor-command" : "query-jobs");
    } else if (strcmp(ex, "human-monitor-command") == 0 && vm->has_hmc) {
        snprintf(vm->last_hmc, sizeof vm->last_hmc, "%s",
                 json_string_value(json_object_get(args, "command-line")));
        ret = json_string("forwarded\r\n");
    } else if (strcmp(ex, "query-jobs") == 0) {
        ret = json_deep_copy(vm->jobs);
    } else if (strcmp(ex, "job-dismiss") == 0) {
        const char *id = json_string_value(json_object_get(args, "id"));
        size_t i;
        json_t *j;
        json_array_foreach(vm->jobs, i, j) {
            if (strcmp(json_string_value(json_object_get(j, "id")), id) == 0) {
                json_array_remove(vm->jobs, i);
                break;
            }
        }
        logf_(vm, "job-dismiss %s", id);
        event(vm, id, "null");
        ret = json_object();
    } else if (strcmp(ex, "job-cancel") == 0) {
        const char *id = json_string_value(json_object_get(args, "id"));
        size_t i;
        json_t *j;
        vm->cancels++;
        json_array_foreach(vm->jobs, i, j) {
            if (strcmp(json_string_value(json_object_get(j, "id")), id) == 0 &&
                strcmp(json_string_value(json_object_get(j, "status")), "running") == 0) {
                json_object_set_new(j, "error", json_string("operation cancelled"));
                conclude(vm, j);
            }
        }
        ret = json_object();
    } else if (strncmp(ex, "snapshot-", 9) == 0) {
        const char *id = json_string_value(json_object_get(args, "job-id"));
        char devs[256] = "";
        size_t i;
        json_t *dv;
        json_array_foreach(json_object_get(args, "devices"), i, dv) {
            strncat(devs, i ? "," : "", sizeof devs - strlen(devs) - 1);
            strncat(devs, json_string_value(dv), sizeof devs - strlen(devs) - 1);
        }
        const char *vms = json_string_value(json_object_get(args, "vmstate"));
        logf_(vm, "%s %s tag=%s devices=%s%s%s%s", ex, id,
              json_string_value(json_object_get(args, "tag")), devs, vms ? " vmstate=" : "",
              vms ? vms : "",
              json_is_true(json_object_get(args, "x-replace")) ? " x-replace" : "");
        char buf[512];
        const char *jerr = run_job(vm, ex, args, buf, sizeof buf);
        json_t *job = json_pack("{s:s, s:s, s:s, s:i, s:i}", "id", id, "type", ex, "status",
                                "running", "current-progress", 10, "total-progress", 100);
        if (jerr)
            json_object_set_new(job, "error", json_string(jerr));
        json_array_append_new(vm->jobs, job);
        if (!vm->events_first)
            push(vm, cb, cb_opaque, json_pack("{s:{}}", "return"), false);
        event(vm, id, "created");
        event(vm, id, "running");
        if (!vm->hold_jobs)
            conclude(vm, job);
        if (vm->events_first)
            push(vm, cb, cb_opaque, json_pack("{s:{}}", "return"), false);
        json_decref(cmd);
        return;
    } else {
        snprintf(err, sizeof err, "The command %s has not been found", ex);
    }
    json_decref(cmd);
    if (ret)
        push(vm, cb, cb_opaque, json_pack("{s:o}", "return", ret), false);
    else
        push(vm, cb, cb_opaque,
             json_pack("{s:{s:s, s:s}}", "error", "class", "CommandNotFound", "desc", err),
             false);
}

struct sg_hmp_backend fake_backend(struct fake_vm *vm)
{
    struct sg_hmp_backend be = {qmp, vm};
    return be;
}

static char run_text[65536];
static int run_calls;

static void run_done(void *o, const char *text, bool quit)
{
    (void)o;
    snprintf(run_text, sizeof run_text, "%s", text);
    fake_last_quit = quit;
    run_calls++;
}

const char *fake_run(struct fake_vm *vm, const char *line, int profile)
{
    run_calls = 0;
    run_text[0] = 0;
    sg_hmp_exec(vm->h, line, profile, run_done, NULL, NULL);
    for (int i = 0; i < 100 && run_calls == 0; i++) {
        fake_drain(vm);
        if (run_calls == 0) {
            if (vm->hold_jobs)
                fake_release_jobs(vm);
            sg_hmp_tick(vm->h);
        }
    }
    fake_drain(vm);
    if (run_calls != 1) {
        fprintf(stderr, "line %s: done called %d times\n", line, run_calls);
        abort();
    }
    return run_text;
}

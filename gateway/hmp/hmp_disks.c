/* The disk model, QEMU's device checks and the job plans. */
#include "hmp_snap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sg_q72.h"

static char *dup_str(const char *s)
{
    return strdup(s ? s : "");
}

static json_t *find_named_node(json_t *named, const char *node)
{
    size_t i;
    json_t *n;
    if (!json_is_array(named) || !*node)
        return NULL;
    json_array_foreach(named, i, n) {
        if (json_is_string(json_object_get(n, "node-name")) &&
            strcmp(json_string_value(json_object_get(n, "node-name")), node) == 0)
            return n;
    }
    return NULL;
}

static int64_t int_of(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

static bool load_snaps(struct sg_hmp_disk *d, json_t *list, struct sg_error *err)
{
    if (!json_is_array(list))
        return true;
    size_t n = json_array_size(list);
    d->snaps = calloc(n ? n : 1, sizeof *d->snaps);
    if (!d->snaps) {
        sg_error_set(err, "out of memory");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(list, i);
        struct sg_hmp_snap *o = &d->snaps[d->nsnaps];
        if (!json_is_string(json_object_get(s, "id")) ||
            !json_is_string(json_object_get(s, "name")))
            continue;  /* malformed entries are skipped, not fatal */
        o->id = dup_str(json_string_value(json_object_get(s, "id")));
        o->tag = dup_str(json_string_value(json_object_get(s, "name")));
        if (!o->id || !o->tag) {
            free(o->id);
            free(o->tag);
            sg_error_set(err, "out of memory");
            return false;
        }
        o->vm_state_size = (uint64_t)int_of(s, "vm-state-size");
        o->date_sec = int_of(s, "date-sec");
        o->date_nsec = int_of(s, "date-nsec");
        o->vm_clock_nsec = (uint64_t)int_of(s, "vm-clock-sec") * 1000000000ULL +
                           (uint64_t)int_of(s, "vm-clock-nsec");
        o->has_icount = json_is_integer(json_object_get(s, "icount"));
        o->icount = int_of(s, "icount");
        d->nsnaps++;
    }
    return true;
}

bool sg_hmp_disks_from_qmp(struct sg_hmp_disks *out, json_t *query_block, json_t *named_nodes,
                           struct sg_error *err)
{
    memset(out, 0, sizeof *out);
    if (!json_is_array(query_block)) {
        sg_error_set(err, "query-block did not return a list");
        return false;
    }
    size_t n = json_array_size(query_block);
    out->disk = calloc(n ? n : 1, sizeof *out->disk);
    if (!out->disk) {
        sg_error_set(err, "out of memory");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *b = json_array_get(query_block, i);
        json_t *ins = json_object_get(b, "inserted");
        struct sg_hmp_disk *d = &out->disk[out->n++];
        const char *dev = json_string_value(json_object_get(b, "device"));
        const char *node = json_string_value(json_object_get(ins, "node-name"));
        d->node = dup_str(node);
        d->device = dup_str(dev && *dev ? dev : node);
        if (!d->node || !d->device) {
            sg_error_set(err, "out of memory");
            sg_hmp_disks_clear(out);
            return false;
        }
        if (!json_is_object(ins))
            continue;
        d->inserted = true;
        d->ro = json_is_true(json_object_get(ins, "ro"));
        const char *drv = json_string_value(json_object_get(ins, "drv"));
        d->can_snapshot = drv && strcmp(drv, "qcow2") == 0;
        json_t *nn = find_named_node(named_nodes, d->node);
        json_t *image = json_object_get(nn ? nn : ins, "image");
        if (!load_snaps(d, json_object_get(image, "snapshots"), err)) {
            sg_hmp_disks_clear(out);
            return false;
        }
    }
    return true;
}

void sg_hmp_disks_clear(struct sg_hmp_disks *d)
{
    for (size_t i = 0; i < d->n; i++) {
        for (size_t j = 0; j < d->disk[i].nsnaps; j++) {
            free(d->disk[i].snaps[j].id);
            free(d->disk[i].snaps[j].tag);
        }
        free(d->disk[i].snaps);
        free(d->disk[i].device);
        free(d->disk[i].node);
    }
    free(d->disk);
    memset(d, 0, sizeof *d);
}

bool sg_hmp_disk_in_snapshot(const struct sg_hmp_disk *d)
{
    return d->inserted && !d->ro;
}

bool sg_hmp_check_writable(const struct sg_hmp_disks *d, struct sg_error *err)
{
    for (size_t i = 0; i < d->n; i++)
        if (sg_hmp_disk_in_snapshot(&d->disk[i]) && !d->disk[i].can_snapshot) {
            sg_error_set(err, SG_Q72_CANNOT_SNAPSHOT, d->disk[i].device);
            return false;
        }
    return true;
}

int sg_hmp_vmstate_disk(const struct sg_hmp_disks *d, const char *override, struct sg_error *err)
{
    for (size_t i = 0; i < d->n; i++) {
        const struct sg_hmp_disk *k = &d->disk[i];
        if (override && *override) {
            if (strcmp(k->node, override) != 0 && strcmp(k->device, override) != 0)
                continue;
            if (!k->inserted)
                break;
            if (!sg_hmp_disk_in_snapshot(k) || !k->can_snapshot) {
                sg_error_set(err, SG_Q72_VMSTATE_CANNOT, override);
                return -1;
            }
            return (int)i;
        }
        if (sg_hmp_disk_in_snapshot(k) && k->can_snapshot)
            return (int)i;
    }
    if (override && *override)
        sg_error_set(err, SG_Q72_VMSTATE_MISSING, override);
    else
        sg_error_set(err, SG_Q72_NO_VMSTATE_BS);
    return -1;
}

size_t sg_hmp_tag_count(const struct sg_hmp_disk *d, const char *tag, size_t *first)
{
    size_t n = 0;
    for (size_t j = d->nsnaps; j-- > 0;)
        if (strcmp(d->snaps[j].tag, tag) == 0) {
            n++;
            if (first)
                *first = j;
        }
    return n;
}

static bool tag_exists(const struct sg_hmp_disks *d, const char *tag)
{
    for (size_t i = 0; i < d->n; i++)
        if (sg_hmp_disk_in_snapshot(&d->disk[i]) && sg_hmp_tag_count(&d->disk[i], tag, NULL))
            return true;
    return false;
}

void sg_hmp_default_tag(const struct sg_hmp_disks *d, time_t now, bool unique, char *buf,
                        size_t n)
{
    struct tm tm;
    char base[64];
    if (!localtime_r(&now, &tm) || strftime(base, sizeof base, SG_Q72_TIMEDATE_FMT, &tm) == 0)
        snprintf(base, sizeof base, "vm-%lld", (long long)now);
    snprintf(buf, n, "%s", base);
    for (unsigned k = 2; unique && tag_exists(d, buf) && k < 100000; k++)
        snprintf(buf, n, "%s-%u", base, k);
}

void sg_hmp_plan_clear(struct sg_hmp_plan *p)
{
    for (size_t i = 0; i < p->njobs; i++)
        json_decref(p->jobs[i].cmd);
    memset(p, 0, sizeof *p);
}

bool sg_hmp_plan_add(struct sg_hmp_plan *p, const struct sg_hmp_disks *d, int vmstate,
                     const char *kind, const char *tag, const char *prefix, const char *verb,
                     unsigned *counter)
{
    if (p->njobs >= sizeof p->jobs / sizeof p->jobs[0])
        return false;
    json_t *devices = json_array();
    for (size_t i = 0; i < d->n; i++)
        if (sg_hmp_disk_in_snapshot(&d->disk[i]) && d->disk[i].can_snapshot)
            json_array_append_new(devices, json_string(d->disk[i].node));
    struct sg_hmp_job *j = &p->jobs[p->njobs];
    snprintf(j->job_id, sizeof j->job_id, "%s%s-%u", prefix, verb, ++*counter);
    json_t *args = json_pack("{s:s, s:s, s:o}", "job-id", j->job_id, "tag", tag, "devices",
                             devices);
    if (args && strcmp(kind, "delete") != 0 && vmstate >= 0)
        json_object_set_new(args, "vmstate", json_string(d->disk[vmstate].node));
    char execute[32];
    snprintf(execute, sizeof execute, "snapshot-%s", kind);
    j->cmd = args ? json_pack("{s:s, s:o}", "execute", execute, "arguments", args) : NULL;
    if (!j->cmd)
        return false;
    p->njobs++;
    return true;
}

bool sg_hmp_plan_delete_by_id(struct sg_hmp_plan *p, const struct sg_hmp_disks *d, int vmstate,
                              const char *id, struct sg_error *err)
{
    const struct sg_hmp_snap *target = NULL;
    if (vmstate >= 0 && (size_t)vmstate < d->n)
        for (size_t j = 0; j < d->disk[vmstate].nsnaps; j++)
            if (strcmp(d->disk[vmstate].snaps[j].id, id) == 0)
                target = &d->disk[vmstate].snaps[j];
    if (!target) {
        sg_error_set(err, "Snapshot ID '%s' does not exist on '%s'", id,
                     vmstate >= 0 ? d->disk[vmstate].device : "(no vmstate disk)");
        return false;
    }
    for (size_t i = 0; i < d->n; i++) {
        const struct sg_hmp_disk *k = &d->disk[i];
        if (!sg_hmp_disk_in_snapshot(k) || !k->can_snapshot)
            continue;
        /* The same VM snapshot on another disk: same tag and the same date
         * (savevm writes one date on every disk); on the vmstate disk, the
         * ID itself. */
        const struct sg_hmp_snap *pick = NULL;
        size_t same = 0;
        for (size_t j = 0; j < k->nsnaps; j++) {
            const struct sg_hmp_snap *x = &k->snaps[j];
            if (strcmp(x->tag, target->tag) != 0)
                continue;
            if ((int)i == vmstate ? strcmp(x->id, id) == 0
                                  : x->date_sec == target->date_sec &&
                                        x->date_nsec == target->date_nsec) {
                pick = x;
                same++;
            }
        }
        if (!pick)
            continue;   /* this disk holds no copy of that snapshot */
        if (same > 1) {
            sg_error_set(err, "Snapshot tag '%s' is carried %zu times on '%s' with the date of "
                         "snapshot ID %s; delete it there by hand "
                         "(blockdev-snapshot-delete-internal-sync)",
                         target->tag, same, k->device, id);
            return false;
        }
        if (p->njobs >= sizeof p->jobs / sizeof p->jobs[0]) {
            sg_error_set(err, "too many disks");
            return false;
        }
        struct sg_hmp_job *j = &p->jobs[p->njobs];
        j->job_id[0] = '\0';
        j->cmd = json_pack("{s:s, s:{s:s, s:s, s:s}}", "execute",
                           "blockdev-snapshot-delete-internal-sync", "arguments", "device",
                           k->node[0] ? k->node : k->device, "id", pick->id, "name", pick->tag);
        if (!j->cmd) {
            sg_error_set(err, "out of memory");
            return false;
        }
        p->njobs++;
    }
    return true;
}

/* Output of the info commands.  The qemu-7.2 profile follows QEMU's
 * hmp_info_snapshots exactly: the all-disks list is the vmstate disk's
 * snapshots whose tag is on every writable disk (IDs printed as "--"),
 * and what is left on each snapshot-capable disk is listed as partial.
 * Tags: the qemu-7.2 profile prints them raw, byte for byte as QEMU 7.2
 * (control characters reach the terminal); the snapgate profile prints a
 * tag with control characters or bytes that are not UTF-8 quoted and
 * escaped (sg_escape.h), so every snapshot shows, one row each. */
#include "hmp_snap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sg_escape.h"
#include "sg_hmp.h"
#include "sg_q72.h"

/* A tag as this profile prints it: NULL for as it is (or out of memory). */
static char *tag_out(const char *tag, bool q72)
{
    return q72 || sg_tag_is_plain(tag) ? NULL : sg_tag_for_terminal(tag);
}

static bool all_have(const struct sg_hmp_disks *d, const char *tag)
{
    /* QEMU asks every writable disk, including those that cannot snapshot
     * (which never have it: the list then says "None"). */
    for (size_t i = 0; i < d->n; i++)
        if (sg_hmp_disk_in_snapshot(&d->disk[i]) &&
            (!d->disk[i].can_snapshot || !sg_hmp_tag_count(&d->disk[i], tag, NULL)))
            return false;
    return true;
}

/* The ID a tag has on every disk of the VM, or "--" when it differs or is
 * duplicated somewhere (the snapgate profile shows IDs only when they mean
 * one thing). */
static const char *common_id(const struct sg_hmp_disks *d, const struct sg_hmp_snap *s)
{
    for (size_t i = 0; i < d->n; i++) {
        const struct sg_hmp_disk *k = &d->disk[i];
        if (!sg_hmp_disk_in_snapshot(k) || !k->can_snapshot)
            continue;
        size_t first;
        if (sg_hmp_tag_count(k, s->tag, &first) != 1 || strcmp(k->snaps[first].id, s->id) != 0)
            return "--";
    }
    return s->id;
}

static void row(const struct sg_hmp_snap *s, const char *id, bool q72, struct sg_strbuf *out)
{
    char *esc = tag_out(s->tag, q72);
    const char *tag = esc ? esc : s->tag;
    struct sg_q72_snapshot r = {
        .id = id, .tag = tag, .vm_state_size = s->vm_state_size, .date_sec = s->date_sec,
        .vm_clock_nsec = s->vm_clock_nsec, .has_icount = s->has_icount, .icount = s->icount,
    };
    char *buf = sg_q72_snapshot_row_dup(&r, q72);
    if (buf)
        sg_sb_printf(out, "%s\n", buf);
    free(buf);
    free(esc);
}

static void header(bool q72, struct sg_strbuf *out)
{
    char buf[128];
    sg_q72_snapshot_header(buf, sizeof buf, q72);
    sg_sb_printf(out, "%s\n", buf);
}

static void notes(const struct sg_hmp_disks *d, int vs, struct sg_strbuf *out)
{
    for (size_t i = 0; i < d->n; i++) {
        const struct sg_hmp_disk *k = &d->disk[i];
        if (!sg_hmp_disk_in_snapshot(k) || !k->can_snapshot)
            continue;
        for (size_t j = 0; j < k->nsnaps; j++) {
            size_t first;
            if (sg_hmp_tag_count(k, k->snaps[j].tag, &first) > 1 && first == j) {
                char *esc = tag_out(k->snaps[j].tag, false);
                sg_sb_printf(out, "Note: tag '%s' is carried by IDs", esc ? esc : k->snaps[j].tag);
                free(esc);
                const char *sep = " ";
                for (size_t m = j; m < k->nsnaps; m++)
                    if (strcmp(k->snaps[m].tag, k->snaps[j].tag) == 0) {
                        sg_sb_printf(out, "%s%s", sep, k->snaps[m].id);
                        sep = ", ";
                    }
                sg_sb_printf(out, " on '%s': it is ambiguous ('loadvm -i ID' picks one)\n",
                             k->device);
            }
        }
    }
    if (vs < 0)
        return;
    const struct sg_hmp_disk *v = &d->disk[vs];
    for (size_t j = 0; j < v->nsnaps; j++)
        for (size_t m = 0; m < v->nsnaps; m++)
            if (m != j && strcmp(v->snaps[m].tag, v->snaps[j].id) == 0) {
                char *esc = tag_out(v->snaps[j].tag, false);
                sg_sb_printf(out,
                             "Note: '%s' is the tag of one snapshot and the ID of snapshot '%s'; "
                             "'loadvm %s' means the tag, 'loadvm -i %s' the ID\n",
                             v->snaps[j].id, esc ? esc : v->snaps[j].tag, v->snaps[j].id,
                             v->snaps[j].id);
                free(esc);
                break;
            }
}

void sg_hmp_format_snapshots(const struct sg_hmp_disks *d, const char *vmstate_override,
                             int profile, struct sg_strbuf *out)
{
    bool q72 = profile == SG_HMP_PROFILE_QEMU72;
    struct sg_error err = {0};
    int vs = sg_hmp_vmstate_disk(d, vmstate_override, &err);
    if (vs < 0) {
        sg_sb_printf(out, "%s\n", err.msg);  /* QEMU prints it without "Error: " */
        return;
    }
    bool any = false;
    for (size_t i = 0; i < d->n; i++)
        if (sg_hmp_disk_in_snapshot(&d->disk[i]) && d->disk[i].can_snapshot &&
            d->disk[i].nsnaps)
            any = true;
    if (!any) {
        sg_sb_puts(out, SG_Q72_NO_SNAPSHOT "\n");
        return;
    }
    const struct sg_hmp_disk *v = &d->disk[vs];
    bool *global = calloc(v->nsnaps ? v->nsnaps : 1, sizeof *global);
    if (!global)
        return;
    size_t total = 0;
    for (size_t j = 0; j < v->nsnaps; j++)
        if (all_have(d, v->snaps[j].tag)) {
            global[j] = true;
            total++;
        }
    sg_sb_puts(out, SG_Q72_ALL_DISKS "\n");
    if (total) {
        header(q72, out);
        for (size_t j = 0; j < v->nsnaps; j++)
            if (global[j])
                row(&v->snaps[j], q72 ? "--" : common_id(d, &v->snaps[j]), q72, out);
    } else {
        sg_sb_puts(out, SG_Q72_NONE "\n");
    }
    for (size_t i = 0; i < d->n; i++) {
        const struct sg_hmp_disk *k = &d->disk[i];
        if (!sg_hmp_disk_in_snapshot(k) || !k->can_snapshot)
            continue;
        bool started = false;
        for (size_t j = 0; j < k->nsnaps; j++) {
            bool listed = false;
            for (size_t g = 0; g < v->nsnaps && !listed; g++)
                listed = global[g] && strcmp(v->snaps[g].tag, k->snaps[j].tag) == 0;
            if (listed)
                continue;
            if (!started) {
                sg_sb_printf(out, "\n" SG_Q72_PARTIAL "\n", k->device);
                header(q72, out);
                started = true;
            }
            row(&k->snaps[j], k->snaps[j].id, q72, out);
        }
    }
    free(global);
    if (!q72)
        notes(d, vs, out);
}

void sg_hmp_format_status(json_t *st, struct sg_strbuf *out)
{
    bool running = json_is_true(json_object_get(st, "running"));
    const char *status = json_string_value(json_object_get(st, "status"));
    sg_sb_printf(out, SG_Q72_VM_STATUS, running ? "running" : "paused",
                 json_is_true(json_object_get(st, "singlestep")) ? " (single step mode)" : "");
    if (!running && status && strcmp(status, "paused") != 0)
        sg_sb_printf(out, " (%s)", status);
    sg_sb_puts(out, "\n");
}

static const char *str_or(json_t *o, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : dflt;
}

void sg_hmp_format_version(json_t *v, struct sg_strbuf *out)
{
    json_t *q = json_object_get(v, "qemu");
    sg_sb_printf(out, "%" JSON_INTEGER_FORMAT ".%" JSON_INTEGER_FORMAT ".%" JSON_INTEGER_FORMAT "%s\n",
                 json_integer_value(json_object_get(q, "major")),
                 json_integer_value(json_object_get(q, "minor")),
                 json_integer_value(json_object_get(q, "micro")), str_or(v, "package", ""));
}

/* QEMU 7.2's print_block_info without -v/-n. */
void sg_hmp_format_block(json_t *list, struct sg_strbuf *out)
{
    size_t i;
    json_t *b;
    json_array_foreach(list, i, b) {
        json_t *ins = json_object_get(b, "inserted");
        const char *dev = str_or(b, "device", "");
        if (i)
            sg_sb_puts(out, "\n");
        if (*dev) {
            sg_sb_puts(out, dev);
            if (json_is_string(json_object_get(ins, "node-name")))
                sg_sb_printf(out, " (%s)", str_or(ins, "node-name", ""));
        } else {
            sg_sb_puts(out, json_is_string(json_object_get(ins, "node-name"))
                                ? str_or(ins, "node-name", "")
                                : str_or(b, "qdev", "<anonymous>"));
        }
        if (ins)
            sg_sb_printf(out, ": %s (%s%s%s)\n", str_or(ins, "file", ""), str_or(ins, "drv", ""),
                         json_is_true(json_object_get(ins, "ro")) ? ", read-only" : "",
                         json_is_true(json_object_get(ins, "encrypted")) ? ", encrypted" : "");
        else
            sg_sb_puts(out, ": [not inserted]\n");
        if (json_is_string(json_object_get(b, "qdev")))
            sg_sb_printf(out, "    Attached to:      %s\n", str_or(b, "qdev", ""));
        const char *io = str_or(b, "io-status", "ok");
        if (strcmp(io, "ok") != 0)
            sg_sb_printf(out, "    I/O status:       %s\n", io);
        if (json_is_true(json_object_get(b, "removable")))
            sg_sb_printf(out, "    Removable device: %slocked, tray %s\n",
                         json_is_true(json_object_get(b, "locked")) ? "" : "not ",
                         json_is_true(json_object_get(b, "tray_open")) ? "open" : "closed");
        if (!ins)
            continue;
        json_t *cache = json_object_get(ins, "cache");
        sg_sb_printf(out, "    Cache mode:       %s%s%s\n",
                     json_is_false(json_object_get(cache, "writeback")) ? "writethrough"
                                                                        : "writeback",
                     json_is_true(json_object_get(cache, "direct")) ? ", direct" : "",
                     json_is_true(json_object_get(cache, "no-flush")) ? ", ignore flushes" : "");
        if (json_is_string(json_object_get(ins, "backing_file")))
            sg_sb_printf(out, "    Backing file:     %s (chain depth: %lld)\n",
                         str_or(ins, "backing_file", ""),
                         (long long)json_integer_value(json_object_get(ins, "backing_file_depth")));
        const char *dz = str_or(ins, "detect_zeroes", "off");
        if (strcmp(dz, "off") != 0)
            sg_sb_printf(out, "    Detect zeroes:    %s\n", dz);
    }
}

void sg_hmp_format_jobs(json_t *list, struct sg_strbuf *out)
{
    size_t i;
    json_t *j;
    if (!json_array_size(list)) {
        sg_sb_puts(out, "No jobs\n");
        return;
    }
    json_array_foreach(list, i, j) {
        long long cur = json_integer_value(json_object_get(j, "current-progress"));
        long long tot = json_integer_value(json_object_get(j, "total-progress"));
        sg_sb_printf(out, "%s: %s, %s", str_or(j, "id", "?"), str_or(j, "type", "?"),
                     str_or(j, "status", "?"));
        if (tot > 0) {
            char c[32], t[32];
            sg_q72_size_str((uint64_t)cur, c, sizeof c);
            sg_q72_size_str((uint64_t)tot, t, sizeof t);
            sg_sb_printf(out, ", %lld%% (%s of %s)", cur * 100 / tot, c, t);
        }
        if (json_is_string(json_object_get(j, "error")))
            sg_sb_printf(out, ", error: %s", str_or(j, "error", ""));
        sg_sb_puts(out, "\n");
    }
}

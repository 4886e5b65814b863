/* INTERFACES.md section 3, rules 1-6 (the snapgate profile).  QMP snapshot
 * jobs name snapshots by tag, so every resolution ends in one tag that must
 * be unambiguous on every disk. */
#include "hmp_snap.h"

#include <stdio.h>
#include <string.h>

static const struct sg_hmp_snap *find_id(const struct sg_hmp_disk *d, const char *id)
{
    for (size_t j = 0; j < d->nsnaps; j++)
        if (strcmp(d->snaps[j].id, id) == 0)
            return &d->snaps[j];
    return NULL;
}

static bool in_vm(const struct sg_hmp_disk *d)
{
    return sg_hmp_disk_in_snapshot(d) && d->can_snapshot;
}

/* "2, 4" — the IDs carrying `tag` on one disk. */
static void ids_with_tag(const struct sg_hmp_disk *d, const char *tag, char *buf, size_t n)
{
    size_t len = 0;
    buf[0] = 0;
    for (size_t j = 0; j < d->nsnaps && len < n; j++)
        if (strcmp(d->snaps[j].tag, tag) == 0) {
            int w = snprintf(buf + len, n - len, "%s%s", len ? ", " : "", d->snaps[j].id);
            if (w < 0)
                break;
            len += (size_t)w;
        }
}

/* Rule 3 on every disk of the VM: a tag carried twice on one disk cannot be
 * addressed by a job. */
static bool check_unique(const struct sg_hmp_disks *d, const char *tag, bool via_id,
                         const char *id, const char *verb, struct sg_error *err)
{
    for (size_t i = 0; i < d->n; i++) {
        if (!in_vm(&d->disk[i]) || sg_hmp_tag_count(&d->disk[i], tag, NULL) < 2)
            continue;
        char ids[256];
        ids_with_tag(&d->disk[i], tag, ids, sizeof ids);
        /* Advice that works: `delvm -i ID` deletes one of the duplicates
         * (by ID, disk by disk), after which the tag is unique again. */
        if (via_id)
            sg_error_set(err,
                         "Snapshot ID %s cannot be loaded alone: its tag '%s' is shared by IDs "
                         "%s on '%s', and snapshot-load addresses snapshots by tag; delete the "
                         "other ones first ('delvm -i ID'), then 'loadvm %s'",
                         id, tag, ids, d->disk[i].device, tag);
        else if (strcmp(verb, "delvm") == 0)
            sg_error_set(err, "Snapshot tag '%s' is ambiguous: IDs %s on '%s'; use 'delvm -i ID'",
                         tag, ids, d->disk[i].device);
        else
            sg_error_set(err, "Snapshot tag '%s' is ambiguous: IDs %s on '%s'; delete the ones "
                         "you do not want with 'delvm -i ID', then '%s %s'",
                         tag, ids, d->disk[i].device, verb, tag);
        return false;
    }
    return true;
}

bool sg_hmp_resolve(const struct sg_hmp_disks *d, int vmstate, const char *name,
                    enum sg_hmp_match how, bool for_load, const char *verb,
                    struct sg_hmp_resolved *res, struct sg_error *err)
{
    memset(res, 0, sizeof *res);
    const struct sg_hmp_disk *vs = vmstate >= 0 && (size_t)vmstate < d->n ? &d->disk[vmstate]
                                                                          : NULL;
    const struct sg_hmp_snap *by_id = vs ? find_id(vs, name) : NULL;
    size_t tag_hits = 0;
    for (size_t i = 0; i < d->n; i++)
        if (in_vm(&d->disk[i]))
            tag_hits += sg_hmp_tag_count(&d->disk[i], name, NULL);

    if (how == SG_HMP_MATCH_ID || (how == SG_HMP_MATCH_ANY && !tag_hits && by_id)) {
        /* Rule 1 (-i) and rule 4: the ID is read on the vmstate disk. */
        if (!by_id) {
            sg_error_set(err, "Snapshot ID '%s' does not exist on '%s'", name,
                         vs ? vs->device : "(no vmstate disk)");
            return false;
        }
        snprintf(res->tag, sizeof res->tag, "%s", by_id->tag);
        res->by_id = true;
        if (!check_unique(d, res->tag, true, name, verb, err))
            return false;
        if (how == SG_HMP_MATCH_ANY)
            snprintf(res->note, sizeof res->note, "(matched snapshot ID %s, tag '%s')", name,
                     by_id->tag);
        else   /* -i: say which snapshot that is */
            snprintf(res->note, sizeof res->note, "(snapshot ID %s, tag '%s')", name,
                     by_id->tag);
    } else if (tag_hits) {
        /* Rules 1 (-t), 2 and 3. */
        snprintf(res->tag, sizeof res->tag, "%s", name);
        if (!check_unique(d, name, false, NULL, verb, err))
            return false;
        if (how == SG_HMP_MATCH_ANY && by_id && strcmp(by_id->tag, name) != 0)
            snprintf(res->note, sizeof res->note,
                     "(note: '%s' is also the ID of snapshot '%s' on '%s'; use '%s -i %s' for "
                     "that one)",
                     name, by_id->tag, vs->device, verb, name);
    } else {
        sg_error_set(err, "Snapshot '%s' does not exist", name);  /* rule 6 */
        return false;
    }

    size_t len = 0, first;
    for (size_t i = 0; i < d->n; i++) {
        const struct sg_hmp_disk *k = &d->disk[i];
        if (!in_vm(k))
            continue;
        size_t c = sg_hmp_tag_count(k, res->tag, &first);
        if (c > res->max_dups)
            res->max_dups = c;
        if (c && k == vs)
            res->on_vmstate = &k->snaps[first];
        if (!c && len < sizeof res->missing) {
            int w = snprintf(res->missing + len, sizeof res->missing - len, "%s'%s'",
                             len ? ", " : "", k->device);
            if (w > 0)
                len += (size_t)w;
        }
    }
    if (for_load && res->missing[0]) {
        sg_error_set(err, "Snapshot '%s' is not loadable: it is missing on %s", res->tag,
                     res->missing);
        return false;
    }
    if (for_load && res->on_vmstate && res->on_vmstate->vm_state_size == 0) {
        sg_error_set(err,
                     "Snapshot '%s' has no VM state (a disk-only snapshot); revert to it "
                     "offline with qemu-img",
                     res->tag);
        return false;
    }
    if (!for_load && res->missing[0] && !res->note[0])
        snprintf(res->note, sizeof res->note, "(snapshot '%s' was not on %s)", res->tag,
                 res->missing);
    return true;
}

const struct sg_hmp_snap *sg_hmp_id_shadow(const struct sg_hmp_disks *d, const char *tag,
                                           size_t *disk)
{
    for (size_t i = 0; i < d->n; i++) {
        if (!in_vm(&d->disk[i]))
            continue;
        const struct sg_hmp_snap *s = find_id(&d->disk[i], tag);
        if (s && strcmp(s->tag, tag) != 0) {
            if (disk)
                *disk = i;
            return s;
        }
    }
    return NULL;
}

bool sg_hmp_tag_shadowed(const struct sg_hmp_disks *d, const char *tag, struct sg_error *err)
{
    size_t i;
    const struct sg_hmp_snap *s = sg_hmp_id_shadow(d, tag, &i);
    if (s)
        sg_error_set(err,
                     "Snapshot tag '%s' is also the ID of snapshot '%s' on '%s'; this back "
                     "end would restore that one (it looks names up as IDs first), so "
                     "loadvm refuses. 'loadvm -i %s' loads '%s'; to load '%s' itself, "
                     "delete '%s' first ('delvm -i %s'), or revert the disks offline "
                     "with 'snapgate-img snapshot -a -t %s FILE' (without the VM state)",
                     tag, s->tag, d->disk[i].device, tag, s->tag, tag, s->tag, tag, tag);
    return s != NULL;
}

/* hmp_safety.c: applies a profile's safety table (compat/sg_q72_safe.h) to a snapshot
 * command: the table says which commands QEMU 7.2 gets wrong for which trap; this file only
 * recognises the traps in the live snapshot lists. */
#include "hmp_snap.h"
#include "sg_q72_safe.h"

bool sg_hmp_safety_refuses(const struct sg_q72_safety *profile, const char *command,
                           const struct sg_hmp_disks *d, const char *tag, struct sg_error *err)
{
    const struct sg_q72_safety_rule *r =
        sg_q72_safety_rule(profile, command, SG_Q72_TRAP_TAG_IS_OTHER_ID);
    if (!r || r->action != SG_Q72_REFUSE)
        return false;
    size_t disk;
    const struct sg_hmp_snap *s = sg_hmp_id_shadow(d, tag, &disk);
    if (!s)
        return false;
    sg_error_set(err, SG_Q72_TRAP_TAG_IS_OTHER_ID_FMT, tag, s->tag, s->id, d->disk[disk].device,
                 r->refusal);
    return true;
}

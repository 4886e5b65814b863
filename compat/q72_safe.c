/* q72_safe.c: the libvirt-safe profile's table (see sg_q72_safe.h for how it was learnt). */
#include "sg_q72_safe.h"

#include <string.h>

static const struct sg_q72_safety_rule libvirt_safe_rules[] = {
    /* QEMU 7.2 restores the snapshot whose ID is the tag (HMP loadvm, snapshot-load and the
     * -loadvm option that libvirt's snapshot-revert uses): refuse. */
    { "loadvm", SG_Q72_TRAP_TAG_IS_OTHER_ID, SG_Q72_REFUSE,
      "QEMU 7.2 would load that snapshot instead, so snapgate refuses to restore the wrong one" },
    /* savevm over an existing tag deletes that tag's snapshot, found by tag: correct. */
    { "savevm", SG_Q72_TRAP_TAG_IS_OTHER_ID, SG_Q72_AS_QEMU, NULL },
    /* delvm finds the snapshot by tag: correct. */
    { "delvm", SG_Q72_TRAP_TAG_IS_OTHER_ID, SG_Q72_AS_QEMU, NULL },
};

const struct sg_q72_safety sg_q72_libvirt_safe = {
    "libvirt-safe", libvirt_safe_rules, sizeof libvirt_safe_rules / sizeof libvirt_safe_rules[0],
};

const struct sg_q72_safety_rule *sg_q72_safety_rule(const struct sg_q72_safety *profile,
                                                    const char *command, enum sg_q72_trap trap)
{
    if (!profile)
        return NULL;
    for (size_t i = 0; i < profile->nrules; i++) {
        const struct sg_q72_safety_rule *r = &profile->rules[i];
        if (r->trap == trap && strcmp(r->command, command) == 0)
            return r;
    }
    return NULL;
}

/* sg_q72_safe.h: the libvirt-safe profile as data.
 *
 * The profile replies as QEMU 7.2 (sg_q72.h) byte for byte, except where QEMU 7.2 would act
 * on a different snapshot than the name says.  Which commands do that was learnt by running
 * QEMU 7.2 on an image with snapshot `alpha` = ID 1 and snapshot `1` = ID 2 (snapgate-hmp(7),
 * "The libvirt-safe profile"): HMP `loadvm 1`, QMP `snapshot-load` of tag "1" and `-loadvm 1`
 * restore alpha (qcow2's snapshot goto looks the name up as an ID first); `savevm 1` over the
 * existing tag and `delvm 1` find the snapshot by tag and act on the right one.
 *
 * The table below is the whole difference; the HMP engine consults it and has no
 * profile-specific branches for it. */
#ifndef SG_Q72_SAFE_H
#define SG_Q72_SAFE_H

#include <stddef.h>

/* A way QEMU 7.2 can pick another snapshot than the one named. */
enum sg_q72_trap {
    /* The tag is also the numeric ID of another snapshot on some disk of the VM. */
    SG_Q72_TRAP_TAG_IS_OTHER_ID,
};
#define SG_Q72_TRAP_TAG_IS_OTHER_ID_FMT "Snapshot '%s' is also the ID of snapshot '%s' (ID %s) on '%s': %s"

enum sg_q72_action {
    SG_Q72_AS_QEMU,   /* QEMU 7.2 acts on the named snapshot: reply as it does */
    SG_Q72_REFUSE,    /* QEMU 7.2 would act on another one: an "Error: " reply, nothing done */
};

struct sg_q72_safety_rule {
    const char *command;      /* HMP command: "loadvm", "savevm", "delvm" */
    enum sg_q72_trap trap;
    enum sg_q72_action action;
    /* For SG_Q72_REFUSE: what QEMU 7.2 would do instead, the end of the reply
     * "Error: Snapshot 'TAG' is also the ID of snapshot 'OTHER' (ID N) on 'DEV': ..." */
    const char *refusal;
};

struct sg_q72_safety {
    const char *profile;      /* "libvirt-safe" */
    const struct sg_q72_safety_rule *rules;
    size_t nrules;
};

/* The libvirt-safe profile's table. */
extern const struct sg_q72_safety sg_q72_libvirt_safe;

/* The rule of `profile` for `command` and `trap`, or NULL (reply as QEMU 7.2). */
const struct sg_q72_safety_rule *sg_q72_safety_rule(const struct sg_q72_safety *profile,
                                                    const char *command, enum sg_q72_trap trap);

#endif

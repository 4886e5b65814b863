/* qmp_schema.h: argument checking with QEMU 7.2's error texts.
 *
 * A command's arguments are described by a static table; checking walks the
 * schema in order the way QEMU's QObject input visitor does, so the first
 * error reported is the one QEMU reports:
 *   "Parameter 'tag' is missing"
 *   "Parameter 'X' is unexpected"                      (after all members)
 *   "Invalid parameter type for 'X', expected: string" (integer, boolean,
 *                                    number, object, array likewise)
 *   "Parameter 'X' expects uint64"                     (SG_QMP_T_UINT64, SIZE: "size")
 *   "Parameter 'X' does not accept value 'V'"          (enum; X is the bare name)
 * Nested names are spelled like QEMU: "actions[0].data.name".
 *
 * Example (use designated initializers or the macros below: positional
 * ones trip -Wmissing-field-initializers under -Wextra):
 *   static const struct sg_qmp_arg str_elem = SG_QMP_ARG(NULL, SG_QMP_T_STR);
 *   static const struct sg_qmp_arg save_args[] = {
 *       SG_QMP_ARG("job-id", SG_QMP_T_STR),
 *       SG_QMP_ARG("tag", SG_QMP_T_STR),
 *       SG_QMP_ARG("vmstate", SG_QMP_T_STR),
 *       { .name = "devices", .type = SG_QMP_T_ARRAY, .elem = &str_elem },
 *       SG_QMP_ARGS_END,
 *   };
 */
#ifndef SG_QMP_SCHEMA_H
#define SG_QMP_SCHEMA_H

#include <stdbool.h>

#include <jansson.h>

#include "sg_error.h"

enum sg_qmp_type {
    SG_QMP_T_END = 0,  /* (unused as a type; a NULL name ends a member list) */
    SG_QMP_T_STR,
    SG_QMP_T_INT,      /* any JSON integer */
    SG_QMP_T_UINT64,   /* JSON integer; else "Parameter 'X' expects uint64" */
    SG_QMP_T_SIZE,     /* JSON integer; else "Parameter 'X' expects size" */
    SG_QMP_T_BOOL,
    SG_QMP_T_NUMBER,   /* integer or real */
    SG_QMP_T_ANY,      /* anything, unchecked */
    SG_QMP_T_OBJECT,   /* `members` (NULL: any object, unchecked members) */
    SG_QMP_T_ARRAY,    /* each element checked against `elem` */
    SG_QMP_T_ENUM,     /* a string among `values` */
    SG_QMP_T_UNION,    /* object: `members` (must include the discriminator,
                        * an SG_QMP_T_ENUM), then the members of the variant
                        * whose `value` equals the discriminator */
};

struct sg_qmp_variant {
    const char *value;                 /* NULL ends the list */
    const struct sg_qmp_arg *members;  /* NULL-name-terminated; may be NULL */
};

struct sg_qmp_arg {
    const char *name;                  /* NULL ends a member list */
    enum sg_qmp_type type;
    bool optional;
    const struct sg_qmp_arg *members;  /* OBJECT / UNION base members */
    const struct sg_qmp_arg *elem;     /* ARRAY element (its name is ignored) */
    const char *const *values;         /* ENUM, NULL-terminated */
    const char *discriminator;         /* UNION: name of the tag member */
    const struct sg_qmp_variant *variants; /* UNION */
};

#define SG_QMP_ARG(name_, type_) { .name = (name_), .type = (type_) }
#define SG_QMP_OPT(name_, type_) { .name = (name_), .type = (type_), .optional = true }
#define SG_QMP_ARGS_END { .name = NULL }

/* Checks `args` (an object, or NULL for "no arguments given") against the
 * NULL-name-terminated list `members` (NULL: the command takes none).
 * Returns false with a GenericError in `err` on the first problem. */
bool sg_qmp_check_args(const struct sg_qmp_arg *members, const json_t *args,
                       struct sg_error *err);

#endif

#include "qmp_schema.h"

#include <stdio.h>
#include <string.h>

/* Room for QEMU-style member paths ("actions[0].data.name"); a longer path
 * is truncated in the message, which only a hostile schema could reach. */
#define PATH_MAX_LEN 512

static bool check_value(const struct sg_qmp_arg *a, const json_t *v, const char *name,
                        const char *path, struct sg_error *err);

static bool bad_type(const char *path, const char *want, struct sg_error *err)
{
    sg_error_set(err, "Invalid parameter type for '%s', expected: %s", path, want);
    return false;
}

static void join(char *out, const char *prefix, const char *name)
{
    if (prefix[0])
        snprintf(out, PATH_MAX_LEN, "%s.%s", prefix, name);
    else
        snprintf(out, PATH_MAX_LEN, "%s", name);
}

static const struct sg_qmp_arg *find_member(const struct sg_qmp_arg *list, const char *key)
{
    for (; list && list->name; list++)
        if (!strcmp(list->name, key))
            return list;
    return NULL;
}

/* Visits the members of `list` in schema order (QEMU reports the first
 * missing or mistyped one in that order). */
static bool check_members(const struct sg_qmp_arg *list, const json_t *obj, const char *prefix,
                          struct sg_error *err)
{
    char path[PATH_MAX_LEN];
    for (; list && list->name; list++) {
        json_t *v = obj ? json_object_get(obj, list->name) : NULL;
        join(path, prefix, list->name);
        if (!v) {
            if (list->optional)
                continue;
            sg_error_set(err, "Parameter '%s' is missing", path);
            return false;
        }
        if (!check_value(list, v, list->name, path, err))
            return false;
    }
    return true;
}

/* Only once every known member was visited does QEMU look for leftovers. */
static bool check_leftovers(const struct sg_qmp_arg *a, const struct sg_qmp_arg *b,
                            const json_t *obj, const char *prefix, struct sg_error *err)
{
    const char *key;
    json_t *v;
    if (!obj)
        return true;
    json_object_foreach((json_t *)obj, key, v) {
        if (find_member(a, key) || find_member(b, key))
            continue;
        char path[PATH_MAX_LEN];
        join(path, prefix, key);
        sg_error_set(err, "Parameter '%s' is unexpected", path);
        return false;
    }
    return true;
}

static bool check_union(const struct sg_qmp_arg *a, const json_t *v, const char *path,
                        struct sg_error *err)
{
    if (!check_members(a->members, v, path, err))
        return false;
    const struct sg_qmp_arg *variant_members = NULL;
    const char *tag = json_string_value(json_object_get(v, a->discriminator));
    bool found = false;
    for (const struct sg_qmp_variant *var = a->variants; tag && var && var->value; var++) {
        if (!strcmp(var->value, tag)) {
            variant_members = var->members;
            found = true;
            break;
        }
    }
    if (!found) {
        /* The discriminator is normally an ENUM member and was rejected
         * above; this catches a schema whose tag member is a plain string. */
        sg_error_set(err, "Parameter '%s' does not accept value '%s'",
                     a->discriminator ? a->discriminator : "type", tag ? tag : "");
        return false;
    }
    if (!check_members(variant_members, v, path, err))
        return false;
    return check_leftovers(a->members, variant_members, v, path, err);
}

static bool check_value(const struct sg_qmp_arg *a, const json_t *v, const char *name,
                        const char *path, struct sg_error *err)
{
    switch (a->type) {
    case SG_QMP_T_END:
    case SG_QMP_T_ANY:
        return true;
    case SG_QMP_T_STR:
        return json_is_string(v) || bad_type(path, "string", err);
    case SG_QMP_T_INT:
        return json_is_integer(v) || bad_type(path, "integer", err);
    case SG_QMP_T_UINT64:
    case SG_QMP_T_SIZE:
        if (json_is_integer(v))
            return true;
        sg_error_set(err, "Parameter '%s' expects %s", path,
                     a->type == SG_QMP_T_SIZE ? "size" : "uint64");
        return false;
    case SG_QMP_T_BOOL:
        return json_is_boolean(v) || bad_type(path, "boolean", err);
    case SG_QMP_T_NUMBER:
        return json_is_number(v) || bad_type(path, "number", err);
    case SG_QMP_T_ENUM:
        if (!json_is_string(v))
            return bad_type(path, "string", err);
        for (const char *const *e = a->values; e && *e; e++)
            if (!strcmp(*e, json_string_value(v)))
                return true;
        /* QEMU names the bare member here, not the full path. */
        sg_error_set(err, "Parameter '%s' does not accept value '%s'", name,
                     json_string_value(v));
        return false;
    case SG_QMP_T_OBJECT:
        if (!json_is_object(v))
            return bad_type(path, "object", err);
        if (!a->members)
            return true;
        return check_members(a->members, v, path, err) &&
               check_leftovers(a->members, NULL, v, path, err);
    case SG_QMP_T_UNION:
        if (!json_is_object(v))
            return bad_type(path, "object", err);
        return check_union(a, v, path, err);
    case SG_QMP_T_ARRAY: {
        if (!json_is_array(v))
            return bad_type(path, "array", err);
        size_t i;
        json_t *el;
        json_array_foreach(v, i, el) {
            char epath[PATH_MAX_LEN];
            snprintf(epath, sizeof epath, "%s[%zu]", path, i);
            if (a->elem && !check_value(a->elem, el, "null", epath, err))
                return false;
        }
        return true;
    }
    }
    return true;
}

bool sg_qmp_check_args(const struct sg_qmp_arg *members, const json_t *args,
                       struct sg_error *err)
{
    if (args && !json_is_object(args)) {
        sg_error_set(err, "QMP input member 'arguments' must be an object");
        return false;
    }
    return check_members(members, args, "", err) && check_leftovers(members, NULL, args, "", err);
}

/* gw_current.c: the current snapshot (see gw_current.h) and the gateway's
 * own x-snapgate-* QMP commands.
 *
 * Success is read from the job's own events, the one thing every back end
 * (snapgate-vmm, QEMU) reports the same way to every client: a job that
 * fails or is cancelled passes through "aborting" before "concluded"; one
 * that succeeds does not.  So a snapshot becomes current only after its job
 * concluded without error, whoever started it and whoever dismisses it. */
#include "gw_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qmp_schema.h"
#include "sg_error.h"
#include "sg_hmp.h"

#define CURRENT_FILE "current-snapshot.json"

static const char *how_name(enum gw_current_how how)
{
    return how == GW_CUR_SAVED ? "saved" : how == GW_CUR_LOADED ? "loaded" : "";
}

/* Only a state dir that exists is written to: with --connect the gateway
 * never creates one of its own accord. */
static bool file_path(const struct sg_gw *gw, char *buf, size_t len, const char *suffix)
{
    struct stat st;
    const char *dir = gw->opt ? gw->opt->state_dir : NULL;
    if (!dir || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return false;
    return (size_t)snprintf(buf, len, "%s/%s%s", dir, CURRENT_FILE, suffix) < len;
}

json_t *gw_current_json(const struct sg_gw *gw)
{
    const struct gw_current *c = &gw->current;
    if (c->how == GW_CUR_NONE)
        return json_object();
    return json_pack("{s:s, s:s, s:I}", "tag", c->tag, "how", how_name(c->how), "time",
                     (json_int_t)c->when);
}

/* The HMP engine names it in `info snapshots` (snapgate profile). */
void gw_current_publish(struct sg_gw *gw)
{
    if (gw->hmp)
        sg_hmp_set_current(gw->hmp, gw->current.how != GW_CUR_NONE ? gw->current.tag : NULL);
}

/* Written to a temporary file and renamed, so a crash leaves the old or the
 * new record, never half of one.  A failure is reported, not fatal: the
 * marker is a convenience, the snapshots themselves are in the images. */
static void persist(struct sg_gw *gw)
{
    char path[4096], tmp[4096];
    gw_current_publish(gw);
    if (!file_path(gw, path, sizeof path, "") || !file_path(gw, tmp, sizeof tmp, ".tmp"))
        return;
    json_t *j = gw_current_json(gw);
    if (!j || json_dump_file(j, tmp, JSON_COMPACT) != 0 || rename(tmp, path) != 0) {
        gw_print(gw, "snapgate: cannot record the current snapshot in %s: %s\n", path,
                 strerror(errno));
        unlink(tmp);
    }
    json_decref(j);
}

void gw_current_load(struct sg_gw *gw)
{
    struct gw_current *c = &gw->current;
    char path[4096];
    if (c->loaded)
        return;
    c->loaded = true;
    if (!file_path(gw, path, sizeof path, ""))
        return;
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    if (!j)
        return; /* none yet (or unreadable: the next save or load rewrites it) */
    const char *tag = json_string_value(json_object_get(j, "tag"));
    const char *how = json_string_value(json_object_get(j, "how"));
    if (tag && how && strlen(tag) <= GW_CURRENT_TAG_MAX) {
        snprintf(c->tag, sizeof c->tag, "%s", tag);
        c->how = strcmp(how, "loaded") == 0 ? GW_CUR_LOADED : GW_CUR_SAVED;
        c->when = (time_t)json_integer_value(json_object_get(j, "time"));
    }
    json_decref(j);
    gw_current_publish(gw);
}

void gw_current_on_command(struct sg_gw *gw, const char *execute, const json_t *args)
{
    if (!execute || strncmp(execute, "snapshot-", 9) != 0)
        return;
    int kind = strcmp(execute + 9, "save") == 0   ? GW_JOB_SAVE
               : strcmp(execute + 9, "load") == 0 ? GW_JOB_LOAD
               : strcmp(execute + 9, "delete") == 0 ? GW_JOB_DELETE : 0;
    const char *id = json_string_value(json_object_get(args, "job-id"));
    const char *tag = json_string_value(json_object_get(args, "tag"));
    struct gw_current *c = &gw->current;
    if (!kind || !id || !tag || strlen(id) >= sizeof c->jobs[0].id ||
        strlen(tag) > GW_CURRENT_TAG_MAX)
        return;
    /* The oldest slot is reused: only a handful of jobs run at once. */
    struct gw_current_job *j = &c->jobs[c->next_slot++ % GW_CURRENT_JOBS];
    for (unsigned i = 0; i < GW_CURRENT_JOBS; i++)
        if (strcmp(c->jobs[i].id, id) == 0)
            j = &c->jobs[i];   /* an id reused after dismissal */
    snprintf(j->id, sizeof j->id, "%s", id);
    snprintf(j->tag, sizeof j->tag, "%s", tag);
    j->kind = kind;
    j->failed = false;
}

void gw_current_on_event(struct sg_gw *gw, const json_t *event)
{
    const char *name = json_string_value(json_object_get(event, "event"));
    if (!name || strcmp(name, "JOB_STATUS_CHANGE") != 0)
        return;
    json_t *data = json_object_get(event, "data");
    const char *id = json_string_value(json_object_get(data, "id"));
    const char *st = json_string_value(json_object_get(data, "status"));
    struct gw_current *c = &gw->current;
    struct gw_current_job *j = NULL;
    for (unsigned i = 0; id && st && i < GW_CURRENT_JOBS; i++)
        if (c->jobs[i].id[0] && strcmp(c->jobs[i].id, id) == 0)
            j = &c->jobs[i];
    if (!j)
        return;
    if (strcmp(st, "aborting") == 0) {
        j->failed = true;
        return;
    }
    if (strcmp(st, "concluded") != 0 && strcmp(st, "null") != 0)
        return;
    if (!j->failed && strcmp(st, "concluded") == 0) {
        if (j->kind == GW_JOB_DELETE) {
            if (c->how != GW_CUR_NONE && strcmp(c->tag, j->tag) == 0) {
                c->how = GW_CUR_NONE;
                c->tag[0] = '\0';
                persist(gw);
            }
        } else {
            c->how = j->kind == GW_JOB_SAVE ? GW_CUR_SAVED : GW_CUR_LOADED;
            c->when = time(NULL);
            snprintf(c->tag, sizeof c->tag, "%s", j->tag);
            persist(gw);
        }
    }
    j->id[0] = '\0';
}

/* ---- x-snapgate-* commands ----------------------------------------------- */

static const struct sg_qmp_arg no_args[] = { SG_QMP_ARGS_END };
static const struct sg_qmp_arg complete_args[] = {
    SG_QMP_ARG("line", SG_QMP_T_STR),
    SG_QMP_ARGS_END,
};

/* The terminal's readline splits words at spaces and tabs only (gw_monitor.c);
 * the word being completed starts after the last one, as there. */
static json_t *complete(struct sg_gw *gw, const char *line)
{
    size_t start = strlen(line);
    while (start > 0 && line[start - 1] != ' ' && line[start - 1] != '\t')
        start--;
    char **v = gw->hmp ? sg_hmp_complete(gw->hmp, line, start, line + start) : NULL;
    json_t *cands = json_array();
    for (size_t i = 0; v && v[i]; i++)
        json_array_append_new(cands, json_string(v[i]));
    sg_hmp_strv_free(v);
    return json_pack("{s:s, s:o}", "word", line + start, "candidates", cands);
}

bool gw_xsnapgate_command(struct sg_gw *gw, const char *execute, const json_t *args,
                          json_t **ret, struct sg_error *err)
{
    *ret = NULL;
    if (!execute || strncmp(execute, "x-snapgate-", 11) != 0)
        return false;
    if (strcmp(execute, "x-snapgate-query-current-snapshot") == 0) {
        if (sg_qmp_check_args(no_args, args, err))
            *ret = gw_current_json(gw);
        return true;
    }
    if (strcmp(execute, "x-snapgate-hmp-complete") == 0) {
        if (sg_qmp_check_args(complete_args, args, err))
            *ret = complete(gw, json_string_value(json_object_get(args, "line")));
        return true;
    }
    return false; /* an unknown x-snapgate- name goes to the back end like any other */
}

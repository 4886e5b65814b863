/* The engine: one sg_hmp_cmd per line, advanced by back-end replies and
 * events.  Every QMP request holds a reference on its command (and counts
 * on the engine), so replies may arrive synchronously, late, or after the
 * requester detached or the engine was freed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmp_engine.h"
#include "sg_q72.h"
#include "sg_q72_safe.h"

struct sg_hmp_cmd {
    struct sg_hmp *h;
    struct sg_hmp_cmd *next;
    unsigned refs;
    bool finished, detached, cancelled;
    bool failed;               /* the reply reports a failure */
    bool fallback_failed;      /* c->fallback is an error text */
    sg_hmp_done_fn done;
    sg_hmp_note_fn note;       /* early notes (sg_hmp_set_note), or NULL */
    sg_hmp_progress_fn progress;
    void *opaque;
    int profile;
    const struct sg_q72_safety *safety;   /* the profile's safety table, or NULL */
    char *line;
    struct sg_hmp_parsed p;
    void (*after)(struct sg_hmp_cmd *c);   /* continuation of a gather / hmc probe */
    json_t *qblock;
    struct sg_hmp_disks disks;
    struct sg_hmp_plan plan;
    size_t step;
    bool job_accepted, job_concluded, job_query_sent;
    struct sg_strbuf out;
    struct sg_strbuf fallback; /* reply when the back end has no human monitor */
};

typedef void (*handler_fn)(struct sg_hmp *h, struct sg_hmp_cmd *c, json_t *reply);

struct request {
    struct sg_hmp *h;
    struct sg_hmp_cmd *c;
    handler_fn fn;
};

static void engine_release(struct sg_hmp *h)
{
    sg_hmp_cache_clear(h);
    json_decref(h->refresh_qblock);
    free(h->vmstate_node);
    free(h->prefix);
    free(h->current);
    free(h);
}

static void cmd_unref(struct sg_hmp_cmd *c)
{
    if (--c->refs)
        return;
    json_decref(c->qblock);
    sg_hmp_disks_clear(&c->disks);
    sg_hmp_plan_clear(&c->plan);
    sg_sb_free(&c->out);
    sg_sb_free(&c->fallback);
    free(c->line);
    free(c);
}

static void unlink_cmd(struct sg_hmp_cmd *c)
{
    for (struct sg_hmp_cmd **pp = &c->h->cmds; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
}

static void on_reply(void *opaque, json_t *reply)
{
    struct request *r = opaque;
    struct sg_hmp *h = r->h;
    struct sg_hmp_cmd *c = r->c;
    h->outstanding--;
    if (!h->dead && r->fn && (!c || !c->finished))
        r->fn(h, c, reply);
    if (c)
        cmd_unref(c);
    free(r);
    if (h->dead && !h->outstanding)
        engine_release(h);
}

/* Sends `cmd` (reference taken over); `fn` may be NULL (fire and forget). */
static void send_qmp(struct sg_hmp *h, struct sg_hmp_cmd *c, json_t *cmd, handler_fn fn)
{
    struct request *r = malloc(sizeof *r);
    if (!r || !cmd) {
        free(r);
        json_decref(cmd);
        if (fn)
            fn(h, c, NULL);
        return;
    }
    r->h = h;
    r->c = c;
    r->fn = fn;
    if (c)
        c->refs++;
    h->outstanding++;
    h->be.qmp(h->be.opaque, cmd, on_reply, r);
}

static json_t *mkcmd(const char *execute, json_t *args)
{
    json_t *m = json_pack("{s:s}", "execute", execute);
    if (m && args)
        json_object_set_new(m, "arguments", args);
    else
        json_decref(args);
    return m;
}

/* ---- finishing ---------------------------------------------------------- */

static void finish(struct sg_hmp_cmd *c, bool quit)
{
    if (c->finished)
        return;
    c->finished = true;
    unlink_cmd(c);
    if (!c->detached && c->done) {
        c->h->done_failed = c->failed;
        const char *text = sg_sb_str(&c->out);
        if (c->profile == SG_HMP_PROFILE_QEMU72) {
            char *crlf = sg_q72_crlf_dup(text);
            c->done(c->opaque, crlf ? crlf : text, quit);
            free(crlf);
        } else {
            c->done(c->opaque, text, quit);
        }
    }
    cmd_unref(c);   /* the running reference */
}

static void finish_error(struct sg_hmp_cmd *c, const char *msg)
{
    c->failed = true;
    sg_sb_printf(&c->out, SG_Q72_ERROR_PREFIX "%s\n", msg);
    finish(c, false);
}

/* A NULL reply (back end gone) or an {"error"} reply: true if handled. */
static bool reply_failed(struct sg_hmp_cmd *c, json_t *reply)
{
    if (!reply) {
        finish_error(c, "the back end went away (connection closed)");
        return true;
    }
    json_t *e = json_object_get(reply, "error");
    if (e) {
        const char *desc = json_string_value(json_object_get(e, "desc"));
        finish_error(c, desc ? desc : "unknown error");
        return true;
    }
    return false;
}

/* ---- simple commands ---------------------------------------------------- */

static void h_simple(struct sg_hmp *h, struct sg_hmp_cmd *c, json_t *reply)
{
    if (reply_failed(c, reply))
        return;
    json_t *ret = json_object_get(reply, "return");
    switch (c->p.def->op) {
    case SG_HMP_OP_INFO_STATUS: sg_hmp_format_status(ret, &c->out); break;
    case SG_HMP_OP_INFO_BLOCK: sg_hmp_format_block(ret, &c->out); break;
    case SG_HMP_OP_INFO_JOBS: sg_hmp_format_jobs(ret, &c->out); break;
    case SG_HMP_OP_INFO_VERSION: sg_hmp_format_version(ret, &c->out); break;
    default: break;
    }
    finish(c, false);
}

/* ---- forwarding to the back end's own human monitor --------------------- */

static void h_forwarded(struct sg_hmp *h, struct sg_hmp_cmd *c, json_t *reply)
{
    if (reply_failed(c, reply))
        return;
    const char *text = json_string_value(json_object_get(reply, "return"));
    if (!text)
        text = "";
    /* The back end's text already has its own line ends; the QEMU profile
     * keeps them byte for byte, people get plain "\n". */
    /* The back end's own monitor reports failures in its text only. */
    c->failed = strncmp(text, "unknown command: ", 17) == 0 ||
                strncmp(text, SG_Q72_ERROR_PREFIX, strlen(SG_Q72_ERROR_PREFIX)) == 0;
    if (c->profile == SG_HMP_PROFILE_QEMU72) {
        if (!c->detached && c->done) {
            c->finished = true;
            unlink_cmd(c);
            h->done_failed = c->failed;
            c->done(c->opaque, text, false);
            cmd_unref(c);
            return;
        }
    } else {
        for (const char *s = text; *s; s++)
            if (!(s[0] == '\r' && s[1] == '\n'))
                sg_sb_putc(&c->out, *s);
    }
    finish(c, false);
}

static void forward_now(struct sg_hmp_cmd *c)
{
    struct sg_hmp *h = c->h;
    if (h->hmc == 1) {
        send_qmp(h, c, mkcmd("human-monitor-command",
                             json_pack("{s:s}", "command-line", c->line)),
                 h_forwarded);
        return;
    }
    sg_sb_puts(&c->out, sg_sb_str(&c->fallback));
    c->failed = c->fallback_failed;
    finish(c, false);
}

/* What to say about a command snapgate does not run itself when the back
 * end has no human monitor to run it: QEMU's text in the qemu-7.2 profile;
 * in the snapgate profile, whether it is a QEMU command (that needs a
 * monitor we do not have) or no command at all.  `what` is the command as
 * QEMU names it ("nosuch", "info registers"). */
static void set_unknown(struct sg_hmp_cmd *c, const char *what)
{
    c->fallback_failed = true;
    if (c->profile == SG_HMP_PROFILE_QEMU72) {
        sg_sb_printf(&c->fallback, SG_Q72_UNKNOWN_COMMAND "\n", what);
        return;
    }
    char first[128] = "", second[128] = "";
    sscanf(what, "%127s %127s", first, second);
    bool qemu_has = sg_q72_help_find(first, false) &&
                    (strcmp(first, "info") != 0 || sg_q72_help_find(second, true));
    if (qemu_has)
        sg_sb_printf(&c->fallback,
                     "Error: '%s' needs a back end with its own human monitor; this back end "
                     "has none ('help' lists the commands snapgate runs itself)\n",
                     what);
    else
        sg_sb_printf(&c->fallback, SG_Q72_UNKNOWN_COMMAND " ('help' lists the commands)\n",
                     what);
}

/* An argument names a vCPU register ("pmemsave $eax 16 f"): a back end with
 * its own human monitor reads it (the line is forwarded); without one, the
 * qemu-7.2 profile answers as QEMU 7.2 does for a register it does not
 * have. */
static void set_no_register(struct sg_hmp_cmd *c)
{
    c->fallback_failed = true;
    if (c->profile == SG_HMP_PROFILE_QEMU72)
        sg_sb_printf(&c->fallback, SG_Q72_EXPR_REGISTER "\n" SG_Q72_TRY_HELP "\n", c->p.unknown);
    else
        sg_sb_printf(&c->fallback,
                     "Error: %s: CPU registers need a back end with its own human monitor; "
                     "this back end has none\n",
                     c->p.reg);
}

/* A note on the resolution, told before the job runs (see sg_hmp_set_note). */
static void note(struct sg_hmp_cmd *c, const char *text)
{
    if (c->note && !c->detached)
        c->note(c->opaque, text);
    else
        sg_sb_puts(&c->out, text);
}

static void h_commands(struct sg_hmp *h, struct sg_hmp_cmd *c, json_t *reply)
{
    if (reply_failed(c, reply))
        return;
    size_t i;
    json_t *e;
    h->hmc = 0;
    json_array_foreach(json_object_get(reply, "return"), i, e) {
        const char *n = json_string_value(json_object_get(e, "name"));
        if (n && strcmp(n, "human-monitor-command") == 0)
            h->hmc = 1;
    }
    forward_now(c);
}

/* Forwards the line when the back end has a human monitor (asked once per
 * engine), else replies with c->fallback. */
static void forward_or(struct sg_hmp_cmd *c)
{
    if (c->h->hmc < 0)
        send_qmp(c->h, c, mkcmd("query-commands", NULL), h_commands);
    else
        forward_now(c);
}

/* ---- snapshot jobs ------------------------------------------------------ */

static void refresh(struct sg_hmp *h);
static void run_step(struct sg_hmp_cmd *c);

static const char *cur_job(const struct sg_hmp_cmd *c)
{
    return c->step < c->plan.njobs ? c->plan.jobs[c->step].job_id : "";
}

static json_t *find_job(json_t *list, const char *id)
{
    size_t i;
    json_t *j;
    json_array_foreach(list, i, j) {
        const char *jid = json_string_value(json_object_get(j, "id"));
        if (jid && strcmp(jid, id) == 0)
            return j;
    }
    return NULL;
}

static void h_job_result(struct sg_hmp *h, struct sg_hmp_cmd *c, json_t *reply)
{
    if (reply_failed(c, reply))
        return;
    json_t *j = find_job(json_object_get(reply, "return"), cur_job(c));
    if (!j) {
        char msg[256];
        snprintf(msg, sizeof msg, "job '%s' disappeared before its result could be read",
                 cur_job(c));
        finish_error(c, msg);
        return;
    }
    const char *status = json_string_value(json_object_get(j, "status"));
    if (!status || strcmp(status, "concluded") != 0) {
        c->job_concluded = c->job_query_sent = false;   /* not yet: wait on */
        return;
    }
    send_qmp(h, NULL, mkcmd("job-dismiss", json_pack("{s:s}", "id", cur_job(c))), NULL);
    refresh(h);
    const char *err = json_string_value(json_object_get(j, "error"));
    if (err) {
        finish_error(c, err);
        return;
    }
    c->step++;
    c->job_accepted = c->job_concluded = c->job_query_sent = false;
    run_step(c);
}

static void check_job(struct sg_hmp_cmd *c)
{
    if (c->job_accepted && c->job_concluded && !c->job_query_sent && !c->finished) {
        c->job_query_sent = true;
        send_qmp(c->h, c, mkcmd("query-jobs", NULL), h_job_result);
    }
}

static void send_cancel(struct sg_hmp_cmd *c)
{
    send_qmp(c->h, NULL, mkcmd("job-cancel", json_pack("{s:s}", "id", cur_job(c))), NULL);
}

static void h_job_reply(struct sg_hmp *h, struct sg_hmp_cmd *c, json_t *reply)
{
    if (reply_failed(c, reply))
        return;
    c->job_accepted = true;
    if (c->cancelled && !c->job_concluded)
        send_cancel(c);
    check_job(c);
}

static void h_sync_step(struct sg_hmp *h, struct sg_hmp_cmd *c, json_t *reply)
{
    if (reply_failed(c, reply))
        return;
    refresh(h);
    c->step++;
    run_step(c);
}

static void run_step(struct sg_hmp_cmd *c)
{
    if (c->step >= c->plan.njobs) {
        sg_sb_puts(&c->out, c->plan.note);   /* said only once it is true */
        finish(c, false);
        return;
    }
    if (c->cancelled) {
        finish_error(c, "cancelled");
        return;
    }
    /* A step without a job id is a plain command (delvm -i on a duplicated
     * tag), done when it replies. */
    send_qmp(c->h, c, json_incref(c->plan.jobs[c->step].cmd),
             c->plan.jobs[c->step].job_id[0] ? h_job_reply : h_sync_step);
}

/* ---- gathering the disks ------------------------------------------------ */

static void h_named(struct sg_hmp *h, struct sg_hmp_cmd *c, json_t *reply)
{
    if (!reply) {
        reply_failed(c, reply);
        return;
    }
    struct sg_error err = {0};
    /* An error here (an old back end) leaves query-block's lists. */
    if (!sg_hmp_disks_from_qmp(&c->disks, c->qblock, json_object_get(reply, "return"), &err)) {
        finish_error(c, err.msg);
        return;
    }
    sg_hmp_cache_update(h, &c->disks);
    c->after(c);
}

static void h_qblock(struct sg_hmp *h, struct sg_hmp_cmd *c, json_t *reply)
{
    if (reply_failed(c, reply))
        return;
    c->qblock = json_incref(json_object_get(reply, "return"));
    send_qmp(h, c, mkcmd("query-named-block-nodes", NULL), h_named);
}

static void gather(struct sg_hmp_cmd *c, void (*after)(struct sg_hmp_cmd *c))
{
    c->after = after;
    send_qmp(c->h, c, mkcmd("query-block", NULL), h_qblock);
}

void sg_hmp_set_current(struct sg_hmp *h, const char *tag)
{
    free(h->current);
    h->current = tag ? strdup(tag) : NULL;
}

/* QEMU has no notion of a current snapshot: only the snapgate profile names
 * it, and only while a disk still holds it. */
static void format_current(struct sg_hmp_cmd *c)
{
    bool listed = false;
    for (size_t i = 0; c->h->current && i < c->disks.n && !listed; i++)
        for (size_t j = 0; j < c->disks.disk[i].nsnaps && !listed; j++)
            listed = strcmp(c->disks.disk[i].snaps[j].tag, c->h->current) == 0;
    if (listed)
        sg_sb_printf(&c->out, "Current snapshot: '%s' (the last one saved or loaded)\n",
                     c->h->current);
}

/* snapgate profile: the tree and the current position follow the table
 * when the back end knows them (snapgate-vmm); QEMU answers CommandNotFound. */
static void h_tree(struct sg_hmp *h, struct sg_hmp_cmd *c, json_t *reply)
{
    (void)h;
    sg_hmp_format_snapshots(&c->disks, c->h->vmstate_node, c->profile, &c->out);
    sg_hmp_format_snapshot_tree(json_object_get(reply, "return"), &c->out);
    format_current(c);
    finish(c, false);
}

static void after_info_snapshots(struct sg_hmp_cmd *c)
{
    if (c->profile != SG_HMP_PROFILE_QEMU72) {
        json_t *a = c->h->vmstate_node ? json_pack("{s:s}", "vmstate", c->h->vmstate_node) : NULL;
        send_qmp(c->h, c, mkcmd("x-snapgate-query-snapshot-tree", a), h_tree);
        return;
    }
    sg_hmp_format_snapshots(&c->disks, c->h->vmstate_node, c->profile, &c->out);
    finish(c, false);
}

static bool add_job(struct sg_hmp_cmd *c, int vs, const char *kind, const char *tag,
                    const char *verb)
{
    if (sg_hmp_plan_add(&c->plan, &c->disks, vs, kind, tag, c->h->prefix, verb,
                        &c->h->job_counter))
        return true;
    finish_error(c, "out of memory");
    return false;
}

static void after_savevm(struct sg_hmp_cmd *c)
{
    struct sg_hmp *h = c->h;
    struct sg_error err = {0};
    int vs = -1;
    if (!sg_hmp_check_writable(&c->disks, &err) ||
        (vs = sg_hmp_vmstate_disk(&c->disks, h->vmstate_node, &err)) < 0) {
        finish_error(c, err.msg);
        return;
    }
    char tag[SG_HMP_NAME_MAX];
    if (c->p.has_name) {
        snprintf(tag, sizeof tag, "%s", c->p.name);
    } else {
        sg_hmp_default_tag(&c->disks, h->now ? h->now(h->now_opaque) : time(NULL), true, tag,
                           sizeof tag);
        if (c->profile != SG_HMP_PROFILE_QEMU72) {
            char msg[sizeof tag + 32];
            snprintf(msg, sizeof msg, "(snapshot tag '%s')\n", tag);
            note(c, msg);
        }
    }
    if (sg_hmp_safety_refuses(c->safety, "savevm", &c->disks, tag, &err)) {
        finish_error(c, err.msg);
        return;
    }
    size_t dups = 0;
    for (size_t i = 0; i < c->disks.n; i++)
        if (sg_hmp_disk_in_snapshot(&c->disks.disk[i]) && c->disks.disk[i].can_snapshot) {
            size_t n = sg_hmp_tag_count(&c->disks.disk[i], tag, NULL);
            dups = n > dups ? n : dups;
        }
    if (dups && !h->backend_replaces) {
        /* No atomic replace: delete (every duplicate too, or the save would
         * find the tag still there), then save.  Documented in
         * snapgate-hmp(7): a failing save leaves the tag gone. */
        for (size_t k = 0; k < dups; k++)
            if (!add_job(c, vs, "delete", tag, "savevm"))
                return;
    }
    if (dups && c->profile != SG_HMP_PROFILE_QEMU72)
        snprintf(c->plan.note, sizeof c->plan.note, "(replaced the existing snapshot '%.900s')\n",
                 tag);
    if (!add_job(c, vs, "save", tag, "savevm"))
        return;
    if (dups && h->backend_replaces) {
        /* The back end (snapgate-vmm) replaces the tag itself, atomically:
         * the old snapshot goes only after the new one is committed. */
        json_t *args = json_object_get(c->plan.jobs[c->plan.njobs - 1].cmd, "arguments");
        json_object_set_new(args, "x-replace", json_true());
    }
    run_step(c);
}

static bool all_have(const struct sg_hmp_disks *d, const char *tag)
{
    for (size_t i = 0; i < d->n; i++)
        if (sg_hmp_disk_in_snapshot(&d->disk[i]) &&
            !sg_hmp_tag_count(&d->disk[i], tag, NULL))
            return false;
    return true;
}

static void after_loadvm_q72(struct sg_hmp_cmd *c)
{
    struct sg_error err = {0};
    int vs = -1;
    const char *tag = c->p.name;
    if (!sg_hmp_check_writable(&c->disks, &err)) {
        finish_error(c, err.msg);
        return;
    }
    if (!all_have(&c->disks, tag))
        sg_error_set(&err, SG_Q72_NOT_EXIST, tag);
    else if ((vs = sg_hmp_vmstate_disk(&c->disks, c->h->vmstate_node, &err)) >= 0) {
        size_t first;
        if (sg_hmp_tag_count(&c->disks.disk[vs], tag, &first) &&
            c->disks.disk[vs].snaps[first].vm_state_size == 0)
            sg_error_set(&err, SG_Q72_DISK_ONLY);
    }
    if (err.set || sg_hmp_safety_refuses(c->safety, "loadvm", &c->disks, tag, &err)) {
        finish_error(c, err.msg);
        return;
    }
    if (add_job(c, vs, "load", tag, "loadvm"))
        run_step(c);
}

static void after_delvm_q72(struct sg_hmp_cmd *c)
{
    struct sg_error err = {0};
    if (!sg_hmp_check_writable(&c->disks, &err)) {
        finish_error(c, err.msg);
        return;
    }
    bool present = false;
    for (size_t i = 0; i < c->disks.n; i++)
        if (sg_hmp_disk_in_snapshot(&c->disks.disk[i]) &&
            sg_hmp_tag_count(&c->disks.disk[i], c->p.name, NULL))
            present = true;
    /* QEMU 7.2 prints nothing for a name that is nowhere; so do we, without
     * starting a job. */
    if (!present) {
        finish(c, false);
        return;
    }
    if (sg_hmp_safety_refuses(c->safety, "delvm", &c->disks, c->p.name, &err)) {
        finish_error(c, err.msg);
        return;
    }
    if (add_job(c, -1, "delete", c->p.name, "delvm"))
        run_step(c);
}

/* The tag of snapshot ID `id` on the vmstate disk is carried twice on some
 * disk of the VM. */
static bool tag_duplicated(const struct sg_hmp_disks *d, int vs, const char *id)
{
    if (vs < 0)
        return false;
    const struct sg_hmp_disk *v = &d->disk[vs];
    for (size_t j = 0; j < v->nsnaps; j++) {
        if (strcmp(v->snaps[j].id, id) != 0)
            continue;
        for (size_t i = 0; i < d->n; i++)
            if (sg_hmp_disk_in_snapshot(&d->disk[i]) && d->disk[i].can_snapshot &&
                sg_hmp_tag_count(&d->disk[i], v->snaps[j].tag, NULL) > 1)
                return true;
    }
    return false;
}

static void after_load_or_del(struct sg_hmp_cmd *c)
{
    bool load = c->p.def->op == SG_HMP_OP_LOADVM;
    const char *verb = load ? "loadvm" : "delvm";
    struct sg_error err = {0};
    if (!sg_hmp_check_writable(&c->disks, &err)) {
        finish_error(c, err.msg);
        return;
    }
    int vs = sg_hmp_vmstate_disk(&c->disks, c->h->vmstate_node, &err);
    if (vs < 0 && load) {
        finish_error(c, err.msg);
        return;
    }
    sg_error_clear(&err);   /* delvm needs no vmstate disk (only -i reads one) */
    if (!load && c->p.flag == 'i' && tag_duplicated(&c->disks, vs, c->p.name)) {
        if (!sg_hmp_plan_delete_by_id(&c->plan, &c->disks, vs, c->p.name, &err)) {
            finish_error(c, err.msg);
            return;
        }
        char msg[SG_HMP_NAME_MAX + 128];
        snprintf(msg, sizeof msg, "(snapshot ID %s; its tag is carried by others too: deleted "
                 "by ID disk by disk)\n", c->p.name);
        note(c, msg);
        run_step(c);
        return;
    }
    struct sg_hmp_resolved res;
    struct sg_strbuf res_text = {0};
    if (!sg_hmp_resolve(&c->disks, vs, c->p.name, (enum sg_hmp_match)c->p.flag, load, verb,
                        &res, &err)) {
        /* Which snapshot a bare ID matched helps to read the error. */
        if (res.by_id && res.note[0])
            sg_sb_printf(&c->out, "%s\n", res.note);
        finish_error(c, err.msg);
        return;
    }
    if (res.note[0]) {
        sg_sb_puts(&res_text, res.note);
        sg_sb_putc(&res_text, '\n');
        note(c, sg_sb_str(&res_text));
        sg_sb_free(&res_text);
    }
    if (load && !c->h->backend_exact_tags &&
        sg_hmp_tag_shadowed(&c->disks, res.tag, &err)) {
        finish_error(c, err.msg);
        return;
    }
    for (size_t k = 0; k < (res.max_dups ? res.max_dups : 1); k++)
        if (!add_job(c, vs, load ? "load" : "delete", res.tag, verb))
            return;
    run_step(c);
}

/* ---- dispatch ----------------------------------------------------------- */

static void start(struct sg_hmp_cmd *c)
{
    struct sg_hmp *h = c->h;
    bool q72 = c->profile == SG_HMP_PROFILE_QEMU72;
    switch (sg_hmp_parse(c->line, c->profile, &c->p)) {
    case SG_HMP_PARSE_EMPTY:
        finish(c, false);
        return;
    case SG_HMP_PARSE_ERROR:
        sg_sb_puts(&c->out, c->p.error);
        c->failed = true;
        finish(c, false);
        return;
    case SG_HMP_PARSE_UNKNOWN:
        if (c->p.reg[0])
            set_no_register(c);
        else
            set_unknown(c, c->p.unknown);
        forward_or(c);
        return;
    case SG_HMP_PARSE_OK:
        break;
    }
    switch (c->p.def->op) {
    case SG_HMP_OP_QUIT:
        finish(c, true);
        return;
    case SG_HMP_OP_HELP:
    case SG_HMP_OP_INFO: {
        bool help = c->p.def->op == SG_HMP_OP_HELP;
        const char *topic = help ? c->p.topic : "info";
        const char *sub = help ? c->p.subtopic : "";
        /* The qemu-7.2 profile answers from QEMU 7.2's recorded lists, so
         * its replies are QEMU's whatever the back end; the snapgate
         * profile lists snapgate's commands and leaves other topics to a
         * back end's own monitor. */
        if (sg_hmp_help(c->profile, topic, sub, &c->out)) {
            finish(c, false);
            return;
        }
        char what[300];
        bool info = strcmp(topic, "info") == 0;
        snprintf(what, sizeof what, "%s%s%s", topic, info && *sub ? " " : "", info ? sub : "");
        set_unknown(c, what);
        c->fallback_failed = false;   /* asking for help is no failure */
        forward_or(c);
        return;
    }
    case SG_HMP_OP_STOP:
        send_qmp(h, c, mkcmd("stop", NULL), h_simple);
        return;
    case SG_HMP_OP_CONT:
        send_qmp(h, c, mkcmd("cont", NULL), h_simple);
        return;
    case SG_HMP_OP_SYSTEM_RESET:
        send_qmp(h, c, mkcmd("system_reset", NULL), h_simple);
        return;
    case SG_HMP_OP_SYSTEM_POWERDOWN:
        send_qmp(h, c, mkcmd("system_powerdown", NULL), h_simple);
        return;
    case SG_HMP_OP_PMEMSAVE:
        /* QMP's val is an int: ADDR's 64 bits as QEMU's HMP passes them. */
        send_qmp(h, c, mkcmd("pmemsave", json_pack("{s:I, s:I, s:s}", "val",
                                                   (json_int_t)(int64_t)c->p.addr, "size",
                                                   (json_int_t)c->p.size, "filename", c->p.name)),
                 h_simple);
        return;
    case SG_HMP_OP_INFO_STATUS:
        send_qmp(h, c, mkcmd("query-status", NULL), h_simple);
        return;
    case SG_HMP_OP_INFO_BLOCK:
        send_qmp(h, c, mkcmd("query-block", NULL), h_simple);
        return;
    case SG_HMP_OP_INFO_JOBS:
        send_qmp(h, c, mkcmd("query-jobs", NULL), h_simple);
        return;
    case SG_HMP_OP_INFO_VERSION:
        send_qmp(h, c, mkcmd("query-version", NULL), h_simple);
        return;
    case SG_HMP_OP_INFO_SNAPSHOTS:
        gather(c, after_info_snapshots);
        return;
    case SG_HMP_OP_SAVEVM:
        gather(c, after_savevm);
        return;
    case SG_HMP_OP_LOADVM:
        gather(c, q72 ? after_loadvm_q72 : after_load_or_del);
        return;
    case SG_HMP_OP_DELVM:
        gather(c, q72 ? after_delvm_q72 : after_load_or_del);
        return;
    }
    finish(c, false);
}

/* ---- public API ---------------------------------------------------------- */

struct sg_hmp *sg_hmp_new(const struct sg_hmp_backend *be, const struct sg_hmp_options *opt)
{
    struct sg_hmp *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->be = *be;
    h->hmc = -1;
    h->prefix = strdup(opt && opt->job_id_prefix ? opt->job_id_prefix : "hmp-");
    if (opt && opt->vmstate_node && *opt->vmstate_node)
        h->vmstate_node = strdup(opt->vmstate_node);
    if (opt) {
        h->now = opt->now;
        h->now_opaque = opt->now_opaque;
        h->backend_replaces = opt->backend_replaces;
        h->backend_exact_tags = opt->backend_exact_tags;
        h->no_forward = opt->no_forward;
        if (h->no_forward)
            h->hmc = 0;
    }
    if (!h->prefix || (opt && opt->vmstate_node && *opt->vmstate_node && !h->vmstate_node)) {
        engine_release(h);
        return NULL;
    }
    return h;
}

void sg_hmp_free(struct sg_hmp *h)
{
    if (!h)
        return;
    while (h->cmds) {
        struct sg_hmp_cmd *c = h->cmds;
        c->detached = true;
        finish(c, false);
    }
    h->dead = true;
    if (!h->outstanding)
        engine_release(h);
}

struct sg_hmp_cmd *sg_hmp_exec(struct sg_hmp *h, const char *line, int profile,
                               sg_hmp_done_fn done, sg_hmp_progress_fn progress, void *opaque)
{
    struct sg_hmp_cmd *c = calloc(1, sizeof *c);
    char *copy = strdup(line ? line : "");
    if (!c || !copy) {
        free(c);
        free(copy);
        if (done)
            done(opaque, "Error: out of memory\n", false);
        return NULL;
    }
    c->h = h;
    c->line = copy;
    c->refs = 2;   /* the running reference, and ours until we return */
    c->done = done;
    c->progress = progress;
    c->opaque = opaque;
    c->profile = profile == SG_HMP_PROFILE_QEMU72 || profile == SG_HMP_PROFILE_LIBVIRT_SAFE
                     ? SG_HMP_PROFILE_QEMU72
                     : SG_HMP_PROFILE_SNAPGATE;
    c->safety = profile == SG_HMP_PROFILE_LIBVIRT_SAFE ? &sg_q72_libvirt_safe : NULL;
    c->next = h->cmds;
    h->cmds = c;
    start(c);
    struct sg_hmp_cmd *ret = c->finished ? NULL : c;
    cmd_unref(c);
    return ret;
}

void sg_hmp_cancel(struct sg_hmp_cmd *c)
{
    if (!c || c->finished || c->cancelled)
        return;
    c->cancelled = true;
    if (c->job_accepted && !c->job_concluded)
        send_cancel(c);
}

void sg_hmp_set_note(struct sg_hmp_cmd *c, sg_hmp_note_fn fn)
{
    if (c && !c->finished)
        c->note = fn;
}

bool sg_hmp_done_failed(const struct sg_hmp *h)
{
    return h->done_failed;
}

void sg_hmp_detach(struct sg_hmp_cmd *c)
{
    if (c)
        c->detached = true;
}

bool sg_hmp_busy(const struct sg_hmp *h)
{
    return h->cmds != NULL;
}

/* Commands whose job is `id` (at most one), with a reference held. */
static struct sg_hmp_cmd *cmd_of_job(struct sg_hmp *h, const char *id)
{
    for (struct sg_hmp_cmd *c = h->cmds; c; c = c->next)
        if (c->step < c->plan.njobs && strcmp(cur_job(c), id) == 0) {
            c->refs++;
            return c;
        }
    return NULL;
}

void sg_hmp_on_event(struct sg_hmp *h, json_t *event)
{
    const char *name = json_string_value(json_object_get(event, "event"));
    if (!name || strcmp(name, "JOB_STATUS_CHANGE") != 0)
        return;
    json_t *data = json_object_get(event, "data");
    const char *id = json_string_value(json_object_get(data, "id"));
    const char *status = json_string_value(json_object_get(data, "status"));
    if (!id || !status || strcmp(status, "concluded") != 0)
        return;
    struct sg_hmp_cmd *c = cmd_of_job(h, id);
    if (!c) {
        refresh(h);   /* someone else's job: the snapshot lists may change */
        return;
    }
    c->job_concluded = true;
    check_job(c);
    cmd_unref(c);
}

static void h_tick(struct sg_hmp *h, struct sg_hmp_cmd *unused, json_t *reply)
{
    h->polling = false;
    json_t *list = json_object_get(reply, "return");
    if (!list)
        return;
    size_t i;
    json_t *j;
    json_array_foreach(list, i, j) {
        const char *id = json_string_value(json_object_get(j, "id"));
        struct sg_hmp_cmd *c = id ? cmd_of_job(h, id) : NULL;
        if (!c)
            continue;
        const char *status = json_string_value(json_object_get(j, "status"));
        if (c->job_accepted && !c->detached && c->progress && !c->finished)
            c->progress(c->opaque, id,
                        (unsigned long long)json_integer_value(json_object_get(j, "current-progress")),
                        (unsigned long long)json_integer_value(json_object_get(j, "total-progress")));
        /* A back end whose events do not reach us is still followed. */
        if (status && strcmp(status, "concluded") == 0 && !c->finished) {
            c->job_concluded = true;
            check_job(c);
        }
        cmd_unref(c);
    }
}

void sg_hmp_tick(struct sg_hmp *h)
{
    if (h->polling)
        return;
    bool any = false;
    for (struct sg_hmp_cmd *c = h->cmds; c; c = c->next)
        any |= c->job_accepted && !c->job_concluded;
    if (!any)
        return;
    h->polling = true;
    send_qmp(h, NULL, mkcmd("query-jobs", NULL), h_tick);
}

/* ---- snapshot cache ----------------------------------------------------- */

/* A refresh asked for while one was in flight runs now: the lists that
 * one read may predate the job that asked. */
static void refresh_done(struct sg_hmp *h)
{
    h->refreshing = false;
    if (h->refresh_again) {
        h->refresh_again = false;
        refresh(h);
    }
}

static void h_refresh_named(struct sg_hmp *h, struct sg_hmp_cmd *unused, json_t *reply)
{
    struct sg_hmp_disks d;
    if (reply && sg_hmp_disks_from_qmp(&d, h->refresh_qblock, json_object_get(reply, "return"),
                                       NULL)) {
        sg_hmp_cache_update(h, &d);
        sg_hmp_disks_clear(&d);
    }
    json_decref(h->refresh_qblock);
    h->refresh_qblock = NULL;
    refresh_done(h);
}

static void h_refresh_qblock(struct sg_hmp *h, struct sg_hmp_cmd *unused, json_t *reply)
{
    json_t *ret = json_object_get(reply, "return");
    if (!ret) {
        refresh_done(h);
        return;
    }
    h->refresh_qblock = json_incref(ret);
    send_qmp(h, NULL, mkcmd("query-named-block-nodes", NULL), h_refresh_named);
}

static void refresh(struct sg_hmp *h)
{
    if (h->dead)
        return;
    if (h->refreshing) {
        h->refresh_again = true;
        return;
    }
    h->refreshing = true;
    send_qmp(h, NULL, mkcmd("query-block", NULL), h_refresh_qblock);
}

void sg_hmp_refresh_snapshots(struct sg_hmp *h)
{
    refresh(h);
}

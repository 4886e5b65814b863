/* gw_hmp.c: the gateway's side of the HMP engine — the engine's back end is
 * the gateway's back-end link; its progress polling runs on a loop timer;
 * `quit` from any front end quits the back end and then the gateway. */
#include "gw_internal.h"

#include <stdlib.h>
#include <string.h>

#include "sg_hmp.h"

#define GW_HMP_TICK_MS 100
#define GW_QUIT_GRACE_MS 5000

struct sg_gw_hmp_req {
    struct sg_gw_hmp_req *next, **pprev;   /* gw->hmp_reqs while running */
    struct sg_gw *gw;
    struct sg_hmp_cmd *cmd;
    sg_gw_hmp_done_fn done;
    sg_gw_hmp_progress_fn progress;
    sg_gw_hmp_note_fn note;
    void *opaque;
    bool in_exec;      /* sg_hmp_exec has not returned yet */
    bool finished;     /* done ran while in_exec */
};

static void req_link(struct sg_gw_hmp_req **head, struct sg_gw_hmp_req *r)
{
    r->next = *head;
    if (*head)
        (*head)->pprev = &r->next;
    r->pprev = head;
    *head = r;
}

static void req_unlink(struct sg_gw_hmp_req *r)
{
    if (!r->pprev)
        return;
    *r->pprev = r->next;
    if (r->next)
        r->next->pprev = r->pprev;
    r->next = NULL;
    r->pprev = NULL;
}

static void hmp_backend_qmp(void *opaque, json_t *cmd, sg_hmp_reply_fn cb, void *cb_opaque)
{
    struct sg_gw *gw = opaque;
    gw_current_on_command(gw, json_string_value(json_object_get(cmd, "execute")),
                          json_object_get(cmd, "arguments"));
    gw_backend_send(gw, cmd, cb, cb_opaque);
    gw_hmp_kick(gw);
}

static void tick(void *opaque)
{
    struct sg_gw *gw = opaque;
    gw->tick_armed = false;
    if (!gw->hmp)
        return;
    sg_hmp_tick(gw->hmp);
    gw_hmp_kick(gw);
}

void gw_hmp_kick(struct sg_gw *gw)
{
    if (gw->leave_when_idle && (!gw->hmp || !sg_hmp_busy(gw->hmp) || !gw_backend_alive(gw))) {
        gw_exit(gw, SG_GW_EXIT_OK);
        return;
    }
    if (gw->tick_armed || !gw->hmp || !sg_hmp_busy(gw->hmp))
        return;
    gw->tick_armed = true;
    sg_gw_timer_arm(&gw->tick, GW_HMP_TICK_MS);
}

static struct sg_hmp *new_engine(struct sg_gw *gw)
{
    struct sg_hmp_backend be = { hmp_backend_qmp, gw };
    struct sg_hmp_options o;
    memset(&o, 0, sizeof o);
    o.vmstate_node = gw->opt->vmstate_node;
    /* The engine numbers its jobs from 1; after a reconnection to the same
     * back end (only the socket broke) old jobs may still exist, so later
     * engines use their own prefix. */
    char prefix[32] = "hmp-";
    if (++gw->hmp_generation > 1)
        snprintf(prefix, sizeof prefix, "hmp-c%u-", gw->hmp_generation);
    o.job_id_prefix = prefix;
    /* snapgate-vmm replaces a tag atomically (snapshot-save x-replace) and
     * matches tags exactly in snapshot-load; QEMU does neither. */
    o.backend_replaces = gw->backend_is_vmm;
    o.backend_exact_tags = gw->backend_is_vmm;
    /* snapgate-vmm's human-monitor-command is this same engine. */
    o.no_forward = gw->backend_is_vmm;
    return sg_hmp_new(&be, &o);
}

bool gw_hmp_init(struct sg_gw *gw, struct sg_error *err)
{
    gw->hmp = new_engine(gw);
    if (!gw->hmp) {
        sg_error_set(err, "out of memory");
        return false;
    }
    sg_gw_timer_init(&gw->tick, gw->loop, tick, gw);
    gw_current_load(gw);
    /* Fills the completion cache before the first Tab. */
    sg_hmp_refresh_snapshots(gw->hmp);
    return true;
}

void gw_hmp_abort_all(struct sg_gw *gw, const char *text)
{
    /* Lines that `done` starts (the monitor's typed-ahead queue) go to the
     * gateway's list, not to this one: they are not aborted. */
    struct sg_gw_hmp_req *list = gw->hmp_reqs;
    gw->hmp_reqs = NULL;
    if (list)
        list->pprev = &list;
    while (list) {
        struct sg_gw_hmp_req *r = list;
        req_unlink(r);
        if (r->cmd) {
            sg_hmp_detach(r->cmd);
            r->cmd = NULL;
        }
        r->done(r->opaque, text, false);
        free(r);
    }
}

bool gw_hmp_renew(struct sg_gw *gw, struct sg_error *err)
{
    struct sg_hmp *fresh = new_engine(gw);
    if (!fresh) {
        sg_error_set(err, "out of memory");
        return false;
    }
    struct sg_hmp *old = gw->hmp;
    gw->hmp = fresh;
    gw_current_publish(gw);
    /* Lines started during the outage belong to the old engine, which is
     * freed without calling them back: they are ended here. */
    gw_hmp_abort_all(gw, "Error: the back end connection changed while the command ran; "
                         "run it again\n");
    if (old)
        sg_hmp_free(old);
    sg_hmp_refresh_snapshots(gw->hmp);
    return true;
}

static void quit_timeout(void *opaque)
{
    struct sg_gw *gw = opaque;
    gw_exit(gw, SG_GW_EXIT_OK);
}

static void quit_replied(void *opaque, json_t *reply)
{
    (void)opaque;
    (void)reply; /* the back end closing the link ends the gateway */
}

/* `quit` from any front end: like QEMU's, it ends the VM; the gateway
 * follows when the back end has gone (or after a grace period). */
void gw_quit(struct sg_gw *gw)
{
    if (gw->quit_sent || gw->exiting)
        return;
    if (!gw_backend_alive(gw)) {
        gw_exit(gw, SG_GW_EXIT_OK);
        return;
    }
    json_t *cmd = json_pack("{s:s}", "execute", "quit");
    gw_backend_send(gw, cmd, quit_replied, gw);
    sg_gw_timer_init(&gw->quit_timer, gw->loop, quit_timeout, gw);
    sg_gw_timer_arm(&gw->quit_timer, GW_QUIT_GRACE_MS);
}

static void req_done(void *opaque, const char *text, bool quit)
{
    struct sg_gw_hmp_req *r = opaque;
    struct sg_gw *gw = r->gw;
    r->cmd = NULL;
    req_unlink(r);
    r->done(r->opaque, text, quit);
    if (r->in_exec)
        r->finished = true;
    else
        free(r);
    if (quit)
        gw_quit(gw);
}

static void req_progress(void *opaque, const char *job_id, unsigned long long done,
                         unsigned long long total)
{
    struct sg_gw_hmp_req *r = opaque;
    if (r->progress)
        r->progress(r->opaque, job_id, done, total);
}

struct sg_gw_hmp_req *sg_gw_hmp_exec(struct sg_gw *gw, const char *line, enum sg_hmp_style style,
                                     sg_gw_hmp_done_fn done, sg_gw_hmp_progress_fn progress,
                                     void *opaque)
{
    struct sg_gw_hmp_req *r = calloc(1, sizeof *r);
    if (!r) {
        done(opaque, "Error: out of memory\n", false);
        return NULL;
    }
    r->gw = gw;
    r->done = done;
    r->progress = progress;
    r->opaque = opaque;
    r->in_exec = true;
    req_link(&gw->hmp_reqs, r);
    int profile = style == SG_HMP_STYLE_QEMU72         ? SG_HMP_PROFILE_QEMU72
                  : style == SG_HMP_STYLE_LIBVIRT_SAFE ? SG_HMP_PROFILE_LIBVIRT_SAFE
                                                       : SG_HMP_PROFILE_SNAPGATE;
    struct sg_hmp_cmd *cmd = sg_hmp_exec(gw->hmp, line, profile, req_done, req_progress, r);
    r->in_exec = false;
    if (r->finished || !cmd) {
        req_unlink(r);
        free(r);
        return NULL;
    }
    r->cmd = cmd;
    gw_hmp_kick(gw);
    return r;
}

void sg_gw_hmp_cancel(struct sg_gw_hmp_req *req)
{
    if (req && req->cmd)
        sg_hmp_cancel(req->cmd);
}

static void req_note(void *opaque, const char *text)
{
    struct sg_gw_hmp_req *r = opaque;
    if (r->note)
        r->note(r->opaque, text);
}

void sg_gw_hmp_set_note(struct sg_gw_hmp_req *req, sg_gw_hmp_note_fn note)
{
    if (!req || !req->cmd)
        return;
    req->note = note;
    sg_hmp_set_note(req->cmd, req_note);
}

bool sg_gw_hmp_done_failed(const struct sg_gw *gw)
{
    return gw->hmp && sg_hmp_done_failed(gw->hmp);
}

void sg_gw_hmp_detach(struct sg_gw_hmp_req *req)
{
    if (!req)
        return;
    if (req->cmd)
        sg_hmp_detach(req->cmd);
    req_unlink(req);
    free(req);
}

/* gw_qmp_client.c: the virtual QMP connection that every QMP front end
 * (the --qmp unix endpoint, the /qmp WebSocket) goes through.
 *
 * Negotiation and human-monitor-command are answered here; every other
 * command is forwarded on the gateway's single back-end link, which numbers
 * it itself — the client's id never leaves the gateway and is put back on
 * the reply, so two clients using the same id cannot get each other's
 * replies. */
#include "gw_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qmp_msg.h"
#include "qmp_schema.h"
#include "sg_hmp.h"

struct fwd {                    /* one forwarded command awaiting its reply */
    struct fwd *next, **pprev;
    struct sg_gw_qmp_client *client;  /* NULL once the client went away */
    json_t *id;                 /* the client's own id (any JSON value) or NULL */
    char *job_id;               /* "job-id" argument of a job command, or NULL */
};

struct hmp_call {               /* one human-monitor-command being executed */
    struct hmp_call *next, **pprev;
    struct sg_gw_qmp_client *client;
    struct sg_gw_hmp_req *req;
    json_t *id;
};

struct sg_gw_qmp_client {
    struct sg_gw *gw;
    enum sg_hmp_style style;
    sg_gw_send_fn send;
    void *opaque;
    bool negotiated;
    struct fwd *fwds;
    struct hmp_call *calls;
    json_t *jobs;               /* job ids this client started: id -> true */
};

static void client_send(struct sg_gw_qmp_client *c, json_t *msg)
{
    size_t len;
    char *text = msg ? sg_qmp_dumps(msg, &len) : NULL;
    if (text)
        c->send(c->opaque, text, len);
    free(text);
    json_decref(msg);
}

static void fwd_unlink(struct fwd *f)
{
    if (!f->pprev)
        return;
    *f->pprev = f->next;
    if (f->next)
        f->next->pprev = f->pprev;
    f->pprev = NULL;
    f->next = NULL;
}

static void call_unlink(struct hmp_call *h)
{
    if (!h->pprev)
        return;
    *h->pprev = h->next;
    if (h->next)
        h->next->pprev = h->pprev;
    h->pprev = NULL;
    h->next = NULL;
}

/* ---- jobs of departed clients ----------------------------------------- */

static void ignore_reply(void *opaque, json_t *reply)
{
    (void)opaque;
    (void)reply;
}

static void dismiss_job(struct sg_gw *gw, const char *job_id)
{
    json_t *cmd = json_pack("{s:s, s:{s:s}}", "execute", "job-dismiss", "arguments", "id", job_id);
    if (cmd)
        gw_backend_send(gw, cmd, ignore_reply, NULL);
}

/* Right after a client leaves, some of its jobs may have concluded already
 * (no event will come for them any more): dismiss those now. */
static void orphans_checked(void *opaque, json_t *reply)
{
    struct sg_gw *gw = opaque;
    json_t *jobs = json_object_get(reply, "return");
    size_t i;
    json_t *j;
    json_array_foreach(jobs, i, j) {
        const char *id = json_string_value(json_object_get(j, "id"));
        const char *st = json_string_value(json_object_get(j, "status"));
        if (id && st && strcmp(st, "concluded") == 0 && json_object_get(gw->orphan_jobs, id)) {
            json_object_del(gw->orphan_jobs, id);
            dismiss_job(gw, id);
        }
    }
}

void gw_qmp_clients_event(struct sg_gw *gw, json_t *event)
{
    const char *name = json_string_value(json_object_get(event, "event"));
    if (name && strcmp(name, "JOB_STATUS_CHANGE") == 0) {
        json_t *data = json_object_get(event, "data");
        const char *id = json_string_value(json_object_get(data, "id"));
        const char *st = json_string_value(json_object_get(data, "status"));
        if (id && st) {
            if (strcmp(st, "null") == 0) {
                for (size_t i = 0; i < gw->n_clients; i++)
                    json_object_del(gw->clients[i]->jobs, id);
                json_object_del(gw->orphan_jobs, id);
            } else if (strcmp(st, "concluded") == 0 && json_object_get(gw->orphan_jobs, id)) {
                json_object_del(gw->orphan_jobs, id);
                dismiss_job(gw, id);
            }
        }
    }
    size_t len;
    char *text = sg_qmp_dumps(event, &len);
    if (!text)
        return;
    /* A send callback may not free its client, so the array is stable. */
    for (size_t i = 0; i < gw->n_clients; i++)
        if (gw->clients[i]->negotiated)
            gw->clients[i]->send(gw->clients[i]->opaque, text, len);
    free(text);
}

void gw_qmp_clients_reconnected(struct sg_gw *gw)
{
    if (!json_object_size(gw->orphan_jobs))
        return;
    json_t *cmd = json_pack("{s:s}", "execute", "query-jobs");
    if (cmd)
        gw_backend_send(gw, cmd, orphans_checked, gw);
}

/* ---- forwarding ------------------------------------------------------- */

static void fwd_reply(void *opaque, json_t *reply)
{
    struct fwd *f = opaque;
    struct sg_gw_qmp_client *c = f->client;
    fwd_unlink(f);
    if (c) {
        json_t *msg;
        json_t *ret = json_object_get(reply, "return");
        if (!reply) {
            /* The command was written: it may or may not have run. */
            char desc[400];
            snprintf(desc, sizeof desc, "back end connection lost before the reply (%s)",
                     gw_backend_why(c->gw));
            msg = sg_qmp_error_reply(f->id, SG_ERR_GENERIC, desc);
            if (f->job_id)
                json_object_del(c->jobs, f->job_id);
        } else if (ret) {
            msg = sg_qmp_return_reply(json_incref(ret), f->id);
        } else {
            struct sg_error e = { 0 };
            sg_qmp_reply_error(reply, &e);
            msg = sg_qmp_error_reply_err(f->id, &e);
            /* A job command that failed created no job. */
            if (f->job_id)
                json_object_del(c->jobs, f->job_id);
        }
        client_send(c, msg);
    }
    json_decref(f->id);
    free(f->job_id);
    free(f);
}

static void forward(struct sg_gw_qmp_client *c, const struct sg_qmp_request *req)
{
    struct fwd *f = calloc(1, sizeof *f);
    json_t *cmd = json_pack("{s:s}", "execute", req->command);
    if (!f || !cmd) {
        free(f);
        json_decref(cmd);
        client_send(c, sg_qmp_error_reply(req->id, SG_ERR_GENERIC, "out of memory"));
        return;
    }
    if (req->args)
        json_object_set(cmd, "arguments", req->args);
    f->client = c;
    f->id = req->id ? json_incref(req->id) : NULL;
    const char *job_id = json_string_value(json_object_get(req->args, "job-id"));
    if (job_id) {
        f->job_id = strdup(job_id);
        json_object_set_new(c->jobs, job_id, json_true());
    }
    if (strcmp(req->command, "job-dismiss") == 0) {
        const char *id = json_string_value(json_object_get(req->args, "id"));
        if (id)
            json_object_del(c->jobs, id);
    }
    f->next = c->fwds;
    if (c->fwds)
        c->fwds->pprev = &f->next;
    f->pprev = &c->fwds;
    c->fwds = f;
    gw_backend_send(c->gw, cmd, fwd_reply, f);
}

/* ---- human-monitor-command -------------------------------------------- */

static const struct sg_qmp_arg hmc_args[] = {
    { "command-line", SG_QMP_T_STR, false, NULL, NULL, NULL, NULL, NULL },
    { "cpu-index", SG_QMP_T_INT, true, NULL, NULL, NULL, NULL, NULL },
    { NULL, SG_QMP_T_END, false, NULL, NULL, NULL, NULL, NULL },
};

static void hmc_done(void *opaque, const char *text, bool quit)
{
    struct hmp_call *h = opaque;
    struct sg_gw_qmp_client *c = h->client;
    call_unlink(h);
    if (c)
        client_send(c, sg_qmp_return_reply(json_string(text ? text : ""), h->id));
    json_decref(h->id);
    free(h);
}

static void human_monitor_command(struct sg_gw_qmp_client *c, const struct sg_qmp_request *req)
{
    struct sg_error err = { 0 };
    if (!sg_qmp_check_args(hmc_args, req->args, &err)) {
        client_send(c, sg_qmp_error_reply_err(req->id, &err));
        return;
    }
    struct hmp_call *h = calloc(1, sizeof *h);
    if (!h) {
        client_send(c, sg_qmp_error_reply(req->id, SG_ERR_GENERIC, "out of memory"));
        return;
    }
    h->client = c;
    h->id = req->id ? json_incref(req->id) : NULL;
    h->next = c->calls;
    if (c->calls)
        c->calls->pprev = &h->next;
    h->pprev = &c->calls;
    c->calls = h;
    const char *line = json_string_value(json_object_get(req->args, "command-line"));
    /* `done` may run before this returns; then the handle is NULL and h is
     * already freed. */
    struct sg_gw_hmp_req *r = sg_gw_hmp_exec(c->gw, line, c->style, hmc_done, NULL, h);
    if (r)
        h->req = r;
}

/* ---- the client ------------------------------------------------------- */

struct sg_gw_qmp_client *sg_gw_qmp_client_new(struct sg_gw *gw, enum sg_hmp_style hmp_style,
                                              sg_gw_send_fn send, void *opaque)
{
    struct sg_gw_qmp_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->jobs = json_object();
    if (gw->n_clients == gw->cap_clients) {
        size_t cap = gw->cap_clients ? gw->cap_clients * 2 : 8;
        struct sg_gw_qmp_client **v = realloc(gw->clients, cap * sizeof *v);
        if (!v || !c->jobs) {
            json_decref(c->jobs);
            free(c);
            return NULL;
        }
        gw->clients = v;
        gw->cap_clients = cap;
    }
    gw->clients[gw->n_clients++] = c;
    c->gw = gw;
    c->style = hmp_style;
    c->send = send;
    c->opaque = opaque;
    client_send(c, sg_qmp_greeting(gw->backend_version));
    return c;
}

void sg_gw_qmp_client_input(struct sg_gw_qmp_client *c, json_t *msg)
{
    struct sg_qmp_request req;
    struct sg_error err = { 0 };
    if (!sg_qmp_request_parse(msg, &req, &err)) {
        client_send(c, sg_qmp_error_reply_err(req.id, &err));
        return;
    }
    bool caps = strcmp(req.command, "qmp_capabilities") == 0;
    if (!c->negotiated) {
        if (!caps) {
            client_send(c, sg_qmp_error_reply(req.id, SG_ERR_COMMAND_NOT_FOUND,
                                              "Expecting capabilities negotiation with "
                                              "'qmp_capabilities'"));
            return;
        }
        /* Only "enable": [] is meaningful: the gateway offers no capability. */
        json_t *en = json_object_get(req.args, "enable");
        if (json_array_size(en) > 0) {
            const char *cap = json_string_value(json_array_get(en, 0));
            char desc[200];
            snprintf(desc, sizeof desc, "Capability '%s' not available", cap ? cap : "?");
            client_send(c, sg_qmp_error_reply(req.id, SG_ERR_GENERIC, desc));
            return;
        }
        c->negotiated = true;
        client_send(c, sg_qmp_return_reply(NULL, req.id));
        return;
    }
    if (caps) {
        client_send(c, sg_qmp_error_reply(req.id, SG_ERR_COMMAND_NOT_FOUND,
                                          "Capabilities negotiation is already complete, "
                                          "command ignored"));
        return;
    }
    if (strcmp(req.command, "human-monitor-command") == 0) {
        human_monitor_command(c, &req);
        return;
    }
    json_t *xret;
    if (gw_xsnapgate_command(c->gw, req.command, req.args, &xret, &err)) {
        client_send(c, xret ? sg_qmp_return_reply(xret, req.id) : sg_qmp_error_reply_err(req.id, &err));
        return;
    }
    gw_current_on_command(c->gw, req.command, req.args);
    forward(c, &req);
}

void sg_gw_qmp_client_free(struct sg_gw_qmp_client *c)
{
    if (!c)
        return;
    struct sg_gw *gw = c->gw;
    for (size_t i = 0; i < gw->n_clients; i++) {
        if (gw->clients[i] == c) {
            memmove(&gw->clients[i], &gw->clients[i + 1],
                    (gw->n_clients - i - 1) * sizeof *gw->clients);
            gw->n_clients--;
            break;
        }
    }
    /* Replies still on their way find no client and are dropped. */
    while (c->fwds) {
        struct fwd *f = c->fwds;
        fwd_unlink(f);
        f->client = NULL;
    }
    while (c->calls) {
        struct hmp_call *h = c->calls;
        call_unlink(h);
        if (h->req)
            sg_gw_hmp_detach(h->req);
        json_decref(h->id);
        free(h);
    }
    /* Its jobs go on; the gateway dismisses them when they conclude. */
    if (json_object_size(c->jobs) && gw_backend_alive(gw)) {
        json_object_update(gw->orphan_jobs, c->jobs);
        json_t *cmd = json_pack("{s:s}", "execute", "query-jobs");
        if (cmd)
            gw_backend_send(gw, cmd, orphans_checked, gw);
    }
    json_decref(c->jobs);
    free(c);
}

void gw_qmp_clients_free_all(struct sg_gw *gw)
{
    free(gw->clients);
    gw->clients = NULL;
    gw->n_clients = gw->cap_clients = 0;
}

/* gw_qmp_client.c: the virtual QMP connection that every QMP front end
 * (the --qmp endpoint, the /qmp WebSocket) goes through: a lossless proxy.
 *
 * A client's message is scanned (qmp_top.h), never decoded and encoded
 * again: a command is forwarded to the back end as it came, except its id,
 * which the link replaces by its own (so clients using the same ids never
 * get each other's replies); the reply comes back as the back end wrote it,
 * except the id, which is put back as the client's bytes (any JSON value) or
 * removed when the client sent none.  Descriptors passed with a command go
 * with it.  Only qmp_capabilities and human-monitor-command are decoded and
 * answered here (negotiation: sg_qmp_negotiation, the rules and texts of
 * every sg_qmp_server session, the VMM's included).
 *
 * Replies keep the client's order: every message takes a slot in the
 * client's queue when it arrives, and slots leave the queue, in order, once
 * answered, whoever answers (the back end, the HMP engine, the gateway). */
#include "gw_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qmp_msg.h"
#include "qmp_schema.h"
#include "qmp_server.h"
#include "qmp_top.h"
#include "sg_hmp.h"

/* Job ids the HMP engine makes ("hmp-savevm-1", "hmp-c2-..."): refused
 * for clients, so no client can make another's savevm fail. */
#define GW_HMP_JOB_PREFIX "hmp-"

/* Forwarded commands of all clients at the back end at once.  More wait in
 * their client's queue, and clients take turns, one command each: a client
 * that pipelines delays a newcomer by what the back end already holds (at
 * most this many) and then by one command per turn, however many it sent.
 * 16 keeps a single pipelining client's throughput (8 halved it). */
#define GW_FWD_WINDOW 16
/* One client's share of it: a client that arrives behind a flooding one
 * waits for at most this many of the flooder's commands. */
#define GW_FWD_PER_CLIENT 8
#define GW_MAX_PASSED_FDS 16
/* A client is not read from (sg_gw_qmp_client_busy) with this many messages
 * unanswered or this many bytes of commands waiting for their turn (one
 * message always fits); the unix endpoint reads no client while all
 * clients' waiting commands pass GW_QUEUED_TOTAL (gw_qmp_clients_queue_full). */
#define GW_CLIENT_MAX_SLOTS 16
#define GW_CLIENT_MAX_QUEUED (1u << 20)
#define GW_QUEUED_TOTAL (32u << 20)

struct slot {                   /* one message of the client, until answered */
    struct slot *next;
    struct sg_gw *gw;
    struct sg_gw_qmp_client *client;  /* NULL once the client went away */
    char *id;                   /* the client's id bytes, or NULL when it sent none */
    size_t id_len;
    char *out;                  /* the reply's text once answered */
    size_t out_len;
    bool done;
    bool at_backend;            /* the back end's callback still has it */
    bool executing;             /* inside sg_gw_hmp_exec: not sent before it returns */
    char *job_id;               /* "job-id" argument of a forwarded command */
    struct slot *next_unsent;   /* waiting for room at the back end: */
    char *msg;                  /*   the message's bytes, */
    size_t msg_len;
    struct sg_qmp_top top;      /*   its scan */
    int fds[GW_MAX_PASSED_FDS]; /*   and its descriptors */
    size_t nfds;
    struct sg_gw_hmp_req *req;  /* human-monitor-command being executed */
};

struct sg_gw_qmp_client {
    struct sg_gw *gw;
    enum sg_hmp_style style;
    sg_gw_send_fn send;
    void *opaque;
    bool negotiated;
    struct slot *head, **tail;
    size_t n_slots;
    struct slot *unsent, **unsent_tail;
    size_t unsent_bytes;        /* bytes of the commands in `unsent` */
    unsigned at_backend;        /* its commands the back end holds */
    struct sg_gw_qmp_client *next_turn;
    bool has_turn;              /* in gw's turn list */
    json_t *jobs;               /* job ids this client started: id -> true */
};

static void slot_free(struct slot *s)
{
    for (size_t i = 0; i < s->nfds; i++)
        close(s->fds[i]);
    free(s->msg);
    free(s->id);
    free(s->out);
    free(s->job_id);
    free(s);
}

/* Sends every answered slot at the head of the queue, in order. */
static void flush(struct sg_gw_qmp_client *c)
{
    while (c->head && c->head->done) {
        struct slot *s = c->head;
        c->head = s->next;
        if (!c->head)
            c->tail = &c->head;
        c->n_slots--;
        c->send(c->opaque, s->out, s->out_len);
        slot_free(s);
    }
}

/* The slot's reply is `text` (taken over). */
static void complete(struct slot *s, char *text, size_t len)
{
    struct sg_gw_qmp_client *c = s->client;
    if (!c) {
        free(text);
        slot_free(s);
        return;
    }
    s->out = text;
    s->out_len = len;
    s->done = true;
    if (!s->out) {
        s->out = strdup("");
        s->out_len = 0;
    }
    if (!s->executing)
        flush(c);
}

/* A reply the gateway makes (`msg` built with a null id placeholder when the
 * client sent an id, reference stolen): its id becomes the client's bytes. */
static void complete_json(struct slot *s, json_t *msg)
{
    size_t len = 0, out_len = 0;
    char *text = msg ? sg_qmp_dumps(msg, &len) : NULL;
    json_decref(msg);
    char *out = NULL;
    if (text && s->id) {
        struct sg_qmp_top top;
        sg_qmp_top_scan(text, len, &top);
        out = sg_qmp_top_set_id(text, len, &top, s->id, s->id_len, &out_len);
        free(text);
    } else {
        out = text;
        out_len = len;
    }
    complete(s, out, out_len);
}

static const json_t *id_placeholder(const struct slot *s)
{
    return s->id ? json_null() : NULL;
}

static void complete_error(struct slot *s, const char *cls, const char *desc)
{
    complete_json(s, sg_qmp_error_reply(id_placeholder(s), cls, desc));
}

static void complete_err(struct slot *s, const struct sg_error *e)
{
    complete_json(s, sg_qmp_error_reply_err(id_placeholder(s), e));
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

void gw_qmp_clients_event(struct sg_gw *gw, json_t *event, const char *bytes, size_t len)
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
    /* The back end's bytes, as it sent them.  A send callback may not free
     * its client, so the array is stable. */
    for (size_t i = 0; i < gw->n_clients; i++)
        if (gw->clients[i]->negotiated)
            gw->clients[i]->send(gw->clients[i]->opaque, bytes, len);
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

static void dispatch(struct sg_gw *gw);
static void take_turn(struct sg_gw_qmp_client *c);

static void forwarded_reply(void *opaque, const char *msg, size_t len,
                            const struct sg_qmp_top *top, const char *why)
{
    struct slot *s = opaque;
    struct sg_gw_qmp_client *c = s->client;
    s->at_backend = false;
    if (s->gw->fwd_outstanding)
        s->gw->fwd_outstanding--;
    if (c && c->at_backend) {
        c->at_backend--;
        if (c->unsent && !c->has_turn)
            take_turn(c); /* below its share again */
    }
    dispatch(s->gw);
    bool failed = !msg || top->m[SG_TOP_ERROR].present;
    if (c && failed && s->job_id)
        json_object_del(c->jobs, s->job_id); /* a job command that failed made no job */
    if (!msg) {
        complete_error(s, SG_ERR_GENERIC, why);
        return;
    }
    size_t out_len;
    char *out = sg_qmp_top_set_id(msg, len, top, s->id, s->id_len, &out_len);
    if (!out) {
        complete_error(s, SG_ERR_GENERIC, "out of memory");
        return;
    }
    complete(s, out, out_len);
}

/* The "arguments" member decoded, only when it may name a job (job-id,
 * job-dismiss's id): the gateway's bookkeeping, never what is forwarded. */
static json_t *job_args(const char *msg, const struct sg_qmp_top *top, bool dismiss)
{
    const struct sg_qmp_span *a = &top->m[SG_TOP_ARGUMENTS];
    if (!a->present || msg[a->off] != '{')
        return NULL;
    if (!dismiss && !memmem(msg + a->off, a->len, "\"job-id\"", 8))
        return NULL;
    return json_loadb(msg + a->off, a->len, JSON_DECODE_ANY, NULL);
}

/* Puts a client with waiting commands at the end of the turns. */
static void take_turn(struct sg_gw_qmp_client *c)
{
    struct sg_gw *gw = c->gw;
    c->has_turn = true;
    c->next_turn = NULL;
    if (gw->turn_tail)
        gw->turn_tail->next_turn = c;
    else
        gw->turn_head = c;
    gw->turn_tail = c;
}

/* Forwards one command, or queues it for the client's turn. */
static void forward(struct sg_gw_qmp_client *c, struct slot *s, const char *msg, size_t len,
                    const struct sg_qmp_top *top, int *fds, size_t nfds)
{
    bool dismiss = sg_qmp_top_is(msg, top, SG_TOP_EXECUTE, "job-dismiss");
    json_t *args = job_args(msg, top, dismiss);
    const char *job_id = json_string_value(json_object_get(args, "job-id"));
    if (job_id && strncmp(job_id, GW_HMP_JOB_PREFIX, strlen(GW_HMP_JOB_PREFIX)) == 0) {
        char desc[300];
        snprintf(desc, sizeof desc,
                 "Job ID '%.200s' is invalid: the prefix '" GW_HMP_JOB_PREFIX
                 "' is reserved for the gateway's HMP commands", job_id);
        json_decref(args);
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        complete_error(s, SG_ERR_GENERIC, desc);
        return;
    }
    if (job_id) {
        s->job_id = strdup(job_id);
        json_object_set_new(c->jobs, job_id, json_true());
        static const char *const snap[] = { "snapshot-save", "snapshot-load", "snapshot-delete" };
        for (size_t i = 0; i < sizeof snap / sizeof snap[0]; i++)
            if (sg_qmp_top_is(msg, top, SG_TOP_EXECUTE, snap[i]))
                gw_current_on_command(c->gw, snap[i], args);   /* the current snapshot */
    }
    if (dismiss) {
        const char *id = json_string_value(json_object_get(args, "id"));
        if (id)
            json_object_del(c->jobs, id);
    }
    json_decref(args);
    struct sg_gw *gw = c->gw;
    if (gw->fwd_outstanding < GW_FWD_WINDOW && c->at_backend < GW_FWD_PER_CLIENT &&
        !c->unsent) {
        gw->fwd_outstanding++;
        c->at_backend++;
        s->at_backend = true;
        gw_backend_forward(gw, msg, len, top, fds, nfds, forwarded_reply, s);
        return;
    }
    /* No room at the back end: the command waits for this client's turn. */
    s->msg = malloc(len ? len : 1);
    if (!s->msg) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        complete_error(s, SG_ERR_GENERIC, "out of memory");
        return;
    }
    memcpy(s->msg, msg, len);
    s->msg_len = len;
    s->top = *top;
    for (size_t i = 0; i < nfds; i++) {
        if (s->nfds < GW_MAX_PASSED_FDS)
            s->fds[s->nfds++] = fds[i];
        else
            close(fds[i]);
    }
    *c->unsent_tail = s;
    c->unsent_tail = &s->next_unsent;
    c->unsent_bytes += len;
    gw->fwd_unsent_bytes += len;
    if (!c->has_turn && c->at_backend < GW_FWD_PER_CLIENT)
        take_turn(c);
}

/* Sends waiting commands while there is room, one per client in turn. */
static void dispatch(struct sg_gw *gw)
{
    if (gw->fwd_dispatching)
        return; /* the outer call goes on */
    gw->fwd_dispatching = true;
    bool was_full = gw->fwd_unsent_bytes >= GW_QUEUED_TOTAL;
    while (gw->fwd_outstanding < GW_FWD_WINDOW && gw->turn_head) {
        struct sg_gw_qmp_client *c = gw->turn_head;
        gw->turn_head = c->next_turn;
        if (!gw->turn_head)
            gw->turn_tail = NULL;
        c->has_turn = false;
        struct slot *s = c->unsent;
        c->unsent = s->next_unsent;
        if (!c->unsent)
            c->unsent_tail = &c->unsent;
        s->next_unsent = NULL;
        c->unsent_bytes -= s->msg_len;
        gw->fwd_unsent_bytes -= s->msg_len;
        gw->fwd_outstanding++;
        c->at_backend++;
        /* Back in line behind the others, unless it holds its share (it
         * comes back when one of its commands is answered). */
        if (c->unsent && c->at_backend < GW_FWD_PER_CLIENT)
            take_turn(c);
        s->at_backend = true;
        size_t nfds = s->nfds;
        s->nfds = 0; /* owned by the forward from here */
        gw_backend_forward(gw, s->msg, s->msg_len, &s->top, s->fds, nfds, forwarded_reply, s);
    }
    gw->fwd_dispatching = false;
    if (was_full && gw->fwd_unsent_bytes < GW_QUEUED_TOTAL)
        gw_on_backend_drained(gw); /* the endpoint reads its clients again */
}

/* Takes a departing client out of the turns. */
static void leave_turns(struct sg_gw_qmp_client *c)
{
    struct sg_gw *gw = c->gw;
    struct sg_gw_qmp_client **pp = &gw->turn_head, *prev = NULL;
    while (*pp && *pp != c) {
        prev = *pp;
        pp = &(*pp)->next_turn;
    }
    if (*pp) {
        *pp = c->next_turn;
        if (gw->turn_tail == c)
            gw->turn_tail = prev;
    }
    c->has_turn = false;
    c->unsent = NULL;
    c->unsent_tail = &c->unsent;
    gw->fwd_unsent_bytes -= c->unsent_bytes;
    c->unsent_bytes = 0;
}

/* ---- human-monitor-command -------------------------------------------- */

static const struct sg_qmp_arg hmc_args[] = {
    { "command-line", SG_QMP_T_STR, false, NULL, NULL, NULL, NULL, NULL },
    { "cpu-index", SG_QMP_T_INT, true, NULL, NULL, NULL, NULL, NULL },
    { NULL, SG_QMP_T_END, false, NULL, NULL, NULL, NULL, NULL },
};

static void hmc_done(void *opaque, const char *text, bool quit)
{
    (void)quit;
    struct slot *s = opaque;
    s->req = NULL;
    complete_json(s, sg_qmp_return_reply(json_string(text ? text : ""), id_placeholder(s)));
}

static void human_monitor_command(struct sg_gw_qmp_client *c, struct slot *s,
                                  const struct sg_qmp_request *req)
{
    struct sg_error err = { 0 };
    if (!sg_qmp_check_args(hmc_args, req->args, &err)) {
        complete_err(s, &err);
        return;
    }
    const char *line = json_string_value(json_object_get(req->args, "command-line"));
    /* `done` may run before this returns: the slot is answered then and
     * sent after the call. */
    s->executing = true;
    struct sg_gw_hmp_req *r = sg_gw_hmp_exec(c->gw, line, c->style, hmc_done, NULL, s);
    s->executing = false;
    if (!s->done)
        s->req = r;
    flush(c);
}

/* ---- messages the gateway answers itself ------------------------------ */

/* Negotiation, and the commands decoded here; QEMU's checks and texts. */
static void local_command(struct sg_gw_qmp_client *c, struct slot *s, const char *msg, size_t len)
{
    json_t *j = NULL;
    struct sg_error err = { 0 };
    if (sg_qmp_parse_message(msg, len, &j, &err) != SG_QMP_PARSE_OK) {
        complete_err(s, &err);
        return;
    }
    struct sg_qmp_request req;
    enum sg_qmp_neg neg = SG_QMP_NEG_ERROR;
    if (!sg_qmp_request_parse(j, &req, &err) ||
        (neg = sg_qmp_negotiation(&c->negotiated, &req, &err)) == SG_QMP_NEG_ERROR) {
        complete_err(s, &err);
    } else if (neg == SG_QMP_NEG_DONE) {
        complete_json(s, sg_qmp_return_reply(NULL, id_placeholder(s)));
    } else if (strncmp(req.command, "x-snapgate-", 11) == 0) {
        json_t *ret;
        if (gw_xsnapgate_command(c->gw, req.command, req.args, &ret, &err) && ret)
            complete_json(s, sg_qmp_return_reply(ret, id_placeholder(s)));
        else
            complete_err(s, &err);
    } else {
        human_monitor_command(c, s, &req);
    }
    json_decref(j);
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
    c->tail = &c->head;
    c->unsent_tail = &c->unsent;
    json_t *g = sg_qmp_greeting(gw->backend_version);
    size_t len;
    char *text = g ? sg_qmp_dumps(g, &len) : NULL;
    if (text)
        send(opaque, text, len);
    free(text);
    json_decref(g);
    return c;
}

bool sg_gw_qmp_client_input(struct sg_gw_qmp_client *c, const char *msg, size_t len, int *fds,
                            size_t nfds)
{
    struct slot *s = calloc(1, sizeof *s);
    if (!s) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        return false;
    }
    s->client = c;
    s->gw = c->gw;
    *c->tail = s;
    c->tail = &s->next;
    c->n_slots++;

    struct sg_qmp_top top;
    sg_qmp_top_scan(msg, len, &top);
    const struct sg_qmp_span *id = &top.m[SG_TOP_ID];
    if (top.object && id->present) {
        s->id = malloc(id->len);
        if (s->id) {
            memcpy(s->id, msg + id->off, id->len);
            s->id_len = id->len;
        }
    }
    bool local = !top.object || !c->negotiated ||
                 sg_qmp_top_is(msg, &top, SG_TOP_EXECUTE, "qmp_capabilities") ||
                 sg_qmp_top_is(msg, &top, SG_TOP_EXECUTE, "human-monitor-command") ||
                 sg_qmp_top_is(msg, &top, SG_TOP_EXECUTE, "x-snapgate-query-current-snapshot") ||
                 sg_qmp_top_is(msg, &top, SG_TOP_EXECUTE, "x-snapgate-hmp-complete");
    if (local || !top.valid) {
        /* Nothing was asked of the back end: descriptors are not kept
         * (QEMU keeps them for a later getfd; here they would go to no
         * command). */
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
    }
    if (top.too_deep) {
        complete_error(s, SG_ERR_GENERIC, "JSON nesting depth limit exceeded");
        return false;
    }
    if (!top.valid || !top.object || local)
        local_command(c, s, msg, len);
    else
        forward(c, s, msg, len, &top, fds, nfds);
    return true;
}

size_t sg_gw_qmp_client_inflight(const struct sg_gw_qmp_client *c)
{
    return c->n_slots;
}

bool sg_gw_qmp_client_busy(const struct sg_gw_qmp_client *c)
{
    return c->n_slots >= GW_CLIENT_MAX_SLOTS || c->unsent_bytes >= GW_CLIENT_MAX_QUEUED;
}

bool gw_qmp_clients_queue_full(const struct sg_gw *gw)
{
    return gw->fwd_unsent_bytes >= GW_QUEUED_TOTAL;
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
    leave_turns(c);
    /* Replies still on their way find no client and are dropped. */
    while (c->head) {
        struct slot *s = c->head;
        c->head = s->next;
        s->client = NULL;
        s->next = NULL;
        if (s->req) {
            sg_gw_hmp_detach(s->req);
            s->req = NULL;
        }
        if (!s->at_backend)
            slot_free(s);
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

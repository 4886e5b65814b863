/* gw_backend.c: the one QMP link from the gateway to its back end — an
 * sg_qmp_client (gateway/qmp/qmp_client.c) in pass-through mode over the
 * loop's descriptor, with the reconnection policy around it.
 *
 * The client does the protocol: greeting, negotiation, its own ids ("sg-N",
 * so the ids of front-end clients never reach the back end and cannot
 * collide), matching replies, framing without decoding (replies and events
 * reach front ends as the back end's bytes), descriptors passed with their
 * command.  This file adds what belongs to the gateway:
 *  - the transport: the client's output goes to the back end's sg_gw_fd;
 *    a back end that stops reading (64 MiB queued) loses the link;
 *  - the contract of gw_backend_send/forward: a command that cannot be
 *    written gets "back end not connected (...)" from the loop, never from
 *    inside the call; a command lost with the connection gets NULL (the
 *    gateway's own) or "back end connection lost before the reply (...)";
 *  - --connect: one client per connection; when one dies the same socket
 *    path is tried again with a growing pause until the --reconnect
 *    deadline, and a new connection negotiates like the first. */
#include "gw_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "qmp_client.h"
#include "qmp_msg.h"
#include "qmp_top.h"
#include "qmp_unix.h"

#define GW_GREETING_TIMEOUT_MS 10000
/* Pause between reconnection attempts: starts small (a restarting back end
 * is often back within a second) and doubles up to a ceiling. */
#define GW_RETRY_FIRST_MS 100
#define GW_RETRY_MAX_MS 2000

/* One command's owner: the gateway's own (cb: the decoded reply) or a
 * forwarded one (raw: the back end's bytes). */
struct be_req {
    struct be_req *next;       /* refused list (not connected) */
    struct gw_backend *be;
    struct sg_qmp_client *client;
    gw_reply_fn cb;
    gw_raw_reply_fn raw;
    void *opaque;
};

struct gw_backend {
    struct sg_gw *gw;
    struct sg_gw_fd *fd;
    struct sg_qmp_client *client;    /* the live connection, or NULL */
    struct sg_qmp_client *dead;      /* a closed one, freed from the loop */
    bool up;                         /* negotiated */
    struct be_req *refused, **refused_tail;  /* answered "not connected" */
    struct sg_gw_timer later_timer;  /* answers them, frees `dead` */
    struct sg_gw_timer start_timer;  /* greeting timeout */
    struct sg_gw_timer full_timer;   /* the back end stopped reading */
    bool start_waiting;
    struct sg_error start_err;
    char why[256];                   /* why the last READY connection was lost */

    bool reconnecting;
    struct sg_gw_timer retry_timer;
    int64_t deadline_ms;             /* monotonic: give up after this */
    unsigned retry_ms;
    unsigned attempts;
    char attempt_err[1024];          /* why the last attempt failed */
};

static void schedule_retry(struct gw_backend *be);

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Ends the current connection (from the loop, never inside the client's own
 * callbacks): ops->closed and the pending callbacks run now. */
static void end_client(struct gw_backend *be, const char *why)
{
    struct sg_qmp_client *c = be->client;
    if (!c)
        return;
    struct sg_error e = { 0 };
    sg_error_set(&e, "%s", why);
    sg_qmp_client_eof(c, &e);
    if (be->dead == c) {
        be->dead = NULL;
        sg_qmp_client_free(c);
    }
}

/* The reply given to a command that never reached a back end. */
static json_t *not_connected_reply(const struct gw_backend *be)
{
    char desc[700];
    if (be->reconnecting)
        snprintf(desc, sizeof desc, "back end not connected (%s); reconnecting to %s",
                 be->why[0] ? be->why : "connecting", be->gw->opt->connect_path);
    else
        snprintf(desc, sizeof desc, "back end not connected (%s)",
                 be->why[0] ? be->why : "not connected yet");
    return sg_qmp_error_reply(NULL, SG_ERR_GENERIC, desc);
}

static void later(void *opaque)
{
    struct gw_backend *be = opaque;
    sg_qmp_client_free(be->dead);
    be->dead = NULL;
    gw_lost_abort(be->gw);
    /* Taken over first: callbacks may send more commands, which land on
     * the (new) list and get their own round. */
    struct be_req *list = be->refused;
    be->refused = NULL;
    be->refused_tail = &be->refused;
    while (list) {
        struct be_req *r = list;
        list = r->next;
        json_t *reply = not_connected_reply(be);
        const char *desc =
            json_string_value(json_object_get(json_object_get(reply, "error"), "desc"));
        if (r->raw)
            r->raw(r->opaque, NULL, 0, NULL, desc ? desc : "back end not connected");
        else
            r->cb(r->opaque, reply);
        json_decref(reply);
        free(r);
    }
}

/* A command's answer from the client: bytes, an invalid reply, or the loss. */
static void on_reply(void *opaque, const char *msg, size_t len, const struct sg_qmp_top *top,
                     const char *why)
{
    struct be_req *r = opaque;
    bool lost = !msg && sg_qmp_client_closed(r->client);
    if (r->raw) {
        char desc[400];
        if (lost) {
            snprintf(desc, sizeof desc, "back end connection lost before the reply (%s)",
                     r->be->why);
            why = desc;
        }
        r->raw(r->opaque, msg, len, top, why);
    } else if (lost) {
        r->cb(r->opaque, NULL);
    } else {
        json_t *reply = NULL;
        struct sg_error e = { 0 };
        if (msg && sg_qmp_parse_message(msg, len, &reply, &e) == SG_QMP_PARSE_OK) {
            json_object_del(reply, "id");
        } else {
            char desc[sizeof e.msg + 64];
            snprintf(desc, sizeof desc, "the back end sent a reply the gateway cannot parse (%s)",
                     msg ? e.msg : why);
            reply = sg_qmp_error_reply(NULL, SG_ERR_GENERIC, desc);
        }
        r->cb(r->opaque, reply);
        json_decref(reply);
    }
    free(r);
}

/* The connection is gone (ops->closed: before its commands fail). */
static void on_closed(void *opaque, const struct sg_error *why)
{
    struct gw_backend *be = opaque;
    bool was_up = be->up;
    be->up = false;
    be->dead = be->client;
    be->client = NULL;
    if (be->fd) {
        sg_gw_fd_detach(be->fd);
        be->fd = NULL;
    }
    sg_gw_timer_cancel(&be->start_timer);
    sg_gw_timer_cancel(&be->full_timer);
    sg_gw_timer_arm(&be->later_timer, 0);
    const char *msg = why && why->set ? why->msg : "closed";
    if (be->start_waiting) {
        snprintf(be->why, sizeof be->why, "%.255s", msg);
        sg_error_set(&be->start_err, "%s", msg);
        be->start_waiting = false;
        sg_gw_loop_stop(be->gw->loop);
        return;
    }
    if (be->reconnecting) {
        /* An attempt that got a socket but no working QMP: try again. */
        snprintf(be->attempt_err, sizeof be->attempt_err, "%s", msg);
        schedule_retry(be);
        return;
    }
    snprintf(be->why, sizeof be->why, "%.255s", msg);
    if (was_up) {
        gw_on_backend_lost(be->gw, be->why);
        /* HMP lines end with the loss before the commands they wait for
         * fail (every line gets the same message). */
        gw_lost_abort(be->gw);
    }
}

static void on_ready(void *opaque, const json_t *greeting)
{
    struct gw_backend *be = opaque;
    struct sg_gw *gw = be->gw;
    json_t *ver = json_object_get(json_object_get(greeting, "QMP"), "version");
    /* A back end that came back may be another version (or program). */
    json_decref(gw->backend_version);
    gw->backend_version = json_is_object(ver) ? json_deep_copy(ver) : json_object();
    const char *pkg = json_string_value(json_object_get(ver, "package"));
    gw->backend_is_vmm = pkg && strncmp(pkg, "snapgate", 8) == 0;
    be->up = true;
    sg_gw_timer_cancel(&be->start_timer);
    if (be->start_waiting) {
        be->start_waiting = false;
        sg_gw_loop_stop(gw->loop);
    } else if (be->reconnecting) {
        be->reconnecting = false;
        sg_gw_timer_cancel(&be->retry_timer);
        gw_on_backend_reconnected(gw, be->attempts);
    }
}

/* Front-end clients get the bytes; the gateway's own users (HMP engine,
 * job bookkeeping) the decoded event when jansson can hold it. */
static void on_event(void *opaque, const char *bytes, size_t len, const struct sg_qmp_top *top)
{
    (void)top;
    struct gw_backend *be = opaque;
    json_t *ev = NULL;
    struct sg_error e = { 0 };
    if (sg_qmp_parse_message(bytes, len, &ev, &e) != SG_QMP_PARSE_OK)
        ev = NULL;
    gw_on_backend_event(be->gw, ev, bytes, len);
    json_decref(ev);
}

static void queue_full(void *opaque)
{
    end_client(opaque, "the back end does not read its QMP socket (output queue full)");
}

/* The client's transport: the loop's descriptor. */
static bool on_write(void *opaque, const char *bytes, size_t len, int *fds, size_t nfds)
{
    struct gw_backend *be = opaque;
    bool ok = !be->fd ||
              (nfds ? sg_gw_fd_write_fds(be->fd, bytes, len, fds, nfds) &&
                          sg_gw_fd_write(be->fd, "\r\n", 2)
                    : sg_gw_fd_write_line(be->fd, bytes, len));
    if (!be->fd)
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
    /* Never closed from inside a send: the loop ends the link. */
    if (!ok)
        sg_gw_timer_arm(&be->full_timer, 0);
    return true;
}

static const struct sg_qmp_client_ops client_ops = {
    .ready = on_ready, .closed = on_closed, .raw_event = on_event, .write = on_write,
};

static bool be_readable(void *opaque, struct sg_gw_fd *f)
{
    struct gw_backend *be = opaque;
    char buf[65536];
    for (;;) {
        ssize_t n = sg_gw_fd_read(f, buf, sizeof buf);
        if (n == SG_GW_READ_AGAIN)
            return true;
        if (n <= 0) {
            char why[200];
            if (n == 0)
                snprintf(why, sizeof why, "the back end closed the QMP connection");
            else
                snprintf(why, sizeof why, "reading from the back end failed: %s",
                         strerror(errno));
            end_client(be, why);
            return false;
        }
        struct sg_qmp_client *c = be->client;
        if (!c || !sg_qmp_client_feed(c, buf, (size_t)n) || f != be->fd)
            return false;
    }
}

static void be_closed(void *opaque, struct sg_gw_fd *f)
{
    struct gw_backend *be = opaque;
    if (f != be->fd)
        return; /* a connection already given up */
    be->fd = NULL;
    end_client(be, "the back end connection closed");
}

static void be_drained(void *opaque, struct sg_gw_fd *f)
{
    struct gw_backend *be = opaque;
    if (f == be->fd)
        gw_on_backend_drained(be->gw);
}

static const struct sg_gw_fd_ops be_ops = { be_readable, be_drained, be_closed };

/* SNAPGATE_GREETING_TIMEOUT_MS shortens the wait (tests of silent sockets). */
static unsigned greeting_timeout_ms(void)
{
    const char *s = getenv("SNAPGATE_GREETING_TIMEOUT_MS");
    long v = s ? strtol(s, NULL, 10) : 0;
    return v > 0 && v < 600000 ? (unsigned)v : GW_GREETING_TIMEOUT_MS;
}

static void start_timeout(void *opaque)
{
    char why[160];
    snprintf(why, sizeof why,
             "no QMP greeting from the back end within %.1f s (is it a QMP socket?)",
             greeting_timeout_ms() / 1000.0);
    end_client(opaque, why);
}

/* Takes over a connected socket: a new client, greeting and negotiation. */
static bool attach_fd(struct gw_backend *be, int fd, struct sg_error *err)
{
    be->client = sg_qmp_client_new(&client_ops, be);
    if (!be->client) {
        close(fd);
        sg_error_set(err, "out of memory");
        return false;
    }
    be->fd = sg_gw_fd_adopt(be->gw->loop, fd, &be_ops, be, err);
    if (!be->fd) {
        close(fd);
        sg_qmp_client_free(be->client);
        be->client = NULL;
        return false;
    }
    sg_gw_timer_arm(&be->start_timer, greeting_timeout_ms());
    return true;
}

/* ---- reconnection (--connect) ------------------------------------------ */

static void give_up(struct gw_backend *be)
{
    be->reconnecting = false;
    sg_gw_timer_cancel(&be->retry_timer);
    gw_on_backend_reconnect_failed(be->gw, be->why, be->attempt_err);
}

static void try_connect(void *opaque)
{
    struct gw_backend *be = opaque;
    if (!be->reconnecting || be->client)
        return;
    be->attempts++;
    sg_qmp_client_free(be->dead);
    be->dead = NULL;
    struct sg_error err = { 0 };
    int fd = sg_unix_connect(be->gw->opt->connect_path, &err);
    if (fd < 0 || !attach_fd(be, fd, &err)) {
        snprintf(be->attempt_err, sizeof be->attempt_err, "%s", err.msg);
        schedule_retry(be);
        return;
    }
    /* A socket that accepts but never greets must not hold the gateway
     * much past the deadline. */
    int64_t left = be->deadline_ms - now_ms();
    if (left < 500)
        left = 500;
    if (left < greeting_timeout_ms())
        sg_gw_timer_arm(&be->start_timer, (unsigned)left);
}

static void schedule_retry(struct gw_backend *be)
{
    int64_t left = be->deadline_ms - now_ms();
    if (left <= 0) {
        give_up(be);
        return;
    }
    be->retry_ms = be->retry_ms ? be->retry_ms * 2 : GW_RETRY_FIRST_MS;
    if (be->retry_ms > GW_RETRY_MAX_MS)
        be->retry_ms = GW_RETRY_MAX_MS;
    /* The last attempt is made right at the deadline. */
    sg_gw_timer_arm(&be->retry_timer, left < be->retry_ms ? (unsigned)left : be->retry_ms);
}

void gw_backend_reconnect(struct sg_gw *gw, unsigned seconds)
{
    struct gw_backend *be = gw->be;
    if (!be || be->client || be->reconnecting)
        return;
    be->reconnecting = true;
    be->deadline_ms = now_ms() + (int64_t)seconds * 1000;
    be->retry_ms = 0;
    be->attempts = 0;
    be->attempt_err[0] = '\0';
    /* The first attempt right away: a back end restarted by a supervisor may
     * already listen again. */
    sg_gw_timer_arm(&be->retry_timer, 0);
}

bool gw_backend_start(struct sg_gw *gw, int fd, struct sg_error *err)
{
    struct gw_backend *be = calloc(1, sizeof *be);
    if (!be) {
        close(fd);
        sg_error_set(err, "out of memory");
        return false;
    }
    be->gw = gw;
    be->refused_tail = &be->refused;
    sg_gw_timer_init(&be->later_timer, gw->loop, later, be);
    sg_gw_timer_init(&be->start_timer, gw->loop, start_timeout, be);
    sg_gw_timer_init(&be->full_timer, gw->loop, queue_full, be);
    sg_gw_timer_init(&be->retry_timer, gw->loop, try_connect, be);
    gw->be = be;
    if (!attach_fd(be, fd, err))
        return false;
    be->start_waiting = true;
    sg_gw_loop_run(gw->loop);
    /* The start-up wait borrowed the loop: let it run again later. */
    sg_gw_loop_restart(gw->loop);
    if (!be->up) {
        if (be->start_waiting) {
            /* The loop stopped for another reason (a signal). */
            be->start_waiting = false;
            sg_gw_timer_cancel(&be->start_timer);
            sg_error_set(err, "interrupted while connecting to the back end");
        } else {
            sg_error_set(err, "%s", be->start_err.msg);
        }
        return false;
    }
    return true;
}

/* The owner of one command; with no live connection it goes to the list
 * answered "not connected" from the loop (NULL returned then). */
static struct be_req *new_req(struct gw_backend *be, gw_reply_fn cb, gw_raw_reply_fn raw,
                              void *opaque, bool *refused)
{
    struct be_req *r = calloc(1, sizeof *r);
    *refused = false;
    if (!r)
        return NULL;
    r->be = be;
    r->cb = cb;
    r->raw = raw;
    r->opaque = opaque;
    r->client = be->client;
    if (!be->up) {
        *be->refused_tail = r;
        be->refused_tail = &r->next;
        sg_gw_timer_arm(&be->later_timer, 0);
        *refused = true;
        return NULL;
    }
    return r;
}

/* Hands the command to the client; a refusal (out of memory) is answered
 * from the loop like a missing connection. */
static void submit(struct gw_backend *be, struct be_req *r, const char *msg, size_t len,
                   const struct sg_qmp_top *top, int *fds, size_t nfds)
{
    struct sg_error err = { 0 };
    if (sg_qmp_client_forward(be->client, msg, len, top, fds, nfds, on_reply, r, &err))
        return;
    r->next = NULL;
    *be->refused_tail = r;
    be->refused_tail = &r->next;
    sg_gw_timer_arm(&be->later_timer, 0);
}

void gw_backend_send(struct sg_gw *gw, json_t *cmd, gw_reply_fn cb, void *opaque)
{
    struct gw_backend *be = gw->be;
    if (!be) {
        /* Only during shutdown, after the link was freed: nobody waits for
         * the loop any more, so the answer is given at once. */
        json_decref(cmd);
        cb(opaque, NULL);
        return;
    }
    const char *name = json_string_value(json_object_get(cmd, "execute"));
    if (name && strcmp(name, "quit") == 0)
        gw->quit_sent = true;
    bool refused;
    struct be_req *r = new_req(be, cb, NULL, opaque, &refused);
    size_t len = 0;
    char *text = r ? sg_qmp_dumps(cmd, &len) : NULL;
    json_decref(cmd);
    if (!text) {
        free(r);
        return; /* refused (answered later), or out of memory */
    }
    struct sg_qmp_top top;
    sg_qmp_top_scan(text, len, &top);
    submit(be, r, text, len, &top, NULL, 0);
    free(text);
}

void gw_backend_forward(struct sg_gw *gw, const char *msg, size_t len,
                        const struct sg_qmp_top *top, int *fds, size_t nfds, gw_raw_reply_fn cb,
                        void *opaque)
{
    struct gw_backend *be = gw->be;
    bool refused = false;
    struct be_req *r = be ? new_req(be, NULL, cb, opaque, &refused) : NULL;
    if (!r) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        if (!refused)
            cb(opaque, NULL, 0, NULL, be ? "out of memory" : "the gateway is shutting down");
        return;
    }
    if (sg_qmp_top_is(msg, top, SG_TOP_EXECUTE, "quit"))
        gw->quit_sent = true;
    submit(be, r, msg, len, top, fds, nfds);
}

size_t gw_backend_backlog(const struct sg_gw *gw)
{
    return gw->be && gw->be->fd ? sg_gw_fd_backlog(gw->be->fd) : 0;
}

bool gw_backend_alive(const struct sg_gw *gw)
{
    return gw->be && gw->be->up;
}

const char *gw_backend_why(const struct sg_gw *gw)
{
    return gw->be ? gw->be->why : "";
}

void gw_backend_free(struct sg_gw *gw)
{
    struct gw_backend *be = gw->be;
    if (!be)
        return;
    if (be->fd)
        sg_gw_fd_detach(be->fd);
    be->fd = NULL;
    sg_gw_timer_cancel(&be->start_timer);
    sg_gw_timer_cancel(&be->full_timer);
    sg_gw_timer_cancel(&be->retry_timer);
    /* Owners are still alive (the link is freed first): each pending
     * callback learns that no reply will come and can free its state. */
    be->reconnecting = false;
    be->start_waiting = false;
    if (be->client) {
        be->up = false;  /* not a loss the gateway reacts to: it is leaving */
        struct sg_qmp_client *c = be->client;
        struct sg_error e = { 0 };
        sg_error_set(&e, "the gateway is shutting down");
        sg_qmp_client_eof(c, &e);
        sg_qmp_client_free(c);
        be->dead = NULL;
    }
    sg_gw_timer_cancel(&be->later_timer);
    later(be);
    free(be);
    gw->be = NULL;
}

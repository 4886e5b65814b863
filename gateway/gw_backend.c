/* gw_backend.c: the one QMP link from the gateway to its back end.
 *
 * Every command of every front end goes through gw_backend_send with a
 * callback; the link numbers commands itself (integer ids), so the ids of
 * front-end clients never reach the back end and cannot collide.  Replies
 * are matched by id; events go to gw_on_backend_event.  When the link
 * breaks, every command that was sent gets NULL and every command that could
 * not be sent gets a GenericError "back end not connected" — from the loop,
 * never from inside gw_backend_send — and the gateway is told once.
 *
 * With --connect the gateway may then ask for a reconnection
 * (gw_backend_reconnect): the same socket path is tried again with a
 * growing pause until the --reconnect deadline; a new connection goes
 * through greeting and negotiation like the first one.  Each connection is
 * a "generation", so a command of a dead connection is never mistaken for
 * one of the live one. */
#include "gw_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "qmp_unix.h"
#include "qmp_msg.h"
#include "qmp_stream.h"
#include "qmp_top.h"

#define GW_GREETING_TIMEOUT_MS 10000
/* Pause between reconnection attempts: starts small (a restarting back end
 * is often back within a second) and doubles up to a ceiling. */
#define GW_RETRY_FIRST_MS 100
#define GW_RETRY_MAX_MS 2000

enum be_phase { BE_GREETING, BE_NEGOTIATING, BE_READY, BE_DOWN };

struct be_pending {
    struct be_pending *next;
    json_int_t id;
    gw_reply_fn cb;            /* the gateway's own commands: decoded reply */
    gw_raw_reply_fn raw;       /* forwarded commands: the reply's bytes */
    void *opaque;
    unsigned gen;      /* connection it was written to; 0: never written */
};

struct gw_backend {
    struct sg_gw *gw;
    struct sg_gw_fd *fd;
    struct sg_qmp_decoder *dec;
    enum be_phase phase;
    unsigned gen;                    /* current connection, counted from 1 */
    json_int_t next_id;
    struct be_pending *pending, **pending_tail;
    struct sg_gw_timer fail_timer;   /* answers commands that cannot get a reply */
    struct sg_gw_timer start_timer;  /* greeting timeout */
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

static void be_die(struct gw_backend *be, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void schedule_retry(struct gw_backend *be);
static bool on_message(struct gw_backend *be, json_t *msg);

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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

/* Hands a reply (or, with `bytes` NULL, the reason there is none) to its
 * owner and frees the entry.  A lost connection gives the gateway's own
 * commands NULL (their owners word the loss), a reply that cannot be decoded
 * gives them a GenericError. */
static void finish(struct be_pending *p, const char *bytes, size_t len, const char *why)
{
    if (p->raw) {
        struct sg_qmp_top top;
        if (bytes)
            sg_qmp_top_scan(bytes, len, &top);
        p->raw(p->opaque, bytes, len, bytes ? &top : NULL, why);
    } else if (!bytes && why && strncmp(why, "back end connection lost", 24) == 0) {
        p->cb(p->opaque, NULL);
    } else {
        json_t *msg = NULL;
        struct sg_error e = { 0 };
        if (bytes && sg_qmp_parse_message(bytes, len, &msg, &e) == SG_QMP_PARSE_OK) {
            p->cb(p->opaque, msg);
        } else {
            char desc[sizeof e.msg + 64];
            snprintf(desc, sizeof desc, "the back end sent a reply the gateway cannot parse (%s)",
                     bytes ? e.msg : why);
            json_t *r = sg_qmp_error_reply(NULL, SG_ERR_GENERIC, desc);
            p->cb(p->opaque, r);
            json_decref(r);
        }
        json_decref(msg);
    }
    free(p);
}

static void fail_pending(void *opaque)
{
    struct gw_backend *be = opaque;
    gw_lost_abort(be->gw);
    /* Only commands of a dead connection and commands never written are
     * answered here; those waiting on the live connection stay.  The list
     * is taken over first: callbacks may send more commands, which land on
     * the (new) list and are handled by their own round. */
    struct be_pending *list = be->pending;
    be->pending = NULL;
    be->pending_tail = &be->pending;
    while (list) {
        struct be_pending *p = list;
        list = p->next;
        p->next = NULL;
        bool live = be->phase == BE_READY && p->gen == be->gen;
        if (live) {
            *be->pending_tail = p;
            be->pending_tail = &p->next;
            continue;
        }
        if (p->gen) {
            char desc[400];
            snprintf(desc, sizeof desc, "back end connection lost before the reply (%s)",
                     be->why);
            finish(p, NULL, 0, desc);
        } else {
            json_t *r = not_connected_reply(be);
            const char *desc = json_string_value(
                json_object_get(json_object_get(r, "error"), "desc"));
            if (p->raw)
                p->raw(p->opaque, NULL, 0, NULL, desc ? desc : "back end not connected");
            else
                p->cb(p->opaque, r);
            json_decref(r);
            free(p);
        }
    }
}

static void be_die(struct gw_backend *be, const char *fmt, ...)
{
    if (be->phase == BE_DOWN)
        return;
    bool was_ready = be->phase == BE_READY;
    be->phase = BE_DOWN;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (be->fd) {
        sg_gw_fd_detach(be->fd);
        be->fd = NULL;
    }
    sg_gw_timer_cancel(&be->start_timer);
    sg_gw_timer_arm(&be->fail_timer, 0);
    if (be->start_waiting) {
        snprintf(be->why, sizeof be->why, "%s", msg);
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
    snprintf(be->why, sizeof be->why, "%s", msg);
    if (was_ready)
        gw_on_backend_lost(be->gw, be->why);
}

static bool send_msg(struct gw_backend *be, json_t *msg)
{
    size_t len;
    char *text = sg_qmp_dumps(msg, &len);
    if (!text)
        return false;
    bool ok = sg_gw_fd_write_line(be->fd, text, len);
    free(text);
    return ok;
}

/* Takes the pending entry a reply belongs to: the one whose id it carries,
 * else (no id of ours, or bytes that are not JSON) the oldest command of
 * this connection, since without OOB a back end answers in order. */
static struct be_pending *take_pending(struct gw_backend *be, const char *bytes,
                                       const struct sg_qmp_top *top)
{
    bool by_id = false;
    json_int_t id = 0;
    const struct sg_qmp_span *sp = &top->m[SG_TOP_ID];
    if (top->object && sp->present && sp->len < 20) {
        char num[24];
        memcpy(num, bytes + sp->off, sp->len);
        num[sp->len] = '\0';
        char *end;
        long long v = strtoll(num, &end, 10);
        by_id = *end == '\0' && sp->len > 0;
        id = (json_int_t)v;
    }
    for (struct be_pending **pp = &be->pending; *pp; pp = &(*pp)->next) {
        struct be_pending *p = *pp;
        if (p->gen != be->gen || (by_id && p->id != id))
            continue;
        *pp = p->next;
        if (be->pending_tail == &p->next)
            be->pending_tail = pp;
        return p;
    }
    return NULL;
}

static void on_ready_message(struct gw_backend *be, const char *bytes, size_t len)
{
    struct sg_qmp_top top;
    sg_qmp_top_scan(bytes, len, &top);
    if (top.object && top.m[SG_TOP_EVENT].present) {
        /* Front-end clients get the bytes; the gateway's own users (HMP
         * engine, job bookkeeping) the decoded event when jansson can hold
         * it. */
        json_t *ev = NULL;
        struct sg_error e = { 0 };
        if (sg_qmp_parse_message(bytes, len, &ev, &e) != SG_QMP_PARSE_OK)
            ev = NULL;
        gw_on_backend_event(be->gw, ev, bytes, len);
        json_decref(ev);
        return;
    }
    if (top.object && !top.m[SG_TOP_RETURN].present && !top.m[SG_TOP_ERROR].present)
        return; /* neither reply nor event: nothing waits for it */
    struct be_pending *p = take_pending(be, bytes, &top);
    if (!p)
        return; /* a reply nobody waits for (e.g. its owner's id is unknown) */
    if (!top.valid || !top.object) {
        json_t *junk = NULL;
        struct sg_error e = { 0 };
        sg_qmp_parse_message(bytes, len, &junk, &e);
        json_decref(junk);
        char desc[sizeof e.msg + 64];
        snprintf(desc, sizeof desc, "the back end sent a reply that is not valid JSON (%s)",
                 e.set ? e.msg : "not a JSON object");
        finish(p, NULL, 0, desc);
        return;
    }
    finish(p, bytes, len, NULL);
}

static bool on_span(void *opaque, const char *bytes, size_t len)
{
    struct gw_backend *be = opaque;
    if (be->phase == BE_READY) {
        on_ready_message(be, bytes, len);
        return be->phase == BE_READY;
    }
    if (be->phase == BE_DOWN)
        return false;
    json_t *msg = NULL;
    struct sg_error e = { 0 };
    if (sg_qmp_parse_message(bytes, len, &msg, &e) != SG_QMP_PARSE_OK) {
        be_die(be, "the back end sent malformed QMP before negotiation (%s)", e.msg);
        return false;
    }
    bool go_on = on_message(be, msg);
    json_decref(msg);
    return go_on;
}

/* Greeting and negotiation (decoded: the gateway owns these messages). */
static bool on_message(struct gw_backend *be, json_t *msg)
{
    struct sg_gw *gw = be->gw;
    if (!json_is_object(msg))
        return true;
    switch (be->phase) {
    case BE_GREETING: {
        json_t *qmp = json_object_get(msg, "QMP");
        if (!json_is_object(qmp)) {
            be_die(be, "the back end did not start with a QMP greeting");
            return false;
        }
        json_t *ver = json_object_get(qmp, "version");
        /* A back end that came back may be another version (or program). */
        json_decref(gw->backend_version);
        gw->backend_version = json_is_object(ver) ? json_deep_copy(ver) : json_object();
        const char *pkg = json_string_value(json_object_get(ver, "package"));
        gw->backend_is_vmm = pkg && strncmp(pkg, "snapgate", 8) == 0;
        json_t *cmd = json_pack("{s:s, s:I}", "execute", "qmp_capabilities", "id", (json_int_t)0);
        bool ok = cmd && send_msg(be, cmd);
        json_decref(cmd);
        if (!ok) {
            be_die(be, "cannot write to the back end");
            return false;
        }
        be->phase = BE_NEGOTIATING;
        return true;
    }
    case BE_NEGOTIATING:
        if (json_object_get(msg, "event"))
            return true;
        if (!json_object_get(msg, "return")) {
            struct sg_error e = { 0 };
            sg_qmp_reply_error(msg, &e);
            be_die(be, "QMP negotiation with the back end failed: %s", e.msg);
            return false;
        }
        be->phase = BE_READY;
        sg_gw_timer_cancel(&be->start_timer);
        if (be->start_waiting) {
            be->start_waiting = false;
            sg_gw_loop_stop(gw->loop);
        } else if (be->reconnecting) {
            be->reconnecting = false;
            sg_gw_timer_cancel(&be->retry_timer);
            gw_on_backend_reconnected(gw, be->attempts);
        }
        return be->phase == BE_READY;
    case BE_READY:
    case BE_DOWN:
        return false;
    }
    return true;
}

static const struct sg_qmp_decoder_ops dec_ops = { NULL, NULL, on_span };

static bool be_readable(void *opaque, struct sg_gw_fd *f)
{
    struct gw_backend *be = opaque;
    char buf[65536];
    for (;;) {
        ssize_t n = read(sg_gw_fd_fd(f), buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (n == 0) {
            be_die(be, "the back end closed the QMP connection");
            return false;
        }
        if (n < 0) {
            be_die(be, "reading from the back end failed: %s", strerror(errno));
            return false;
        }
        struct sg_error err = { 0 };
        enum sg_qmp_feed r = sg_qmp_decoder_feed(be->dec, buf, (size_t)n, &err);
        if (r == SG_QMP_FEED_FATAL) {
            be_die(be, "the back end sent an oversized QMP message (%s)", err.msg);
            return false;
        }
        if (r == SG_QMP_FEED_STOPPED || be->phase == BE_DOWN || f != be->fd)
            return false;
    }
}

static void be_closed(void *opaque, struct sg_gw_fd *f)
{
    struct gw_backend *be = opaque;
    if (f != be->fd)
        return; /* a connection already given up */
    be->fd = NULL;
    be_die(be, "the back end connection closed");
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
    struct gw_backend *be = opaque;
    be_die(be, "no QMP greeting from the back end within %.1f s (is it a QMP socket?)",
           greeting_timeout_ms() / 1000.0);
}

/* Takes over a connected socket and starts the greeting/negotiation. */
static bool attach_fd(struct gw_backend *be, int fd, struct sg_error *err)
{
    be->fd = sg_gw_fd_adopt(be->gw->loop, fd, &be_ops, be, err);
    if (!be->fd) {
        close(fd);
        return false;
    }
    be->gen++;
    be->phase = BE_GREETING;
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
    if (!be->reconnecting || be->phase != BE_DOWN)
        return;
    be->attempts++;
    struct sg_error err = { 0 };
    /* The decoder may hold half a message of the dead connection. */
    struct sg_qmp_decoder *dec = sg_qmp_decoder_new(&dec_ops, be);
    if (!dec) {
        snprintf(be->attempt_err, sizeof be->attempt_err, "out of memory");
        schedule_retry(be);
        return;
    }
    sg_qmp_decoder_free(be->dec);
    be->dec = dec;
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
    if (!be || be->phase != BE_DOWN || be->reconnecting)
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
    be->next_id = 1;
    be->phase = BE_DOWN;
    be->pending_tail = &be->pending;
    sg_gw_timer_init(&be->fail_timer, gw->loop, fail_pending, be);
    sg_gw_timer_init(&be->start_timer, gw->loop, start_timeout, be);
    sg_gw_timer_init(&be->retry_timer, gw->loop, try_connect, be);
    be->dec = sg_qmp_decoder_new(&dec_ops, be);
    if (!be->dec) {
        close(fd);
        free(be);
        sg_error_set(err, "out of memory");
        return false;
    }
    gw->be = be;
    if (!attach_fd(be, fd, err))
        return false;
    be->start_waiting = true;
    sg_gw_loop_run(gw->loop);
    /* The start-up wait borrowed the loop: let it run again later. */
    sg_gw_loop_restart(gw->loop);
    if (be->phase != BE_READY) {
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

/* A new pending entry at the end of the list (commands are answered in
 * order), numbered with the link's own id. */
static struct be_pending *add_pending(struct gw_backend *be, gw_reply_fn cb, gw_raw_reply_fn raw,
                                      void *opaque)
{
    struct be_pending *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->cb = cb;
    p->raw = raw;
    p->opaque = opaque;
    p->id = be->next_id++;
    *be->pending_tail = p;
    be->pending_tail = &p->next;
    if (be->phase != BE_READY)
        sg_gw_timer_arm(&be->fail_timer, 0); /* answered "not connected" from the loop */
    else
        p->gen = be->gen;
    return p;
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
    struct be_pending *p = add_pending(be, cb, NULL, opaque);
    if (!p || !p->gen) {
        json_decref(cmd);
        return; /* out of memory: nothing sensible left to do with cb */
    }
    json_object_set_new(cmd, "id", json_integer(p->id));
    if (!send_msg(be, cmd))
        be_die(be, "the back end does not read its QMP socket (output queue full)");
    json_decref(cmd);
}

void gw_backend_forward(struct sg_gw *gw, const char *msg, size_t len,
                        const struct sg_qmp_top *top, int *fds, size_t nfds, gw_raw_reply_fn cb,
                        void *opaque)
{
    struct gw_backend *be = gw->be;
    struct be_pending *p = be ? add_pending(be, NULL, cb, opaque) : NULL;
    if (!p || !p->gen) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        if (!p)
            cb(opaque, NULL, 0, NULL, be ? "out of memory" : "the gateway is shutting down");
        return;
    }
    if (sg_qmp_top_is(msg, top, SG_TOP_EXECUTE, "quit"))
        gw->quit_sent = true;
    char id[32];
    int idl = snprintf(id, sizeof id, "%lld", (long long)p->id);
    size_t out_len;
    char *out = sg_qmp_top_set_id(msg, len, top, id, (size_t)idl, &out_len);
    bool ok = out && (nfds ? sg_gw_fd_write_fds(be->fd, out, out_len, fds, nfds) &&
                                 sg_gw_fd_write(be->fd, "\r\n", 2)
                           : sg_gw_fd_write_line(be->fd, out, out_len));
    if (!out)
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
    free(out);
    if (!ok)
        be_die(be, "the back end does not read its QMP socket (output queue full)");
}

size_t gw_backend_backlog(const struct sg_gw *gw)
{
    return gw->be && gw->be->fd ? sg_gw_fd_backlog(gw->be->fd) : 0;
}

bool gw_backend_alive(const struct sg_gw *gw)
{
    return gw->be && gw->be->phase == BE_READY;
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
    sg_gw_timer_cancel(&be->fail_timer);
    sg_gw_timer_cancel(&be->start_timer);
    sg_gw_timer_cancel(&be->retry_timer);
    /* Owners are still alive (the link is freed first): each pending
     * callback learns that no reply will come and can free its state. */
    be->phase = BE_DOWN;
    be->reconnecting = false;
    fail_pending(be);
    sg_qmp_decoder_free(be->dec);
    free(be);
    gw->be = NULL;
}

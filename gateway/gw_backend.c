/* gw_backend.c: the one QMP link from the gateway to its back end.
 *
 * Every command of every front end goes through gw_backend_send with a
 * callback; the link numbers commands itself (integer ids), so the ids of
 * front-end clients never reach the back end and cannot collide.  Replies
 * are matched by id; events go to gw_on_backend_event.  When the link
 * breaks, every pending callback gets NULL — from the loop, never from
 * inside gw_backend_send — and the gateway is told once. */
#include "gw_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qmp_msg.h"
#include "qmp_stream.h"

#define GW_GREETING_TIMEOUT_MS 10000

enum be_phase { BE_GREETING, BE_NEGOTIATING, BE_READY, BE_DEAD };

struct be_pending {
    struct be_pending *next;
    json_int_t id;
    gw_reply_fn cb;
    void *opaque;
};

struct gw_backend {
    struct sg_gw *gw;
    struct sg_gw_fd *fd;
    struct sg_qmp_decoder *dec;
    enum be_phase phase;
    json_int_t next_id;
    struct be_pending *pending, **pending_tail;
    struct sg_gw_timer fail_timer;   /* delivers NULL replies after death */
    struct sg_gw_timer start_timer;  /* greeting timeout */
    bool start_waiting;
    struct sg_error start_err;
    char why[256];
};

static void be_die(struct gw_backend *be, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail_pending(void *opaque)
{
    struct gw_backend *be = opaque;
    /* Callbacks may send more commands (they land on the list again and
     * get their NULL on the next round). */
    while (be->pending) {
        struct be_pending *p = be->pending;
        be->pending = p->next;
        if (!be->pending)
            be->pending_tail = &be->pending;
        p->cb(p->opaque, NULL);
        free(p);
    }
}

static void be_die(struct gw_backend *be, const char *fmt, ...)
{
    if (be->phase == BE_DEAD)
        return;
    bool was_ready = be->phase == BE_READY;
    be->phase = BE_DEAD;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(be->why, sizeof be->why, fmt, ap);
    va_end(ap);
    if (be->fd) {
        sg_gw_fd_detach(be->fd);
        be->fd = NULL;
    }
    sg_gw_timer_arm(&be->fail_timer, 0);
    if (be->start_waiting) {
        sg_error_set(&be->start_err, "%s", be->why);
        be->start_waiting = false;
        sg_gw_timer_cancel(&be->start_timer);
        sg_gw_loop_stop(be->gw->loop);
    }
    if (was_ready)
        gw_on_backend_lost(be->gw, be->why);
}

static bool send_msg(struct gw_backend *be, json_t *msg)
{
    size_t len;
    char *text = sg_qmp_dumps(msg, &len);
    if (!text)
        return false;
    bool ok = sg_gw_fd_write(be->fd, text, len) && sg_gw_fd_write(be->fd, "\r\n", 2);
    free(text);
    return ok;
}

static void on_reply(struct gw_backend *be, json_t *msg)
{
    json_t *idv = json_object_get(msg, "id");
    if (!json_is_integer(idv))
        return; /* not ours: the link always sends integer ids */
    json_int_t id = json_integer_value(idv);
    for (struct be_pending **pp = &be->pending; *pp; pp = &(*pp)->next) {
        struct be_pending *p = *pp;
        if (p->id != id)
            continue;
        *pp = p->next;
        if (be->pending_tail == &p->next)
            be->pending_tail = pp;
        p->cb(p->opaque, msg);
        free(p);
        return;
    }
}

static bool on_message(void *opaque, json_t *msg)
{
    struct gw_backend *be = opaque;
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
        if (be->start_waiting) {
            be->start_waiting = false;
            sg_gw_timer_cancel(&be->start_timer);
            sg_gw_loop_stop(gw->loop);
        }
        return true;
    case BE_READY:
        if (json_object_get(msg, "event"))
            gw_on_backend_event(gw, msg);
        else if (sg_qmp_is_reply(msg))
            on_reply(be, msg);
        return be->phase == BE_READY;
    case BE_DEAD:
        return false;
    }
    return true;
}

static bool on_invalid(void *opaque, const struct sg_error *err)
{
    /* A back end that sends broken JSON is not one we can trust with
     * replies: matching would go wrong. */
    struct gw_backend *be = opaque;
    be_die(be, "the back end sent malformed QMP (%s)", err->msg);
    return false;
}

static const struct sg_qmp_decoder_ops dec_ops = { on_message, on_invalid };

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
        if (r == SG_QMP_FEED_STOPPED || be->phase == BE_DEAD)
            return false;
    }
}

static void be_closed(void *opaque, struct sg_gw_fd *f)
{
    struct gw_backend *be = opaque;
    be->fd = NULL;
    be_die(be, "the back end connection closed");
}

static const struct sg_gw_fd_ops be_ops = { be_readable, NULL, be_closed };

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
    be->pending_tail = &be->pending;
    sg_gw_timer_init(&be->fail_timer, gw->loop, fail_pending, be);
    sg_gw_timer_init(&be->start_timer, gw->loop, start_timeout, be);
    be->dec = sg_qmp_decoder_new(&dec_ops, be);
    if (!be->dec) {
        close(fd);
        free(be);
        sg_error_set(err, "out of memory");
        return false;
    }
    gw->be = be;
    be->fd = sg_gw_fd_adopt(gw->loop, fd, &be_ops, be, err);
    if (!be->fd) {
        close(fd);
        return false;
    }
    be->start_waiting = true;
    sg_gw_timer_arm(&be->start_timer, greeting_timeout_ms());
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
    struct be_pending *p = calloc(1, sizeof *p);
    if (!p) {
        json_decref(cmd);
        return; /* out of memory: nothing sensible left to do with cb */
    }
    p->cb = cb;
    p->opaque = opaque;
    p->id = be->next_id++;
    *be->pending_tail = p;
    be->pending_tail = &p->next;

    const char *name = json_string_value(json_object_get(cmd, "execute"));
    if (name && strcmp(name, "quit") == 0)
        gw->quit_sent = true;
    if (be->phase != BE_READY) {
        json_decref(cmd);
        sg_gw_timer_arm(&be->fail_timer, 0);
        return;
    }
    json_object_set_new(cmd, "id", json_integer(p->id));
    if (!send_msg(be, cmd))
        be_die(be, "the back end does not read its QMP socket (output queue full)");
    json_decref(cmd);
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
    /* Owners are still alive (the link is freed first): each pending
     * callback learns that no reply will come and can free its state. */
    be->phase = BE_DEAD;
    fail_pending(be);
    sg_qmp_decoder_free(be->dec);
    free(be);
    gw->be = NULL;
}

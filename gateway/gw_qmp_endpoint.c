/* gw_qmp_endpoint.c: `--qmp unix:PATH` — the stream transport for front-end
 * QMP clients.  This file only frames bytes (with the QMP library's
 * decoder) and hands whole messages to gw_qmp_client.c, which is shared with
 * the /qmp WebSocket. */
#include "gw_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gw_unix.h"
#include "qmp_msg.h"
#include "qmp_stream.h"

struct ep_conn {
    struct ep_conn *next, **pprev;
    struct gw_qmp_endpoint *ep;
    struct sg_gw_fd *fd;
    struct sg_qmp_decoder *dec;
    struct sg_gw_qmp_client *client;
    bool dropping;
};

struct gw_qmp_endpoint {
    struct sg_gw *gw;
    char *path;
    struct sg_gw_fd *listen;
    struct ep_conn *conns;
};

static void conn_send(void *opaque, const char *json_text, size_t len)
{
    struct ep_conn *c = opaque;
    if (c->dropping)
        return;
    if (!sg_gw_fd_write(c->fd, json_text, len) || !sg_gw_fd_write(c->fd, "\r\n", 2)) {
        /* A client that does not read its replies or events would make us
         * hold unbounded memory: it is dropped. */
        c->dropping = true;
        sg_gw_fd_close(c->fd);
    }
}

static void send_error(struct ep_conn *c, const char *desc)
{
    json_t *msg = sg_qmp_error_reply(NULL, SG_ERR_GENERIC, desc);
    char *text = msg ? sg_qmp_dumps(msg, NULL) : NULL;
    if (text)
        conn_send(c, text, strlen(text));
    free(text);
    json_decref(msg);
}

static bool on_message(void *opaque, json_t *msg)
{
    struct ep_conn *c = opaque;
    sg_gw_qmp_client_input(c->client, msg);
    return !c->dropping;
}

static bool on_invalid(void *opaque, const struct sg_error *err)
{
    struct ep_conn *c = opaque;
    send_error(c, err->msg);
    return !c->dropping;
}

static const struct sg_qmp_decoder_ops dec_ops = { on_message, on_invalid };

static bool conn_readable(void *opaque, struct sg_gw_fd *f)
{
    struct ep_conn *c = opaque;
    char buf[65536];
    for (;;) {
        ssize_t n = read(sg_gw_fd_fd(f), buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (n <= 0)
            return false;
        struct sg_error err = { 0 };
        enum sg_qmp_feed r = sg_qmp_decoder_feed(c->dec, buf, (size_t)n, &err);
        if (r == SG_QMP_FEED_FATAL) {
            send_error(c, err.msg);
            c->dropping = true;
            sg_gw_fd_close(c->fd); /* after the error is written */
            return true;
        }
        if (r == SG_QMP_FEED_STOPPED || c->dropping)
            return true;
    }
}

static void conn_closed(void *opaque, struct sg_gw_fd *f)
{
    struct ep_conn *c = opaque;
    *c->pprev = c->next;
    if (c->next)
        c->next->pprev = c->pprev;
    sg_gw_qmp_client_free(c->client);
    sg_qmp_decoder_free(c->dec);
    free(c);
}

static const struct sg_gw_fd_ops conn_ops = { conn_readable, NULL, conn_closed };

static void accept_one(struct gw_qmp_endpoint *ep, int fd)
{
    struct sg_error err = { 0 };
    struct ep_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->ep = ep;
    c->dec = sg_qmp_decoder_new(&dec_ops, c);
    if (!c->dec) {
        free(c);
        close(fd);
        return;
    }
    c->fd = sg_gw_fd_adopt(ep->gw->loop, fd, &conn_ops, c, &err);
    if (!c->fd) {
        sg_qmp_decoder_free(c->dec);
        free(c);
        close(fd);
        return;
    }
    c->next = ep->conns;
    if (ep->conns)
        ep->conns->pprev = &c->next;
    c->pprev = &ep->conns;
    ep->conns = c;
    c->client = sg_gw_qmp_client_new(ep->gw, ep->gw->opt->compat_style, conn_send, c);
    if (!c->client) {
        c->dropping = true;
        sg_gw_fd_close(c->fd);
    }
}

static bool listen_readable(void *opaque, struct sg_gw_fd *f)
{
    struct gw_qmp_endpoint *ep = opaque;
    /* Bounded: a flood of connections cannot starve the rest of the loop. */
    for (int i = 0; i < 64; i++) {
        int fd = accept4(sg_gw_fd_fd(f), NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            return true; /* EAGAIN, or a transient error such as EMFILE */
        }
        accept_one(ep, fd);
    }
    return true;
}

static void listen_closed(void *opaque, struct sg_gw_fd *f)
{
    struct gw_qmp_endpoint *ep = opaque;
    ep->listen = NULL;
}

static const struct sg_gw_fd_ops listen_ops = { listen_readable, NULL, listen_closed };

struct gw_qmp_endpoint *gw_qmp_endpoint_start(struct sg_gw *gw, const char *path, int fd,
                                              struct sg_error *err)
{
    struct gw_qmp_endpoint *ep = calloc(1, sizeof *ep);
    if (!ep || (path && !(ep->path = strdup(path)))) {
        free(ep);
        sg_error_set(err, "out of memory");
        return NULL;
    }
    ep->gw = gw;
    if (path)
        fd = gw_unix_listen(path, err);
    if (fd < 0) {
        sg_error_prefix(err, "--qmp");
        free(ep->path);
        free(ep);
        return NULL;
    }
    ep->listen = sg_gw_fd_adopt(gw->loop, fd, &listen_ops, ep, err);
    if (!ep->listen) {
        close(fd);
        if (path)
            unlink(path);
        free(ep->path);
        free(ep);
        return NULL;
    }
    return ep;
}

void gw_qmp_endpoint_free(struct gw_qmp_endpoint *ep)
{
    if (!ep)
        return;
    while (ep->conns) {
        struct ep_conn *c = ep->conns;
        ep->conns = c->next;
        if (ep->conns)
            ep->conns->pprev = &ep->conns;
        sg_gw_fd_detach(c->fd);
        sg_gw_qmp_client_free(c->client);
        sg_qmp_decoder_free(c->dec);
        free(c);
    }
    if (ep->listen)
        sg_gw_fd_detach(ep->listen);
    /* An inherited socket (no path) belongs to whoever made it. */
    if (ep->path)
        unlink(ep->path);
    free(ep->path);
    free(ep);
}

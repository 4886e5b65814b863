/* gw_qmp_endpoint.c: `--qmp unix:PATH` / `--qmp fd:N` — the stream
 * transport for front-end QMP clients.  This file frames bytes (the QMP
 * library's decoder in raw mode: message boundaries only), receives the
 * descriptors a client passes (SCM_RIGHTS) and hands each message with its
 * descriptors to gw_qmp_client.c, which is shared with the /qmp WebSocket.
 *
 * Bounds, so that no client can make the gateway grow or spin:
 *  - a client with 16 messages unanswered or 1 MiB of commands waiting for
 *    their turn (sg_gw_qmp_client_busy; 32 MiB over all clients), or more than
 *    GW_EP_PAUSE_BACKLOG bytes of output it has not read, or while the back
 *    end's own queue is over GW_EP_BACKEND_BACKLOG, is not read from (it
 *    may pipeline as much as it likes: it is simply served at the pace of
 *    the back end), and reads are one buffer per loop round, so clients
 *    take turns;
 *  - a client whose unread output passes GW_EP_MAX_BACKLOG (events keep
 *    coming while it does not read) is disconnected;
 *  - output queued for all clients, these and the WebSocket ones, passing
 *    GW_OUTPUT_TOTAL: the client holding most is disconnected (its queue
 *    dropped at once), then the next, until the total fits
 *    (sg_gw_output_budget, gateway/util/sg_budget.h); each such drop is
 *    one line on stderr;
 *  - half-received messages: 16 MiB per client (the QMP limit) and
 *    GW_EP_MAX_PARTIAL_TOTAL over all clients;
 *  - at the process's descriptor limit, new connections are accepted on a
 *    spare descriptor and closed at once (instead of a listening socket
 *    that stays readable and spins the loop), with one line on stderr. */
#include "gw_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "qmp_unix.h"
#include "qmp_msg.h"
#include "qmp_stream.h"

#define GW_EP_PAUSE_BACKLOG (1u << 20)
#define GW_EP_BACKEND_BACKLOG (4u << 20)
#define GW_EP_MAX_BACKLOG (16u << 20)
#define GW_OUTPUT_TOTAL (32u << 20)
#define GW_EP_MAX_PARTIAL_TOTAL (64u << 20)
#define GW_EP_MAX_FDS 16
#define GW_EP_READ_BYTES 65536

struct ep_conn {
    struct ep_conn *next, **pprev;
    struct gw_qmp_endpoint *ep;
    struct sg_gw_fd *fd;
    struct sg_qmp_decoder *dec;
    struct sg_gw_qmp_client *client;
    int fds[GW_EP_MAX_FDS];     /* received, for the next message completed */
    size_t nfds;
    size_t partial;             /* bytes held by the decoder */
    bool stalled;               /* the decoder holds messages not taken yet */
    struct sg_gw_timer resume;  /* takes them once the client may send again */
    struct sg_budget_member out;   /* its unread output, in the gateway's total */
    unsigned long number;       /* for the log: the n-th connection */
    bool dropping;
};

struct gw_qmp_endpoint {
    struct sg_gw *gw;
    char *path;                 /* NULL: an inherited socket (not ours to unlink) */
    struct sg_unix_name name;   /* what we made at path: only that is removed */
    struct sg_gw_fd *listen;
    struct ep_conn *conns;
    size_t partial_total;
    unsigned long accepted;
    int spare_fd;               /* kept for the descriptor limit */
    bool told_limit;
};

static void drop_fds(struct ep_conn *c)
{
    for (size_t i = 0; i < c->nfds; i++)
        close(c->fds[i]);
    c->nfds = 0;
}

static void drop(struct ep_conn *c)
{
    if (c->dropping)
        return;
    c->dropping = true;
    /* Still in the total while its queue is flushed (an evicted client's
     * queue goes at once). */
    sg_gw_fd_close(c->fd);
}

struct sg_budget *sg_gw_output_budget(struct sg_gw *gw)
{
    if (!gw->out_budget.limit)
        sg_budget_init(&gw->out_budget, GW_OUTPUT_TOTAL);
    return &gw->out_budget;
}

void sg_gw_output_evicted(struct sg_gw *gw, const char *who, size_t held)
{
    gw_print(gw, "snapgate: %s dropped: output queued for all clients passed %u MiB and its "
                 "%zu unread bytes were the most\n", who, GW_OUTPUT_TOTAL >> 20, held);
}

static size_t out_current(struct sg_budget_member *m)
{
    struct ep_conn *c = lws_container_of(m, struct ep_conn, out);
    return sg_gw_fd_backlog(c->fd);
}

/* Over the total: this client read least.  Its queue goes at once (a
 * client that does not read would never let a flush finish). */
static void out_evict(struct sg_budget_member *m)
{
    struct ep_conn *c = lws_container_of(m, struct ep_conn, out);
    char who[64];
    snprintf(who, sizeof who, "--qmp client %lu", c->number);
    sg_gw_output_evicted(c->ep->gw, who, m->held);
    c->dropping = true;
    sg_budget_leave(&c->out);
    sg_gw_fd_abort(c->fd);
}

static bool must_wait(const struct ep_conn *c)
{
    return (c->client && sg_gw_qmp_client_busy(c->client)) ||
           gw_qmp_clients_queue_full(c->ep->gw) || sg_gw_fd_backlog(c->fd) > GW_EP_PAUSE_BACKLOG ||
           gw_backend_backlog(c->ep->gw) > GW_EP_BACKEND_BACKLOG;
}

static void update_flow(struct ep_conn *c)
{
    if (c->dropping)
        return;
    bool wait = must_wait(c);
    sg_gw_fd_pause_input(c->fd, wait || c->stalled);
    if (!wait && c->stalled)
        sg_gw_timer_arm(&c->resume, 0); /* from the loop: never inside a feed */
}

static void conn_send(void *opaque, const char *json_text, size_t len)
{
    struct ep_conn *c = opaque;
    if (c->dropping)
        return;
    if (!sg_gw_fd_write_line(c->fd, json_text, len)) {
        /* A client that does not read its replies or events would make us
         * hold unbounded memory: it is dropped. */
        drop(c);
        return;
    }
    sg_budget_set(&c->out, sg_gw_fd_backlog(c->fd));
    if (c->dropping)
        return;   /* evicted: the total was over */
    update_flow(c);
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

static bool on_span(void *opaque, const char *bytes, size_t len)
{
    struct ep_conn *c = opaque;
    size_t n = c->nfds;
    c->nfds = 0;
    if (!sg_gw_qmp_client_input(c->client, bytes, len, c->fds, n))
        drop(c);
    /* The rest of what was read waits in the decoder while the client has
     * too much in flight. */
    return !c->dropping && !must_wait(c);
}

static const struct sg_qmp_decoder_ops dec_ops = { NULL, NULL, on_span };

/* One recvmsg: bytes plus the descriptors that came with them. */
static ssize_t receive(struct ep_conn *c, char *buf, size_t cap)
{
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * GW_EP_MAX_FDS)];
    } ctl;
    struct iovec iov = { buf, cap };
    struct msghdr m = { 0 };
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl.b;
    m.msg_controllen = sizeof ctl.b;
    ssize_t n = recvmsg(sg_gw_fd_fd(c->fd), &m, MSG_CMSG_CLOEXEC);
    if (n < 0)
        return n;
    for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h)) {
        if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *fds = (int *)CMSG_DATA(h);
        for (size_t i = 0; i < k; i++) {
            if (c->nfds < GW_EP_MAX_FDS)
                c->fds[c->nfds++] = fds[i];
            else
                close(fds[i]); /* more than any command takes */
        }
    }
    return n;
}

static void fed(struct ep_conn *c, enum sg_qmp_feed r, const struct sg_error *errp);

static bool conn_readable(void *opaque, struct sg_gw_fd *f)
{
    struct ep_conn *c = opaque;
    if (c->dropping || c->stalled)
        return true;
    char buf[GW_EP_READ_BYTES];
    ssize_t n;
    do
        n = receive(c, buf, sizeof buf);
    while (n < 0 && errno == EINTR);
    (void)f;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return true;
    if (n <= 0)
        return false;
    struct sg_error err = { 0 };
    fed(c, sg_qmp_decoder_feed(c->dec, buf, (size_t)n, &err), &err);
    return true;
}

/* After a feed or a resume: limits, and what the decoder still holds. */
static void fed(struct ep_conn *c, enum sg_qmp_feed r, const struct sg_error *errp)
{
    struct gw_qmp_endpoint *ep = c->ep;
    struct sg_error err = *errp;
    ep->partial_total -= c->partial;
    c->partial = sg_qmp_decoder_pending(c->dec);
    ep->partial_total += c->partial;
    if (r == SG_QMP_FEED_FATAL) {
        send_error(c, err.msg);
        drop(c); /* after the error is written */
        return;
    }
    if (ep->partial_total > GW_EP_MAX_PARTIAL_TOTAL && c->partial) {
        send_error(c, "too many half-sent QMP messages in the gateway (connection closed)");
        drop(c);
        return;
    }
    c->stalled = r == SG_QMP_FEED_STOPPED;
    update_flow(c);
}

static void resume_input(void *opaque)
{
    struct ep_conn *c = opaque;
    if (c->dropping || !c->stalled || must_wait(c))
        return;
    c->stalled = false;
    struct sg_error err = { 0 };
    fed(c, sg_qmp_decoder_resume(c->dec, &err), &err);
}

static void conn_drained(void *opaque, struct sg_gw_fd *f)
{
    struct ep_conn *c = opaque;
    sg_budget_set(&c->out, sg_gw_fd_backlog(f));
    update_flow(c);
}

static void conn_unlink(struct ep_conn *c)
{
    *c->pprev = c->next;
    if (c->next)
        c->next->pprev = c->pprev;
    c->ep->partial_total -= c->partial;
    sg_budget_leave(&c->out);
    sg_gw_timer_cancel(&c->resume);
    drop_fds(c);
    sg_gw_qmp_client_free(c->client);
    sg_qmp_decoder_free(c->dec);
    free(c);
}

static void conn_closed(void *opaque, struct sg_gw_fd *f)
{
    (void)f;
    conn_unlink(opaque);
}

static const struct sg_gw_fd_ops conn_ops = { conn_readable, conn_drained, conn_closed };

static void accept_one(struct gw_qmp_endpoint *ep, int fd)
{
    struct sg_error err = { 0 };
    struct ep_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->ep = ep;
    sg_gw_timer_init(&c->resume, ep->gw->loop, resume_input, c);
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
    sg_gw_fd_set_queue_limit(c->fd, GW_EP_MAX_BACKLOG);
    c->number = ++ep->accepted;
    sg_budget_join(sg_gw_output_budget(ep->gw), &c->out, out_current, out_evict);
    c->next = ep->conns;
    if (ep->conns)
        ep->conns->pprev = &c->next;
    c->pprev = &ep->conns;
    ep->conns = c;
    c->client = sg_gw_qmp_client_new(ep->gw, ep->gw->opt->compat_style, conn_send, c);
    if (!c->client)
        drop(c);
}

/* At the descriptor limit the pending connection is taken on the spare
 * descriptor and closed: the client sees EOF at once, the listening socket
 * stops being readable, and the clients already connected go on. */
static void refuse_one(struct gw_qmp_endpoint *ep, int fd_listen)
{
    if (ep->spare_fd >= 0) {
        close(ep->spare_fd);
        int fd = accept4(fd_listen, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            close(fd);
        ep->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    if (!ep->told_limit) {
        ep->told_limit = true;
        gw_print(ep->gw, "snapgate: --qmp: at the open file limit: refusing new QMP "
                         "connections until clients leave\n");
    }
}

static bool listen_readable(void *opaque, struct sg_gw_fd *f)
{
    struct gw_qmp_endpoint *ep = opaque;
    /* Bounded: a flood of connections cannot starve the rest of the loop. */
    for (int i = 0; i < 64; i++) {
        int fd = accept4(sg_gw_fd_fd(f), NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE)
                refuse_one(ep, sg_gw_fd_fd(f));
            return true;
        }
        ep->told_limit = false;
        accept_one(ep, fd);
    }
    return true;
}

static void listen_closed(void *opaque, struct sg_gw_fd *f)
{
    (void)f;
    struct gw_qmp_endpoint *ep = opaque;
    ep->listen = NULL;
}

static const struct sg_gw_fd_ops listen_ops = { listen_readable, NULL, listen_closed };

void gw_on_backend_drained(struct sg_gw *gw)
{
    if (!gw->qmp_ep)
        return;
    for (struct ep_conn *c = gw->qmp_ep->conns; c; c = c->next)
        update_flow(c);
}

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
    ep->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (path) {
        fd = sg_unix_listen(path, 16, false, err);
        sg_unix_name_get(path, &ep->name);
    }
    if (fd < 0) {
        sg_error_prefix(err, "--qmp");
        goto fail;
    }
    ep->listen = sg_gw_fd_adopt(gw->loop, fd, &listen_ops, ep, err);
    if (!ep->listen) {
        close(fd);
        if (path)
            sg_unix_name_remove(path, &ep->name);
        goto fail;
    }
    return ep;
fail:
    if (ep->spare_fd >= 0)
        close(ep->spare_fd);
    free(ep->path);
    free(ep);
    return NULL;
}

void gw_qmp_endpoint_free(struct gw_qmp_endpoint *ep)
{
    if (!ep)
        return;
    while (ep->conns) {
        struct ep_conn *c = ep->conns;
        sg_gw_fd_detach(c->fd);
        conn_unlink(c);
    }
    if (ep->listen)
        sg_gw_fd_detach(ep->listen);
    /* An inherited socket (no path) belongs to whoever made it. */
    if (ep->path)
        sg_unix_name_remove(ep->path, &ep->name);
    if (ep->spare_fd >= 0)
        close(ep->spare_fd);
    free(ep->path);
    free(ep);
}

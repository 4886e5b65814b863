/* gw_loop.c: plain descriptors and timers on the libwebsockets loop.
 *
 * Every fd is adopted as an lws "raw file": lws polls it and tells us when it
 * is readable or writable, and we do the read()/write() ourselves.  That keeps
 * the byte handling (QMP framing, readline, serial fan-out) independent of
 * lws, and one poll() serves the terminal, the sockets and the web server. */
#include "gw_loop.h"
#include "qmp_unix.h"
#include "sg_grow.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define SG_GW_FD_QUEUE_LIMIT (64u << 20)
#define SG_GW_MAX_FDS 16

struct sg_gw_loop {
    struct lws_context *ctx;
    struct lws_vhost *raw_vhost;
    bool stop;
};

struct sg_gw_fd {
    lws_sorted_usec_list_t rearm;   /* first: the lws callback gets its address */
    struct lws *wsi;
    int fd;
    const struct sg_gw_fd_ops *ops;
    void *opaque;
    unsigned char *out;     /* queued output: out[out_off .. out_len) */
    size_t out_len, out_off, out_cap;
    size_t limit;
    /* descriptors to pass: batch i goes with queued byte fd_at[i] (counted
     * from out_off: adjusted as bytes are written) */
    struct fd_batch {
        size_t at;
        int fds[SG_GW_MAX_FDS];
        size_t n;
    } *batches;
    size_t n_batches;
    bool closing, paused;
};

static void close_batch(struct fd_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        close(b->fds[i]);
    b->n = 0;
}

/* One write (or sendmsg with the descriptors that go with the first byte),
 * never past the next batch's byte, so each batch travels with its own. */
static ssize_t write_some(struct sg_gw_fd *f, const unsigned char *buf, size_t len)
{
    if (f->n_batches && f->batches[0].at == 0) {
        struct fd_batch *b = &f->batches[0];
        size_t upto = f->n_batches > 1 ? f->batches[1].at : len;
        ssize_t n = sg_unix_send_fds(f->fd, buf, upto < len ? upto : len, b->fds, (size_t)b->n);
        if (n > 0) {
            close_batch(b);
            memmove(f->batches, f->batches + 1, (f->n_batches - 1) * sizeof *f->batches);
            f->n_batches--;
        }
        if (n > 0)
            for (size_t i = 0; i < f->n_batches; i++)
                f->batches[i].at -= (size_t)n;
        return n;
    }
    if (f->n_batches && f->batches[0].at < len)
        len = f->batches[0].at;
    ssize_t n = write(f->fd, buf, len);
    if (n > 0)
        for (size_t i = 0; i < f->n_batches; i++)
            f->batches[i].at -= (size_t)n;
    return n;
}

static int flush_out(struct sg_gw_fd *f)
{
    while (f->out_off < f->out_len) {
        ssize_t n = write_some(f, f->out + f->out_off, f->out_len - f->out_off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1;
        }
        f->out_off += (size_t)n;
    }
    f->out_len = f->out_off = 0;
    return 1;
}

/* lws clears POLLOUT of a raw file after its WRITEABLE callback returns, so a
 * request made inside the callback is lost: it is made again from the loop. */
static void rearm_writable(lws_sorted_usec_list_t *sul)
{
    struct sg_gw_fd *f = lws_container_of(sul, struct sg_gw_fd, rearm);
    lws_callback_on_writable(f->wsi);
}

static int raw_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                        void *in, size_t len)
{
    struct sg_gw_fd *f = lws_get_opaque_user_data(wsi);

    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        if (!f || !f->ops)
            return 0;
        if (!f->ops->readable(f->opaque, f))
            return -1;
        return 0;
    case LWS_CALLBACK_RAW_WRITEABLE_FILE: {
        if (!f)
            return 0;
        int r = flush_out(f);
        if (r < 0)
            return -1;
        if (r == 0) {
            lws_sul_schedule(lws_get_context(wsi), 0, &f->rearm, rearm_writable, 0);
            return 0;
        }
        if (f->closing)
            return -1;
        if (f->ops && f->ops->drained)
            f->ops->drained(f->opaque, f);
        return 0;
    }
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        if (!f)
            return 0;
        lws_set_opaque_user_data(wsi, NULL);
        lws_sul_cancel(&f->rearm);
        if (f->ops && f->ops->closed)
            f->ops->closed(f->opaque, f);
        for (size_t i = 0; i < f->n_batches; i++)
            close_batch(&f->batches[i]);
        free(f->batches);
        free(f->out);
        free(f);
        return 0;
    default:
        return 0;
    }
}

static const struct lws_protocols raw_protocols[] = {
    { "sg-raw", raw_callback, 0, 0, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 }
};

struct sg_gw_loop *sg_gw_loop_new(struct sg_error *err)
{
    struct sg_gw_loop *l = calloc(1, sizeof *l);
    if (!l) {
        sg_error_set(err, "out of memory");
        return NULL;
    }
    /* lws logs to stderr by default, which would scribble over the prompt. */
    lws_set_log_level(LLL_ERR, NULL);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.port = CONTEXT_PORT_NO_LISTEN;
    l->ctx = lws_create_context(&info);
    if (!l->ctx) {
        sg_error_set(err, "cannot create the libwebsockets context");
        free(l);
        return NULL;
    }
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.vhost_name = "sg-raw";
    info.protocols = raw_protocols;
    l->raw_vhost = lws_create_vhost(l->ctx, &info);
    if (!l->raw_vhost) {
        sg_error_set(err, "cannot create the libwebsockets raw vhost");
        lws_context_destroy(l->ctx);
        free(l);
        return NULL;
    }
    return l;
}

void sg_gw_loop_free(struct sg_gw_loop *l)
{
    if (!l)
        return;
    lws_context_destroy(l->ctx);
    free(l);
}

struct lws_context *sg_gw_loop_context(struct sg_gw_loop *l)
{
    return l->ctx;
}

void sg_gw_loop_run(struct sg_gw_loop *l)
{
    while (!l->stop)
        if (lws_service(l->ctx, 0) < 0)
            break;
}

void sg_gw_loop_restart(struct sg_gw_loop *l)
{
    l->stop = false;
}

void sg_gw_loop_stop(struct sg_gw_loop *l)
{
    l->stop = true;
    lws_cancel_service(l->ctx);
}

struct sg_gw_fd *sg_gw_fd_adopt(struct sg_gw_loop *l, int fd, const struct sg_gw_fd_ops *ops,
                                void *opaque, struct sg_error *err)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        sg_error_set_errno(err, errno, "cannot make fd %d non-blocking", fd);
        return NULL;
    }
    return sg_gw_fd_adopt_blocking(l, fd, ops, opaque, err);
}

struct sg_gw_fd *sg_gw_fd_adopt_blocking(struct sg_gw_loop *l, int fd,
                                         const struct sg_gw_fd_ops *ops, void *opaque,
                                         struct sg_error *err)
{
    struct sg_gw_fd *f = calloc(1, sizeof *f);
    if (!f) {
        sg_error_set(err, "out of memory");
        return NULL;
    }
    f->fd = fd;
    f->limit = SG_GW_FD_QUEUE_LIMIT;
    f->ops = ops;
    f->opaque = opaque;
    lws_sock_file_fd_type u;
    u.filefd = (lws_filefd_type)fd;
    f->wsi = lws_adopt_descriptor_vhost(l->raw_vhost, LWS_ADOPT_RAW_FILE_DESC, u, "sg-raw", NULL);
    if (!f->wsi) {
        sg_error_set(err, "libwebsockets cannot adopt fd %d", fd);
        free(f);
        return NULL;
    }
    lws_set_opaque_user_data(f->wsi, f);
    return f;
}

int sg_gw_fd_fd(const struct sg_gw_fd *f)
{
    return f->fd;
}

ssize_t sg_gw_fd_read(struct sg_gw_fd *f, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = read(f->fd, buf, len);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? SG_GW_READ_AGAIN : -1;
    }
}

bool sg_gw_fd_write(struct sg_gw_fd *f, const void *buf, size_t len)
{
    return sg_gw_fd_write_fds(f, buf, len, NULL, 0);
}

bool sg_gw_fd_write_fds(struct sg_gw_fd *f, const void *buf, size_t len, int *fds, size_t nfds)
{
    struct fd_batch b = { 0 };
    for (size_t i = 0; i < nfds; i++) {
        if (b.n < SG_GW_MAX_FDS)
            b.fds[b.n++] = fds[i];
        else
            close(fds[i]);
    }
    if (f->closing || !len) {
        close_batch(&b);
        return true; /* output after close is dropped, as on a closed socket */
    }
    /* A peer over its bound is to be dropped; one message always fits. */
    if (f->out_len - f->out_off > f->limit) {
        close_batch(&b);
        return false;
    }
    if (b.n) {
        struct fd_batch *v = realloc(f->batches, (f->n_batches + 1) * sizeof *v);
        if (!v) {
            close_batch(&b);
            return false;
        }
        f->batches = v;
        b.at = f->out_len - f->out_off;
        f->batches[f->n_batches++] = b;
    }
    if (f->out_len == f->out_off) {
        f->out_len = f->out_off = 0;
        /* Nothing queued: try the fast path first so short replies cost no
         * extra loop round. */
        while (len) {
            ssize_t n = write_some(f, buf, len);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                /* The peer is gone; reading will report it and close. */
                return true;
            }
            buf = (const unsigned char *)buf + n;
            len -= (size_t)n;
        }
        if (!len)
            return true;
    }
    if (f->out_off && f->out_len + len > f->out_cap) {
        memmove(f->out, f->out + f->out_off, f->out_len - f->out_off);
        f->out_len -= f->out_off;
        f->out_off = 0;
    }
    if (!sg_grow(&f->out, &f->out_cap, f->out_len + len))
        return false;
    memcpy(f->out + f->out_len, buf, len);
    f->out_len += len;
    lws_callback_on_writable(f->wsi);
    return true;
}

bool sg_gw_fd_write_line(struct sg_gw_fd *f, const void *buf, size_t len)
{
    if (f->closing || f->out_len != f->out_off || f->n_batches)
        return sg_gw_fd_write(f, buf, len) && sg_gw_fd_write(f, "\r\n", 2);
    /* Nothing queued: message and line end in one writev, the rest (if
     * the socket is full) queued as usual. */
    struct iovec iov[2] = { { (void *)buf, len }, { (void *)"\r\n", 2 } };
    ssize_t n;
    do
        n = writev(f->fd, iov, 2);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return true; /* the peer is gone; reading will report it */
        n = 0;
    }
    size_t done = (size_t)n;
    if (done < len)
        return sg_gw_fd_write(f, (const char *)buf + done, len - done) &&
               sg_gw_fd_write(f, "\r\n", 2);
    return done >= len + 2 || sg_gw_fd_write(f, "\r\n" + (done - len), 2 - (done - len));
}

size_t sg_gw_fd_backlog(const struct sg_gw_fd *f)
{
    return f->out_len - f->out_off;
}

void sg_gw_fd_set_queue_limit(struct sg_gw_fd *f, size_t bytes)
{
    f->limit = bytes;
}

void sg_gw_fd_pause_input(struct sg_gw_fd *f, bool pause)
{
    if (f->paused == pause || !f->wsi)
        return;
    f->paused = pause;
    /* Applied now: the change is often made from another fd's callback. */
    lws_rx_flow_control(f->wsi, (pause ? LWS_RXFLOW_REASON_APPLIES_DISABLE
                                       : LWS_RXFLOW_REASON_APPLIES_ENABLE) |
                                    LWS_RXFLOW_REASON_USER_BOOL |
                                    LWS_RXFLOW_REASON_FLAG_PROCESS_NOW);
}

void sg_gw_fd_close(struct sg_gw_fd *f)
{
    f->closing = true;
    if (f->out_len > f->out_off) {
        /* The queue is flushed first; the writeable callback then closes. */
        lws_callback_on_writable(f->wsi);
        return;
    }
    /* Nothing to flush: close from the loop (a pipe's read end would never
     * become writable). */
    lws_set_timeout(f->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

void sg_gw_fd_abort(struct sg_gw_fd *f)
{
    for (size_t i = 0; i < f->n_batches; i++)
        close_batch(&f->batches[i]);
    f->n_batches = 0;
    free(f->out);
    f->out = NULL;
    f->out_len = f->out_off = f->out_cap = 0;
    f->closing = true;
    lws_set_timeout(f->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

void sg_gw_fd_detach(struct sg_gw_fd *f)
{
    f->ops = NULL;
    sg_gw_fd_close(f);
}

static void timer_cb(lws_sorted_usec_list_t *sul)
{
    struct sg_gw_timer *t = lws_container_of(sul, struct sg_gw_timer, sul);
    t->fn(t->opaque);
}

void sg_gw_timer_init(struct sg_gw_timer *t, struct sg_gw_loop *l, void (*fn)(void *), void *opaque)
{
    memset(t, 0, sizeof *t);
    t->fn = fn;
    t->opaque = opaque;
    t->loop = l;
}

void sg_gw_timer_arm(struct sg_gw_timer *t, unsigned ms)
{
    lws_sul_schedule(t->loop->ctx, 0, &t->sul, timer_cb, (lws_usec_t)ms * LWS_US_PER_MS);
}

void sg_gw_timer_cancel(struct sg_gw_timer *t)
{
    lws_sul_cancel(&t->sul);
}

#include "qmp_stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "qmp_scan.h"

struct sg_qmp_decoder {
    struct sg_qmp_decoder_ops ops;
    void *opaque;
    unsigned char *buf;   /* bytes of the message in progress, from buf[0] */
    size_t len, cap;
    struct sg_qmp_scan scan;
    bool dead;
};

struct sg_qmp_decoder *sg_qmp_decoder_new(const struct sg_qmp_decoder_ops *ops, void *opaque)
{
    struct sg_qmp_decoder *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->ops = *ops;
    d->opaque = opaque;
    return d;
}

void sg_qmp_decoder_free(struct sg_qmp_decoder *d)
{
    if (!d)
        return;
    free(d->buf);
    free(d);
}

size_t sg_qmp_decoder_pending(const struct sg_qmp_decoder *d)
{
    return d->len;
}

static bool reserve(unsigned char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    unsigned char *p = realloc(*buf, n);
    if (!p)
        return false;
    *buf = p;
    *cap = n;
    return true;
}

/* Drops bytes [0, n) (finished messages and inter-message whitespace) so the
 * message in progress starts at buf[0] again. */
static void drop_front(struct sg_qmp_decoder *d, size_t n)
{
    memmove(d->buf, d->buf + n, d->len - n);
    d->len -= n;
    d->scan.pos -= n;
    if (d->scan.start >= n)
        d->scan.start -= n;
    else
        d->scan.start = 0;
}

/* Parses the span the scanner found and hands it to the owner. */
static bool deliver(struct sg_qmp_decoder *d, size_t start, size_t end)
{
    if (d->ops.span)
        return d->ops.span(d->opaque, (const char *)d->buf + start, end - start);
    json_t *msg = NULL;
    struct sg_error perr = {0};
    enum sg_qmp_parse r = sg_qmp_parse_message(d->buf + start, end - start, &msg, &perr);
    bool go_on;
    if (r == SG_QMP_PARSE_OK) {
        go_on = d->ops.message ? d->ops.message(d->opaque, msg) : true;
        json_decref(msg);
    } else {
        /* the scanner already enforced the limits, so this is a syntax error */
        go_on = d->ops.invalid ? d->ops.invalid(d->opaque, &perr) : true;
    }
    return go_on;
}

enum sg_qmp_feed sg_qmp_decoder_feed(struct sg_qmp_decoder *d, const void *data, size_t len,
                                     struct sg_error *err)
{
    const unsigned char *in = data;
    size_t used = 0;
    if (d->dead) {
        sg_error_set(err, "QMP stream is closed after a fatal error");
        return SG_QMP_FEED_FATAL;
    }
    /* Work in chunks so a flood of whitespace or small messages never
     * grows the buffer beyond one chunk plus the message in progress. */
    while (used < len) {
        size_t chunk = len - used < 65536 ? len - used : 65536;
        if (!reserve(&d->buf, &d->cap, d->len + chunk)) {
            d->dead = true;
            sg_error_set(err, "out of memory buffering a QMP message");
            return SG_QMP_FEED_FATAL;
        }
        memcpy(d->buf + d->len, in + used, chunk);
        d->len += chunk;
        used += chunk;
        for (;;) {
            enum sg_qmp_scan_result r = sg_qmp_scan(&d->scan, d->buf, d->len);
            if (r == SG_SCAN_MORE)
                break;
            if (r == SG_SCAN_DEPTH || r == SG_SCAN_SIZE) {
                d->dead = true;
                sg_error_set(err, r == SG_SCAN_DEPTH ? "JSON nesting depth limit exceeded"
                                                     : "JSON message size limit exceeded");
                return SG_QMP_FEED_FATAL;
            }
            size_t start = d->scan.start, end = d->scan.pos;
            bool go_on = deliver(d, start, end);
            if (!go_on) {
                drop_front(d, end);
                /* keep the unread input for a later feed */
                if (used < len) {
                    size_t rest = len - used;
                    if (!reserve(&d->buf, &d->cap, d->len + rest)) {
                        d->dead = true;
                        sg_error_set(err, "out of memory buffering a QMP message");
                        return SG_QMP_FEED_FATAL;
                    }
                    memcpy(d->buf + d->len, in + used, rest);
                    d->len += rest;
                }
                return SG_QMP_FEED_STOPPED;
            }
        }
        /* One move per chunk (not per message) keeps many small messages
         * in one read linear. */
        drop_front(d, d->scan.state == SG_SCAN_IDLE ? d->scan.pos : d->scan.start);
    }
    return SG_QMP_FEED_OK;
}

enum sg_qmp_feed sg_qmp_decoder_resume(struct sg_qmp_decoder *d, struct sg_error *err)
{
    /* After a stop the buffer starts at the next message (or holds the
     * start of one): scanning it again from a fresh state is the same as
     * feeding those bytes anew. */
    unsigned char *old = d->buf;
    size_t n = d->len;
    d->buf = NULL;
    d->len = d->cap = 0;
    memset(&d->scan, 0, sizeof d->scan);
    enum sg_qmp_feed r = n ? sg_qmp_decoder_feed(d, old, n, err) : SG_QMP_FEED_OK;
    free(old);
    return r;
}

/* ---- output queue ------------------------------------------------------ */

void sg_qmp_outbuf_init(struct sg_qmp_outbuf *o)
{
    memset(o, 0, sizeof *o);
}

void sg_qmp_outbuf_free(struct sg_qmp_outbuf *o)
{
    free(o->data);
    memset(o, 0, sizeof *o);
}

bool sg_qmp_outbuf_append(struct sg_qmp_outbuf *o, const void *data, size_t len,
                          struct sg_error *err)
{
    if (o->off > 0 && o->off == o->len)
        o->off = o->len = 0;
    if (o->off > 0 && o->len + len > o->cap) {
        /* reclaim the sent prefix before growing */
        memmove(o->data, o->data + o->off, o->len - o->off);
        o->len -= o->off;
        o->off = 0;
    }
    unsigned char *p = (unsigned char *)o->data;
    if (!reserve(&p, &o->cap, o->len + len)) {
        sg_error_set(err, "out of memory queueing QMP output");
        return false;
    }
    o->data = (char *)p;
    memcpy(o->data + o->len, data, len);
    o->len += len;
    return true;
}

bool sg_qmp_outbuf_append_msg(struct sg_qmp_outbuf *o, const json_t *msg, struct sg_error *err)
{
    size_t n;
    char *s = sg_qmp_dumps(msg, &n);
    if (!s) {
        sg_error_set(err, "cannot serialise a QMP message");
        return false;
    }
    bool ok = sg_qmp_outbuf_append(o, s, n, err) && sg_qmp_outbuf_append(o, "\r\n", 2, err);
    free(s);
    return ok;
}

void sg_qmp_outbuf_consume(struct sg_qmp_outbuf *o, size_t n)
{
    if (n > o->len - o->off)
        n = o->len - o->off;
    o->off += n;
    if (o->off == o->len)
        o->off = o->len = 0;
}

int sg_qmp_outbuf_flush(struct sg_qmp_outbuf *o, int fd, struct sg_error *err)
{
    while (sg_qmp_outbuf_pending(o) > 0) {
        ssize_t n = send(fd, o->data + o->off, o->len - o->off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == ENOTSOCK)
            n = write(fd, o->data + o->off, o->len - o->off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            sg_error_set_errno(err, errno, "QMP write");
            return -1;
        }
        sg_qmp_outbuf_consume(o, (size_t)n);
    }
    return 1;
}

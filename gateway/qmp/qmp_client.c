#include "qmp_client.h"
#include "qmp_unix.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "qmp_stream.h"

/* The id of our own qmp_capabilities; generated ids are "sg-N" with N > 0. */
#define CAPS_ID "sg-0"
#define MAX_PASSED_FDS 16

struct pending {
    uint64_t n;
    sg_qmp_reply_fn done;       /* decoded reply (sg_qmp_client_execute) */
    sg_qmp_raw_reply_fn raw;    /* the server's bytes (sg_qmp_client_forward) */
    void *opaque;
    struct pending *next;
};

/* A message waiting for the negotiation to finish, or (fd helpers) the
 * descriptors to pass with the byte of the output queue at `at`. */
struct item {
    struct item *next;
    char *bytes;
    size_t len;
    uint64_t at;
    int fds[MAX_PASSED_FDS];
    size_t nfds;
};

struct sg_qmp_client {
    struct sg_qmp_client_ops ops;
    void *opaque;
    int fd;
    struct sg_qmp_decoder *dec;
    struct sg_qmp_outbuf out;
    uint64_t out_queued, out_sent;  /* bytes ever queued / sent (fd positions) */
    struct item *fdq, **fdq_tail;   /* descriptors to pass, in output order */
    json_t *greeting;
    struct item *queued, **queued_tail;  /* issued before negotiation finished */
    bool ready, closed;
    uint64_t next_n;
    size_t n_pending;
    struct pending *head, *tail;  /* in issue order: replies mostly come in order */
};

static void close_fds(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

static void items_free(struct item *it)
{
    while (it) {
        struct item *next = it->next;
        close_fds(it->fds, it->nfds);
        free(it->bytes);
        free(it);
        it = next;
    }
}

static void fail_one(struct pending *p, const struct sg_error *e)
{
    if (p->done)
        p->done(p->opaque, NULL, e);
    else if (p->raw)
        p->raw(p->opaque, NULL, 0, NULL, e->msg);
}

static void client_close(struct sg_qmp_client *c, const struct sg_error *why)
{
    if (c->closed)
        return;
    c->closed = true;
    c->ready = false;
    if (c->ops.closed)
        c->ops.closed(c->opaque, why);
    struct pending *p = c->head;
    c->head = c->tail = NULL;
    c->n_pending = 0;
    struct sg_error e = {0};
    sg_error_set(&e, "QMP connection closed: %s", why && why->set ? why->msg : "closed");
    while (p) {
        struct pending *next = p->next;
        fail_one(p, &e);
        free(p);
        p = next;
    }
    items_free(c->queued);
    c->queued = NULL;
    c->queued_tail = &c->queued;
}

static void close_msg(struct sg_qmp_client *c, const char *msg)
{
    struct sg_error e = {0};
    sg_error_set(&e, "%s", msg);
    client_close(c, &e);
}

/* One message out: to the owner's transport, or into the output queue
 * (descriptors remembered at their byte). */
static bool send_now(struct sg_qmp_client *c, const char *bytes, size_t len, int *fds, size_t nfds)
{
    if (c->ops.write) {
        if (c->ops.write(c->opaque, bytes, len, fds, nfds))
            return true;
        close_msg(c, "the QMP transport refused output");
        return false;
    }
    struct sg_error e = {0};
    if (nfds) {
        struct item *it = calloc(1, sizeof *it);
        if (!it) {
            close_fds(fds, nfds);
            close_msg(c, "out of memory");
            return false;
        }
        it->at = c->out_queued;
        for (size_t i = 0; i < nfds; i++) {
            if (it->nfds < MAX_PASSED_FDS)
                it->fds[it->nfds++] = fds[i];
            else
                close(fds[i]);
        }
        *c->fdq_tail = it;
        c->fdq_tail = &it->next;
    }
    if (!sg_qmp_outbuf_append(&c->out, bytes, len, &e) ||
        !sg_qmp_outbuf_append(&c->out, "\r\n", 2, &e)) {
        client_close(c, &e);
        return false;
    }
    c->out_queued += len + 2;
    return true;
}

/* Sends, or keeps for after the negotiation (the bytes are taken over). */
static bool send_or_queue(struct sg_qmp_client *c, char *bytes, size_t len, int *fds, size_t nfds)
{
    if (c->ready) {
        bool ok = send_now(c, bytes, len, fds, nfds);
        free(bytes);
        return ok;
    }
    struct item *it = calloc(1, sizeof *it);
    if (!it || nfds > MAX_PASSED_FDS) {
        free(it);
        free(bytes);
        close_fds(fds, nfds);
        return false;
    }
    it->bytes = bytes;
    it->len = len;
    if (nfds)
        memcpy(it->fds, fds, nfds * sizeof *fds);
    it->nfds = nfds;
    *c->queued_tail = it;
    c->queued_tail = &it->next;
    return true;
}

/* "sg-N" (as JSON string bytes) -> N; false for ids we did not generate. */
static bool id_number(const char *bytes, const struct sg_qmp_top *top, uint64_t *n)
{
    const struct sg_qmp_span *sp = &top->m[SG_TOP_ID];
    if (!top->object || !sp->present || sp->len < 6 || sp->len > 24)
        return false;
    const char *s = bytes + sp->off;
    if (memcmp(s, "\"sg-", 4) != 0 || s[sp->len - 1] != '"')
        return false;
    uint64_t v = 0;
    for (size_t i = 4; i < sp->len - 1; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *n = v;
    return true;
}

/* Takes the pending entry of request n, or with `oldest` the oldest one. */
static struct pending *take(struct sg_qmp_client *c, uint64_t n, bool oldest)
{
    struct pending *p = c->head, *prev = NULL;
    while (p && !oldest && p->n != n) {
        prev = p;
        p = p->next;
    }
    if (!p)
        return NULL;
    if (prev)
        prev->next = p->next;
    else
        c->head = p->next;
    if (c->tail == p)
        c->tail = prev;
    c->n_pending--;
    return p;
}

static void reply_decoded(struct pending *p, const char *bytes, size_t len)
{
    json_t *msg = NULL;
    struct sg_error err = {0};
    if (sg_qmp_parse_message(bytes, len, &msg, &err) != SG_QMP_PARSE_OK) {
        struct sg_error e = {0};
        sg_error_set(&e, "the QMP server sent a reply that cannot be decoded (%s)", err.msg);
        p->done(p->opaque, NULL, &e);
    } else if (sg_qmp_reply_error(msg, &err)) {
        p->done(p->opaque, NULL, &err);
    } else {
        p->done(p->opaque, json_object_get(msg, "return"), NULL);
    }
    json_decref(msg);
}

static void on_reply(struct sg_qmp_client *c, const char *bytes, size_t len,
                     const struct sg_qmp_top *top)
{
    uint64_t n = 0;
    struct pending *p;
    if (!top->valid || !top->object)
        p = take(c, 0, true);   /* not JSON: answers the oldest command */
    else if (id_number(bytes, top, &n) && n)
        p = take(c, n, false);
    else
        return;  /* an error about input we never sent, or an id not ours */
    if (!p)
        return;
    if (!top->valid || !top->object) {
        json_t *junk = NULL;
        struct sg_error err = {0}, e = {0};
        sg_qmp_parse_message(bytes, len, &junk, &err);
        json_decref(junk);
        sg_error_set(&e, "the QMP server sent a reply that is not valid JSON (%s)",
                     err.set ? err.msg : "not a JSON object");
        fail_one(p, &e);
    } else if (p->raw) {
        p->raw(p->opaque, bytes, len, top, NULL);
    } else if (p->done) {
        reply_decoded(p, bytes, len);
    }
    free(p);
}

static void on_negotiated(struct sg_qmp_client *c, const char *bytes, size_t len)
{
    json_t *msg = NULL;
    struct sg_error err = {0};
    if (sg_qmp_parse_message(bytes, len, &msg, &err) == SG_QMP_PARSE_OK)
        sg_qmp_reply_error(msg, &err);
    json_decref(msg);
    if (err.set) {
        sg_error_prefix(&err, "qmp_capabilities");
        client_close(c, &err);
        return;
    }
    c->ready = true;
    struct item *it = c->queued;
    c->queued = NULL;
    c->queued_tail = &c->queued;
    while (it) {
        struct item *next = it->next;
        if (!c->closed)
            send_now(c, it->bytes, it->len, it->fds, it->nfds);
        else
            close_fds(it->fds, it->nfds);
        free(it->bytes);
        free(it);
        it = next;
    }
    if (!c->closed && c->ops.ready)
        c->ops.ready(c->opaque, c->greeting);
}

static bool on_greeting(struct sg_qmp_client *c, const char *bytes, size_t len)
{
    json_t *msg = NULL;
    struct sg_error err = {0};
    if (sg_qmp_parse_message(bytes, len, &msg, &err) != SG_QMP_PARSE_OK ||
        !json_is_object(json_object_get(msg, "QMP"))) {
        json_decref(msg);
        close_msg(c, "the QMP server did not start with a greeting");
        return false;
    }
    c->greeting = msg;
    static const char caps[] = "{\"execute\": \"qmp_capabilities\", \"id\": \"" CAPS_ID "\"}";
    send_now(c, caps, sizeof caps - 1, NULL, 0);
    return !c->closed;
}

static void on_event(struct sg_qmp_client *c, const char *bytes, size_t len,
                     const struct sg_qmp_top *top)
{
    if (c->ops.raw_event) {
        c->ops.raw_event(c->opaque, bytes, len, top);
        return;
    }
    json_t *msg = NULL;
    struct sg_error err = {0};
    if (c->ops.event && sg_qmp_parse_message(bytes, len, &msg, &err) == SG_QMP_PARSE_OK)
        c->ops.event(c->opaque, msg);
    json_decref(msg);
}

/* Every message, framed by the decoder in raw mode and scanned here. */
static bool dec_span(void *opaque, const char *bytes, size_t len)
{
    struct sg_qmp_client *c = opaque;
    if (c->closed)
        return false;
    if (!c->greeting)
        return on_greeting(c, bytes, len);
    struct sg_qmp_top top;
    sg_qmp_top_scan(bytes, len, &top);
    bool json = top.valid && top.object;
    if (json && top.m[SG_TOP_EVENT].present) {
        if (c->ready)
            on_event(c, bytes, len, &top);
    } else if (json && !top.m[SG_TOP_RETURN].present && !top.m[SG_TOP_ERROR].present) {
        /* neither a reply nor an event: nothing waits for it */
    } else if (!c->ready) {
        uint64_t n = 1;
        if (json && id_number(bytes, &top, &n) && n == 0)
            on_negotiated(c, bytes, len);
    } else {
        on_reply(c, bytes, len, &top);
    }
    return !c->closed;
}

static const struct sg_qmp_decoder_ops dec_ops = {NULL, NULL, dec_span};

struct sg_qmp_client *sg_qmp_client_new(const struct sg_qmp_client_ops *ops, void *opaque)
{
    struct sg_qmp_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    if (ops)
        c->ops = *ops;
    c->opaque = opaque;
    c->fd = -1;
    c->queued_tail = &c->queued;
    c->fdq_tail = &c->fdq;
    c->dec = sg_qmp_decoder_new(&dec_ops, c);
    if (!c->dec) {
        sg_qmp_client_free(c);
        return NULL;
    }
    return c;
}

void sg_qmp_client_free(struct sg_qmp_client *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    while (c->head) {
        struct pending *p = c->head;
        c->head = p->next;
        free(p);
    }
    items_free(c->queued);
    items_free(c->fdq);
    sg_qmp_decoder_free(c->dec);
    sg_qmp_outbuf_free(&c->out);
    json_decref(c->greeting);
    free(c);
}

struct sg_qmp_client *sg_qmp_client_connect(const char *addr, const struct sg_qmp_client_ops *ops,
                                            void *opaque, struct sg_error *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!strncmp(addr, "unix:", 5))
        addr += 5;
    size_t n = strcspn(addr, ",");
    if (n == 0 || n >= sizeof sa.sun_path) {
        sg_error_set(err, "QMP socket path '%.*s' is empty or too long", (int)n, addr);
        return NULL;
    }
    memcpy(sa.sun_path, addr, n);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sg_error_set_errno(err, errno, "QMP socket");
        return NULL;
    }
    /* A unix connect either completes at once or fails; EINPROGRESS is
     * tolerated for completeness (output then waits for POLLOUT). */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        sg_error_set_errno(err, errno, "cannot connect to QMP socket %s", sa.sun_path);
        close(fd);
        return NULL;
    }
    struct sg_qmp_client *c = sg_qmp_client_new(ops, opaque);
    if (!c) {
        sg_error_set(err, "out of memory");
        close(fd);
        return NULL;
    }
    c->fd = fd;
    return c;
}

static struct pending *add_pending(struct sg_qmp_client *c, struct sg_error *err)
{
    if (c->closed) {
        sg_error_set(err, "QMP connection is closed");
        return NULL;
    }
    struct pending *p = calloc(1, sizeof *p);
    if (!p) {
        sg_error_set(err, "out of memory");
        return NULL;
    }
    p->n = ++c->next_n;
    if (c->tail)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
    c->n_pending++;
    return p;
}

/* After send_or_queue: the request's number, or 0 when the client closed
 * meanwhile (its pending entry was failed or freed with the rest). */
static uint64_t sent(struct sg_qmp_client *c, uint64_t n, bool ok, struct sg_error *err)
{
    if (ok && !c->closed)
        return n;
    if (!c->closed) {
        struct pending *p = take(c, n, false);
        free(p);
    }
    sg_error_set(err, c->closed ? "QMP connection is closed" : "out of memory");
    return 0;
}

uint64_t sg_qmp_client_execute(struct sg_qmp_client *c, const char *cmd, json_t *args,
                               sg_qmp_reply_fn done, void *opaque, struct sg_error *err)
{
    struct pending *p = add_pending(c, err);
    if (!p) {
        json_decref(args);
        return 0;
    }
    p->done = done;
    p->opaque = opaque;
    uint64_t n = p->n;
    char id[32];
    snprintf(id, sizeof id, "sg-%llu", (unsigned long long)n);
    json_t *msg = json_pack("{s:s}", "execute", cmd);
    if (msg && args)
        json_object_set_new(msg, "arguments", args);
    else
        json_decref(args);
    if (msg)
        json_object_set_new(msg, "id", json_string(id));
    size_t len = 0;
    char *text = msg ? sg_qmp_dumps(msg, &len) : NULL;
    json_decref(msg);
    return sent(c, n, text && send_or_queue(c, text, len, NULL, 0), err);
}

uint64_t sg_qmp_client_forward(struct sg_qmp_client *c, const char *msg, size_t len,
                               const struct sg_qmp_top *top, int *fds, size_t nfds,
                               sg_qmp_raw_reply_fn done, void *opaque, struct sg_error *err)
{
    if (nfds && !c->ops.write && c->fd < 0) {
        close_fds(fds, nfds);
        sg_error_set(err, "this QMP transport cannot pass file descriptors");
        return 0;
    }
    struct pending *p = add_pending(c, err);
    if (!p) {
        close_fds(fds, nfds);
        return 0;
    }
    p->raw = done;
    p->opaque = opaque;
    uint64_t n = p->n;
    char id[32];
    int idl = snprintf(id, sizeof id, "\"sg-%llu\"", (unsigned long long)n);
    size_t out_len = 0;
    char *out = sg_qmp_top_set_id(msg, len, top, id, (size_t)idl, &out_len);
    if (!out)
        close_fds(fds, nfds);
    return sent(c, n, out && send_or_queue(c, out, out_len, fds, nfds), err);
}

void sg_qmp_client_forget(struct sg_qmp_client *c, uint64_t n)
{
    for (struct pending *p = c->head; p; p = p->next) {
        if (p->n == n) {
            p->done = NULL;  /* keep the node: the reply still has to be matched */
            return;
        }
    }
}

bool sg_qmp_client_ready(const struct sg_qmp_client *c)
{
    return c->ready;
}

bool sg_qmp_client_closed(const struct sg_qmp_client *c)
{
    return c->closed;
}

const json_t *sg_qmp_client_greeting(const struct sg_qmp_client *c)
{
    return c->greeting;
}

size_t sg_qmp_client_pending(const struct sg_qmp_client *c)
{
    return c->n_pending;
}

bool sg_qmp_client_feed(struct sg_qmp_client *c, const void *data, size_t len)
{
    struct sg_error err = {0};
    if (c->closed)
        return false;
    if (sg_qmp_decoder_feed(c->dec, data, len, &err) == SG_QMP_FEED_FATAL)
        client_close(c, &err);
    return !c->closed;
}

void sg_qmp_client_eof(struct sg_qmp_client *c, const struct sg_error *why)
{
    if (why && why->set)
        client_close(c, why);
    else
        close_msg(c, "connection closed by the QMP server");
}

const char *sg_qmp_client_output(const struct sg_qmp_client *c, size_t *len)
{
    *len = sg_qmp_outbuf_pending(&c->out);
    return sg_qmp_outbuf_peek(&c->out);
}

void sg_qmp_client_consume(struct sg_qmp_client *c, size_t n)
{
    sg_qmp_outbuf_consume(&c->out, n);
    c->out_sent += n;
}

int sg_qmp_client_fd(const struct sg_qmp_client *c)
{
    return c->fd;
}

bool sg_qmp_client_wants_write(const struct sg_qmp_client *c)
{
    return !c->closed && c->fd >= 0 && sg_qmp_outbuf_pending(&c->out) > 0;
}

/* One write of at most `len` bytes; the descriptors of `it` (may be NULL)
 * go with its first byte. */
static ssize_t send_some(int fd, const char *buf, size_t len, struct item *it)
{
    return sg_unix_send_fds(fd, buf, len, it ? it->fds : NULL, it ? it->nfds : 0);
}

bool sg_qmp_client_on_writable(struct sg_qmp_client *c)
{
    if (c->closed || c->fd < 0)
        return !c->closed;
    while (sg_qmp_outbuf_pending(&c->out)) {
        size_t want = sg_qmp_outbuf_pending(&c->out);
        struct item *it = c->fdq;
        if (it && it->at > c->out_sent && it->at - c->out_sent < want)
            want = (size_t)(it->at - c->out_sent);   /* stop before the fds' byte */
        bool with_fds = it && it->at == c->out_sent;
        ssize_t n = send_some(c->fd, sg_qmp_outbuf_peek(&c->out), want, with_fds ? it : NULL);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            struct sg_error err = {0};
            sg_error_set_errno(&err, errno, "QMP write");
            client_close(c, &err);
            break;
        }
        if (with_fds) {
            c->fdq = it->next;
            if (!c->fdq)
                c->fdq_tail = &c->fdq;
            it->next = NULL;
            items_free(it);
        }
        sg_qmp_client_consume(c, (size_t)n);
    }
    return !c->closed;
}

bool sg_qmp_client_on_readable(struct sg_qmp_client *c)
{
    if (c->closed || c->fd < 0)
        return !c->closed;
    for (int round = 0; round < 64 && !c->closed; round++) {
        char buf[65536];
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n > 0) {
            sg_qmp_client_feed(c, buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        struct sg_error err = {0};
        if (n < 0)
            sg_error_set_errno(&err, errno, "QMP read");
        sg_qmp_client_eof(c, n < 0 ? &err : NULL);
    }
    /* replies to what the callbacks just sent go out without another wake-up */
    return sg_qmp_client_on_writable(c);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool sg_qmp_client_wait(struct sg_qmp_client *c, const bool *flag, int timeout_ms,
                        struct sg_error *err)
{
    int64_t end = now_ms() + timeout_ms;
    if (c->fd < 0) {
        sg_error_set(err, "QMP client has no fd to wait on");
        return false;
    }
    while (!*flag) {
        if (c->closed) {
            sg_error_set(err, "QMP connection closed");
            return false;
        }
        int64_t left = end - now_ms();
        if (left <= 0) {
            sg_error_set(err, "timed out waiting for QMP");
            return false;
        }
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        if (sg_qmp_client_wants_write(c))
            pfd.events |= POLLOUT;
        int r = poll(&pfd, 1, (int)left);
        if (r < 0 && errno != EINTR) {
            sg_error_set_errno(err, errno, "poll");
            return false;
        }
        if (r <= 0)
            continue;
        if (pfd.revents & POLLOUT)
            sg_qmp_client_on_writable(c);
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
            sg_qmp_client_on_readable(c);
    }
    return true;
}

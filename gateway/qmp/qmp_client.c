#include "qmp_client.h"

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

struct pending {
    uint64_t n;
    sg_qmp_reply_fn done;
    void *opaque;
    struct pending *next;
};

struct sg_qmp_client {
    struct sg_qmp_client_ops ops;
    void *opaque;
    int fd;
    struct sg_qmp_decoder *dec;
    struct sg_qmp_outbuf out;
    json_t *greeting;
    json_t *queued;   /* commands issued before negotiation finished */
    bool ready, closed;
    uint64_t next_n;
    struct pending *head, *tail;  /* in issue order: replies mostly come in order */
};

static void client_close(struct sg_qmp_client *c, const struct sg_error *why)
{
    if (c->closed)
        return;
    c->closed = true;
    c->ready = false;
    struct pending *p = c->head;
    c->head = c->tail = NULL;
    struct sg_error e = {0};
    sg_error_set(&e, "QMP connection closed: %s", why && why->set ? why->msg : "closed");
    while (p) {
        struct pending *next = p->next;
        if (p->done)
            p->done(p->opaque, NULL, &e);
        free(p);
        p = next;
    }
    if (c->ops.closed)
        c->ops.closed(c->opaque, why);
}

static void close_msg(struct sg_qmp_client *c, const char *msg)
{
    struct sg_error e = {0};
    sg_error_set(&e, "%s", msg);
    client_close(c, &e);
}

static bool queue_out(struct sg_qmp_client *c, const json_t *msg)
{
    struct sg_error e = {0};
    if (sg_qmp_outbuf_append_msg(&c->out, msg, &e))
        return true;
    client_close(c, &e);
    return false;
}

/* "sg-N" -> N; 0 for anything we did not generate. */
static uint64_t id_number(const json_t *id)
{
    const char *s = json_string_value(id);
    if (!s || strncmp(s, "sg-", 3) != 0)
        return 0;
    char *end;
    unsigned long long n = strtoull(s + 3, &end, 10);
    return *end ? 0 : (uint64_t)n;
}

static void on_reply(struct sg_qmp_client *c, json_t *msg)
{
    uint64_t n = id_number(json_object_get(msg, "id"));
    struct pending *p = c->head, *prev = NULL;
    while (p && p->n != n) {
        prev = p;
        p = p->next;
    }
    if (!n || !p)
        return;  /* forgotten, or an error about input we never sent */
    if (prev)
        prev->next = p->next;
    else
        c->head = p->next;
    if (c->tail == p)
        c->tail = prev;
    struct sg_error err = {0};
    if (p->done) {
        if (sg_qmp_reply_error(msg, &err)) {
            p->done(p->opaque, NULL, &err);
        } else {
            json_t *ret = json_object_get(msg, "return");
            p->done(p->opaque, ret, NULL);
        }
    }
    free(p);
}

static void on_negotiated(struct sg_qmp_client *c, json_t *msg)
{
    struct sg_error err = {0};
    if (sg_qmp_reply_error(msg, &err)) {
        sg_error_prefix(&err, "qmp_capabilities");
        client_close(c, &err);
        return;
    }
    c->ready = true;
    size_t i;
    json_t *m;
    json_array_foreach(c->queued, i, m) {
        if (!queue_out(c, m))
            return;
    }
    json_array_clear(c->queued);
    if (c->ops.ready)
        c->ops.ready(c->opaque, c->greeting);
}

static bool dec_message(void *opaque, json_t *msg)
{
    struct sg_qmp_client *c = opaque;
    if (c->closed)
        return false;
    if (!c->greeting) {
        if (!json_is_object(json_object_get(msg, "QMP"))) {
            close_msg(c, "QMP greeting expected");
            return false;
        }
        c->greeting = json_incref(msg);
        json_t *caps = json_pack("{s:s, s:s}", "execute", "qmp_capabilities", "id", CAPS_ID);
        queue_out(c, caps);
        json_decref(caps);
        return !c->closed;
    }
    if (json_object_get(msg, "event")) {
        if (c->ready && c->ops.event)
            c->ops.event(c->opaque, msg);
    } else if (sg_qmp_is_reply(msg)) {
        const char *id = json_string_value(json_object_get(msg, "id"));
        if (!c->ready && id && !strcmp(id, CAPS_ID))
            on_negotiated(c, msg);
        else
            on_reply(c, msg);
    }
    return !c->closed;
}

static bool dec_invalid(void *opaque, const struct sg_error *err)
{
    /* A server that sends bad JSON is broken, but the messages around it may
     * be fine; skipping keeps the other replies flowing. */
    struct sg_qmp_client *c = opaque;
    return !c->closed;
}

static const struct sg_qmp_decoder_ops dec_ops = {dec_message, dec_invalid, NULL};

struct sg_qmp_client *sg_qmp_client_new(const struct sg_qmp_client_ops *ops, void *opaque)
{
    struct sg_qmp_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    if (ops)
        c->ops = *ops;
    c->opaque = opaque;
    c->fd = -1;
    c->dec = sg_qmp_decoder_new(&dec_ops, c);
    c->queued = json_array();
    if (!c->dec || !c->queued) {
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
    sg_qmp_decoder_free(c->dec);
    sg_qmp_outbuf_free(&c->out);
    json_decref(c->greeting);
    json_decref(c->queued);
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

uint64_t sg_qmp_client_execute(struct sg_qmp_client *c, const char *cmd, json_t *args,
                               sg_qmp_reply_fn done, void *opaque, struct sg_error *err)
{
    if (c->closed) {
        json_decref(args);
        sg_error_set(err, "QMP connection is closed");
        return 0;
    }
    struct pending *p = calloc(1, sizeof *p);
    if (!p) {
        json_decref(args);
        sg_error_set(err, "out of memory");
        return 0;
    }
    uint64_t n = ++c->next_n;
    char id[32];
    snprintf(id, sizeof id, "sg-%llu", (unsigned long long)n);
    json_t *msg = json_pack("{s:s}", "execute", cmd);
    if (args)
        json_object_set_new(msg, "arguments", args);
    json_object_set_new(msg, "id", json_string(id));
    p->n = n;
    p->done = done;
    p->opaque = opaque;
    if (c->tail)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
    if (c->ready) {
        if (!queue_out(c, msg)) {
            json_decref(msg);
            sg_error_set(err, "QMP connection is closed");
            return 0;
        }
    } else {
        json_array_append(c->queued, msg);
    }
    json_decref(msg);
    return n;
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
    size_t n = 0;
    for (struct pending *p = c->head; p; p = p->next)
        n++;
    return n;
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
}

int sg_qmp_client_fd(const struct sg_qmp_client *c)
{
    return c->fd;
}

bool sg_qmp_client_wants_write(const struct sg_qmp_client *c)
{
    return !c->closed && c->fd >= 0 && sg_qmp_outbuf_pending(&c->out) > 0;
}

bool sg_qmp_client_on_writable(struct sg_qmp_client *c)
{
    struct sg_error err = {0};
    if (c->closed || c->fd < 0)
        return !c->closed;
    if (sg_qmp_outbuf_flush(&c->out, c->fd, &err) < 0)
        client_close(c, &err);
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

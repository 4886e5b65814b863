#include "qmp_server.h"
#include "qmp_unix.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "qmp_stream.h"

struct sg_qmp_server {
    json_t *version;
    struct sg_qmp_server_ops ops;
    void *opaque;
    struct sg_qmp_command *cmds;
    size_t ncmds, capcmds;
    int listen_fd;
    char *listen_path;
    struct sg_unix_name listen_name;
    struct sg_qmp_session *sessions;  /* doubly linked, newest first */
    size_t nsessions;
    size_t partial_total;   /* bytes of half-received messages, all sessions */
    int spare_fd;           /* given up at the descriptor limit (see accept) */
    bool at_fd_limit;
};

/* Bounds (INTERFACES.md 4, issue 17): a client that does not read is not read
 * from once this much output waits for it, and disconnected past the second
 * bound; half-received messages may hold at most the third over all. */
#define SG_QMP_PAUSE_BACKLOG (1u << 20)
#define SG_QMP_MAX_BACKLOG (16u << 20)
#define SG_QMP_MAX_PARTIAL_TOTAL (64u << 20)

struct sg_qmp_session {
    struct sg_qmp_server *srv;
    struct sg_qmp_session *prev, *next;
    /* transport: an fd we read/write, or the owner's send/close */
    int fd;
    bool own_fd;
    bool custom;
    struct sg_qmp_transport t;
    void *t_opaque;
    struct sg_qmp_decoder *dec;  /* created on first stream input */
    size_t partial;              /* its share of srv->partial_total */
    struct sg_qmp_outbuf out;
    bool negotiated;
    bool closing;     /* no more input; end once output is flushed */
    bool dead;        /* the fd failed or hit EOF: end now */
    bool close_told;  /* transport->close already called */
    bool in_io;       /* inside a readiness call: the owner polls anyway */
    struct sg_qmp_req *reqs;  /* pending requests, detached when we go */
    void *user;
};

struct sg_qmp_req {
    struct sg_qmp_session *s;
    struct sg_qmp_req *prev, *next;
    json_t *id;
    char *command;
};

static const char *const caps_values[] = {"oob", NULL};
static const struct sg_qmp_arg caps_enable_elem = {NULL, SG_QMP_T_ENUM, .values = caps_values};
static const struct sg_qmp_arg caps_args[] = {
    {"enable", SG_QMP_T_ARRAY, .optional = true, .elem = &caps_enable_elem},
    SG_QMP_ARGS_END,
};

/* ---- sending ----------------------------------------------------------- */

void sg_qmp_session_send(struct sg_qmp_session *s, const json_t *msg)
{
    if (!msg || s->dead)
        return;
    if (s->custom) {
        size_t n;
        char *text = sg_qmp_dumps(msg, &n);
        if (text && s->t.send)
            s->t.send(s->t_opaque, text, n);
        free(text);
        return;
    }
    bool was_empty = sg_qmp_outbuf_pending(&s->out) == 0;
    struct sg_error err = {0};
    if (sg_qmp_outbuf_pending(&s->out) > SG_QMP_MAX_BACKLOG) {
        /* It does not read (events keep coming): cut off, not grown. */
        s->dead = true;
        return;
    }
    if (!sg_qmp_outbuf_append_msg(&s->out, msg, &err)) {
        s->dead = true;  /* out of memory: better to drop the client than lose replies */
        return;
    }
    if (was_empty && !s->in_io && s->srv && s->srv->ops.want_write)
        s->srv->ops.want_write(s->srv->opaque, s);
}

static void send_new(struct sg_qmp_session *s, json_t *msg)
{
    sg_qmp_session_send(s, msg);
    json_decref(msg);
}

static void send_error(struct sg_qmp_session *s, const json_t *id, const char *cls,
                       const char *desc)
{
    send_new(s, sg_qmp_error_reply(id, cls, desc));
}

/* ---- server ------------------------------------------------------------ */

struct sg_qmp_server *sg_qmp_server_new(const json_t *version, const struct sg_qmp_server_ops *ops,
                                        void *opaque)
{
    struct sg_qmp_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->listen_fd = -1;
    srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (ops)
        srv->ops = *ops;
    srv->opaque = opaque;
    sg_qmp_server_set_version(srv, version);
    return srv;
}

void sg_qmp_server_set_version(struct sg_qmp_server *srv, const json_t *version)
{
    json_decref(srv->version);
    srv->version = version ? json_deep_copy(version) : NULL;
}

void sg_qmp_server_free(struct sg_qmp_server *srv)
{
    if (!srv)
        return;
    while (srv->sessions)
        sg_qmp_session_free(srv->sessions);
    if (srv->listen_fd >= 0)
        close(srv->listen_fd);
    if (srv->listen_path)
        sg_unix_name_remove(srv->listen_path, &srv->listen_name);
    if (srv->spare_fd >= 0)
        close(srv->spare_fd);
    free(srv->listen_path);
    free(srv->cmds);
    json_decref(srv->version);
    free(srv);
}

static const struct sg_qmp_command *find_command(const struct sg_qmp_server *srv, const char *name)
{
    for (size_t i = 0; i < srv->ncmds; i++)
        if (!strcmp(srv->cmds[i].name, name))
            return &srv->cmds[i];
    return NULL;
}

bool sg_qmp_server_add_command(struct sg_qmp_server *srv, const struct sg_qmp_command *cmd,
                               struct sg_error *err)
{
    if (!cmd->name || !cmd->fn) {
        sg_error_set(err, "QMP command needs a name and a handler");
        return false;
    }
    if (!strcmp(cmd->name, "qmp_capabilities") || find_command(srv, cmd->name)) {
        sg_error_set(err, "QMP command '%s' registered twice", cmd->name);
        return false;
    }
    if (srv->ncmds == srv->capcmds) {
        size_t n = srv->capcmds ? srv->capcmds * 2 : 32;
        struct sg_qmp_command *p = realloc(srv->cmds, n * sizeof *p);
        if (!p) {
            sg_error_set(err, "out of memory registering QMP command '%s'", cmd->name);
            return false;
        }
        srv->cmds = p;
        srv->capcmds = n;
    }
    srv->cmds[srv->ncmds++] = *cmd;
    return true;
}

bool sg_qmp_server_add_commands(struct sg_qmp_server *srv, const struct sg_qmp_command *table,
                                struct sg_error *err)
{
    for (; table && table->name; table++)
        if (!sg_qmp_server_add_command(srv, table, err))
            return false;
    return true;
}

json_t *sg_qmp_server_query_commands(const struct sg_qmp_server *srv)
{
    json_t *a = json_array();
    json_array_append_new(a, json_pack("{s:s}", "name", "qmp_capabilities"));
    for (size_t i = 0; i < srv->ncmds; i++)
        json_array_append_new(a, json_pack("{s:s}", "name", srv->cmds[i].name));
    return a;
}

void sg_qmp_server_broadcast(struct sg_qmp_server *srv, const json_t *msg)
{
    for (struct sg_qmp_session *s = srv->sessions; s; s = s->next)
        if (s->negotiated && !s->closing)
            sg_qmp_session_send(s, msg);
}

void sg_qmp_server_emit_event(struct sg_qmp_server *srv, const char *name, json_t *data)
{
    json_t *e = sg_qmp_event_new(name, data);
    sg_qmp_server_broadcast(srv, e);
    json_decref(e);
}

/* ---- requests ------------------------------------------------------------ */

static void req_finish(struct sg_qmp_req *req, json_t *reply)
{
    struct sg_qmp_session *s = req->s;
    if (s) {
        if (req->prev)
            req->prev->next = req->next;
        else
            s->reqs = req->next;
        if (req->next)
            req->next->prev = req->prev;
        if (reply && !s->closing)
            sg_qmp_session_send(s, reply);
    }
    json_decref(reply);
    json_decref(req->id);
    free(req->command);
    free(req);
}

void sg_qmp_req_return(struct sg_qmp_req *req, json_t *ret)
{
    req_finish(req, sg_qmp_return_reply(ret, req->id));
}

void sg_qmp_req_error(struct sg_qmp_req *req, const struct sg_error *err)
{
    req_finish(req, sg_qmp_error_reply_err(req->id, err));
}

void sg_qmp_req_errorf(struct sg_qmp_req *req, const char *cls, const char *fmt, ...)
{
    char desc[sizeof ((struct sg_error *)0)->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc, sizeof desc, fmt, ap);
    va_end(ap);
    req_finish(req, sg_qmp_error_reply(req->id, cls, desc));
}

const json_t *sg_qmp_req_id(const struct sg_qmp_req *req)
{
    return req->id;
}

const char *sg_qmp_req_command(const struct sg_qmp_req *req)
{
    return req->command;
}

struct sg_qmp_session *sg_qmp_req_session(const struct sg_qmp_req *req)
{
    return req->s;
}

/* ---- dispatch ------------------------------------------------------------ */

static void run_handler(struct sg_qmp_session *s, sg_qmp_handler_fn fn, void *opaque,
                        const struct sg_qmp_request *rq)
{
    struct sg_qmp_req *req = calloc(1, sizeof *req);
    char *cmd = strdup(rq->command);
    if (!req || !cmd) {
        free(req);
        free(cmd);
        send_error(s, rq->id, SG_ERR_GENERIC, "Out of memory");
        return;
    }
    req->command = cmd;
    req->id = rq->id ? json_deep_copy(rq->id) : NULL;
    req->s = s;
    req->next = s->reqs;
    if (s->reqs)
        s->reqs->prev = req;
    s->reqs = req;
    fn(req, rq->args, opaque);
}

bool sg_qmp_capabilities_check(const json_t *args, struct sg_error *err)
{
    if (!sg_qmp_check_args(caps_args, (json_t *)args, err))
        return false;
    json_t *enable = json_object_get(args, "enable");
    if (json_array_size(enable) > 0) {
        /* We offer no capability (greeting "capabilities": []), so every
         * requested one is listed, in QEMU's words. */
        char desc[512] = "";
        size_t i, len = 0;
        json_t *cap;
        json_array_foreach(enable, i, cap) {
            int w = snprintf(desc + len, sizeof desc - len, "%s%s", i ? ", " : "",
                             json_string_value(cap));
            if (w < 0 || (size_t)w >= sizeof desc - len)
                break;
            len += (size_t)w;
        }
        sg_error_set_class(err, SG_ERR_GENERIC, "Capability %s not available", desc);
        return false;
    }
    return true;
}

enum sg_qmp_neg sg_qmp_negotiation(bool *negotiated, const struct sg_qmp_request *rq,
                                   struct sg_error *err)
{
    bool is_caps = !strcmp(rq->command, "qmp_capabilities");
    if (!*negotiated) {
        if (!is_caps) {
            sg_error_set_class(err, SG_ERR_COMMAND_NOT_FOUND,
                               "Expecting capabilities negotiation with 'qmp_capabilities'");
            return SG_QMP_NEG_ERROR;
        }
        if (!sg_qmp_capabilities_check(rq->args, err))
            return SG_QMP_NEG_ERROR;
        *negotiated = true;
        return SG_QMP_NEG_DONE;
    }
    if (!is_caps)
        return SG_QMP_NEG_DISPATCH;
    /* QEMU checks the arguments' types, then refuses: the capabilities
     * themselves are not looked at any more. */
    if (!sg_qmp_check_args(caps_args, rq->args, err))
        return SG_QMP_NEG_ERROR;
    sg_error_set_class(err, SG_ERR_COMMAND_NOT_FOUND,
                       "Capabilities negotiation is already complete, command ignored");
    return SG_QMP_NEG_ERROR;
}

void sg_qmp_session_input_json(struct sg_qmp_session *s, json_t *msg)
{
    struct sg_qmp_request rq;
    struct sg_error err = {0};
    if (s->closing || s->dead)
        return;
    if (!sg_qmp_request_parse(msg, &rq, &err)) {
        send_error(s, rq.id, err.cls, err.msg);
        return;
    }
    switch (sg_qmp_negotiation(&s->negotiated, &rq, &err)) {
    case SG_QMP_NEG_ERROR:
        send_error(s, rq.id, err.cls, err.msg);
        return;
    case SG_QMP_NEG_DONE:
        send_new(s, sg_qmp_return_reply(NULL, rq.id));
        return;
    case SG_QMP_NEG_DISPATCH:
        break;
    }
    const struct sg_qmp_command *cmd = find_command(s->srv, rq.command);
    if (!cmd) {
        if (s->srv->ops.fallback) {
            run_handler(s, s->srv->ops.fallback, s->srv->opaque, &rq);
        } else {
            char desc[sizeof err.msg];
            snprintf(desc, sizeof desc, "The command %s has not been found", rq.command);
            send_error(s, rq.id, SG_ERR_COMMAND_NOT_FOUND, desc);
        }
        return;
    }
    if (!(cmd->flags & SG_QMP_CMD_ARGS_UNCHECKED) && !sg_qmp_check_args(cmd->args, rq.args, &err)) {
        send_error(s, rq.id, err.cls, err.msg);
        return;
    }
    run_handler(s, cmd->fn, cmd->opaque ? cmd->opaque : s->srv->opaque, &rq);
}

/* A limit was exceeded: answer like any error, then end the session. */
static void fatal(struct sg_qmp_session *s, const struct sg_error *err)
{
    send_error(s, NULL, SG_ERR_GENERIC, err->msg);
    sg_qmp_session_close(s);
}

void sg_qmp_session_input(struct sg_qmp_session *s, const void *data, size_t len)
{
    json_t *msg = NULL;
    struct sg_error err = {0};
    if (s->closing || s->dead)
        return;
    switch (sg_qmp_parse_message(data, len, &msg, &err)) {
    case SG_QMP_PARSE_OK:
        sg_qmp_session_input_json(s, msg);
        json_decref(msg);
        break;
    case SG_QMP_PARSE_INVALID:
        send_error(s, NULL, SG_ERR_GENERIC, err.msg);
        break;
    case SG_QMP_PARSE_FATAL:
        fatal(s, &err);
        break;
    }
}

static bool dec_message(void *opaque, json_t *msg)
{
    struct sg_qmp_session *s = opaque;
    sg_qmp_session_input_json(s, msg);
    return !s->closing && !s->dead;
}

static bool dec_invalid(void *opaque, const struct sg_error *err)
{
    struct sg_qmp_session *s = opaque;
    send_error(s, NULL, SG_ERR_GENERIC, err->msg);
    return !s->closing && !s->dead;
}

static const struct sg_qmp_decoder_ops dec_ops = {dec_message, dec_invalid, NULL};

void sg_qmp_session_feed(struct sg_qmp_session *s, const void *data, size_t len)
{
    struct sg_error err = {0};
    if (s->closing || s->dead)
        return;
    if (!s->dec && !(s->dec = sg_qmp_decoder_new(&dec_ops, s))) {
        s->dead = true;
        return;
    }
    if (sg_qmp_decoder_feed(s->dec, data, len, &err) == SG_QMP_FEED_FATAL)
        fatal(s, &err);
}

/* ---- sessions ------------------------------------------------------------ */

static struct sg_qmp_session *session_new(struct sg_qmp_server *srv)
{
    struct sg_qmp_session *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->srv = srv;
    s->fd = -1;
    s->next = srv->sessions;
    if (srv->sessions)
        srv->sessions->prev = s;
    srv->sessions = s;
    srv->nsessions++;
    return s;
}

static void send_greeting(struct sg_qmp_session *s)
{
    send_new(s, sg_qmp_greeting(s->srv->version));
}

struct sg_qmp_session *sg_qmp_server_session_new(struct sg_qmp_server *srv,
                                                 const struct sg_qmp_transport *t, void *opaque)
{
    struct sg_qmp_session *s = session_new(srv);
    if (!s)
        return NULL;
    s->custom = true;
    s->t = *t;
    s->t_opaque = opaque;
    send_greeting(s);
    return s;
}

struct sg_qmp_session *sg_qmp_server_adopt_fd(struct sg_qmp_server *srv, int fd,
                                              struct sg_error *err)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        sg_error_set_errno(err, errno, "QMP client fd %d", fd);
        close(fd);
        return NULL;
    }
    struct sg_qmp_session *s = session_new(srv);
    if (!s) {
        sg_error_set(err, "out of memory accepting a QMP client");
        close(fd);
        return NULL;
    }
    s->fd = fd;
    s->own_fd = true;
    /* The owner learns about the session from our return value, so it
     * must not be told "want write" about it yet: flush the greeting now
     * (it nearly always fits) and let the owner check wants_write(). */
    s->in_io = true;
    send_greeting(s);
    struct sg_error ferr = {0};
    if (sg_qmp_outbuf_flush(&s->out, fd, &ferr) < 0)
        s->dead = true;
    s->in_io = false;
    return s;
}

void sg_qmp_session_free(struct sg_qmp_session *s)
{
    if (!s)
        return;
    struct sg_qmp_server *srv = s->srv;
    if (srv->ops.session_closed)
        srv->ops.session_closed(srv->opaque, s);
    for (struct sg_qmp_req *r = s->reqs; r; r = r->next)
        r->s = NULL;  /* their handlers still hold them; replies get dropped */
    if (s->prev)
        s->prev->next = s->next;
    else
        srv->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    srv->nsessions--;
    srv->partial_total -= s->partial;
    if (s->fd >= 0) {
        if (!s->dead)
            sg_qmp_outbuf_flush(&s->out, s->fd, NULL);  /* best effort: last error reply */
        if (s->own_fd)
            close(s->fd);
    }
    sg_qmp_decoder_free(s->dec);
    sg_qmp_outbuf_free(&s->out);
    free(s);
}

int sg_qmp_session_fd(const struct sg_qmp_session *s)
{
    return s->custom ? -1 : s->fd;
}

bool sg_qmp_session_wants_write(const struct sg_qmp_session *s)
{
    return !s->custom && !s->dead && sg_qmp_outbuf_pending(&s->out) > 0;
}

void sg_qmp_session_forget_fd(struct sg_qmp_session *s)
{
    s->own_fd = false;
}

void sg_qmp_session_close(struct sg_qmp_session *s)
{
    s->closing = true;
    if (s->custom && !s->close_told) {
        s->close_told = true;
        if (s->t.close)
            s->t.close(s->t_opaque);
    } else if (!s->custom && !s->in_io && s->srv->ops.want_write) {
        /* a writable wake-up lets the owner notice the end */
        s->srv->ops.want_write(s->srv->opaque, s);
    }
}

bool sg_qmp_session_closing(const struct sg_qmp_session *s)
{
    return s->closing || s->dead;
}

static bool session_alive(struct sg_qmp_session *s)
{
    if (s->dead)
        return false;
    return !(s->closing && sg_qmp_outbuf_pending(&s->out) == 0);
}

static void flush_now(struct sg_qmp_session *s)
{
    if (s->dead)
        return;
    if (sg_qmp_outbuf_flush(&s->out, s->fd, NULL) < 0)
        s->dead = true;
}

void sg_qmp_server_flush(struct sg_qmp_server *srv)
{
    for (struct sg_qmp_session *s = srv->sessions; s; s = s->next)
        if (!s->custom && s->fd >= 0 && !s->in_io && sg_qmp_outbuf_pending(&s->out) > 0)
            flush_now(s);   /* a session that died is reaped by the next poll round */
}

bool sg_qmp_session_on_readable(struct sg_qmp_session *s)
{
    if (s->custom || s->fd < 0)
        return !s->closing;
    s->in_io = true;
    /* Bounded so one flooding client cannot starve the others; the fd stays
     * readable and the loop calls again. */
    for (int round = 0; round < 64 && !s->closing && !s->dead; round++) {
        if (sg_qmp_outbuf_pending(&s->out) > SG_QMP_PAUSE_BACKLOG)
            break; /* replies it has not read yet: its input waits (pollfds agrees) */
        char buf[65536];
        ssize_t n = read(s->fd, buf, sizeof buf);
        if (n > 0) {
            sg_qmp_session_feed(s, buf, (size_t)n);
            size_t now = s->dec ? sg_qmp_decoder_pending(s->dec) : 0;
            s->srv->partial_total += now - s->partial;
            s->partial = now;
            if (now && s->srv->partial_total > SG_QMP_MAX_PARTIAL_TOTAL) {
                send_error(s, NULL, SG_ERR_GENERIC,
                           "too many half-sent QMP messages (connection closed)");
                s->closing = true;
            }
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        /* EOF: the peer may only have shut its write side; answer what
         * was asked, then end. */
        if (n == 0)
            s->closing = true;
        else
            s->dead = true;
        break;
    }
    flush_now(s);
    s->in_io = false;
    return session_alive(s);
}

bool sg_qmp_session_on_writable(struct sg_qmp_session *s)
{
    if (s->custom || s->fd < 0)
        return !s->closing;
    s->in_io = true;
    flush_now(s);
    s->in_io = false;
    return session_alive(s);
}

bool sg_qmp_session_negotiated(const struct sg_qmp_session *s)
{
    return s->negotiated;
}

void sg_qmp_session_set_user(struct sg_qmp_session *s, void *user)
{
    s->user = user;
}

void *sg_qmp_session_user(const struct sg_qmp_session *s)
{
    return s->user;
}

struct sg_qmp_server *sg_qmp_session_server(const struct sg_qmp_session *s)
{
    return s->srv;
}

/* ---- listening ------------------------------------------------------------ */

/* "unix:PATH[,opts]" or "PATH" -> PATH; false if it does not fit sun_path. */
static bool unix_path(const char *addr, char *out, size_t outlen, struct sg_error *err)
{
    if (!strncmp(addr, "unix:", 5))
        addr += 5;
    size_t n = strcspn(addr, ",");
    if (n == 0 || n >= outlen) {
        sg_error_set(err, "QMP socket path '%.*s' is empty or too long", (int)n, addr);
        return false;
    }
    memcpy(out, addr, n);
    out[n] = 0;
    return true;
}

bool sg_qmp_server_listen(struct sg_qmp_server *srv, const char *addr, struct sg_error *err)
{
    char path[sizeof ((struct sockaddr_un *)0)->sun_path];
    if (srv->listen_fd >= 0) {
        sg_error_set(err, "QMP server already listening");
        return false;
    }
    if (!unix_path(addr, path, sizeof path, err))
        return false;
    int fd = sg_unix_listen(path, 16, true, err);
    if (fd < 0) {
        sg_error_prefix(err, "QMP socket");
        return false;
    }
    srv->listen_path = strdup(path);
    sg_unix_name_get(path, &srv->listen_name);
    srv->listen_fd = fd;
    return true;
}

int sg_qmp_server_listen_fd(const struct sg_qmp_server *srv)
{
    return srv->listen_fd;
}

struct sg_qmp_session *sg_qmp_server_accept(struct sg_qmp_server *srv, struct sg_error *err)
{
    if (srv->listen_fd < 0)
        return NULL;
    for (;;) {
        int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            srv->at_fd_limit = false;
            return sg_qmp_server_adopt_fd(srv, fd, err);
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if ((errno == EMFILE || errno == ENFILE) && srv->spare_fd >= 0) {
            /* At the descriptor limit the listening socket stays readable:
             * the connection is taken on the spare descriptor and closed
             * (the client sees EOF at once, the loop does not spin), and
             * the error is reported once until a connection succeeds. */
            close(srv->spare_fd);
            int c = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0)
                close(c);
            srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (!srv->at_fd_limit)
                sg_error_set(err, "QMP accept: too many open files; refusing new "
                                  "connections until clients leave");
            srv->at_fd_limit = true;
            return NULL;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            sg_error_set_errno(err, errno, "QMP accept");
        return NULL;
    }
}

/* ---- poll helpers ---------------------------------------------------------- */

size_t sg_qmp_server_npollfds(const struct sg_qmp_server *srv)
{
    return srv->nsessions + 1;
}

size_t sg_qmp_server_pollfds(const struct sg_qmp_server *srv, struct pollfd *fds, size_t max)
{
    size_t n = 0;
    if (srv->listen_fd >= 0 && n < max)
        fds[n++] = (struct pollfd){.fd = srv->listen_fd, .events = POLLIN};
    for (struct sg_qmp_session *s = srv->sessions; s && n < max; s = s->next) {
        if (s->custom || s->fd < 0)
            continue;
        short ev = s->closing || sg_qmp_outbuf_pending(&s->out) > SG_QMP_PAUSE_BACKLOG ? 0 : POLLIN;
        /* ended sessions ask for POLLOUT so the next round reaps them */
        if (sg_qmp_outbuf_pending(&s->out) > 0 || !session_alive(s))
            ev |= POLLOUT;
        fds[n++] = (struct pollfd){.fd = s->fd, .events = ev};
    }
    return n;
}

static struct sg_qmp_session *by_fd(struct sg_qmp_server *srv, int fd)
{
    for (struct sg_qmp_session *s = srv->sessions; s; s = s->next)
        if (!s->custom && s->fd == fd)
            return s;
    return NULL;
}

void sg_qmp_server_handle_pollfds(struct sg_qmp_server *srv, const struct pollfd *fds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!fds[i].revents)
            continue;
        if (fds[i].fd == srv->listen_fd && srv->listen_fd >= 0) {
            /* accept a bounded batch; more wait for the next round */
            for (int k = 0; k < 16; k++) {
                struct sg_error err = {0};
                if (!sg_qmp_server_accept(srv, &err))
                    break;
            }
            continue;
        }
        struct sg_qmp_session *s = by_fd(srv, fds[i].fd);
        if (!s)
            continue;
        bool alive = true;
        if (fds[i].revents & POLLNVAL)
            alive = false;
        if (alive && (fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
            alive = sg_qmp_session_on_readable(s);
        if (alive && (fds[i].revents & POLLOUT))
            alive = sg_qmp_session_on_writable(s);
        if (!alive || !session_alive(s))
            sg_qmp_session_free(s);
    }
}

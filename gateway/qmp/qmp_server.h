/* qmp_server.h: the server side of QMP (QEMU docs/interop/qmp-spec.rst).
 *
 * One sg_qmp_server holds the command table, the greeting's version object
 * and every client session; it never owns an event loop.  A session is one
 * client, on either of two transports:
 *   - an fd (a unix stream socket: accepted from the server's listening
 *     socket, or adopted, e.g. one end of a socketpair) -- the server reads,
 *     frames and writes it when told the fd is readable/writable;
 *   - a custom transport (one message per WebSocket frame, an in-process
 *     client): the owner passes each received message to
 *     sg_qmp_session_input() and gets each outgoing message through send().
 * The protocol is the same on both: greeting on creation, qmp_capabilities
 * negotiation with QEMU's errors, QEMU's request checks and argument texts,
 * `id` echoed verbatim (any JSON value), events to negotiated sessions only.
 *
 * Two ways to drive the fds:
 *   poll() loop:  n = sg_qmp_server_pollfds(srv, fds, max); poll(fds, n, ..);
 *                 sg_qmp_server_handle_pollfds(srv, fds, n);
 *   foreign loop (libwebsockets adopting raw fds): watch
 *                 sg_qmp_server_listen_fd() and call sg_qmp_server_accept();
 *                 per session watch sg_qmp_session_fd(), call
 *                 sg_qmp_session_on_readable()/on_writable(), and free the
 *                 session when they return false.  ops.want_write tells when
 *                 a session's queue becomes non-empty outside those calls
 *                 (deferred replies, events), i.e. when to ask for POLLOUT.
 *
 * Replies: a handler completes its request with sg_qmp_req_return() or
 * sg_qmp_req_error(), either before returning or later (deferred: keep the
 * sg_qmp_req pointer).  Replies go out in completion order.  A request stays
 * valid until completed even if its client goes away meanwhile (then the
 * reply is dropped).  Every request must be completed exactly once.
 *
 * Threading: not thread-safe.  Call everything from the loop thread; a
 * vCPU thread that wants to emit an event must hand it to that thread.
 * Re-entrancy: handlers and callbacks may send, emit events, complete
 * requests and call sg_qmp_session_close(); they must not free sessions or
 * the server. */
#ifndef SG_QMP_SERVER_H
#define SG_QMP_SERVER_H

#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "qmp_msg.h"
#include "qmp_schema.h"
#include "sg_error.h"

struct sg_qmp_server;
struct sg_qmp_session;
struct sg_qmp_req;

/* A command handler.  `args` is the (checked) "arguments" object, or NULL
 * when the client sent none; borrowed for the duration of the call
 * (json_incref it to keep it for a deferred reply). */
typedef void (*sg_qmp_handler_fn)(struct sg_qmp_req *req, json_t *args, void *opaque);

/* Argument checking is skipped (the handler gets whatever object came). */
#define SG_QMP_CMD_ARGS_UNCHECKED 0x1u

struct sg_qmp_command {
    const char *name;               /* NULL ends a table */
    sg_qmp_handler_fn fn;
    const struct sg_qmp_arg *args;  /* NULL-name-terminated; NULL: takes no arguments */
    unsigned flags;
    void *opaque;
};

struct sg_qmp_server_ops {
    /* Every command not in the table (after negotiation), unchecked; NULL:
     * CommandNotFound "The command X has not been found".  The gateway's
     * proxy puts its forwarding here. */
    sg_qmp_handler_fn fallback;
    /* A session is about to be freed (either way); drop references to it. */
    void (*session_closed)(void *opaque, struct sg_qmp_session *s);
    /* An fd session's write queue went from empty to non-empty outside
     * on_readable/on_writable (deferred reply, event): ask for POLLOUT. */
    void (*want_write)(void *opaque, struct sg_qmp_session *s);
};

/* `version` (borrowed, copied) goes into the greeting, e.g.
 * {"qemu": {"micro": 0, "minor": 1, "major": 0}, "package": "snapgate-vmm"};
 * NULL: snapgate's own.  `ops` may be NULL; `opaque` is passed to ops and,
 * unless a command has its own, to handlers. */
struct sg_qmp_server *sg_qmp_server_new(const json_t *version, const struct sg_qmp_server_ops *ops,
                                        void *opaque);
/* Closes every session (session_closed is called), the listening socket,
 * and unlinks its path.  Pending requests stay valid (replies dropped). */
void sg_qmp_server_free(struct sg_qmp_server *srv);
/* Later greetings carry this version (e.g. once the back end's is known). */
void sg_qmp_server_set_version(struct sg_qmp_server *srv, const json_t *version);

/* Registers one command / a NULL-name-terminated table (struct copied;
 * names, schemas and opaques must outlive the server).  A duplicate name or
 * "qmp_capabilities" (built in) is an error. */
bool sg_qmp_server_add_command(struct sg_qmp_server *srv, const struct sg_qmp_command *cmd,
                               struct sg_error *err);
bool sg_qmp_server_add_commands(struct sg_qmp_server *srv, const struct sg_qmp_command *table,
                                struct sg_error *err);
/* The reply of query-commands: [{"name": ...}, ...] including qmp_capabilities. */
json_t *sg_qmp_server_query_commands(const struct sg_qmp_server *srv);

/* The checks of qmp_capabilities' arguments with QEMU 7.2's texts
 * ("Capability oob not available", "Parameter 'enable' expects an array",
 * ...): the one place every QMP speaker of snapgate negotiates by. */
bool sg_qmp_capabilities_check(const json_t *args, struct sg_error *err);

/* The negotiation rules every QMP front end applies to a parsed request
 * (this server's sessions, the gateway's proxied clients), QEMU 7.2's:
 *   SG_QMP_NEG_DISPATCH  negotiated, not qmp_capabilities: run the command;
 *   SG_QMP_NEG_DONE      qmp_capabilities accepted: *negotiated is now true,
 *                        reply {"return": {}};
 *   SG_QMP_NEG_ERROR     reply `err` (its class and text): a command before
 *                        negotiation, bad qmp_capabilities arguments
 *                        ("Capability oob not available", "{enable: 5}"),
 *                        or a second qmp_capabilities. */
enum sg_qmp_neg { SG_QMP_NEG_DISPATCH, SG_QMP_NEG_DONE, SG_QMP_NEG_ERROR };
struct sg_qmp_request;
enum sg_qmp_neg sg_qmp_negotiation(bool *negotiated, const struct sg_qmp_request *rq,
                                   struct sg_error *err);

/* ---- listening socket -------------------------------------------------- */
/* Listens on "unix:PATH" (QEMU's ",server=on,wait=off" suffixes accepted
 * and ignored) or a bare PATH: a stale socket file is replaced, the socket
 * is mode 0600 before anyone can connect, non-blocking, close-on-exec. */
bool sg_qmp_server_listen(struct sg_qmp_server *srv, const char *addr, struct sg_error *err);
int sg_qmp_server_listen_fd(const struct sg_qmp_server *srv);  /* -1 if none */
/* Accepts one pending connection and sends its greeting (written at once
 * when the socket takes it; check sg_qmp_session_wants_write() after).
 * NULL with `err` unset means nothing was pending. */
struct sg_qmp_session *sg_qmp_server_accept(struct sg_qmp_server *srv, struct sg_error *err);
/* Makes a session of a connected stream fd (made non-blocking; owned and
 * closed by the session from now on) and sends its greeting. */
struct sg_qmp_session *sg_qmp_server_adopt_fd(struct sg_qmp_server *srv, int fd,
                                              struct sg_error *err);

/* ---- poll() helpers ------------------------------------------------------ */
/* Upper bound of the entries sg_qmp_server_pollfds() fills. */
size_t sg_qmp_server_npollfds(const struct sg_qmp_server *srv);
/* Fills listen fd + every fd session (POLLIN, plus POLLOUT when output is
 * queued); returns the count (at most `max`). */
size_t sg_qmp_server_pollfds(const struct sg_qmp_server *srv, struct pollfd *fds, size_t max);
/* Acts on revents of entries filled by sg_qmp_server_pollfds(): accepts,
 * reads, dispatches, writes, and frees sessions that ended. */
void sg_qmp_server_handle_pollfds(struct sg_qmp_server *srv, const struct pollfd *fds, size_t n);

/* ---- events -------------------------------------------------------------- */
/* Sends `msg` (borrowed) to every negotiated session. */
void sg_qmp_server_broadcast(struct sg_qmp_server *srv, const json_t *msg);
/* Builds {"timestamp", "event": name, "data"} now and broadcasts it;
 * `data` stolen, may be NULL. */
void sg_qmp_server_emit_event(struct sg_qmp_server *srv, const char *name, json_t *data);
/* Writes what every session has pending now, as far as its socket takes it
 * (the rest goes out from the poll loop as usual): for an event that must
 * not wait behind threads about to be woken. */
void sg_qmp_server_flush(struct sg_qmp_server *srv);

/* ---- sessions ------------------------------------------------------------ */
struct sg_qmp_transport {
    /* One outgoing message, JSON text without a line end (add "\r\n" on a
     * stream; send one frame on a WebSocket).  Required. */
    void (*send)(void *opaque, const char *text, size_t len);
    /* The session wants to be closed (limit exceeded); the owner should
     * close the transport and then call sg_qmp_session_free().  Optional. */
    void (*close)(void *opaque);
};
/* A session on a custom transport; the greeting is sent before it returns. */
struct sg_qmp_session *sg_qmp_server_session_new(struct sg_qmp_server *srv,
                                                 const struct sg_qmp_transport *t,
                                                 void *opaque);
/* Closes (fd sessions: best-effort flush, then close(fd)) and frees. */
void sg_qmp_session_free(struct sg_qmp_session *s);

/* One complete message text (e.g. one WebSocket frame): parsed with the
 * limits, errors answered, command dispatched. */
void sg_qmp_session_input(struct sg_qmp_session *s, const void *data, size_t len);
/* Stream bytes (framed as in qmp_stream.h); for custom byte transports. */
void sg_qmp_session_feed(struct sg_qmp_session *s, const void *data, size_t len);
/* An already parsed message (borrowed). */
void sg_qmp_session_input_json(struct sg_qmp_session *s, json_t *msg);

/* fd sessions: the fd (-1 for custom transports), whether output is queued,
 * and the readiness calls.  They return false when the session has ended
 * (EOF, I/O error, limit exceeded after the error was queued and flushed as
 * far as possible, or sg_qmp_session_close()): the owner then frees it. */
int sg_qmp_session_fd(const struct sg_qmp_session *s);
bool sg_qmp_session_wants_write(const struct sg_qmp_session *s);
bool sg_qmp_session_on_readable(struct sg_qmp_session *s);
bool sg_qmp_session_on_writable(struct sg_qmp_session *s);
/* Another owner (e.g. libwebsockets) will close the fd: free won't. */
void sg_qmp_session_forget_fd(struct sg_qmp_session *s);

/* Marks the session ended: once its queued output is flushed the readiness
 * calls return false (custom transports: transport->close is called). */
void sg_qmp_session_close(struct sg_qmp_session *s);
bool sg_qmp_session_closing(const struct sg_qmp_session *s);

bool sg_qmp_session_negotiated(const struct sg_qmp_session *s);
/* Sends any message (borrowed) to this session only, negotiated or not. */
void sg_qmp_session_send(struct sg_qmp_session *s, const json_t *msg);
void sg_qmp_session_set_user(struct sg_qmp_session *s, void *user);
void *sg_qmp_session_user(const struct sg_qmp_session *s);
struct sg_qmp_server *sg_qmp_session_server(const struct sg_qmp_session *s);

/* ---- requests ------------------------------------------------------------ */
/* Replies {"return": ret, "id": ...} (`ret` stolen; NULL means {}) and frees req. */
void sg_qmp_req_return(struct sg_qmp_req *req, json_t *ret);
/* Replies {"id": ..., "error": {class, desc}} from `err` and frees req. */
void sg_qmp_req_error(struct sg_qmp_req *req, const struct sg_error *err);
void sg_qmp_req_errorf(struct sg_qmp_req *req, const char *cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The request's id as sent by the client (NULL when it sent none). */
const json_t *sg_qmp_req_id(const struct sg_qmp_req *req);
const char *sg_qmp_req_command(const struct sg_qmp_req *req);
/* The session that sent it; NULL once that session is gone. */
struct sg_qmp_session *sg_qmp_req_session(const struct sg_qmp_req *req);

#endif

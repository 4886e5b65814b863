/* qmp_client.h: the client side of QMP, for event loops (no threads).
 *
 * The client reads the greeting, negotiates (qmp_capabilities) by itself,
 * then sends commands with generated ids ("sg-1", "sg-2", ...) and calls
 * each command's reply callback when the reply with its id arrives, so
 * several owners (e.g. many proxied front-end clients) can share one back-end
 * connection without their ids colliding.  Commands issued before the
 * negotiation finished are queued and sent after it.  Events go to
 * ops->event.
 *
 * Sans-IO core: sg_qmp_client_new() + sg_qmp_client_feed() with received
 * bytes + sg_qmp_client_output()/sg_qmp_client_consume() for bytes to send.
 * fd helpers on top: sg_qmp_client_connect() (non-blocking unix connect),
 * then "watch sg_qmp_client_fd(); POLLOUT when sg_qmp_client_wants_write();
 * call on_readable()/on_writable()".  sg_qmp_client_wait() is a bounded
 * blocking loop for tools and tests.
 *
 * Pass-through mode, for proxies: sg_qmp_client_forward() sends a message
 * as it came (its bytes, and descriptors attached to it) with only the id
 * replaced, and its reply comes back as the server's bytes plus their scan
 * (qmp_top.h); with ops->raw_event set, events come as bytes too.  Messages
 * are framed and scanned, never decoded and encoded again, so integers
 * above 2^63, floats, escapes and key order survive.  A reply that is not
 * valid JSON goes to the oldest command waiting (a server without OOB
 * answers in order) as an error; the connection stays up.
 *
 * Transport: by default output collects in a queue (sg_qmp_client_output,
 * or the fd helpers, which pass descriptors with sendmsg).  With ops->write
 * set, every message goes to the owner's transport at once instead.
 *
 * When the connection ends (EOF, I/O error, protocol error) ops->closed is
 * called once, then every pending reply callback gets an error ("QMP
 * connection closed: WHY"), and the client is inert until freed.
 *
 * Threading: not thread-safe.  Re-entrancy: callbacks may execute commands
 * and forget requests; they must not free the client (do it after the
 * readiness call returns false). */
#ifndef SG_QMP_CLIENT_H
#define SG_QMP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "qmp_msg.h"
#include "qmp_top.h"
#include "sg_error.h"

struct sg_qmp_client;

struct sg_qmp_client_ops {
    /* Greeting received and qmp_capabilities accepted; `greeting` is the
     * whole {"QMP": {...}} message (borrowed). */
    void (*ready)(void *opaque, const json_t *greeting);
    /* An event message (borrowed). */
    void (*event)(void *opaque, const json_t *event);
    /* The connection ended; `why` says how (never NULL).  Called before the
     * pending callbacks fail, so they can tell a lost link from an error. */
    void (*closed)(void *opaque, const struct sg_error *why);
    /* Optional: events as the server's bytes (then `event` is not called). */
    void (*raw_event)(void *opaque, const char *bytes, size_t len, const struct sg_qmp_top *top);
    /* Optional transport: one message (no line end; the transport adds
     * "\r\n") with the descriptors to pass along with it (owned by the
     * callee).  Returning false closes the client at once. */
    bool (*write)(void *opaque, const char *bytes, size_t len, int *fds, size_t nfds);
};


/* A forwarded message's reply: the server's bytes (the client's "sg-N" id
 * still in them) and their scan, or `msg` NULL and `why` saying why there is
 * none (connection closed: sg_qmp_client_closed() is then true; or a reply
 * that is not valid JSON). */
typedef void (*sg_qmp_raw_reply_fn)(void *opaque, const char *msg, size_t len,
                                    const struct sg_qmp_top *top, const char *why);

/* A command's reply: exactly one of `ret` (the "return" value) and `err`
 * (class + desc of the "error" member, or a local error such as the
 * connection closing) is non-NULL.  Both borrowed: a proxy passes `ret` on
 * with sg_qmp_req_return(req, json_incref((json_t *)ret)). */
typedef void (*sg_qmp_reply_fn)(void *opaque, const json_t *ret, const struct sg_error *err);

/* Sans-IO client: nothing is sent until the greeting has been fed. */
struct sg_qmp_client *sg_qmp_client_new(const struct sg_qmp_client_ops *ops, void *opaque);
/* Connects to "unix:PATH" or PATH without blocking (the connection may
 * still be in progress: that is fine, output waits for POLLOUT). */
struct sg_qmp_client *sg_qmp_client_connect(const char *addr, const struct sg_qmp_client_ops *ops,
                                            void *opaque, struct sg_error *err);
/* Closes the fd (if any) and frees; pending callbacks are NOT called. */
void sg_qmp_client_free(struct sg_qmp_client *c);

/* Sends {"execute": cmd, "arguments": args, "id": "sg-N"}; `args` stolen,
 * may be NULL.  `done` may be NULL (reply ignored).  Returns the request
 * number N (> 0), or 0 with `err` set when the client is closed. */
uint64_t sg_qmp_client_execute(struct sg_qmp_client *c, const char *cmd, json_t *args,
                               sg_qmp_reply_fn done, void *opaque, struct sg_error *err);
/* Pass-through: sends the `len` bytes at `msg` (one message, scanned into
 * `top`) with its id replaced by "sg-N" (inserted when it had none), and
 * descriptors `fds` (owned by the call: closed once sent, or on failure).
 * Without ops->write or an fd, descriptors cannot be passed: error.
 * Returns N, or 0 with `err` set (closed, out of memory). */
uint64_t sg_qmp_client_forward(struct sg_qmp_client *c, const char *msg, size_t len,
                               const struct sg_qmp_top *top, int *fds, size_t nfds,
                               sg_qmp_raw_reply_fn done, void *opaque, struct sg_error *err);
/* The owner lost interest: the callback of request N will not be called. */
void sg_qmp_client_forget(struct sg_qmp_client *c, uint64_t n);

bool sg_qmp_client_ready(const struct sg_qmp_client *c);   /* negotiated */
bool sg_qmp_client_closed(const struct sg_qmp_client *c);
/* The greeting (borrowed; NULL before it arrived), e.g. for its version. */
const json_t *sg_qmp_client_greeting(const struct sg_qmp_client *c);
size_t sg_qmp_client_pending(const struct sg_qmp_client *c);  /* replies awaited */

/* ---- sans-IO --------------------------------------------------------------- */
/* Received bytes.  Returns false once the client is closed. */
bool sg_qmp_client_feed(struct sg_qmp_client *c, const void *data, size_t len);
/* The transport saw EOF or an error: closes with that reason. */
void sg_qmp_client_eof(struct sg_qmp_client *c, const struct sg_error *why);
/* Bytes waiting to be sent (never NULL), and how many of them were sent. */
const char *sg_qmp_client_output(const struct sg_qmp_client *c, size_t *len);
void sg_qmp_client_consume(struct sg_qmp_client *c, size_t n);

/* ---- fd helpers (after sg_qmp_client_connect) ------------------------------ */
int sg_qmp_client_fd(const struct sg_qmp_client *c);
bool sg_qmp_client_wants_write(const struct sg_qmp_client *c);
/* Return false once the client is closed (ops->closed has been called). */
bool sg_qmp_client_on_readable(struct sg_qmp_client *c);
bool sg_qmp_client_on_writable(struct sg_qmp_client *c);
/* Runs poll() on the client's fd until *flag becomes true, the client
 * closes, or timeout_ms passes.  Returns true iff *flag became true. */
bool sg_qmp_client_wait(struct sg_qmp_client *c, const bool *flag, int timeout_ms,
                        struct sg_error *err);

#endif

/* gw.h: the gateway core that every front end goes through.
 *
 * One back-end link (QMP client to snapgate-vmm or QEMU), one HMP engine
 * (gateway/hmp), one libwebsockets context that owns the event loop.  Front
 * ends (the readline monitor, the --qmp unix endpoint, the WebSocket server)
 * never talk to the back end directly: they open a "front-end QMP client" or
 * call sg_gw_hmp_exec(), so there is exactly one path for every command.
 *
 * Threading: everything runs on the lws service thread; none of these
 * functions may be called from another thread. */
#ifndef SG_GW_H
#define SG_GW_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "sg_error.h"

struct lws_context;
struct sg_gw;

/* HMP output style (INTERFACES.md section 3). */
enum sg_hmp_style {
    SG_HMP_STYLE_SNAPGATE,   /* for people: notes, IDs where unambiguous */
    SG_HMP_STYLE_QEMU72,     /* byte-identical to QEMU 7.2, "\r\n" line ends */
    SG_HMP_STYLE_LIBVIRT_SAFE, /* QEMU 7.2's replies, refusing where it would pick another snapshot */
};

/* ---- Front-end QMP clients (QMP unix endpoint, /qmp WebSocket) ---------
 * A front-end client is a virtual QMP connection: it gets the greeting (with
 * the back end's version), must negotiate, and then every command is either
 * answered by the gateway (human-monitor-command for the snapshot commands,
 * qmp_capabilities) or forwarded to the back end byte for byte except its
 * id, which the link replaces so that clients cannot collide; the reply
 * comes back as the back end sent it with the client's own id bytes.
 * Replies keep the order of the client's commands.  Events from the back end
 * fan out, as sent, to every negotiated client. */
struct sg_gw_qmp_client;

/* Called with each message for the client, as one line of JSON text without
 * the trailing CRLF (the transport adds framing: "\r\n" on a stream, one
 * frame on a WebSocket).  Must not call back into the gateway synchronously
 * for the same client's destruction. */
typedef void (*sg_gw_send_fn)(void *opaque, const char *json_text, size_t len);

/* Creates a client and immediately sends it the greeting through `send`.
 * `hmp_style` is the style of its human-monitor-command replies
 * (--compat-profile, default qemu-7.2). */
struct sg_gw_qmp_client *sg_gw_qmp_client_new(struct sg_gw *gw, enum sg_hmp_style hmp_style,
                                              sg_gw_send_fn send, void *opaque);
/* One complete message as received (one framed span, one WebSocket frame;
 * malformed JSON is answered here with QEMU's GenericError), with the
 * descriptors that arrived with it (owned: forwarded with the command or
 * closed).  Returns false when the transport must be closed (nesting over
 * the limit; the error has been sent). */
bool sg_gw_qmp_client_input(struct sg_gw_qmp_client *c, const char *msg, size_t len, int *fds,
                            size_t nfds);
/* Messages received and not answered yet (a transport stops reading above
 * a bound: pipelining is fine, an unbounded backlog is not). */
size_t sg_gw_qmp_client_inflight(const struct sg_gw_qmp_client *c);
/* True while the transport should not read more from this client: too many
 * messages unanswered (16), or too many bytes of its commands waiting for
 * their turn (1 MiB).  Becomes false only when one of its replies is sent. */
bool sg_gw_qmp_client_busy(const struct sg_gw_qmp_client *c);
/* The transport went away.  Pending replies are dropped; jobs it started go on
 * and are dismissed by the gateway when they conclude. */
void sg_gw_qmp_client_free(struct sg_gw_qmp_client *c);

/* ---- one output bound over all front-end clients (gw_qmp_endpoint.c) --- */

struct sg_budget;
/* The bytes of output the gateway holds for all its clients (--qmp unix
 * socket clients and every WebSocket: /qmp, /hmp, /serial): 32 MiB.  Each
 * transport joins its connections (sg_budget.h); over the bound the client
 * holding most is dropped. */
struct sg_budget *sg_gw_output_budget(struct sg_gw *gw);
/* The line (standard error, or above the monitor's prompt) saying that
 * client `who` was dropped holding `held` bytes. */
void sg_gw_output_evicted(struct sg_gw *gw, const char *who, size_t held);

/* ---- HMP (the interactive monitor and the /hmp WebSocket) --------------- */

/* Called once when the command line has been executed: `text` is its whole
 * output (may be empty).  `quit` is true for the quit command. */
typedef void (*sg_gw_hmp_done_fn)(void *opaque, const char *text, bool quit);
/* Progress of a snapshot job started by this line (bytes done / total); may
 * be NULL.  Called from query-jobs polling while the job runs. */
typedef void (*sg_gw_hmp_progress_fn)(void *opaque, const char *job_id,
                                      unsigned long long done, unsigned long long total);

/* Executes one HMP line.  Returns a handle usable with sg_gw_hmp_cancel until
 * `done` has been called. */
struct sg_gw_hmp_req;
struct sg_gw_hmp_req *sg_gw_hmp_exec(struct sg_gw *gw, const char *line, enum sg_hmp_style style,
                                     sg_gw_hmp_done_fn done, sg_gw_hmp_progress_fn progress,
                                     void *opaque);
/* Ctrl-C: cancels the snapshot job the request is waiting for (if any). */
void sg_gw_hmp_cancel(struct sg_gw_hmp_req *req);
/* The requester went away: `done`/`progress` will not be called any more. */
void sg_gw_hmp_detach(struct sg_gw_hmp_req *req);
/* Notes on name resolution as soon as they are known, before the job runs
 * (they are then left out of `done`'s text); see sg_hmp_set_note. */
typedef void (*sg_gw_hmp_note_fn)(void *opaque, const char *text);
void sg_gw_hmp_set_note(struct sg_gw_hmp_req *req, sg_gw_hmp_note_fn note);
/* Only inside `done`: true when the line failed (see sg_hmp_done_failed). */
bool sg_gw_hmp_done_failed(const struct sg_gw *gw);

/* ---- Guest serial console (bundled VMM only) ---------------------------- */

/* True when the back end is the bundled VMM and its serial port is ours. */
bool sg_gw_has_serial(const struct sg_gw *gw);
typedef void (*sg_gw_serial_fn)(void *opaque, const void *bytes, size_t len);
/* Subscribes to guest output; returns a subscription id (> 0) or 0.  The
 * recent output (up to 16 KiB) is delivered first, from the loop (never from
 * inside this call), then new output as it comes. */
unsigned sg_gw_serial_subscribe(struct sg_gw *gw, sg_gw_serial_fn fn, void *opaque);
void sg_gw_serial_unsubscribe(struct sg_gw *gw, unsigned id);
/* Bytes typed by a user for the guest's UART. */
void sg_gw_serial_write(struct sg_gw *gw, const void *bytes, size_t len);

/* ---- Misc --------------------------------------------------------------- */
struct lws_context *sg_gw_lws_context(struct sg_gw *gw);
/* Back-end description for the page: "snapgate-vmm" or "qemu". */
const char *sg_gw_backend_kind(const struct sg_gw *gw);
/* "snapgate-vmm 0.1.0, answering QMP as QEMU 7.2.0" or "QEMU 7.2.0". */
void sg_gw_backend_describe(const struct sg_gw *gw, char *buf, size_t n);

#endif

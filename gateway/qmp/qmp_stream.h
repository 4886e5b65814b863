/* qmp_stream.h: QMP over a byte stream, sans-IO.
 *
 * A decoder turns the bytes of one connection into messages: many messages
 * per read, one message split over any number of reads (byte-at-a-time
 * included), whitespace/CRLF between messages.  A structural scanner finds
 * where each top-level value ends (strings, escapes, {} [] depth), and the
 * span is then parsed with json_loadb(JSON_DISABLE_EOF_CHECK); so scanning
 * is linear in the input however it is split, and a malformed message costs
 * one error while the messages after it still parse (QEMU behaves the same).
 * A partial message over SG_QMP_MAX_MESSAGE_BYTES or a nesting deeper than
 * SG_QMP_MAX_DEPTH is fatal: the decoder stops and the owner should send the
 * error and close.
 *
 * The output side is a plain byte queue (sg_qmp_outbuf) that appends "\r\n"
 * after every message and writes as much as the fd takes.
 *
 * Not thread-safe: one thread per decoder / outbuf. */
#ifndef SG_QMP_STREAM_H
#define SG_QMP_STREAM_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "qmp_msg.h"
#include "sg_error.h"

struct sg_qmp_decoder;

struct sg_qmp_decoder_ops {
    /* One complete message (any JSON type: the receiver decides whether it
     * is acceptable).  `msg` is borrowed: json_incref() it to keep it.
     * Return false to stop feeding: sg_qmp_decoder_feed() then returns
     * SG_QMP_FEED_STOPPED at once, the unread bytes stay buffered, and the
     * owner may free the decoder (never free it inside the callback). */
    bool (*message)(void *opaque, json_t *msg);
    /* A malformed message was skipped; `err->msg` is the desc to answer
     * with a GenericError (QEMU: "JSON parse error, ...").  Same return rule. */
    bool (*invalid)(void *opaque, const struct sg_error *err);
    /* Raw mode (a proxy): when set, each message's bytes are handed over
     * as they arrived instead of being parsed (message/invalid are not
     * called; judge them with sg_qmp_top_scan()).  Same return rule. */
    bool (*span)(void *opaque, const char *bytes, size_t len);
};

enum sg_qmp_feed {
    SG_QMP_FEED_OK,      /* all bytes consumed (a partial message may be buffered) */
    SG_QMP_FEED_STOPPED, /* a callback returned false */
    SG_QMP_FEED_FATAL,   /* limit exceeded: `err` filled; the decoder is dead */
};

struct sg_qmp_decoder *sg_qmp_decoder_new(const struct sg_qmp_decoder_ops *ops, void *opaque);
void sg_qmp_decoder_free(struct sg_qmp_decoder *d);
/* Feeds received bytes; calls the callbacks for every message completed. */
enum sg_qmp_feed sg_qmp_decoder_feed(struct sg_qmp_decoder *d, const void *data, size_t len,
                                     struct sg_error *err);
/* After SG_QMP_FEED_STOPPED: goes on with the bytes held back (the owner
 * is ready for more messages again).  Same results as a feed. */
enum sg_qmp_feed sg_qmp_decoder_resume(struct sg_qmp_decoder *d, struct sg_error *err);
/* Bytes of an incomplete message held back (0 between messages). */
size_t sg_qmp_decoder_pending(const struct sg_qmp_decoder *d);

/* ---- output queue ------------------------------------------------------ */
struct sg_qmp_outbuf {
    char *data;
    size_t off;   /* first unsent byte */
    size_t len;   /* end of queued bytes */
    size_t cap;
};
/* A zeroed struct is a valid empty queue. */
void sg_qmp_outbuf_init(struct sg_qmp_outbuf *o);
void sg_qmp_outbuf_free(struct sg_qmp_outbuf *o);
bool sg_qmp_outbuf_append(struct sg_qmp_outbuf *o, const void *data, size_t len,
                          struct sg_error *err);
/* Appends sg_qmp_dumps(msg) followed by "\r\n". */
bool sg_qmp_outbuf_append_msg(struct sg_qmp_outbuf *o, const json_t *msg, struct sg_error *err);
static inline size_t sg_qmp_outbuf_pending(const struct sg_qmp_outbuf *o)
{
    return o->len - o->off;
}
/* Sans-IO access: the unsent bytes (never NULL), and how many were sent. */
static inline const char *sg_qmp_outbuf_peek(const struct sg_qmp_outbuf *o)
{
    return o->data ? o->data + o->off : "";
}
void sg_qmp_outbuf_consume(struct sg_qmp_outbuf *o, size_t n);
/* Writes what the (non-blocking) fd accepts, with MSG_NOSIGNAL when it is a
 * socket.  Returns 1 when the queue is now empty, 0 when bytes remain
 * (wait for POLLOUT), -1 on a write error (`err` set; close the fd). */
int sg_qmp_outbuf_flush(struct sg_qmp_outbuf *o, int fd, struct sg_error *err);

#endif

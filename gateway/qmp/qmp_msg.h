/* qmp_msg.h: building, checking and printing single QMP messages.
 *
 * Everything here is pure (no I/O, no state) so every transport -- a unix
 * stream, one WebSocket frame, a test -- produces the same bytes.  Messages
 * are jansson values; the member order of built messages is QEMU 7.2's
 * (`{"return": R, "id": I}`, `{"id": I, "error": {...}}`,
 * `{"timestamp": {...}, "event": E, "data": D}`), because some scripts diff
 * raw output.
 *
 * Reference-count convention used across gateway/qmp: a `json_t *` parameter
 * documented as "stolen" is owned by the callee afterwards (even on failure);
 * every other `json_t *` parameter is borrowed. */
#ifndef SG_QMP_MSG_H
#define SG_QMP_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "sg_error.h"

/* Limits of INTERFACES.md section 4: a message longer than this, or nested
 * deeper than this, is answered with an error and the connection closed. */
#define SG_QMP_MAX_MESSAGE_BYTES (16u * 1024u * 1024u)
#define SG_QMP_MAX_DEPTH 64

/* Prints a message the way QEMU does (", " and ": " separators, no newline,
 * non-ASCII escaped).  Returns a malloc'ed NUL-terminated string (free()), or
 * NULL when out of memory.  `*len` (may be NULL) receives strlen(). */
char *sg_qmp_dumps(const json_t *msg, size_t *len);

/* Result of parsing one message (one WebSocket frame, one framed span). */
enum sg_qmp_parse {
    SG_QMP_PARSE_OK,      /* *out holds the value (any JSON type) */
    SG_QMP_PARSE_INVALID, /* bad JSON: answer err as GenericError, keep going */
    SG_QMP_PARSE_FATAL,   /* over the size or depth limit: answer err, then close */
};
/* Parses exactly one JSON value (surrounding whitespace allowed; anything
 * else after it is INVALID).  On INVALID/FATAL `err` holds the desc to send,
 * e.g. "JSON parse error, ..." or "JSON nesting depth limit exceeded". */
enum sg_qmp_parse sg_qmp_parse_message(const void *data, size_t len, json_t **out,
                                       struct sg_error *err);

/* {"return": ret, "id": id}; `ret` stolen (NULL means {}), `id` borrowed,
 * may be NULL (then no "id" member). */
json_t *sg_qmp_return_reply(json_t *ret, const json_t *id);
/* {"id": id, "error": {"class": cls, "desc": desc}}; `id` may be NULL. */
json_t *sg_qmp_error_reply(const json_t *id, const char *cls, const char *desc);
/* Same from an sg_error (an unset or class-less error becomes GenericError). */
json_t *sg_qmp_error_reply_err(const json_t *id, const struct sg_error *err);

/* {"timestamp": {"seconds": S, "microseconds": U}, "event": name[, "data": data]}
 * stamped with the current wall-clock time; `data` stolen, may be NULL. */
json_t *sg_qmp_event_new(const char *name, json_t *data);
/* Same with a given timestamp (tests, replays). */
json_t *sg_qmp_event_new_at(const char *name, json_t *data, int64_t seconds, int64_t usec);

/* {"QMP": {"version": version, "capabilities": []}}; `version` borrowed
 * (deep-copied), e.g. {"qemu": {"micro": 0, "minor": 1, "major": 0},
 * "package": "snapgate"}; NULL gives snapgate's own version object. */
json_t *sg_qmp_greeting(const json_t *version);

/* A command request taken apart with QEMU 7.2's checks and texts:
 * "QMP input must be a JSON object", "QMP input lacks member 'execute'",
 * "QMP input member 'execute' must be a string",
 * "QMP input member 'arguments' must be an object",
 * "QMP input member 'X' is unexpected".  All pointers borrowed from `msg`;
 * `*args` is NULL when absent, `*id` is NULL when absent.  `*id` is set
 * even when the check fails (QEMU echoes it in the error when it can). */
struct sg_qmp_request {
    const char *command;
    json_t *args;
    json_t *id;
};
bool sg_qmp_request_parse(json_t *msg, struct sg_qmp_request *req, struct sg_error *err);

/* Reply classification for clients: true when `msg` is a reply (has
 * "return" or "error").  On an error reply fills `err` with its class and desc. */
bool sg_qmp_is_reply(const json_t *msg);
bool sg_qmp_reply_error(const json_t *msg, struct sg_error *err);

#endif

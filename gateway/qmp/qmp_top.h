/* qmp_top.h: a forwarded QMP message seen without decoding it.
 *
 * A proxy must pass replies and events on byte for byte (jansson cannot hold
 * an integer above 2^63, QEMU sends them; decoding and encoding again would
 * also change floats, escapes and key order).  sg_qmp_top_scan() checks that
 * one message is valid JSON (RFC 8259: strings with escapes and UTF-8,
 * numbers of any size, depth limit) without building values, and records
 * where the members of the top-level object are, so the proxy can tell a
 * reply from an event, read the command name and replace only the `id`.
 * sg_qmp_top_set_id() writes the message with another id (or none). */
#ifndef SG_QMP_TOP_H
#define SG_QMP_TOP_H

#include <stdbool.h>
#include <stddef.h>

/* The top-level members a proxy cares about. */
enum sg_qmp_top_key {
    SG_TOP_ID,
    SG_TOP_EXECUTE,
    SG_TOP_EXEC_OOB,
    SG_TOP_ARGUMENTS,
    SG_TOP_EVENT,
    SG_TOP_RETURN,
    SG_TOP_ERROR,
    SG_TOP_QMP,
    SG_TOP_NKEYS
};

struct sg_qmp_span {
    bool present;
    size_t key;     /* offset of the member's key (its opening quote) */
    size_t off;     /* offset of the value's first byte */
    size_t len;     /* bytes of the value */
    size_t cut_off, cut_len;  /* what to remove to drop the member, commas included */
};

struct sg_qmp_top {
    bool valid;          /* one JSON value, nothing after it but whitespace */
    bool object;         /* ... and it is an object */
    bool too_deep;       /* nested deeper than SG_QMP_MAX_DEPTH */
    bool other_keys;     /* members other than those of enum sg_qmp_top_key */
    size_t open;         /* offset of the object's '{' */
    size_t insert_at;    /* where a new first member goes: the first key, or the '}' */
    size_t members;
    struct sg_qmp_span m[SG_TOP_NKEYS];
};

/* Scans `len` bytes holding one message (surrounding whitespace allowed). */
void sg_qmp_top_scan(const char *buf, size_t len, struct sg_qmp_top *top);
/* True when member `k` is a JSON string equal to `s` (no escapes involved). */
bool sg_qmp_top_is(const char *buf, const struct sg_qmp_top *top, enum sg_qmp_top_key k,
                   const char *s);
/* The message with its id replaced by the `id_len` bytes at `id` (a JSON
 * value), inserted when it had none, or removed when `id` is NULL.  Returns
 * a malloc'ed buffer of *out_len bytes (not NUL-terminated), NULL when out
 * of memory or when the message is not an object. */
char *sg_qmp_top_set_id(const char *buf, size_t len, const struct sg_qmp_top *top,
                        const char *id, size_t id_len, size_t *out_len);

#endif

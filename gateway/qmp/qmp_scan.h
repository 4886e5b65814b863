/* qmp_scan.h (internal): finds where a top-level JSON value ends without
 * parsing it.  Shared by the stream decoder and sg_qmp_parse_message() so
 * both apply the same size/depth limits and the same idea of "one message".
 *
 * The scanner only tracks strings (with escapes) and bracket depth, which
 * is all that is needed to cut a byte stream into messages; jansson then
 * judges each span.  Mismatched brackets ("{]") still end a span -- the
 * parser rejects it, and the stream resynchronises right after. */
#ifndef SG_QMP_SCAN_H
#define SG_QMP_SCAN_H

#include <stdbool.h>
#include <stddef.h>

enum sg_qmp_scan_state {
    SG_SCAN_IDLE,   /* between messages */
    SG_SCAN_VALUE,  /* inside an object, array or top-level string */
    SG_SCAN_BARE,   /* a top-level bare token (number, keyword, garbage) */
};

struct sg_qmp_scan {
    enum sg_qmp_scan_state state;
    size_t start;   /* offset of the current message's first byte */
    size_t pos;     /* next byte to look at */
    int depth;
    bool in_str, esc;
};

enum sg_qmp_scan_result {
    SG_SCAN_MORE,   /* every byte up to len looked at, no message ended */
    SG_SCAN_SPAN,   /* bytes [start, pos) are one message */
    SG_SCAN_DEPTH,  /* nesting deeper than SG_QMP_MAX_DEPTH */
    SG_SCAN_SIZE,   /* current message longer than SG_QMP_MAX_MESSAGE_BYTES */
};

/* Advances over buf[s->pos .. len).  After SG_SCAN_SPAN the scanner is
 * IDLE again at pos; the caller consumes the span and may rebase offsets. */
enum sg_qmp_scan_result sg_qmp_scan(struct sg_qmp_scan *s, const unsigned char *buf, size_t len);

#endif

#include "qmp_scan.h"

#include "qmp_msg.h"

static bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Characters that end a bare token: JSON structure and whitespace. */
static bool ends_bare(unsigned char c)
{
    return is_ws(c) || c == '{' || c == '}' || c == '[' || c == ']' || c == '"' || c == ',' ||
           c == ':';
}

enum sg_qmp_scan_result sg_qmp_scan(struct sg_qmp_scan *s, const unsigned char *buf, size_t len)
{
    while (s->pos < len) {
        unsigned char c = buf[s->pos];
        switch (s->state) {
        case SG_SCAN_IDLE:
            if (is_ws(c)) {
                s->pos++;
                continue;
            }
            s->start = s->pos++;
            s->in_str = s->esc = false;
            s->depth = 0;
            if (c == '{' || c == '[') {
                s->state = SG_SCAN_VALUE;
                s->depth = 1;
            } else if (c == '"') {
                s->state = SG_SCAN_VALUE;
                s->in_str = true;
            } else if (c == '}' || c == ']' || c == ',' || c == ':') {
                return SG_SCAN_SPAN;  /* a stray structural byte: its own bad message */
            } else {
                s->state = SG_SCAN_BARE;
            }
            continue;
        case SG_SCAN_BARE:
            if (ends_bare(c)) {
                s->state = SG_SCAN_IDLE;  /* the delimiter belongs to what follows */
                return SG_SCAN_SPAN;
            }
            if (s->pos - s->start >= SG_QMP_MAX_MESSAGE_BYTES)
                return SG_SCAN_SIZE;
            s->pos++;
            continue;
        case SG_SCAN_VALUE:
            if (s->pos - s->start >= SG_QMP_MAX_MESSAGE_BYTES)
                return SG_SCAN_SIZE;
            s->pos++;
            if (s->in_str) {
                if (s->esc) {
                    s->esc = false;
                } else if (c == '\\') {
                    s->esc = true;
                } else if (c == '"') {
                    s->in_str = false;
                    if (s->depth == 0) {
                        s->state = SG_SCAN_IDLE;
                        return SG_SCAN_SPAN;
                    }
                } else if (c < 0x20) {
                    /* A raw control byte (typically the line end of an
                     * unterminated string) cannot be valid JSON: end the bad
                     * message here so the next line parses again. */
                    s->state = SG_SCAN_IDLE;
                    return SG_SCAN_SPAN;
                }
            } else if (c == '"') {
                s->in_str = true;
            } else if (c == '{' || c == '[') {
                if (++s->depth > SG_QMP_MAX_DEPTH)
                    return SG_SCAN_DEPTH;
            } else if (c == '}' || c == ']') {
                if (--s->depth == 0) {
                    s->state = SG_SCAN_IDLE;
                    return SG_SCAN_SPAN;
                }
            }
            continue;
        }
    }
    return SG_SCAN_MORE;
}

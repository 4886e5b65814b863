/* sg_escape.c: snapshot tags for the terminal (see sg_escape.h). */
#include "sg_escape.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at p (1-4), or 0; *cp gets the code point. */
static size_t utf8_seq(const unsigned char *p, uint32_t *cp)
{
    unsigned char c = p[0];
    size_t n;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2, v = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3, v = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;   /* also stops at the NUL */
        v = v << 6 | (p[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return n;
}

static bool is_control(uint32_t cp)
{
    return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f);
}

bool sg_tag_is_plain(const char *tag)
{
    const unsigned char *p = (const unsigned char *)tag;
    while (*p) {
        uint32_t cp;
        size_t n = utf8_seq(p, &cp);
        if (!n || is_control(cp))
            return false;
        p += n;
    }
    return true;
}

char *sg_tag_for_terminal(const char *tag)
{
    if (sg_tag_is_plain(tag))
        return strdup(tag);
    size_t len = strlen(tag);
    char *out = malloc(len * 6 + 3), *q = out;   /* \u009f is 6 bytes for 2 */
    if (!out)
        return NULL;
    *q++ = '"';
    for (const unsigned char *p = (const unsigned char *)tag; *p;) {
        uint32_t cp;
        size_t n = utf8_seq(p, &cp);
        if (!n) {
            q += sprintf(q, "\\x%02x", *p++);
            continue;
        }
        if (cp == '\\' || cp == '"') {
            *q++ = '\\';
            *q++ = (char)cp;
        } else if (cp == '\n' || cp == '\r' || cp == '\t') {
            *q++ = '\\';
            *q++ = cp == '\n' ? 'n' : cp == '\r' ? 'r' : 't';
        } else if (cp < 0x20 || cp == 0x7f) {
            q += sprintf(q, "\\x%02x", (unsigned)cp);
        } else if (cp >= 0x80 && cp <= 0x9f) {
            q += sprintf(q, "\\u%04x", (unsigned)cp);
        } else {
            memcpy(q, p, n);
            q += n;
        }
        p += n;
    }
    *q++ = '"';
    *q = 0;
    return out;
}

/* hmp_strbuf.h: a growable text buffer for building replies. */
#ifndef SG_HMP_STRBUF_H
#define SG_HMP_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

struct sg_strbuf {
    char *s;      /* always NUL-terminated once anything was added */
    size_t len, cap;
    bool oom;     /* an allocation failed; the text is truncated */
};

void sg_sb_puts(struct sg_strbuf *b, const char *s);
void sg_sb_putc(struct sg_strbuf *b, char c);
void sg_sb_printf(struct sg_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The text ("" when empty); stays owned by the buffer. */
const char *sg_sb_str(const struct sg_strbuf *b);
void sg_sb_free(struct sg_strbuf *b);

#endif

/* qmp_top.c: validating JSON scanner that records the top-level members of a
 * message, and the id rewrite of a forwarded message (see qmp_top.h).  A
 * recursive-descent check over the bytes: nothing is allocated, every byte
 * is looked at once, nesting is bounded by SG_QMP_MAX_DEPTH. */
#include "qmp_top.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qmp_msg.h"

struct cur {
    const unsigned char *p;
    size_t i, n;
    bool too_deep;
};

static const char *const key_names[SG_TOP_NKEYS] = {
    [SG_TOP_ID] = "id",         [SG_TOP_EXECUTE] = "execute", [SG_TOP_EXEC_OOB] = "exec-oob",
    [SG_TOP_ARGUMENTS] = "arguments", [SG_TOP_EVENT] = "event", [SG_TOP_RETURN] = "return",
    [SG_TOP_ERROR] = "error",   [SG_TOP_QMP] = "QMP",
};

static void ws(struct cur *c)
{
    while (c->i < c->n && (c->p[c->i] == ' ' || c->p[c->i] == '\t' || c->p[c->i] == '\r' ||
                           c->p[c->i] == '\n'))
        c->i++;
}

static bool hex(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* One UTF-8 sequence starting at a byte >= 0x80 (shortest form, no
 * surrogates, at most U+10FFFF), as jansson and QEMU require. */
static bool utf8(struct cur *c)
{
    unsigned char b = c->p[c->i];
    size_t need;
    unsigned lo = 0x80, hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf)
        need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
        need = 2;
        if (b == 0xe0)
            lo = 0xa0;
        if (b == 0xed)
            hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
        need = 3;
        if (b == 0xf0)
            lo = 0x90;
        if (b == 0xf4)
            hi = 0x8f;
    } else
        return false;
    if (c->i + need >= c->n)
        return false;
    for (size_t k = 1; k <= need; k++) {
        unsigned char x = c->p[c->i + k];
        if (k == 1 ? (x < lo || x > hi) : (x < 0x80 || x > 0xbf))
            return false;
    }
    c->i += need + 1;
    return true;
}

/* The 4 hex digits at i as a number, -1 if they are not there. */
static long u4(const struct cur *c, size_t i)
{
    if (i + 4 > c->n)
        return -1;
    long v = 0;
    for (size_t k = 0; k < 4; k++) {
        unsigned char ch = c->p[i + k];
        if (!hex(ch))
            return -1;
        v = v * 16 + (ch <= '9' ? ch - '0' : (ch | 0x20) - 'a' + 10);
    }
    return v;
}

static bool string(struct cur *c)
{
    c->i++; /* the opening quote */
    while (c->i < c->n) {
        unsigned char ch = c->p[c->i];
        if (ch == '"') {
            c->i++;
            return true;
        }
        if (ch < 0x20)
            return false;
        if (ch == '\\') {
            if (++c->i >= c->n)
                return false;
            ch = c->p[c->i];
            if (ch == 'u') {
                /* As jansson and QEMU: no \u0000, surrogates only in pairs. */
                long cp = u4(c, c->i + 1);
                if (cp <= 0 || (cp >= 0xdc00 && cp <= 0xdfff))
                    return false;
                c->i += 5;
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    if (c->i + 1 >= c->n || c->p[c->i] != '\\' || c->p[c->i + 1] != 'u')
                        return false;
                    long lo = u4(c, c->i + 2);
                    if (lo < 0xdc00 || lo > 0xdfff)
                        return false;
                    c->i += 6;
                }
            } else if (strchr("\"\\/bfnrt", ch) && ch) {
                c->i++;
            } else {
                return false;
            }
        } else if (ch >= 0x80) {
            if (!utf8(c))
                return false;
        } else {
            c->i++;
        }
    }
    return false;
}

static bool digits(struct cur *c)
{
    size_t s = c->i;
    while (c->i < c->n && c->p[c->i] >= '0' && c->p[c->i] <= '9')
        c->i++;
    return c->i > s;
}

static bool number(struct cur *c)
{
    if (c->p[c->i] == '-')
        c->i++;
    if (c->i < c->n && c->p[c->i] == '0')
        c->i++;
    else if (!digits(c))
        return false;
    if (c->i < c->n && c->p[c->i] == '.') {
        c->i++;
        if (!digits(c))
            return false;
    }
    if (c->i < c->n && (c->p[c->i] == 'e' || c->p[c->i] == 'E')) {
        c->i++;
        if (c->i < c->n && (c->p[c->i] == '+' || c->p[c->i] == '-'))
            c->i++;
        if (!digits(c))
            return false;
    }
    return true;
}

static bool literal(struct cur *c, const char *w)
{
    size_t l = strlen(w);
    if (c->n - c->i < l || memcmp(c->p + c->i, w, l) != 0)
        return false;
    c->i += l;
    return true;
}

static bool value(struct cur *c, int depth, struct sg_qmp_top *top);

/* A key as its decoded bytes (UTF-8), for the comparisons a JSON decoder
 * makes: "\u0069d" is the key "id" to QEMU, so it must be to the proxy too,
 * or a client could slip a second id past the rewrite.  The string at
 * [off, off+len) (quotes included) was validated by string().  Returns the
 * length, or SIZE_MAX when it does not fit in `cap`. */
#define KEY_CAP 64
static size_t key_decode(const unsigned char *p, size_t off, size_t len, unsigned char *out)
{
    size_t o = 0, end = off + len - 1;
    for (size_t i = off + 1; i < end; i++) {
        unsigned long cp = p[i];
        if (cp == '\\') {
            unsigned char e = p[++i];
            if (e == 'u') {
                struct cur c = { p, 0, end, false };
                cp = (unsigned long)u4(&c, i + 1);
                i += 4;
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    unsigned long lo = (unsigned long)u4(&c, i + 3);
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    i += 6;
                }
            } else {
                static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
                cp = (unsigned char)to[strchr(from, e) - from];
            }
        }
        unsigned char u[4];
        size_t n;
        if (cp < 0x80 || p[i] >= 0x80) {     /* ASCII, or a raw UTF-8 byte: as is */
            u[0] = (unsigned char)cp;
            n = 1;
        } else if (cp < 0x800) {
            u[0] = (unsigned char)(0xc0 | cp >> 6), u[1] = (unsigned char)(0x80 | (cp & 0x3f));
            n = 2;
        } else if (cp < 0x10000) {
            u[0] = (unsigned char)(0xe0 | cp >> 12), u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
            u[2] = (unsigned char)(0x80 | (cp & 0x3f));
            n = 3;
        } else {
            u[0] = (unsigned char)(0xf0 | cp >> 18), u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
            u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f)), u[3] = (unsigned char)(0x80 | (cp & 0x3f));
            n = 4;
        }
        if (o + n > KEY_CAP)
            return SIZE_MAX;
        memcpy(out + o, u, n);
        o += n;
    }
    return o;
}

/* An object or array; `top` non-NULL records the members (depth 1 only). */
static bool container(struct cur *c, int depth, struct sg_qmp_top *top)
{
    if (depth > SG_QMP_MAX_DEPTH) {
        c->too_deep = true;
        return false;
    }
    bool obj = c->p[c->i] == '{';
    unsigned char close = obj ? '}' : ']';
    c->i++;
    ws(c);
    if (top)
        top->insert_at = c->i;
    if (c->i < c->n && c->p[c->i] == close) {
        c->i++;
        return true;
    }
    size_t prev_end = c->i; /* where a member's cut starts when it is not the first */
    struct sg_qmp_span *last = NULL;
    /* other top-level keys, for the duplicate check (QEMU and jansson
     * reject duplicate keys; a proxy must know which "id" it replaces) */
    size_t others[32][2];
    size_t n_others = 0;
    for (;;) {
        size_t key = c->i;
        int which = -1;
        if (obj) {
            if (c->i >= c->n || c->p[c->i] != '"' || !string(c))
                return false;
            if (top) {
                unsigned char name[KEY_CAP];
                size_t kl = key_decode(c->p, key, c->i - key, name);
                for (int k = 0; k < SG_TOP_NKEYS && kl != SIZE_MAX; k++)
                    if (strlen(key_names[k]) == kl && !memcmp(name, key_names[k], kl))
                        which = k;
                if (which >= 0 && top->m[which].present)
                    return false;
                if (which < 0) {
                    top->other_keys = true;
                    for (size_t k = 0; k < n_others; k++) {
                        unsigned char seen[KEY_CAP];
                        size_t sl = key_decode(c->p, others[k][0], others[k][1], seen);
                        if (kl == SIZE_MAX || sl == SIZE_MAX
                                ? others[k][1] == c->i - key &&
                                      !memcmp(c->p + others[k][0], c->p + key, c->i - key)
                                : sl == kl && !memcmp(seen, name, kl))
                            return false;
                    }
                    if (n_others < 32) {
                        others[n_others][0] = key;
                        others[n_others++][1] = c->i - key;
                    }
                }
            }
            ws(c);
            if (c->i >= c->n || c->p[c->i] != ':')
                return false;
            c->i++;
            ws(c);
        }
        size_t voff = c->i;
        if (!value(c, depth + 1, NULL))
            return false;
        size_t vend = c->i;
        if (top) {
            top->members++;
            if (last) { /* the previous member was the first one: its cut runs to here */
                last->cut_len = key - last->cut_off;
                last = NULL;
            }
            if (which >= 0) {
                struct sg_qmp_span *sp = &top->m[which];
                *sp = (struct sg_qmp_span){ true, key, voff, vend - voff, 0, 0 };
                if (top->members == 1) {
                    sp->cut_off = key;
                    sp->cut_len = vend - key; /* extended if a member follows */
                    last = sp;
                } else {
                    sp->cut_off = prev_end;
                    sp->cut_len = vend - prev_end;
                }
            }
        }
        prev_end = vend;
        ws(c);
        if (c->i >= c->n)
            return false;
        if (c->p[c->i] == ',') {
            c->i++;
            ws(c);
            continue;
        }
        if (c->p[c->i] != close)
            return false;
        c->i++;
        return true;
    }
}

static bool value(struct cur *c, int depth, struct sg_qmp_top *top)
{
    if (c->i >= c->n)
        return false;
    unsigned char ch = c->p[c->i];
    switch (ch) {
    case '{':
    case '[':
        return container(c, depth, top);
    case '"':
        return string(c);
    case 't':
        return literal(c, "true");
    case 'f':
        return literal(c, "false");
    case 'n':
        return literal(c, "null");
    default:
        return (ch == '-' || (ch >= '0' && ch <= '9')) && number(c);
    }
}

void sg_qmp_top_scan(const char *buf, size_t len, struct sg_qmp_top *top)
{
    memset(top, 0, sizeof *top);
    struct cur c = { (const unsigned char *)buf, 0, len, false };
    ws(&c);
    top->open = c.i;
    bool is_obj = c.i < c.n && c.p[c.i] == '{';
    bool ok = value(&c, 1, is_obj ? top : NULL);
    ws(&c);
    top->too_deep = c.too_deep;
    top->valid = ok && c.i == c.n;
    top->object = top->valid && is_obj;
    if (!top->object) {
        memset(top->m, 0, sizeof top->m);
        top->members = 0;
        top->other_keys = false;
    }
}

bool sg_qmp_top_is(const char *buf, const struct sg_qmp_top *top, enum sg_qmp_top_key k,
                   const char *s)
{
    const struct sg_qmp_span *sp = &top->m[k];
    size_t l = strlen(s);
    return sp->present && sp->len == l + 2 && buf[sp->off] == '"' &&
           !memcmp(buf + sp->off + 1, s, l);
}

char *sg_qmp_top_set_id(const char *buf, size_t len, const struct sg_qmp_top *top,
                        const char *id, size_t id_len, size_t *out_len)
{
    if (!top->object)
        return NULL;
    const struct sg_qmp_span *sp = &top->m[SG_TOP_ID];
    size_t cut_off, cut_len;
    const char *pre = "", *post = "";
    if (sp->present && id) {          /* replace the value only */
        cut_off = sp->off;
        cut_len = sp->len;
    } else if (sp->present) {         /* drop the member */
        cut_off = sp->cut_off;
        cut_len = sp->cut_len;
        id_len = 0;
    } else if (id) {                  /* insert it first: {"id": X, ...} */
        cut_off = top->insert_at;
        cut_len = 0;
        pre = "\"id\": ";
        post = top->members ? ", " : "";
    } else {
        cut_off = len;
        cut_len = 0;
        id_len = 0;
    }
    size_t lpre = strlen(pre), lpost = strlen(post);
    size_t n = len - cut_len + lpre + id_len + lpost;
    char *out = malloc(n ? n : 1);
    if (!out)
        return NULL;
    char *w = out;
    memcpy(w, buf, cut_off);
    w += cut_off;
    memcpy(w, pre, lpre);
    w += lpre;
    if (id_len)
        memcpy(w, id, id_len);
    w += id_len;
    memcpy(w, post, lpost);
    w += lpost;
    memcpy(w, buf + cut_off + cut_len, len - cut_off - cut_len);
    *out_len = n;
    return out;
}

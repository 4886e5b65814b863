/* Readline completion over the command table and the snapshot cache. */
#include <stdlib.h>
#include <string.h>

#include "hmp_engine.h"

struct cands {
    char **v;
    size_t n, cap;
};

static void add(struct cands *c, const char *s, const char *word)
{
    if (strncmp(s, word, strlen(word)) != 0)
        return;
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->v[i], s) == 0)
            return;
    if (c->n + 2 > c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        char **v = realloc(c->v, cap * sizeof *v);
        if (!v)
            return;
        c->v = v;
        c->cap = cap;
    }
    char *d = strdup(s);
    if (!d)
        return;
    c->v[c->n++] = d;
    c->v[c->n] = NULL;
}

static void add_names(struct cands *c, bool is_info, const char *word)
{
    unsigned n;
    const struct sg_hmp_cmd_def *t = sg_hmp_cmd_table(is_info, &n);
    for (unsigned i = 0; i < n; i++) {
        char name[32];
        sg_hmp_cmd_primary(&t[i], name, sizeof name);
        add(c, name, word);
    }
}

static bool needs_quotes(const char *t)
{
    return !*t || strpbrk(t, " \t\n\r\v\f\"\\");
}

char *sg_hmp_quote_name(const char *name, bool open)
{
    if (!needs_quotes(name))
        return strdup(name);
    struct sg_strbuf q = {0};
    sg_sb_putc(&q, '"');
    for (const char *p = name; *p; p++) {
        if (*p == '"' || *p == '\\')
            sg_sb_putc(&q, '\\');
        if (*p == '\n')
            sg_sb_puts(&q, "\\n");
        else if (*p == '\r')
            sg_sb_puts(&q, "\\r");
        else
            sg_sb_putc(&q, *p);
    }
    if (!open)
        sg_sb_putc(&q, '"');
    char *r = strdup(sg_sb_str(&q));
    sg_sb_free(&q);
    return r;
}

/* A tag the parser would split or unescape is offered in quotes, so that
 * accepting the completion gives a line that names it. */
static void add_list(struct cands *c, char **list, const char *word)
{
    for (size_t i = 0; list && list[i]; i++) {
        char *q = sg_hmp_quote_name(list[i], false);
        if (q)
            add(c, q, word);
        free(q);
    }
}

/* Where the NAME argument of a snapshot command begins in buf[0..point),
 * and which list completes it; false when the cursor is elsewhere. */
static bool name_argument(struct sg_hmp *h, const char *buf, size_t point, size_t *arg_start,
                          char ***list)
{
    size_t i = 0;
    while (i < point && (buf[i] == ' ' || buf[i] == '\t'))
        i++;
    size_t b = i;
    while (i < point && buf[i] != ' ' && buf[i] != '\t')
        i++;
    if (i == point)
        return false;   /* still in the command word */
    size_t n = i - b;
    bool save = n == 6 && memcmp(buf + b, "savevm", 6) == 0;
    bool named = save || (n == 6 && memcmp(buf + b, "loadvm", 6) == 0) ||
                 (n == 5 && memcmp(buf + b, "delvm", 5) == 0);
    if (!named)
        return false;
    while (i < point && (buf[i] == ' ' || buf[i] == '\t'))
        i++;
    *list = h->tags;
    if (!save && i + 2 <= point && buf[i] == '-' && (buf[i + 1] == 't' || buf[i + 1] == 'i')) {
        if (i + 2 == point)
            return false;   /* "-t" itself is being typed */
        if (buf[i + 2] == ' ' || buf[i + 2] == '\t') {
            if (buf[i + 1] == 'i')
                *list = h->ids;
            i += 2;
            while (i < point && (buf[i] == ' ' || buf[i] == '\t'))
                i++;
        }
    }
    *arg_start = i;
    return true;
}

/* The raw text of a partly typed argument: an opening quote and the
 * parser's escapes removed. */
static void unquote_prefix(const char *s, size_t n, struct sg_strbuf *out)
{
    size_t i = 0;
    bool quoted = n && s[0] == '"';
    if (quoted)
        i++;
    for (; i < n; i++) {
        char ch = s[i];
        if (quoted && ch == '\\' && i + 1 < n) {
            ch = s[++i];
            ch = ch == 'n' ? '\n' : ch == 'r' ? '\r' : ch;
        }
        sg_sb_putc(out, ch);
    }
}

char **sg_hmp_complete_name(struct sg_hmp *h, const char *buf, size_t point, size_t *arg_start)
{
    size_t len = strlen(buf);
    char **list = NULL;
    if (point > len)
        point = len;
    if (!name_argument(h, buf, point, arg_start, &list))
        return NULL;
    struct sg_strbuf typed = {0};
    unquote_prefix(buf + *arg_start, point - *arg_start, &typed);
    struct cands c = {0};
    for (size_t i = 0; list && list[i]; i++)
        add(&c, list[i], sg_sb_str(&typed));
    sg_sb_free(&typed);
    return c.v;
}

char **sg_hmp_complete(struct sg_hmp *h, const char *buf, size_t start, const char *word)
{
    struct cands c = {0};
    char tok[3][64] = {{0}};
    unsigned ntok = 0;
    size_t len = strlen(buf);
    if (start > len)
        start = len;
    for (size_t i = 0; i < start;) {
        while (i < start && (buf[i] == ' ' || buf[i] == '\t'))
            i++;
        size_t b = i;
        while (i < start && buf[i] != ' ' && buf[i] != '\t')
            i++;
        if (i > b && ntok < 3) {
            size_t n = i - b < 63 ? i - b : 63;
            memcpy(tok[ntok], buf + b, n);
            tok[ntok][n] = 0;
            ntok++;
        } else if (i > b) {
            ntok++;
        }
    }
    if (!word)
        word = "";
    if (ntok == 0) {
        add_names(&c, false, word);
    } else if (ntok == 1 && strcmp(tok[0], "info") == 0) {
        add_names(&c, true, word);
    } else if (ntok == 1 && (strcmp(tok[0], "help") == 0 || strcmp(tok[0], "?") == 0)) {
        add_names(&c, false, word);
    } else if (ntok == 1 && strcmp(tok[0], "savevm") == 0) {
        add_list(&c, h->tags, word);
    } else if (strcmp(tok[0], "loadvm") == 0 || strcmp(tok[0], "delvm") == 0) {
        if (ntok == 1) {
            add(&c, "-t", word);
            add(&c, "-i", word);
            add_list(&c, h->tags, word);
        } else if (ntok == 2 && strcmp(tok[1], "-i") == 0) {
            add_list(&c, h->ids, word);
        } else if (ntok == 2 && strcmp(tok[1], "-t") == 0) {
            add_list(&c, h->tags, word);
        }
    }
    return c.v;
}

void sg_hmp_strv_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

static char **collect(const struct sg_hmp_disks *d, bool ids)
{
    struct cands c = {0};
    for (size_t i = 0; i < d->n; i++) {
        if (!sg_hmp_disk_in_snapshot(&d->disk[i]))
            continue;
        for (size_t j = 0; j < d->disk[i].nsnaps; j++)
            add(&c, ids ? d->disk[i].snaps[j].id : d->disk[i].snaps[j].tag, "");
    }
    return c.v;
}

void sg_hmp_cache_update(struct sg_hmp *h, const struct sg_hmp_disks *d)
{
    sg_hmp_cache_clear(h);
    h->tags = collect(d, false);
    h->ids = collect(d, true);
}

void sg_hmp_cache_clear(struct sg_hmp *h)
{
    sg_hmp_strv_free(h->tags);
    sg_hmp_strv_free(h->ids);
    h->tags = h->ids = NULL;
}

/* Follows monitor/hmp.c of QEMU 7.2 where its behaviour is visible: command
 * names end at white space or '/', arguments are read by get_str (strings)
 * and get_expr (integers), and the error texts are those QEMU prints
 * (learnt by running it). */
#include "hmp_parse.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sg_hmp.h"
#include "sg_q72.h"

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static const char *skip_spaces(const char *p)
{
    while (is_space(*p))
        p++;
    return p;
}

/* Copies a command name (up to white space or '/') into buf; returns the
 * position after it. */
static const char *get_command_name(const char *p, char *buf, size_t n)
{
    const char *start = p;
    while (*p && *p != '/' && !is_space(*p))
        p++;
    size_t len = (size_t)(p - start);
    if (len >= n)
        len = n - 1;
    memcpy(buf, start, len);
    buf[len] = 0;
    return p;
}

/* QEMU's get_str: returns NULL on failure ("string expected"). */
static const char *get_str(const char *p, char *buf, size_t n, bool *quoted)
{
    size_t len = 0;
    p = skip_spaces(p);
    *quoted = false;
    if (!*p)
        return NULL;
    if (*p == '"') {
        *quoted = true;
        p++;
        while (*p && *p != '"') {
            char c = *p++;
            if (c == '\\') {
                c = *p++;
                switch (c) {
                case 'n': c = '\n'; break;
                case 'r': c = '\r'; break;
                case '\\': case '\'': case '"': break;
                default: return NULL;  /* includes a backslash at the end */
                }
            }
            if (len + 1 < n)
                buf[len++] = c;
        }
        if (*p != '"')
            return NULL;
        p++;
    } else {
        while (*p && !is_space(*p)) {
            if (len + 1 < n)
                buf[len++] = *p;
            p++;
        }
    }
    buf[len] = 0;
    return p;
}

/* The reply to a line QEMU refuses: `first`, then the hint. */
static enum sg_hmp_parse_status fail_text(struct sg_hmp_parsed *out, const char *first,
                                          const char *cmdstart, const char *cmdend)
{
    /* QEMU names the command as typed in the hint ("help q", "help info
     * snapshots"), but by its table name in the message ("quit|q"). */
    snprintf(out->error, sizeof out->error, "%s\nTry \"help %.*s\" for more information\n", first,
             (int)(cmdend - cmdstart), cmdstart);
    return SG_HMP_PARSE_ERROR;
}

static enum sg_hmp_parse_status fail(struct sg_hmp_parsed *out, const char *what,
                                     const char *cmdstart, const char *cmdend)
{
    char first[256];
    /* `what` is one of the catalogue's "%s: ..." formats. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(first, sizeof first, what, out->def->names);
#pragma GCC diagnostic pop
    return fail_text(out, first, cmdstart, cmdend);
}

/* ---- the integer arguments: QEMU's expressions ---------------------------
 * As QEMU 7.2's monitor reads them (learnt by running it: see
 * tests/integration/vmm/test_vmm_pmemsave.py):
 *   sum   := logic { ('+' | '-') logic }
 *   logic := prod { ('&' | '|' | '^') prod }
 *   prod  := unary { ('*' | '/' | '%') unary }
 *   unary := ('+' | '-' | '~') unary | '(' sum ')' | 'C' | $REGISTER | NUMBER
 * NUMBER as strtoull with base 0 (0x hex, 0 octal), white space skipped
 * after every token, 64-bit two's complement arithmetic, '/' and '%'
 * signed.  An expression ends at the first character that continues none
 * of these, so "16 /tmp/x" is 16 divided by "tmp" (QEMU's own trap: a
 * FILE after a SIZE must not start with '/' unless quoted).  Registers are
 * the back end's (the caller forwards the line); nesting is bounded. */
enum { EXPR_DEPTH_MAX = 512 };

struct expr {
    const char *p;
    bool failed;
    char msg[96];       /* QEMU's text for the first error */
    bool reg;           /* stopped at a $register (msg empty) */
    char reg_name[120];
    int depth;
};

static void ex_fail(struct expr *e, const char *msg)
{
    if (e->failed)
        return;
    e->failed = true;
    snprintf(e->msg, sizeof e->msg, "%s", msg);
}

static void ex_next(struct expr *e)
{
    if (*e->p)
        e->p = skip_spaces(e->p + 1);
}

static uint64_t ex_sum(struct expr *e);

static uint64_t ex_number(struct expr *e)
{
    char *end;
    errno = 0;
    uint64_t n = strtoull(e->p, &end, 0);
    if (errno == ERANGE) {
        ex_fail(e, SG_Q72_EXPR_TOO_LARGE);
    } else if (end == e->p) {
        char m[64];
        snprintf(m, sizeof m, SG_Q72_EXPR_CHAR, *e->p);
        ex_fail(e, m);
    } else {
        e->p = skip_spaces(end);
    }
    return n;
}

static uint64_t ex_unary(struct expr *e)
{
    if (e->failed)
        return 0;
    if (++e->depth > EXPR_DEPTH_MAX) {
        ex_fail(e, "expression nested too deeply");
        return 0;
    }
    uint64_t n = 0;
    switch (*e->p) {
    case '+':
        ex_next(e);
        n = ex_unary(e);
        break;
    case '-':
        ex_next(e);
        n = 0 - ex_unary(e);
        break;
    case '~':
        ex_next(e);
        n = ~ex_unary(e);
        break;
    case '(':
        ex_next(e);
        n = ex_sum(e);
        if (*e->p != ')')
            ex_fail(e, SG_Q72_EXPR_PAREN);
        ex_next(e);
        break;
    case '\'':
        e->p++;
        if (!*e->p) {
            ex_fail(e, SG_Q72_EXPR_CHAR_CONST);
            break;
        }
        n = (uint64_t)(int64_t)(signed char)*e->p++;   /* QEMU's char is signed */
        if (*e->p != '\'') {
            ex_fail(e, SG_Q72_EXPR_QUOTE);
            break;
        }
        ex_next(e);
        break;
    case '$': {
        size_t len = 0;
        e->p++;
        while ((*e->p >= 'a' && *e->p <= 'z') || (*e->p >= 'A' && *e->p <= 'Z') ||
               (*e->p >= '0' && *e->p <= '9') || *e->p == '_' || *e->p == '.') {
            if (len + 1 < sizeof e->reg_name)
                e->reg_name[len++] = *e->p;
            e->p++;
        }
        e->reg_name[len] = 0;
        e->reg = true;
        e->failed = true;
        break;
    }
    case '\0':
        ex_fail(e, SG_Q72_EXPR_END);
        break;
    default:
        n = ex_number(e);
        break;
    }
    e->depth--;
    return n;
}

static uint64_t ex_apply(struct expr *e, char op, uint64_t v, uint64_t w)
{
    switch (op) {
    case '+': return v + w;
    case '-': return v - w;
    case '&': return v & w;
    case '|': return v | w;
    case '^': return v ^ w;
    case '*': return v * w;
    default: break;
    }
    if (w == 0) {
        ex_fail(e, SG_Q72_EXPR_DIV_ZERO);
        return 0;
    }
    if ((int64_t)w == -1)
        return op == '/' ? 0 - v : 0;   /* INT64_MIN / -1 wraps (QEMU would trap) */
    int64_t a = (int64_t)v, b = (int64_t)w;
    return (uint64_t)(op == '/' ? a / b : a % b);
}

/* The binary levels, loosest first: sum, logic, prod; then unary. */
static const char *const ex_ops[] = { "+-", "&|^", "*/%" };

static uint64_t ex_level(struct expr *e, unsigned level)
{
    if (level == sizeof ex_ops / sizeof ex_ops[0])
        return ex_unary(e);
    uint64_t v = ex_level(e, level + 1);
    while (!e->failed && *e->p && strchr(ex_ops[level], *e->p)) {
        char op = *e->p;
        ex_next(e);
        uint64_t w = ex_level(e, level + 1);
        if (e->failed)
            break;
        v = ex_apply(e, op, v, w);
    }
    return v;
}

static uint64_t ex_sum(struct expr *e)
{
    return ex_level(e, 0);
}

/* One integer argument from p (QEMU's get_expr); NULL: e has the error. */
static const char *get_expr(const char *p, uint64_t *val, struct expr *e)
{
    memset(e, 0, sizeof *e);
    e->p = skip_spaces(p);
    *val = ex_sum(e);
    return e->failed ? NULL : e->p;
}

/* pmemsave's ADDR SIZE FILE. */
static enum sg_hmp_parse_status parse_addr_size_file(const char *p, struct sg_hmp_parsed *out,
                                                     const char *start, const char *cmdend,
                                                     const char **rest)
{
    struct expr e;
    uint64_t size = 0;
    const char *q = get_expr(p, &out->addr, &e);
    if (q)
        q = get_expr(q, &size, &e);
    if (!q && e.reg) {
        /* The vCPU's registers are the back end's to read. */
        snprintf(out->reg, sizeof out->reg, "$%s", e.reg_name);
        snprintf(out->unknown, sizeof out->unknown, "%.*s", (int)(cmdend - start), start);
        return SG_HMP_PARSE_UNKNOWN;
    }
    if (!q)
        return fail_text(out, e.msg, start, cmdend);
    if (size >> 32) {
        char m[160];
        snprintf(m, sizeof m, SG_Q72_INT_32BIT, out->def->names);
        return fail_text(out, m, start, cmdend);
    }
    out->size = (uint32_t)size;
    bool quoted;
    q = get_str(q, out->name, sizeof out->name, &quoted);
    if (!q)
        return fail(out, SG_Q72_STRING_EXPECTED, start, cmdend);
    out->has_name = true;
    *rest = q;
    return SG_HMP_PARSE_OK;
}

enum sg_hmp_parse_status sg_hmp_parse(const char *line, int profile, struct sg_hmp_parsed *out)
{
    memset(out, 0, sizeof *out);
    const char *start = skip_spaces(line);
    if (!*start)
        return SG_HMP_PARSE_EMPTY;
    char name[128];
    const char *p = get_command_name(start, name, sizeof name);
    const struct sg_hmp_cmd_def *d = sg_hmp_cmd_find(name, false);
    if (!d) {
        snprintf(out->unknown, sizeof out->unknown, "%s", name);
        return SG_HMP_PARSE_UNKNOWN;
    }
    if (d->op == SG_HMP_OP_INFO) {
        const char *q = skip_spaces(p);
        if (*q) {
            char sub[128];
            p = get_command_name(q, sub, sizeof sub);
            const struct sg_hmp_cmd_def *s = sg_hmp_cmd_find(sub, true);
            if (!s || (profile == SG_HMP_PROFILE_QEMU72 && s->snapgate_only)) {
                snprintf(out->unknown, sizeof out->unknown, "%.*s", (int)(p - start), start);
                return SG_HMP_PARSE_UNKNOWN;
            }
            d = s;
        }
    }
    out->def = d;
    const char *cmdend = p;
    bool quoted;
    switch (d->args) {
    case SG_HMP_ARGS_NONE:
        break;
    case SG_HMP_ARGS_REST: {
        const char *q = get_str(p, out->topic, sizeof out->topic, &quoted);
        if (q)
            q = get_str(q, out->subtopic, sizeof out->subtopic, &quoted);
        return SG_HMP_PARSE_OK;   /* help ignores anything else, as QEMU */
    }
    case SG_HMP_ARGS_OPT_NAME:
        if (!*skip_spaces(p))
            break;
        p = get_str(p, out->name, sizeof out->name, &quoted);
        if (!p)
            return fail(out, SG_Q72_STRING_EXPECTED, start, cmdend);
        out->has_name = true;
        break;
    case SG_HMP_ARGS_ADDR_SIZE_FILE: {
        enum sg_hmp_parse_status st = parse_addr_size_file(p, out, start, cmdend, &p);
        if (st != SG_HMP_PARSE_OK)
            return st;
        break;
    }
    case SG_HMP_ARGS_NAME:
        p = skip_spaces(p);
        if (profile != SG_HMP_PROFILE_QEMU72 && p[0] == '-' && (p[1] == 't' || p[1] == 'i') &&
            (is_space(p[2]) || !p[2])) {
            out->flag = p[1];
            p += 2;
        }
        p = get_str(p, out->name, sizeof out->name, &quoted);
        if (!p)
            return fail(out, SG_Q72_STRING_EXPECTED, start, cmdend);
        out->has_name = true;
        break;
    }
    if (*skip_spaces(p)) {
        /* `info block -v drive0` and the like are QEMU's: leave them to the
         * back end's own monitor rather than refusing them. */
        if (d->op == SG_HMP_OP_INFO_BLOCK) {
            snprintf(out->unknown, sizeof out->unknown, "%.*s", (int)(cmdend - start), start);
            return SG_HMP_PARSE_UNKNOWN;
        }
        return fail(out, SG_Q72_EXTRANEOUS, start, cmdend);
    }
    return SG_HMP_PARSE_OK;
}

/* Follows monitor/hmp.c of QEMU 7.2 where its behaviour is visible: command
 * names end at white space or '/', arguments are read by get_str, and the
 * error texts are those QEMU prints (learnt by running it). */
#include "hmp_parse.h"

#include <stdio.h>
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

static enum sg_hmp_parse_status fail(struct sg_hmp_parsed *out, const char *what,
                                     const char *cmdstart, const char *cmdend)
{
    char first[256];
    /* `what` is one of the catalogue's "%s: ..." formats. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(first, sizeof first, what, out->def->names);
#pragma GCC diagnostic pop
    /* QEMU names the command as typed in the hint ("help q", "help info
     * snapshots"), but by its table name in the message ("quit|q"). */
    snprintf(out->error, sizeof out->error, "%s\nTry \"help %.*s\" for more information\n", first,
             (int)(cmdend - cmdstart), cmdstart);
    return SG_HMP_PARSE_ERROR;
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

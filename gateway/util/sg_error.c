#include "sg_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

__attribute__((format(printf, 3, 0)))
static void vset(struct sg_error *err, const char *cls, const char *fmt, va_list ap)
{
    if (!err || err->set)
        return;
    err->set = true;
    snprintf(err->cls, sizeof err->cls, "%s", cls);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
}

void sg_error_set(struct sg_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(err, SG_ERR_GENERIC, fmt, ap);
    va_end(ap);
}

void sg_error_set_class(struct sg_error *err, const char *cls, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(err, cls, fmt, ap);
    va_end(ap);
}

void sg_error_set_errno(struct sg_error *err, int errnum, const char *fmt, ...)
{
    va_list ap;
    if (!err || err->set)
        return;
    va_start(ap, fmt);
    vset(err, SG_ERR_GENERIC, fmt, ap);
    va_end(ap);
    err->errnum = errnum;
    size_t n = strlen(err->msg);
    snprintf(err->msg + n, sizeof err->msg - n, ": %s", strerror(errnum));
}

void sg_error_prefix(struct sg_error *err, const char *fmt, ...)
{
    char prefix[512], old[sizeof err->msg];
    va_list ap;
    if (!err || !err->set)
        return;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* Truncation is fine for a message; build it by hand so the compiler
     * does not have to prove the lengths. */
    size_t np = strlen(prefix), no = strlen(old), cap = sizeof err->msg - 1, n = 0;
    memcpy(err->msg, prefix, np < cap ? np : cap);
    n = np < cap ? np : cap;
    for (const char *s = ": "; *s && n < cap; s++)
        err->msg[n++] = *s;
    size_t take = no < cap - n ? no : cap - n;
    memcpy(err->msg + n, old, take);
    err->msg[n + take] = 0;
}

void sg_error_clear(struct sg_error *err)
{
    if (err)
        memset(err, 0, sizeof *err);
}

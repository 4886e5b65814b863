/* trace.c: SNAPGATE_VMM_TRACE (trace.h says what it prints). */
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "trace.h"
#include "vmm.h"   /* sg_now_ns */

/* The VMM's one monotonic clock (here: vmstate.c's tests link trace.c alone). */
uint64_t sg_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static atomic_int trace_on = -1;

/* This thread's span.  The summary line is kept short of stdio's own
 * buffering: one fprintf per line, so lines of different threads do not
 * interleave. */
static _Thread_local struct {
    const char *name;       /* NULL: no span open */
    uint64_t t0, last;
    size_t len;
    char line[768];
} span;

bool sg_trace_on(void)
{
    int on = atomic_load_explicit(&trace_on, memory_order_relaxed);
    if (on < 0) {
        on = getenv("SNAPGATE_VMM_TRACE") != NULL;
        atomic_store_explicit(&trace_on, on, memory_order_relaxed);
    }
    return on;
}

/* Appends " PHASE MS" to the summary, or its head when phase is NULL. */
static void summary_add(const char *phase, double ms)
{
    if (span.len >= sizeof(span.line))
        return;
    char *p = span.line + span.len;
    size_t room = sizeof(span.line) - span.len;
    int n = phase ? snprintf(p, room, " %s %.3f", phase, ms)
                  : snprintf(p, room, "live: %s pause:", span.name);
    if (n > 0)
        span.len += (size_t)n;
}

void sg_trace_begin(const char *name)
{
    if (!sg_trace_on())
        return;
    span.name = name;
    span.t0 = span.last = sg_now_ns();
    span.len = 0;
    summary_add(NULL, 0);
}

void sg_trace_mark(const char *phase)
{
    if (!sg_trace_on() || !span.name)
        return;
    uint64_t now = sg_now_ns();
    double ms = (double)(now - span.last) / 1e6;
    span.last = now;
    char what[96];
    snprintf(what, sizeof(what), "%s: %s", span.name, phase);
    fprintf(stderr, "trace: %-28s %8.3f ms\n", what, ms);
    summary_add(phase, ms);
}

void sg_trace_end(bool summary)
{
    if (!sg_trace_on() || !span.name)
        return;
    if (summary) {
        if (span.len >= sizeof(span.line))
            span.len = sizeof(span.line) - 1;
        span.line[span.len] = 0;
        fprintf(stderr, "%s | total %.3f ms\n", span.line, (double)(sg_now_ns() - span.t0) / 1e6);
    }
    span.name = NULL;
}

void sg_trace_printf(const char *fmt, ...)
{
    if (!sg_trace_on())
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", buf);
}

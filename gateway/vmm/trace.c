/* trace.c: SNAPGATE_VMM_TRACE (trace.h says what it prints). */
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
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

/* This thread's span.  Its phases are kept and printed when it ends:
 * a line written in the pause cost 20-50 us each in the kvm bed (stderr is
 * unbuffered), 0.5-1.2 ms of a load's trace.  One fprintf per line, so
 * lines of different threads do not interleave. */
#define MAX_PHASES 48
static _Thread_local struct {
    const char *name;       /* NULL: no span open */
    uint64_t t0, last;
    long minflt0, majflt0;   /* this thread's page faults at the begin */
    int n;
    struct { const char *phase; double ms; } ph[MAX_PHASES];
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

/* The "trace:" line of each phase, then with `summary` the "live:" line. */
static void flush_span(bool summary)
{
    char line[1024];
    size_t len = (size_t)snprintf(line, sizeof(line), "live: %s pause:", span.name);
    for (int i = 0; i < span.n; i++) {
        char what[96];
        snprintf(what, sizeof(what), "%s: %s", span.name, span.ph[i].phase);
        fprintf(stderr, "trace: %-28s %8.3f ms\n", what, span.ph[i].ms);
        if (len < sizeof(line))
            len += (size_t)snprintf(line + len, sizeof(line) - len, " %s %.3f", span.ph[i].phase, span.ph[i].ms);
    }
    if (summary) {
        struct rusage ru = { 0 };
        getrusage(RUSAGE_THREAD, &ru);
        fprintf(stderr, "%.*s | total %.3f ms, %ld page faults (%ld major)\n",
                (int)(len < sizeof(line) ? len : sizeof(line) - 1), line,
                (double)(span.last - span.t0) / 1e6, ru.ru_minflt - span.minflt0,
                ru.ru_majflt - span.majflt0);
    }
    span.n = 0;
}

void sg_trace_begin(const char *name)
{
    if (!sg_trace_on())
        return;
    if (span.name)
        flush_span(false);   /* a span left open: its phases still show */
    span.name = name;
    span.t0 = span.last = sg_now_ns();
    span.n = 0;
    struct rusage ru = { 0 };
    getrusage(RUSAGE_THREAD, &ru);
    span.minflt0 = ru.ru_minflt;
    span.majflt0 = ru.ru_majflt;
}

void sg_trace_mark(const char *phase)
{
    if (!sg_trace_on() || !span.name)
        return;
    uint64_t now = sg_now_ns();
    if (span.n < MAX_PHASES) {
        span.ph[span.n].phase = phase;
        span.ph[span.n].ms = (double)(now - span.last) / 1e6;
        span.n++;
    }
    span.last = now;
}

void sg_trace_end(bool summary)
{
    if (!sg_trace_on() || !span.name)
        return;
    flush_span(summary);   /* the total: to the last phase marked */
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

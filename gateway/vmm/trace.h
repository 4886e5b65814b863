/* trace.h: SNAPGATE_VMM_TRACE (any value), the timing of a snapshot job's
 * pause on stderr (how the figures of gateway/vmm/README.md and
 * bench/README.md section 6 were found; bench/bench_linux.py prints these
 * lines with each run).  One mechanism for two kinds of line:
 *
 *   trace: save: capture                 0.512 ms      (one per phase)
 *   live: save pause: kick 0.021 parked 0.300 ... | total 7.700 ms, 3 page faults (0 major)
 *                                 (one per pause; the faults: of this thread, to the end)
 *
 * A span belongs to the thread that began it: sg_trace_begin opens it,
 * sg_trace_mark ends the phase that ran since the previous mark (kept:
 * the lines are printed when the span ends, nothing is written in the
 * pause).  Marks on a
 * thread with no span open are ignored (sg_vm_pause is also used outside
 * snapshot jobs).
 * sg_trace_end prints the span's "trace:" lines and, with true, its
 * "live:" summary (a pause that happened; false: a failed job), whose
 * total runs to the last mark.
 * The variable is read once; when it is unset a mark costs one load. */
#ifndef SG_VMM_TRACE_H
#define SG_VMM_TRACE_H

#include <stdbool.h>

bool sg_trace_on(void);
/* `name` (a string literal: kept) prefixes the span's lines. */
void sg_trace_begin(const char *name);
void sg_trace_mark(const char *phase);
void sg_trace_end(bool summary);
/* One free line, prefix included ("trace: wp: ...", "live: ..."):
 * statistics, why a mechanism was not used. */
void sg_trace_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif

/* bench_util.h: the few helpers every bench-* client shares (clock, stats,
 * one JSON result line on stdout that bench/bench.py reads). */
#ifndef SG_BENCH_UTIL_H
#define SG_BENCH_UTIL_H

#include <stddef.h>

double sg_bench_now(void);                    /* CLOCK_MONOTONIC, seconds */

struct sg_bench_stats {
    size_t n;
    double min, p50, p99, max, mean;          /* same unit as the samples */
};
/* Sorts samples in place and fills *st (all zero when n == 0). */
void sg_bench_stats(double *samples, size_t n, struct sg_bench_stats *st);
/* Prints {"name": ..., "n": ..., "p50-us": ... } from samples in seconds. */
void sg_bench_print_us(const char *name, const struct sg_bench_stats *st, size_t missing);

#endif

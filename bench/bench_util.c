/* bench_util.c: clock and percentile helpers of the bench-* clients. */
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

double sg_bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile: the sample itself, never an interpolation, so a
 * p99 over 100 samples is a latency some call really had. */
static double rank(const double *s, size_t n, double p)
{
    size_t k = (size_t)(p * n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return s[k - 1];
}

void sg_bench_stats(double *samples, size_t n, struct sg_bench_stats *st)
{
    *st = (struct sg_bench_stats){ .n = n };
    if (n == 0)
        return;
    qsort(samples, n, sizeof *samples, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += samples[i];
    st->min = samples[0];
    st->max = samples[n - 1];
    st->p50 = rank(samples, n, 0.50);
    st->p99 = rank(samples, n, 0.99);
    st->mean = sum / n;
}

void sg_bench_print_us(const char *name, const struct sg_bench_stats *st, size_t missing)
{
    printf("{\"name\": \"%s\", \"n\": %zu, \"missing\": %zu, \"min-us\": %.1f, "
           "\"p50-us\": %.1f, \"p99-us\": %.1f, \"max-us\": %.1f, \"mean-us\": %.1f}\n",
           name, st->n, missing, st->min * 1e6, st->p50 * 1e6, st->p99 * 1e6,
           st->max * 1e6, st->mean * 1e6);
    fflush(stdout);
}

/* bench-qcow2-randw: random 4 KiB writes through snapgate's own qcow2 engine
 * (libsgblock), the counterpart of a qemu-io script of `write` commands on
 * the same kind of image.  Offsets come from a fixed LCG so the qemu-io side
 * (bench/bench.py) can replay exactly the same sequence; the timed section is
 * the writes plus one flush at the end, like qemu-io with -t writeback.
 *
 *   bench-qcow2-randw --image FILE [--count N] [--span BYTES] [--seed S]
 *                     [--bs BYTES] [--print-offsets]
 * Prints {"name": "qcow2-randw", "count", "seconds", "iops", "mb-s"}. */
#include "bench_util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"

/* Knuth's MMIX LCG; bench.py implements the same one to replay offsets. */
static uint64_t lcg_next(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

int main(int argc, char **argv)
{
    const char *image = NULL;
    long count = 10000;
    uint64_t span = 1ull << 30, seed = 1, bs = 4096;
    int print_offsets = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--image") && v)
            image = v, i++;
        else if (!strcmp(a, "--count") && v)
            count = strtol(v, NULL, 10), i++;
        else if (!strcmp(a, "--span") && v)
            span = strtoull(v, NULL, 10), i++;
        else if (!strcmp(a, "--seed") && v)
            seed = strtoull(v, NULL, 10), i++;
        else if (!strcmp(a, "--bs") && v)
            bs = strtoull(v, NULL, 10), i++;
        else if (!strcmp(a, "--print-offsets"))
            print_offsets = 1;
        else {
            fprintf(stderr, "usage: bench-qcow2-randw --image FILE [--count N] [--span BYTES] "
                            "[--seed S] [--bs BYTES] [--print-offsets]\n");
            return 1;
        }
    }
    if (count <= 0 || bs == 0 || bs > (1u << 20) || span < bs) {
        fprintf(stderr, "bench-qcow2-randw: bad --count/--bs/--span\n");
        return 1;
    }
    uint64_t slots = span / bs, s = seed;
    if (print_offsets) {
        for (long i = 0; i < count; i++)
            printf("%llu\n", (unsigned long long)(lcg_next(&s) % slots * bs));
        return 0;
    }
    if (!image) {
        fprintf(stderr, "bench-qcow2-randw: --image FILE needed\n");
        return 1;
    }
    struct sg_error err = { 0 };
    struct sg_block *b = sg_block_open(image, "qcow2", 0, &err);
    if (!b) {
        fprintf(stderr, "bench-qcow2-randw: %s\n", err.msg);
        return 1;
    }
    if (sg_block_size(b) < span) {
        fprintf(stderr, "bench-qcow2-randw: image smaller than --span\n");
        sg_block_close(b);
        return 1;
    }
    unsigned char *buf = malloc(bs);
    if (!buf) {
        sg_block_close(b);
        return 1;
    }
    for (uint64_t i = 0; i < bs; i++)
        buf[i] = (unsigned char)(i * 131 + 7);
    int rc = 0;
    double t = sg_bench_now();
    for (long i = 0; i < count; i++) {
        uint64_t off = lcg_next(&s) % slots * bs;
        buf[0] = (unsigned char)i;    /* every write carries different bytes */
        if (!sg_block_write(b, off, buf, bs, &err)) {
            fprintf(stderr, "bench-qcow2-randw: write %ld: %s\n", i, err.msg);
            rc = 1;
            break;
        }
    }
    if (!rc && !sg_block_flush(b, &err)) {
        fprintf(stderr, "bench-qcow2-randw: flush: %s\n", err.msg);
        rc = 1;
    }
    t = sg_bench_now() - t;
    sg_block_close(b);
    free(buf);
    if (!rc)
        printf("{\"name\": \"qcow2-randw\", \"count\": %ld, \"seconds\": %.6f, "
               "\"iops\": %.0f, \"mb-s\": %.2f}\n",
               count, t, count / t, count * (double)bs / t / 1e6);
    return rc;
}

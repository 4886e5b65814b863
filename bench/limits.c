/* bench-limits: the machine's own limits, measured in the same run as the
 * snapshot benchmarks so each figure there can be read as a fraction of them:
 * memcpy bandwidth, sequential write to the benchmark's filesystem without and
 * with a final fsync, and with an fsync every 1 MiB.
 *
 *   bench-limits [--size MiB] [--dir DIR] [--json]
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double bench_memcpy(size_t size)
{
    char *a = malloc(size), *b = malloc(size);
    if (!a || !b) {
        free(a);
        free(b);
        return -1;
    }
    memset(a, 0x5a, size);
    memset(b, 0, size);             /* fault the pages in before timing */
    double best = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        double t = now();
        memcpy(b, a, size);
        t = now() - t;
        if (t < best)
            best = t;
        a[rep] ^= b[size - 1 - rep];  /* keep the copy observable */
    }
    free(a);
    free(b);
    return size / best / 1e9;
}

/* mode 0: no fsync, 1: one fsync at the end, 2: fsync every MiB */
static double bench_write(const char *dir, size_t size, int mode)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/bench-limits.%d.tmp", dir, (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        fprintf(stderr, "bench-limits: %s: %s\n", path, strerror(errno));
        return -1;
    }
    unlink(path);
    const size_t chunk = 1 << 20;
    char *buf = malloc(chunk);
    if (!buf) {
        close(fd);
        return -1;
    }
    for (size_t i = 0; i < chunk; i++)
        buf[i] = (char)(i * 2654435761u >> 24);
    double t = now();
    for (size_t done = 0; done < size; done += chunk) {
        if (write(fd, buf, chunk) != (ssize_t)chunk) {
            fprintf(stderr, "bench-limits: write: %s\n", strerror(errno));
            free(buf);
            close(fd);
            return -1;
        }
        if (mode == 2 && fdatasync(fd) < 0)
            break;
    }
    if (mode >= 1)
        fdatasync(fd);
    t = now() - t;
    free(buf);
    close(fd);
    return size / t / 1e9;
}

int main(int argc, char **argv)
{
    size_t mib = 256;
    const char *dir = ".";
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--size") && i + 1 < argc)
            mib = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else {
            fprintf(stderr, "usage: bench-limits [--size MiB] [--dir DIR] [--json]\n");
            return strcmp(argv[i], "--help") ? 1 : 0;
        }
    }
    if (mib == 0)
        mib = 1;
    size_t size = mib << 20;
    double mc = bench_memcpy(size);
    double w0 = bench_write(dir, size, 0);
    double w1 = bench_write(dir, size, 1);
    double w2 = bench_write(dir, size / 4 ? size / 4 : (1 << 20), 2);
    if (json) {
        printf("{\"size-mib\": %zu, \"memcpy-gbs\": %.3f, \"write-gbs\": %.3f, "
               "\"write-fsync-end-gbs\": %.3f, \"write-fsync-every-mib-gbs\": %.3f}\n",
               mib, mc, w0, w1, w2);
    } else {
        printf("machine limits (%zu MiB, dir %s)\n", mib, dir);
        printf("  %-34s %8.2f GB/s\n", "memcpy", mc);
        printf("  %-34s %8.2f GB/s\n", "sequential write, no fsync", w0);
        printf("  %-34s %8.2f GB/s\n", "sequential write, fsync at end", w1);
        printf("  %-34s %8.2f GB/s\n", "sequential write, fsync every MiB", w2);
    }
    return (mc < 0 || w0 < 0 || w1 < 0 || w2 < 0) ? 1 : 0;
}

/* bench-qmp-lat: latency of one QMP command repeated N times over a unix
 * socket (a back end directly, or the gateway's --qmp endpoint), one call in
 * flight at a time.  Python would add ~50 us per call of its own, which is
 * the size of what we measure, hence C.
 *
 *   bench-qmp-lat --socket PATH [--count N] [--warmup N]
 *                 [--execute CMD | --hmp "LINE"] [--name LABEL] [--pipeline]
 * Prints one JSON line: {"name", "n", "p50-us", "p99-us", ...}.
 * --pipeline writes all N commands at once (as fast as the socket takes
 * them, replies read meanwhile) and prints {"name", "n", "seconds",
 * "per-s"}: the throughput of pipelined commands. */
#include "bench_util.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct conn {
    int fd;
    char buf[1 << 22];  /* whole replies, query-qmp-schema (~200 KB) included */
    size_t len;
};

/* Next '\n'-terminated line into out (NUL-terminated, truncated to cap). */
static bool read_line(struct conn *c, char *out, size_t cap)
{
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl) {
            size_t n = (size_t)(nl - c->buf) + 1;
            size_t k = n < cap ? n : cap - 1;
            memcpy(out, c->buf, k);
            out[k] = 0;
            memmove(c->buf, c->buf + n, c->len - n);
            c->len -= n;
            return true;
        }
        if (c->len == sizeof c->buf)
            c->len = 0;               /* a giant line we do not need: drop it */
        ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        c->len += (size_t)r;
    }
}

static bool is_event(const char *line)
{
    return strstr(line, "\"event\"") && strstr(line, "\"timestamp\"");
}

/* Sends msg and waits for the reply that is not an event. */
static bool call(struct conn *c, const char *msg, size_t len, char *line, size_t cap)
{
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(c->fd, msg + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        off += (size_t)w;
    }
    do {
        if (!read_line(c, line, cap))
            return false;
    } while (is_event(line));
    return strstr(line, "\"return\"") != NULL;
}

/* All `count` commands written while replies are read; returns seconds. */
static double pipeline(struct conn *c, const char *msg, size_t len, long count)
{
    double t = sg_bench_now();
    long sent = 0, got = 0;
    size_t off = 0;
    while (got < count) {
        struct pollfd p = { c->fd, (short)(POLLIN | (sent < count ? POLLOUT : 0)), 0 };
        if (poll(&p, 1, 10000) <= 0)
            return -1;
        if ((p.revents & POLLOUT) && sent < count) {
            ssize_t w = send(c->fd, msg + off, len - off, MSG_DONTWAIT);
            if (w > 0 && (off += (size_t)w) == len) {
                off = 0;
                sent++;
            }
        }
        if (p.revents & (POLLIN | POLLHUP)) {
            ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, MSG_DONTWAIT);
            if (r == 0)
                return -1;
            if (r > 0) {
                c->len += (size_t)r;
                char *q = c->buf, *end = c->buf + c->len, *nl;
                while ((nl = memchr(q, '\n', (size_t)(end - q)))) {
                    if (!memmem(q, (size_t)(nl - q), "\"event\"", 7))
                        got++;
                    q = nl + 1;
                }
                c->len = (size_t)(end - q);
                memmove(c->buf, q, c->len);
            }
        }
    }
    return sg_bench_now() - t;
}

int main(int argc, char **argv)
{
    bool pipelined = false;
    const char *path = NULL, *execute = "query-status", *hmp = NULL, *name = NULL;
    long count = 10000, warmup = 100;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--socket") && v)
            path = v, i++;
        else if (!strcmp(a, "--count") && v)
            count = strtol(v, NULL, 10), i++;
        else if (!strcmp(a, "--warmup") && v)
            warmup = strtol(v, NULL, 10), i++;
        else if (!strcmp(a, "--execute") && v)
            execute = v, i++;
        else if (!strcmp(a, "--hmp") && v)
            hmp = v, i++;
        else if (!strcmp(a, "--name") && v)
            name = v, i++;
        else if (!strcmp(a, "--pipeline"))
            pipelined = true;
        else {
            fprintf(stderr, "usage: bench-qmp-lat --socket PATH [--count N] [--warmup N] "
                            "[--execute CMD | --hmp LINE] [--name LABEL]\n");
            return 1;
        }
    }
    if (!path || count <= 0 || warmup < 0) {
        fprintf(stderr, "bench-qmp-lat: --socket PATH and a positive --count are needed\n");
        return 1;
    }
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "bench-qmp-lat: socket path too long\n");
        return 1;
    }
    strcpy(sa.sun_path, path);
    static struct conn c;
    c.fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (c.fd < 0 || connect(c.fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "bench-qmp-lat: %s: %s\n", path, strerror(errno));
        return 1;
    }
    static char line[1 << 22];
    static const char caps[] = "{\"execute\": \"qmp_capabilities\"}\r\n";
    if (!read_line(&c, line, sizeof line) || !strstr(line, "\"QMP\"")) {
        fprintf(stderr, "bench-qmp-lat: no QMP greeting\n");
        return 1;
    }
    if (!call(&c, caps, sizeof caps - 1, line, sizeof line)) {
        fprintf(stderr, "bench-qmp-lat: qmp_capabilities failed: %s", line);
        return 1;
    }
    if (hmp && strpbrk(hmp, "\"\\")) {
        fprintf(stderr, "bench-qmp-lat: --hmp LINE must not contain '\"' or '\\'\n");
        return 1;
    }
    char msg[1024];
    int len;
    if (hmp)
        len = snprintf(msg, sizeof msg, "{\"execute\": \"human-monitor-command\", "
                       "\"arguments\": {\"command-line\": \"%s\"}}\r\n", hmp);
    else
        len = snprintf(msg, sizeof msg, "{\"execute\": \"%s\"}\r\n", execute);
    if (len < 0 || (size_t)len >= sizeof msg) {
        fprintf(stderr, "bench-qmp-lat: command too long\n");
        return 1;
    }
    if (pipelined) {
        double secs = pipeline(&c, msg, (size_t)len, count);
        if (secs <= 0) {
            fprintf(stderr, "bench-qmp-lat: pipelined run failed\n");
            return 1;
        }
        printf("{\"name\": \"%s\", \"n\": %ld, \"seconds\": %.4f, \"per-s\": %.0f}\n",
               name ? name : execute, count, secs, (double)count / secs);
        close(c.fd);
        return 0;
    }
    double *lat = malloc(sizeof(double) * (size_t)count);
    if (!lat)
        return 1;
    for (long i = 0; i < warmup + count; i++) {
        double t = sg_bench_now();
        if (!call(&c, msg, (size_t)len, line, sizeof line)) {
            fprintf(stderr, "bench-qmp-lat: call %ld failed: %s", i, line);
            free(lat);
            return 1;
        }
        if (i >= warmup)
            lat[i - warmup] = sg_bench_now() - t;
    }
    struct sg_bench_stats st;
    sg_bench_stats(lat, (size_t)count, &st);
    sg_bench_print_us(name ? name : (hmp ? hmp : execute), &st, 0);
    free(lat);
    close(c.fd);
    return 0;
}

/* bench-ws-fanout: N concurrent WebSocket /qmp clients of `snapgate --web`
 * and how long one QMP event takes to reach each of them.
 *
 *   bench-ws-fanout --port P --token T --trigger QMP-SOCKET
 *                   [--clients N] [--rounds R] [--host 127.0.0.1]
 *
 * Every client does the handshake (token + Origin, subprotocol qmp), reads
 * the greeting and negotiates.  Then, R times, the trigger connection (a
 * plain QMP unix socket: the gateway's --qmp or the back end itself) sends
 * `stop` / `cont` alternately; t0 is taken just before that write, and each
 * client's sample is the time its STOP / RESUME frame was read.  The guest
 * must be running at start; it is left running.  All clients
 * live in this one process on one epoll loop, so a sample includes the time
 * to drain the frames before it: the figure is an upper bound on what a
 * browser would see.  The WebSocket client is minimal and hand-written
 * (RFC 6455: masked client frames, unmasked server frames, ping -> pong). */
#include "bench_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct ws {
    int fd;
    bool closed;
    bool got;              /* saw this round's event */
    size_t len;
    unsigned char buf[16384];
};

static bool write_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        s += w;
        n -= (size_t)w;
    }
    return true;
}

/* A masked frame (clients must mask, RFC 6455 5.3). */
static bool ws_send(struct ws *c, int opcode, const char *payload, size_t n)
{
    unsigned char hdr[14];
    size_t h = 0;
    hdr[h++] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        hdr[h++] = (unsigned char)(0x80 | n);
    } else if (n < 65536) {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (unsigned char)(n >> 8);
        hdr[h++] = (unsigned char)n;
    } else {
        return false;                 /* never needed here */
    }
    static const unsigned char mask[4] = { 0x12, 0x34, 0x56, 0x78 };
    memcpy(hdr + h, mask, 4);
    h += 4;
    char body[1024];
    if (n > sizeof body)
        return false;
    for (size_t i = 0; i < n; i++)
        body[i] = (char)(payload[i] ^ mask[i & 3]);
    return write_all(c->fd, hdr, h) && write_all(c->fd, body, n);
}

/* Pops one complete frame from c->buf: returns 1 with opcode/payload (a
 * pointer into a scratch copy), 0 if more bytes are needed, -1 on error. */
static int ws_pop(struct ws *c, int *opcode, char *payload, size_t cap, size_t *plen)
{
    if (c->len < 2)
        return 0;
    size_t n = c->buf[1] & 0x7f, off = 2;
    if (c->buf[1] & 0x80)
        return -1;                    /* servers never mask */
    if (n == 126) {
        if (c->len < 4)
            return 0;
        n = (size_t)c->buf[2] << 8 | c->buf[3];
        off = 4;
    } else if (n == 127) {
        if (c->len < 10)
            return 0;
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
            v = v << 8 | c->buf[2 + i];
        if (v > sizeof c->buf)
            return -1;
        n = (size_t)v;
        off = 10;
    }
    if (off + n > sizeof c->buf)
        return -1;
    if (c->len < off + n)
        return 0;
    *opcode = c->buf[0] & 0x0f;
    size_t k = n < cap - 1 ? n : cap - 1;
    memcpy(payload, c->buf + off, k);
    payload[k] = 0;
    *plen = k;
    memmove(c->buf, c->buf + off + n, c->len - off - n);
    c->len -= off + n;
    return 1;
}

static int ws_fill(struct ws *c)
{
    if (c->len == sizeof c->buf)
        return -1;
    ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (r <= 0)
        return -1;
    c->len += (size_t)r;
    return 1;
}

/* Blocking: the next text message whose payload contains `want`. */
static bool ws_wait_text(struct ws *c, const char *want)
{
    char p[8192];
    for (;;) {
        int op;
        size_t n;
        int r = ws_pop(c, &op, p, sizeof p, &n);
        if (r < 0)
            return false;
        if (r == 1) {
            if (op == 8)
                return false;
            if (op == 9 && !ws_send(c, 10, p, n))
                return false;
            if (op == 1 && strstr(p, want))
                return true;
            continue;
        }
        if (ws_fill(c) < 0)
            return false;
    }
}

static bool ws_open(struct ws *c, const char *host, int port, const char *token)
{
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        return false;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
        connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        return false;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET /qmp?token=%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: c25hcGdhdGUtYmVuY2gtMQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: qmp\r\n"
                     "Origin: http://%s:%d\r\n\r\n", token, host, port, host, port);
    if (n < 0 || (size_t)n >= sizeof req || !write_all(c->fd, req, (size_t)n))
        return false;
    char *end;
    for (;;) {
        if (ws_fill(c) < 0)
            return false;
        c->buf[c->len < sizeof c->buf ? c->len : sizeof c->buf - 1] = 0;
        end = strstr((char *)c->buf, "\r\n\r\n");
        if (end)
            break;
    }
    if (strncmp((char *)c->buf, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "bench-ws-fanout: upgrade refused: %.60s\n", (char *)c->buf);
        return false;
    }
    size_t head = (size_t)(end + 4 - (char *)c->buf);
    memmove(c->buf, c->buf + head, c->len - head);
    c->len -= head;
    static const char caps[] = "{\"execute\": \"qmp_capabilities\"}";
    return ws_wait_text(c, "\"QMP\"") && ws_send(c, 1, caps, sizeof caps - 1) &&
           ws_wait_text(c, "\"return\"");
}

/* The trigger: a plain QMP unix connection.  Waits for the reply to the
 * command sent last, skipping events. */
static bool qmp_wait_return(int fd)
{
    char buf[65536];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
        if (r <= 0)
            return false;
        len += (size_t)r;
        buf[len] = 0;
        char *line = buf, *nl;
        while ((nl = strchr(line, '\n'))) {
            *nl = 0;
            bool reply = strstr(line, "\"return\"") || strstr(line, "\"error\"");
            bool ev = strstr(line, "\"event\"") && strstr(line, "\"timestamp\"");
            if (reply && !ev)
                return strstr(line, "\"return\"") != NULL;
            line = nl + 1;
        }
        len = strlen(line);
        memmove(buf, line, len);
        if (len == sizeof buf - 1)
            len = 0;
    }
}

static bool qmp_line_call(int fd, const char *msg)
{
    return write_all(fd, msg, strlen(msg)) && qmp_wait_return(fd);
}

static int qmp_connect(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path)
        return -1;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *token = NULL, *trigger = NULL;
    int port = 0;
    long nclients = 100, rounds = 5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--host") && v)
            host = v, i++;
        else if (!strcmp(a, "--port") && v)
            port = atoi(v), i++;
        else if (!strcmp(a, "--token") && v)
            token = v, i++;
        else if (!strcmp(a, "--trigger") && v)
            trigger = v, i++;
        else if (!strcmp(a, "--clients") && v)
            nclients = strtol(v, NULL, 10), i++;
        else if (!strcmp(a, "--rounds") && v)
            rounds = strtol(v, NULL, 10), i++;
        else {
            fprintf(stderr, "usage: bench-ws-fanout --port P --token T --trigger QMP-SOCKET "
                            "[--clients N] [--rounds R] [--host ADDR]\n");
            return 1;
        }
    }
    if (!port || !token || !trigger || nclients <= 0 || nclients > 100000 || rounds <= 0) {
        fprintf(stderr, "bench-ws-fanout: --port, --token, --trigger and sane counts needed\n");
        return 1;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nclients + 64) {
        rl.rlim_cur = (rlim_t)nclients + 64;
        if (rl.rlim_max < rl.rlim_cur)
            rl.rlim_max = rl.rlim_cur;   /* root may raise it; otherwise setrlimit fails */
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int qfd = qmp_connect(trigger);
    char greet[4096];
    if (qfd < 0 || read(qfd, greet, sizeof greet) <= 0 ||
        !qmp_line_call(qfd, "{\"execute\": \"qmp_capabilities\"}\r\n")) {
        fprintf(stderr, "bench-ws-fanout: trigger %s: cannot negotiate\n", trigger);
        return 1;
    }
    struct ws *cl = calloc((size_t)nclients, sizeof *cl);
    double *lat = calloc((size_t)(nclients * rounds), sizeof *lat);
    int ep = epoll_create1(0);
    if (!cl || !lat || ep < 0)
        return 1;
    double t_open = sg_bench_now();
    for (long i = 0; i < nclients; i++) {
        if (!ws_open(&cl[i], host, port, token)) {
            fprintf(stderr, "bench-ws-fanout: client %ld of %ld failed to open: %s\n",
                    i + 1, nclients, strerror(errno));
            return 1;
        }
        struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)i };
        epoll_ctl(ep, EPOLL_CTL_ADD, cl[i].fd, &ev);
    }
    t_open = sg_bench_now() - t_open;
    size_t nlat = 0, missing = 0;
    for (long r = 0; r < rounds; r++) {
        const char *want = r % 2 ? "\"RESUME\"" : "\"STOP\"";
        for (long i = 0; i < nclients; i++)
            cl[i].got = false;
        long left = nclients;
        double t0 = sg_bench_now();
        /* The reply is read after the round: waiting for it first would
         * add the trigger's own round trip to every sample. */
        const char *cmd = r % 2 ? "{\"execute\": \"cont\"}\r\n" : "{\"execute\": \"stop\"}\r\n";
        if (!write_all(qfd, cmd, strlen(cmd))) {
            fprintf(stderr, "bench-ws-fanout: trigger write failed\n");
            return 1;
        }
        double deadline = t0 + 10.0;
        while (left > 0 && sg_bench_now() < deadline) {
            struct epoll_event evs[256];
            int n = epoll_wait(ep, evs, 256, 100);
            for (int k = 0; k < n; k++) {
                struct ws *c = &cl[evs[k].data.u64];
                if (c->closed)
                    continue;
                if (ws_fill(c) < 0) {
                    c->closed = true;
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    continue;
                }
                char p[8192];
                int op, got;
                size_t pn;
                while ((got = ws_pop(c, &op, p, sizeof p, &pn)) == 1) {
                    if (op == 9)
                        ws_send(c, 10, p, pn);
                    if (op == 1 && !c->got && strstr(p, want) && strstr(p, "\"event\"")) {
                        c->got = true;
                        lat[nlat++] = sg_bench_now() - t0;
                        left--;
                    }
                }
                if (got < 0)
                    c->closed = true;
            }
        }
        if (left)
            fprintf(stderr, "bench-ws-fanout: round %ld: %ld of %ld clients got no %s\n",
                    r + 1, left, nclients, want);
        missing += (size_t)left;
        if (!qmp_wait_return(qfd)) {
            fprintf(stderr, "bench-ws-fanout: trigger command failed\n");
            return 1;
        }
    }
    /* Leave the guest running, as found: the next run starts with `stop`. */
    if (rounds % 2 && !qmp_line_call(qfd, "{\"execute\": \"cont\"}\r\n"))
        fprintf(stderr, "bench-ws-fanout: final cont failed\n");
    struct sg_bench_stats st;
    sg_bench_stats(lat, nlat, &st);
    char name[64];
    snprintf(name, sizeof name, "ws-fanout-%ld", nclients);
    sg_bench_print_us(name, &st, missing);
    fprintf(stderr, "bench-ws-fanout: %ld clients opened in %.2f s\n", nclients, t_open);
    for (long i = 0; i < nclients; i++)
        close(cl[i].fd);
    free(cl);
    free(lat);
    close(ep);
    close(qfd);
    return missing ? 2 : 0;
}

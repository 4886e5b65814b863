/* hmp_bridge: drives the HMP engine against a real QMP server (QEMU 7.2)
 * for test_hmp_vs_qemu.py.  Usage: hmp_bridge SOCKET [PROFILE]; reads one
 * HMP line per stdin line, prints each reply as a JSON string on stdout.
 *
 * The back end is deliberately simple and blocking: a command is written,
 * messages are read until its reply (QEMU answers one line per message),
 * events met on the way are queued and delivered from the main loop; while
 * a line waits for a job, the loop polls the socket and ticks every 100 ms. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "sg_hmp.h"

struct link {
    int fd;
    char buf[1 << 20];
    size_t len;
    json_t *events;     /* queued, delivered from the main loop */
    unsigned next_id;
    bool dead;
};

/* One message, blocking up to timeout_ms (-1: forever); NULL on timeout or EOF. */
static json_t *read_msg(struct link *l, int timeout_ms)
{
    for (;;) {
        char *nl = memchr(l->buf, '\n', l->len);
        if (nl) {
            size_t n = (size_t)(nl - l->buf) + 1;
            json_t *m = json_loadb(l->buf, n, 0, NULL);
            memmove(l->buf, l->buf + n, l->len - n);
            l->len -= n;
            if (m)
                return m;
            continue;
        }
        struct pollfd p = {l->fd, POLLIN, 0};
        int r = poll(&p, 1, timeout_ms);
        if (r == 0)
            return NULL;
        if (r < 0 && errno == EINTR)
            continue;
        ssize_t got = read(l->fd, l->buf + l->len, sizeof l->buf - l->len);
        if (got <= 0) {
            l->dead = true;
            return NULL;
        }
        l->len += (size_t)got;
    }
}

static bool send_msg(struct link *l, json_t *m)
{
    char *s = json_dumps(m, JSON_COMPACT);
    if (!s)
        return false;
    size_t n = strlen(s);
    bool ok = write(l->fd, s, n) == (ssize_t)n && write(l->fd, "\r\n", 2) == 2;
    free(s);
    return ok;
}

static void qmp(void *opaque, json_t *cmd, sg_hmp_reply_fn cb, void *cb_opaque)
{
    struct link *l = opaque;
    char id[32];
    snprintf(id, sizeof id, "b%u", ++l->next_id);
    json_object_set_new(cmd, "id", json_string(id));
    bool ok = !l->dead && send_msg(l, cmd);
    json_decref(cmd);
    json_t *reply = NULL;
    while (ok && !l->dead) {
        json_t *m = read_msg(l, 30000);
        if (!m)
            break;
        if (json_object_get(m, "event")) {
            json_array_append_new(l->events, m);
            continue;
        }
        if (json_is_string(json_object_get(m, "id")) &&
            strcmp(json_string_value(json_object_get(m, "id")), id) == 0) {
            reply = m;
            break;
        }
        json_decref(m);
    }
    cb(cb_opaque, reply);
    json_decref(reply);
}

static bool line_done;
static char *line_text;

static void on_done(void *o, const char *text, bool quit)
{
    line_done = true;
    free(line_text);
    line_text = strdup(text);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: hmp_bridge SOCKET [qemu-7.2|snapgate]\n");
        return 1;
    }
    int profile = argc > 2 && strcmp(argv[2], "snapgate") == 0 ? SG_HMP_PROFILE_SNAPGATE
                                                                : SG_HMP_PROFILE_QEMU72;
    static struct link l;
    l.events = json_array();
    l.fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", argv[1]);
    if (l.fd < 0 || connect(l.fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror(argv[1]);
        return 1;
    }
    json_t *greeting = read_msg(&l, 10000);
    json_t *caps = json_pack("{s:s}", "execute", "qmp_capabilities");
    if (!greeting || !send_msg(&l, caps)) {
        fprintf(stderr, "no QMP greeting\n");
        return 1;
    }
    json_decref(greeting);
    json_decref(caps);
    json_decref(read_msg(&l, 10000));
    struct sg_hmp_backend be = {qmp, &l};
    struct sg_hmp *h = sg_hmp_new(&be, NULL);
    char in[4096];
    while (fgets(in, sizeof in, stdin)) {
        in[strcspn(in, "\n")] = 0;
        line_done = false;
        sg_hmp_exec(h, in, profile, on_done, NULL, NULL);
        for (int guard = 0; !line_done && guard < 3000 && !l.dead; guard++) {
            while (json_array_size(l.events)) {
                json_t *e = json_incref(json_array_get(l.events, 0));
                json_array_remove(l.events, 0);
                sg_hmp_on_event(h, e);
                json_decref(e);
            }
            if (line_done)
                break;
            json_t *m = read_msg(&l, 100);
            if (m && json_object_get(m, "event"))
                json_array_append_new(l.events, m);
            else
                json_decref(m);
            sg_hmp_tick(h);
        }
        json_t *out = json_string(line_done ? line_text : "<<no reply>>");
        char *s = json_dumps(out, JSON_ENCODE_ANY);
        printf("%s\n", s);
        fflush(stdout);
        free(s);
        json_decref(out);
    }
    sg_hmp_free(h);
    free(line_text);
    json_decref(l.events);
    close(l.fd);
    return 0;
}

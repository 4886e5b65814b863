/* qmp_interop: drives a QMP server (real QEMU in the test) through the
 * client library only, and prints one JSON line per result so the test
 * script can check them:
 *   {"cmd": NAME, "return": R} or {"cmd": NAME, "error": {"class", "desc"}}
 *   {"event": NAME}
 * Usage: qmp_interop SOCKET_PATH.  Exit 0 when every step got an answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qmp_client.h"

struct run {
    bool ready, got;
    int events;
};

static void print_new(json_t *o)
{
    char *s = sg_qmp_dumps(o, NULL);
    printf("%s\n", s ? s : "null");
    fflush(stdout);
    free(s);
    json_decref(o);
}

static void on_ready(void *op, const json_t *g)
{
    struct run *r = op;
    r->ready = true;
    print_new(json_pack("{s:O}", "greeting", (json_t *)g));
}

static void on_event(void *op, const json_t *e)
{
    struct run *r = op;
    r->events++;
    print_new(json_pack("{s:O}", "event", json_object_get(e, "event")));
}

static void on_closed(void *op, const struct sg_error *why)
{
    fprintf(stderr, "qmp_interop: connection closed: %s\n", why->msg);
}

struct step {
    struct run *r;
    const char *cmd;
};

static void on_reply(void *op, const json_t *ret, const struct sg_error *err)
{
    struct step *st = op;
    st->r->got = true;
    if (ret)
        print_new(json_pack("{s:s, s:O}", "cmd", st->cmd, "return", (json_t *)ret));
    else
        print_new(json_pack("{s:s, s:{s:s, s:s}}", "cmd", st->cmd, "error", "class", err->cls,
                            "desc", err->msg));
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: qmp_interop SOCKET\n");
        return 1;
    }
    static const struct sg_qmp_client_ops ops = {.ready = on_ready, .event = on_event, .closed = on_closed};
    struct run r = {0};
    struct sg_error err = {0};
    struct sg_qmp_client *c = sg_qmp_client_connect(argv[1], &ops, &r, &err);
    if (!c) {
        fprintf(stderr, "qmp_interop: %s\n", err.msg);
        return 1;
    }
    if (!sg_qmp_client_wait(c, &r.ready, 10000, &err)) {
        fprintf(stderr, "qmp_interop: negotiation: %s\n", err.msg);
        sg_qmp_client_free(c);
        return 1;
    }
    struct {
        const char *cmd;
        const char *args;
    } steps[] = {
        {"query-version", NULL},
        {"query-status", NULL},
        {"human-monitor-command", "{\"command-line\": \"info status\"}"},
        {"no-such-command", NULL},
        {"human-monitor-command", "{\"command-line\": 1}"},
        {"cont", NULL},
        {"stop", NULL},
        {"query-status", NULL},
    };
    int rc = 0;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        struct step st = {&r, steps[i].cmd};
        json_t *args = steps[i].args ? json_loads(steps[i].args, 0, NULL) : NULL;
        r.got = false;
        sg_error_clear(&err);
        if (!sg_qmp_client_execute(c, st.cmd, args, on_reply, &st, &err) ||
            !sg_qmp_client_wait(c, &r.got, 10000, &err)) {
            fprintf(stderr, "qmp_interop: %s: %s\n", st.cmd, err.msg);
            rc = 1;
            break;
        }
    }
    /* STOP/RESUME events may trail the replies a little */
    struct sg_error werr = {0};
    bool never = false;
    if (rc == 0 && r.events < 2)
        sg_qmp_client_wait(c, &never, 500, &werr);
    sg_qmp_client_free(c);
    return rc;
}

/* libFuzzer target: the gateway's proxy event path, end to end in one
 * process — gateway/gw_qmp_client.c (slots, per-client order, turns and the
 * back-end window, id rewrite) and gateway/gw_backend.c over libsgqmp's
 * sg_qmp_client (greeting, negotiation, "sg-N" ids, reply matching, raw
 * events, descriptors), exactly as linked into snapgate.  Only the lws loop
 * is replaced (a fake below: the back end's fd is a real socketpair the
 * fake back end writes into; what the gateway writes is recorded per
 * message), and the HMP engine / current-snapshot hooks are stubs.
 *
 * The input is a program: clients appear, send commands (ids of every JSON
 * type or none, fuzzed argument bytes, sometimes a descriptor), leave; the
 * fake back end answers any command it holds (in any order, fuzzed reply
 * bodies, cut into fuzzed chunks), sends fuzzed events, or a reply that is
 * not JSON.  At the end every command still held is answered.  Checked:
 *   - each command reaches the back end byte for byte but for the id, with
 *     its descriptor;
 *   - each client gets its replies in its own order, each equal to what the
 *     back end sent but for the id, which is the client's bytes (or none);
 *     a reply that is not JSON becomes a GenericError for the command it
 *     answers (the oldest held), and the link stays up;
 *   - each event reaches every client byte for byte;
 *   - nothing crashes, leaks or is left unanswered. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "gw_internal.h"
#include "qmp_msg.h"
#include "qmp_top.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond) ((cond) ? (void)0 : fail(#cond, __LINE__))

static void fail(const char *what, int line)
{
    fprintf(stderr, "fuzz_gw_proxy: check failed at line %d: %s\n", line, what);
    abort();
}

/* ---- the fake loop ------------------------------------------------------ */

struct sg_gw_loop {
    bool stop;
};

struct sg_gw_fd {
    int fd;
    const struct sg_gw_fd_ops *ops;
    void *opaque;
    bool detached;
};

#define MAX_TIMERS 16
static struct sg_gw_timer *armed[MAX_TIMERS];
static struct sg_gw_fd *be_fd;      /* the back end's (one at a time) */

/* What the gateway wrote to the back end: one entry per message. */
struct be_msg {
    char *bytes;
    size_t len;
    size_t nfds;
    bool answered;
};
#define MAX_MSGS 512
static struct be_msg be_msgs[MAX_MSGS];
static size_t n_be_msgs;

struct sg_gw_fd *sg_gw_fd_adopt(struct sg_gw_loop *l, int fd, const struct sg_gw_fd_ops *ops,
                                void *opaque, struct sg_error *err)
{
    (void)l;
    (void)err;
    struct sg_gw_fd *f = calloc(1, sizeof *f);
    check(f != NULL);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    f->fd = fd;
    f->ops = ops;
    f->opaque = opaque;
    be_fd = f;
    return f;
}

int sg_gw_fd_fd(const struct sg_gw_fd *f)
{
    return f->fd;
}

ssize_t sg_gw_fd_read(struct sg_gw_fd *f, void *buf, size_t len)
{
    ssize_t n = read(f->fd, buf, len);
    return n < 0 && errno == EAGAIN ? SG_GW_READ_AGAIN : n;
}

static void record(const void *buf, size_t len, size_t nfds)
{
    check(n_be_msgs < MAX_MSGS);
    struct be_msg *m = &be_msgs[n_be_msgs++];
    m->bytes = malloc(len + 1);
    check(m->bytes != NULL);
    memcpy(m->bytes, buf, len);
    m->bytes[len] = '\0';
    m->len = len;
    m->nfds = nfds;
    m->answered = false;
}

bool sg_gw_fd_write(struct sg_gw_fd *f, const void *buf, size_t len)
{
    (void)f;
    if (len == 2 && memcmp(buf, "\r\n", 2) == 0)
        return true; /* the end of the message write_fds recorded */
    record(buf, len, 0);
    return true;
}

bool sg_gw_fd_write_fds(struct sg_gw_fd *f, const void *buf, size_t len, int *fds, size_t nfds)
{
    (void)f;
    for (size_t i = 0; i < nfds; i++)
        close(fds[i]);
    record(buf, len, nfds);
    return true;
}

bool sg_gw_fd_write_line(struct sg_gw_fd *f, const void *buf, size_t len)
{
    (void)f;
    record(buf, len, 0);
    return true;
}

size_t sg_gw_fd_backlog(const struct sg_gw_fd *f)
{
    (void)f;
    return 0;
}

void sg_gw_fd_detach(struct sg_gw_fd *f)
{
    f->detached = true;
}

void sg_gw_timer_init(struct sg_gw_timer *t, struct sg_gw_loop *l, void (*fn)(void *),
                      void *opaque)
{
    memset(t, 0, sizeof *t);
    t->fn = fn;
    t->opaque = opaque;
    t->loop = l;
}

void sg_gw_timer_cancel(struct sg_gw_timer *t)
{
    for (int i = 0; i < MAX_TIMERS; i++)
        if (armed[i] == t)
            armed[i] = NULL;
}

/* Only 0 ms timers run (time does not pass here: timeouts never fire). */
void sg_gw_timer_arm(struct sg_gw_timer *t, unsigned ms)
{
    sg_gw_timer_cancel(t);
    if (ms)
        return;
    for (int i = 0; i < MAX_TIMERS; i++) {
        if (!armed[i]) {
            armed[i] = t;
            return;
        }
    }
    check(!"too many timers");
}

/* One loop round: the back end's fd, then due timers. */
static void pump(void)
{
    struct sg_gw_fd *f = be_fd;
    if (f && !f->detached) {
        if (!f->ops->readable(f->opaque, f)) {
            f->detached = true;
        }
    }
    for (int i = 0; i < MAX_TIMERS; i++) {
        struct sg_gw_timer *t = armed[i];
        if (t) {
            armed[i] = NULL;
            t->fn(t->opaque);
        }
    }
}

void sg_gw_loop_run(struct sg_gw_loop *l)
{
    for (int i = 0; i < 64 && !l->stop; i++)
        pump();
}

void sg_gw_loop_stop(struct sg_gw_loop *l)
{
    l->stop = true;
}

void sg_gw_loop_restart(struct sg_gw_loop *l)
{
    l->stop = false;
}

/* ---- the rest of the gateway: stubs ----------------------------------- */

void gw_on_backend_event(struct sg_gw *gw, json_t *event, const char *bytes, size_t len)
{
    gw_qmp_clients_event(gw, event, bytes, len);
}
void gw_on_backend_lost(struct sg_gw *gw, const char *why)
{
    (void)gw;
    (void)why;
    check(!"the back-end link was lost");
}
void gw_lost_abort(struct sg_gw *gw)
{
    (void)gw;
}
void gw_on_backend_reconnected(struct sg_gw *gw, unsigned attempts)
{
    (void)gw;
    (void)attempts;
}
void gw_on_backend_reconnect_failed(struct sg_gw *gw, const char *why, const char *last)
{
    (void)gw;
    (void)why;
    (void)last;
}
void gw_on_backend_drained(struct sg_gw *gw)
{
    (void)gw;
}
void gw_current_on_command(struct sg_gw *gw, const char *execute, const json_t *args)
{
    (void)gw;
    (void)execute;
    (void)args;
}
bool gw_xsnapgate_command(struct sg_gw *gw, const char *execute, const json_t *args,
                          json_t **ret, struct sg_error *err)
{
    (void)gw;
    (void)execute;
    (void)args;
    *ret = NULL;
    sg_error_set(err, "not in the fuzzer");
    return false;
}
struct sg_gw_hmp_req *sg_gw_hmp_exec(struct sg_gw *gw, const char *line, enum sg_hmp_style style,
                                     sg_gw_hmp_done_fn done, sg_gw_hmp_progress_fn progress,
                                     void *opaque)
{
    (void)gw;
    (void)style;
    (void)progress;
    done(opaque, line, false);
    return NULL;
}
void sg_gw_hmp_detach(struct sg_gw_hmp_req *req)
{
    (void)req;
}

/* ---- the fake clients ---------------------------------------------------- */

static const char *const ids[] = {
    NULL, "\"a\"", "7", "-0", "18446744073709551616123", "1.5e+300", "true", "null",
    "[1, {\"a\": [2.50, \"\\u00e9\"]}]", "{}", "\"\\ud83d\\ude00\"", "\"sg-1\"",
};
#define N_IDS (sizeof ids / sizeof ids[0])
#define MAX_CLIENTS 4
#define MAX_CMDS 256

struct cmd {
    unsigned k;             /* the marker in its arguments */
    const char *id;
    char *sent;             /* the client's bytes */
    size_t sent_len;
    size_t nfds;
    char *reply;            /* what the back end answered (NULL: not yet) */
    size_t reply_len;
    bool invalid;           /* ... not JSON: a GenericError is due */
};

struct client {
    struct sg_gw_qmp_client *c;
    int got;                /* messages delivered */
    struct cmd *cmds[MAX_CMDS];
    size_t n_cmds, next_reply;
};

static struct client clients[MAX_CLIENTS];
static struct cmd *all_cmds[MAX_CMDS * MAX_CLIENTS];
static size_t n_all;
static unsigned next_k;
static char *last_event;
static size_t last_event_len;

/* `msg` without its id (malloc'ed), for comparisons "id aside". */
static char *no_id(const char *msg, size_t len, size_t *out_len)
{
    struct sg_qmp_top top;
    sg_qmp_top_scan(msg, len, &top);
    check(top.valid && top.object);
    char *r = sg_qmp_top_set_id(msg, len, &top, NULL, 0, out_len);
    check(r != NULL);
    return r;
}

static void same_but_id(const char *a, size_t la, const char *b, size_t lb)
{
    size_t na, nb;
    char *x = no_id(a, la, &na), *y = no_id(b, lb, &nb);
    check(na == nb && memcmp(x, y, na) == 0);
    free(x);
    free(y);
}

static void on_send(void *opaque, const char *text, size_t len)
{
    struct client *cl = opaque;
    struct sg_qmp_top top;
    sg_qmp_top_scan(text, len, &top);
    check(top.valid && top.object);
    int n = cl->got++;
    if (n == 0) {
        check(top.m[SG_TOP_QMP].present); /* the greeting */
        return;
    }
    if (n == 1) {
        check(top.m[SG_TOP_RETURN].present); /* qmp_capabilities */
        return;
    }
    if (top.m[SG_TOP_EVENT].present) {
        check(last_event && len == last_event_len && memcmp(text, last_event, len) == 0);
        return;
    }
    /* A reply: to this client's oldest unanswered command, in order. */
    check(cl->next_reply < cl->n_cmds);
    struct cmd *c = cl->cmds[cl->next_reply++];
    check(c->reply || c->invalid);
    const struct sg_qmp_span *sp = &top.m[SG_TOP_ID];
    if (c->id)
        check(sp->present && sp->len == strlen(c->id) && memcmp(text + sp->off, c->id, sp->len) == 0);
    else
        check(!sp->present);
    if (c->invalid) {
        check(top.m[SG_TOP_ERROR].present);
        check(memmem(text, len, "not valid JSON", 14) != NULL);
    } else {
        same_but_id(text, len, c->reply, c->reply_len);
    }
}

/* ---- the input ------------------------------------------------------------ */

struct in {
    const uint8_t *p;
    size_t n;
};

static unsigned byte(struct in *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

/* Up to `max` fuzzed bytes. */
static size_t bytes(struct in *in, const uint8_t **out, size_t max)
{
    size_t want = byte(in) % (max + 1);
    if (want > in->n)
        want = in->n;
    *out = want ? in->p : (const uint8_t *)"";
    if (want) {
        in->p += want;
        in->n -= want;
    }
    return want;
}

/* Fuzzed bytes as a JSON value that keeps `fmt` what it is (valid, with
 * `members` top-level members: the bytes did not add any); checked by
 * building the message and scanning it. */
static char *build(const char *fmt, const uint8_t *v, size_t vlen, const char *extra,
                   size_t members, size_t *out_len, bool *valid)
{
    char *s = malloc(strlen(fmt) + vlen + (extra ? strlen(extra) : 0) + 32);
    check(s != NULL);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    int n = sprintf(s, fmt, (int)vlen, (const char *)v, extra ? extra : "");
    *out_len = (size_t)n;
#pragma GCC diagnostic pop
    struct sg_qmp_top top;
    sg_qmp_top_scan(s, (size_t)n, &top);
    *valid = top.valid && top.object && top.members == members &&
             !memmem(v, vlen, "job-id", 6) && !memmem(v, vlen, "\\u", 2);
    return s;
}

static void client_new(struct sg_gw *gw)
{
    for (int i = 0; i < MAX_CLIENTS; i++) {
        struct client *cl = &clients[i];
        if (cl->c)
            continue;
        memset(cl, 0, sizeof *cl);
        cl->c = sg_gw_qmp_client_new(gw, SG_HMP_STYLE_QEMU72, on_send, cl);
        check(cl->c != NULL);
        static const char caps[] = "{\"execute\": \"qmp_capabilities\"}";
        sg_gw_qmp_client_input(cl->c, caps, sizeof caps - 1, NULL, 0);
        check(cl->got == 2);
        return;
    }
}

static void client_send(struct in *in)
{
    struct client *cl = &clients[byte(in) % MAX_CLIENTS];
    if (!cl->c || cl->n_cmds == MAX_CMDS)
        return;
    unsigned flags = byte(in);
    const char *id = ids[byte(in) % N_IDS];
    const uint8_t *v;
    size_t vlen = bytes(in, &v, 64);
    char extra[600];
    snprintf(extra, sizeof extra, "%s%s", id ? ", \"id\": " : "", id ? id : "");
    struct cmd *c = calloc(1, sizeof *c);
    check(c != NULL);
    c->k = next_k++;
    char fmt[128];
    snprintf(fmt, sizeof fmt, "{\"execute\": \"fz\", \"arguments\": {\"k\": %u, \"v\": %%.*s}%%s}",
             c->k);
    bool ok;
    size_t members = id ? 3 : 2;
    c->sent = build(fmt, v, vlen, extra, members, &c->sent_len, &ok);
    if (!ok) {
        free(c->sent);
        c->sent = build(fmt, (const uint8_t *)"0", 1, extra, members, &c->sent_len, &ok);
        check(ok);
    }
    c->id = id;
    int fds[1];
    size_t nfds = 0;
    int p[2];
    if ((flags & 3) == 0 && pipe(p) == 0) {
        close(p[1]);
        fds[nfds++] = p[0];
    }
    c->nfds = nfds;
    cl->cmds[cl->n_cmds++] = c;
    all_cmds[n_all++] = c;
    sg_gw_qmp_client_input(cl->c, c->sent, c->sent_len, fds, nfds);
}

static void client_leave(struct in *in)
{
    struct client *cl = &clients[byte(in) % MAX_CLIENTS];
    if (!cl->c)
        return;
    sg_gw_qmp_client_free(cl->c);
    cl->c = NULL;
}

/* The command the back end got as message `m`: found by its marker, and
 * checked to be the client's bytes but for the id, with its descriptor. */
static struct cmd *cmd_of(struct be_msg *m)
{
    /* The first "k" is the marker: only the id ("sg-N") may come before. */
    const char *kp = strstr(m->bytes, "\"k\": ");
    check(kp != NULL);
    unsigned long k = strtoul(kp + 5, NULL, 10);
    for (size_t i = 0; i < n_all; i++) {
        if (all_cmds[i]->k == (unsigned)k) {
            struct cmd *c = all_cmds[i];
            same_but_id(m->bytes, m->len, c->sent, c->sent_len);
            check(m->nfds == c->nfds);
            return c;
        }
    }
    check(!"a command nobody sent");
    return NULL;
}

/* Writes `s` to the back end's socket in fuzzed chunks, the gateway reading
 * after each. */
static void be_write(int fd, const char *s, size_t len, struct in *in)
{
    size_t off = 0;
    while (off < len) {
        size_t chunk = 1 + byte(in) % 97;
        if (chunk > len - off || in->n == 0)
            chunk = len - off;
        ssize_t w = write(fd, s + off, chunk);
        check(w > 0);
        off += (size_t)w;
        pump();
    }
}

/* One message and its line end. */
static void be_write_line(int fd, const char *msg, size_t len, struct in *in)
{
    char *line = malloc(len + 2);
    check(line != NULL);
    memcpy(line, msg, len);
    memcpy(line + len, "\r\n", 2);
    be_write(fd, line, len + 2, in);
    free(line);
}

/* The back end's held commands (written by the gateway, not answered). */
static size_t held(size_t *idx, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < n_be_msgs && n < max; i++) {
        struct be_msg *m = &be_msgs[i];
        if (!m->answered && !strstr(m->bytes, "qmp_capabilities"))
            idx[n++] = i;
    }
    return n;
}

static void be_reply(int fd, struct in *in, int how)
{
    size_t idx[MAX_MSGS];
    size_t n = held(idx, MAX_MSGS);
    if (!n)
        return;
    /* A reply that is not JSON answers the oldest held command. */
    struct be_msg *m = &be_msgs[idx[how == 1 ? 0 : byte(in) % n]];
    struct cmd *c = cmd_of(m);
    m->answered = true;
    struct sg_qmp_top top;
    sg_qmp_top_scan(m->bytes, m->len, &top);
    char id[64];
    snprintf(id, sizeof id, "%.*s", (int)top.m[SG_TOP_ID].len, m->bytes + top.m[SG_TOP_ID].off);
    char *r;
    size_t rlen;
    if (how == 1) {
        r = strdup("{\"return\": [1,,2]}");
        check(r != NULL);
        rlen = strlen(r);
        c->invalid = true;
    } else {
        const uint8_t *v;
        size_t vlen = bytes(in, &v, 64);
        bool ok;
        r = build("{\"return\": %.*s, \"id\": %s}", v, vlen, id, 2, &rlen, &ok);
        if (!ok) {
            free(r);
            r = build("{\"return\": %.*s, \"id\": %s}", (const uint8_t *)"18446744073709551552",
                      20, id, 2, &rlen, &ok);
            check(ok);
        }
        c->reply = r;
        c->reply_len = rlen;
        r = strdup(r);
        check(r != NULL);
    }
    be_write_line(fd, r, rlen, in);
    free(r);
}

static void be_event(int fd, struct in *in)
{
    const uint8_t *v;
    size_t vlen = bytes(in, &v, 64);
    bool ok;
    size_t len;
    char *e = build("{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"FZ\", "
                    "\"data\": %.*s%s}",
                    v, vlen, "", 3, &len, &ok);
    if (!ok) {
        free(e);
        e = build("{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"FZ\", "
                  "\"data\": %.*s%s}",
                  (const uint8_t *)"-1.0E-400", 9, "", 3, &len, &ok);
        check(ok);
    }
    free(last_event);
    last_event = e;
    last_event_len = len;
    be_write_line(fd, e, len, in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct in in = { data, size };
    static struct sg_gw_options opt;
    struct sg_gw_loop loop = { 0 };
    struct sg_gw gw;
    memset(&gw, 0, sizeof gw);
    gw.opt = &opt;
    gw.loop = &loop;
    gw.orphan_jobs = json_object();
    int sv[2];
    check(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    static const char hello[] = "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, "
                                "\"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}\r\n"
                                "{\"return\": {}, \"id\": \"sg-0\"}\r\n";
    check(write(sv[1], hello, sizeof hello - 1) == (ssize_t)(sizeof hello - 1));
    struct sg_error err = { 0 };
    check(gw_backend_start(&gw, sv[0], &err));
    client_new(&gw);

    for (int steps = 0; in.n && steps < 400; steps++) {
        switch (byte(&in) % 8) {
        case 0:
            client_new(&gw);
            break;
        case 1:
        case 2:
        case 3:
            client_send(&in);
            break;
        case 4:
        case 5:
            be_reply(sv[1], &in, 0);
            break;
        case 6:
            be_event(sv[1], &in);
            break;
        case 7:
            if (byte(&in) & 1)
                be_reply(sv[1], &in, 1);
            else
                client_leave(&in);
            break;
        }
        pump();
    }
    /* Everything still held is answered; every client got every reply. */
    struct in none = { NULL, 0 };
    for (int round = 0; round < 4 * MAX_CMDS * MAX_CLIENTS; round++) {
        size_t idx[1];
        if (!held(idx, 1))
            break;
        be_reply(sv[1], &none, 0);
        pump();
    }
    size_t idx[1];
    check(held(idx, 1) == 0);
    if (getenv("FUZZ_GW_STATS")) {
        size_t fds = 0, inval = 0;
        for (size_t i = 0; i < n_all; i++) {
            fds += all_cmds[i]->nfds;
            inval += all_cmds[i]->invalid;
        }
        fprintf(stderr, "commands %zu (fds %zu, invalid replies %zu), back-end messages %zu\n",
                n_all, fds, inval, n_be_msgs);
    }
    for (int i = 0; i < MAX_CLIENTS; i++) {
        struct client *cl = &clients[i];
        if (cl->c) {
            check(cl->next_reply == cl->n_cmds);
            sg_gw_qmp_client_free(cl->c);
            cl->c = NULL;
        }
    }
    gw_backend_free(&gw);
    for (int i = 0; i < MAX_TIMERS; i++)
        armed[i] = NULL;
    free(be_fd);
    be_fd = NULL;
    close(sv[0]);
    close(sv[1]);
    for (size_t i = 0; i < n_be_msgs; i++)
        free(be_msgs[i].bytes);
    n_be_msgs = 0;
    for (size_t i = 0; i < n_all; i++) {
        free(all_cmds[i]->sent);
        free(all_cmds[i]->reply);
        free(all_cmds[i]);
    }
    n_all = 0;
    next_k = 0;
    free(last_event);
    last_event = NULL;
    free(gw.clients);
    json_decref(gw.orphan_jobs);
    json_decref(gw.backend_version);
    return 0;
}

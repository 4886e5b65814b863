/* QMP client: greeting, automatic negotiation, id matching, events, close;
 * then client and server together over a unix socket in a tmpdir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "qmp_client.h"
#include "qmp_server.h"

struct obs {
    int ready, events, closed, replies, errors;
    char last_event[64];
    char last_err[1100];
    char last_ret[256];
};

static void o_ready(void *op, const json_t *g)
{
    ((struct obs *)op)->ready++;
    assert_non_null(json_object_get(g, "QMP"));
}

static void o_event(void *op, const json_t *e)
{
    struct obs *o = op;
    o->events++;
    snprintf(o->last_event, sizeof o->last_event, "%s",
             json_string_value(json_object_get(e, "event")));
}

static void o_closed(void *op, const struct sg_error *why)
{
    ((struct obs *)op)->closed++;
    assert_non_null(why);
}

static void o_reply(void *op, const json_t *ret, const struct sg_error *err)
{
    struct obs *o = op;
    assert_true((ret == NULL) != (err == NULL));
    if (ret) {
        o->replies++;
        char *s = sg_qmp_dumps(ret, NULL);
        snprintf(o->last_ret, sizeof o->last_ret, "%s", s);
        free(s);
    } else {
        o->errors++;
        snprintf(o->last_err, sizeof o->last_err, "%s: %s", err->cls, err->msg);
    }
}

static const struct sg_qmp_client_ops ops = {.ready = o_ready, .event = o_event, .closed = o_closed};

static char *take_output(struct sg_qmp_client *c)
{
    size_t n;
    const char *p = sg_qmp_client_output(c, &n);
    char *s = strndup(p, n);
    sg_qmp_client_consume(c, n);
    return s;
}

static void feed_str(struct sg_qmp_client *c, const char *s)
{
    sg_qmp_client_feed(c, s, strlen(s));
}

static void test_sans_io(void **state)
{
    struct obs o = {0};
    struct sg_qmp_client *c = sg_qmp_client_new(&ops, &o);
    struct sg_error err = {0};
    /* issued before the greeting: queued until negotiated */
    uint64_t n1 = sg_qmp_client_execute(c, "query-status", NULL, o_reply, &o, &err);
    assert_int_equal(n1, 1);
    char *out = take_output(c);
    assert_string_equal(out, "");
    free(out);
    feed_str(c, "{\"QMP\": {\"version\": {}, \"capabilities\": [\"oob\"]}}\r\n");
    out = take_output(c);
    assert_string_equal(out, "{\"execute\": \"qmp_capabilities\", \"id\": \"sg-0\"}\r\n");
    free(out);
    assert_false(sg_qmp_client_ready(c));
    /* an event before negotiation completes is not reported */
    feed_str(c, "{\"return\": {}, \"id\": \"sg-0\"}\r\n");
    assert_int_equal(o.ready, 1);
    assert_true(sg_qmp_client_ready(c));
    out = take_output(c);
    assert_string_equal(out, "{\"execute\": \"query-status\", \"id\": \"sg-1\"}\r\n");
    free(out);
    uint64_t n2 = sg_qmp_client_execute(c, "human-monitor-command",
                                        json_pack("{s:s}", "command-line", "info status"),
                                        o_reply, &o, &err);
    uint64_t n3 = sg_qmp_client_execute(c, "stop", NULL, o_reply, &o, &err);
    assert_int_equal(n2, 2);
    assert_int_equal(sg_qmp_client_pending(c), 3);
    sg_qmp_client_forget(c, n3);
    /* out-of-order replies, an event, a stray error without id */
    feed_str(c, "{\"id\": \"sg-2\", \"error\": {\"class\": \"GenericError\", \"desc\": \"boom\"}}\r\n"
                "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\r\n"
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\r\n"
                "{\"return\": {}, \"id\": \"sg-3\"}\r\n"
                "{\"return\": {\"status\": \"paused\"}, \"id\": \"sg-1\"}\r\n");
    assert_int_equal(o.errors, 1);
    assert_string_equal(o.last_err, "GenericError: boom");
    assert_int_equal(o.events, 1);
    assert_string_equal(o.last_event, "STOP");
    assert_int_equal(o.replies, 1);  /* sg-3 was forgotten */
    assert_string_equal(o.last_ret, "{\"status\": \"paused\"}");
    assert_int_equal(sg_qmp_client_pending(c), 0);
    /* close: pending callbacks get an error, then closed is called */
    sg_qmp_client_execute(c, "cont", NULL, o_reply, &o, &err);
    sg_qmp_client_eof(c, NULL);
    assert_int_equal(o.errors, 2);
    assert_non_null(strstr(o.last_err, "QMP connection closed"));
    assert_int_equal(o.closed, 1);
    assert_int_equal(sg_qmp_client_execute(c, "x", NULL, NULL, NULL, &err), 0);
    assert_true(err.set);
    sg_qmp_client_free(c);
}

static void test_bad_greeting(void **state)
{
    struct obs o = {0};
    struct sg_qmp_client *c = sg_qmp_client_new(&ops, &o);
    feed_str(c, "{\"hello\": 1}\n");
    assert_int_equal(o.closed, 1);
    assert_true(sg_qmp_client_closed(c));
    sg_qmp_client_free(c);
}

/* ---- real sockets --------------------------------------------------------- */

static void cmd_status(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    sg_qmp_req_return(req, json_pack("{s:s,s:b}", "status", "running", "running", 1));
}

static void cmd_later(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    *(struct sg_qmp_req **)opaque = req;
}

static void pump(struct sg_qmp_server *srv, struct sg_qmp_client *c, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        struct pollfd fds[17];
        size_t n = sg_qmp_server_pollfds(srv, fds, 16);
        fds[n] = (struct pollfd){.fd = sg_qmp_client_fd(c), .events = POLLIN};
        if (sg_qmp_client_wants_write(c))
            fds[n].events |= POLLOUT;
        if (poll(fds, n + 1, 100) <= 0)
            return;
        sg_qmp_server_handle_pollfds(srv, fds, n);
        if (fds[n].revents & POLLOUT)
            sg_qmp_client_on_writable(c);
        if (fds[n].revents & (POLLIN | POLLHUP))
            sg_qmp_client_on_readable(c);
    }
}

static void test_unix_socket(void **state)
{
    char dir[] = "/tmp/sgqmp-XXXXXX", path[128];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "unix:%s/qmp.sock,server=on,wait=off", dir);
    struct sg_qmp_req *later = NULL;
    const struct sg_qmp_command cmds[] = {
        {.name = "query-status", .fn = cmd_status},
        {.name = "later", .fn = cmd_later, .opaque = &later},
        {.name = NULL},
    };
    struct sg_error err = {0};
    struct sg_qmp_server *srv = sg_qmp_server_new(NULL, NULL, NULL);
    assert_true(sg_qmp_server_add_commands(srv, cmds, &err));
    assert_true(sg_qmp_server_listen(srv, path, &err));
    char sock[128];
    snprintf(sock, sizeof sock, "%s/qmp.sock", dir);
    struct stat st;
    assert_int_equal(stat(sock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);

    struct obs o = {0};
    struct sg_qmp_client *c = sg_qmp_client_connect(sock, &ops, &o, &err);
    assert_non_null(c);
    sg_qmp_client_execute(c, "query-status", NULL, o_reply, &o, &err);
    sg_qmp_client_execute(c, "later", NULL, o_reply, &o, &err);
    sg_qmp_client_execute(c, "nope", NULL, o_reply, &o, &err);
    pump(srv, c, 20);
    assert_int_equal(o.ready, 1);
    assert_int_equal(o.replies, 1);
    assert_string_equal(o.last_ret, "{\"status\": \"running\", \"running\": true}");
    assert_int_equal(o.errors, 1);
    assert_string_equal(o.last_err, "CommandNotFound: The command nope has not been found");
    assert_non_null(later);
    const json_t *v = json_object_get(json_object_get(sg_qmp_client_greeting(c), "QMP"), "version");
    assert_string_equal(json_string_value(json_object_get(v, "package")), "snapgate");
    /* deferred reply and an event, both pushed by the server later */
    sg_qmp_req_return(later, json_string("done"));
    sg_qmp_server_emit_event(srv, "RESUME", NULL);
    pump(srv, c, 5);
    assert_int_equal(o.replies, 2);
    assert_string_equal(o.last_ret, "\"done\"");
    assert_int_equal(o.events, 1);
    assert_string_equal(o.last_event, "RESUME");
    /* server goes away: the client notices */
    sg_qmp_server_free(srv);
    assert_int_equal(access(sock, F_OK), -1);  /* socket file removed */
    bool never = false;
    assert_false(sg_qmp_client_wait(c, &never, 2000, &err));
    assert_int_equal(o.closed, 1);
    sg_qmp_client_free(c);
    rmdir(dir);
}

/* ---- pass-through mode ----------------------------------------------------- */

struct raw_obs {
    int replies, failures, events, closed_first, closed;
    char last[512];
    char why[1200];
    char wrote[4096];
    int wrote_fds;
};

static void r_reply(void *op, const char *msg, size_t len, const struct sg_qmp_top *top,
                    const char *why)
{
    struct raw_obs *o = op;
    if (msg) {
        assert_non_null(top);
        assert_true(top->valid);
        o->replies++;
        snprintf(o->last, sizeof o->last, "%.*s", (int)len, msg);
    } else {
        o->failures++;
        if (o->closed)
            o->closed_first++;
        snprintf(o->why, sizeof o->why, "%s", why);
    }
}

static void r_event(void *op, const char *bytes, size_t len, const struct sg_qmp_top *top)
{
    struct raw_obs *o = op;
    assert_true(top->m[SG_TOP_EVENT].present);
    o->events++;
    snprintf(o->last, sizeof o->last, "%.*s", (int)len, bytes);
}

static void r_closed(void *op, const struct sg_error *why)
{
    ((struct raw_obs *)op)->closed++;
}

static bool r_write(void *op, const char *bytes, size_t len, int *fds, size_t nfds)
{
    struct raw_obs *o = op;
    size_t have = strlen(o->wrote);
    snprintf(o->wrote + have, sizeof o->wrote - have, "%.*s|", (int)len, bytes);
    o->wrote_fds += (int)nfds;
    for (size_t i = 0; i < nfds; i++)
        close(fds[i]);
    return true;
}

static uint64_t fwd(struct sg_qmp_client *c, const char *msg, int *fds, size_t nfds,
                    struct raw_obs *o)
{
    struct sg_qmp_top top;
    sg_qmp_top_scan(msg, strlen(msg), &top);
    struct sg_error err = {0};
    return sg_qmp_client_forward(c, msg, strlen(msg), &top, fds, nfds, r_reply, o, &err);
}

/* Bytes in, bytes out: only the id changes; big integers, floats, key order
 * and whitespace survive; a reply that is not JSON fails the oldest command
 * and the link stays; events come as bytes; the loss is told first. */
static void test_passthrough(void **state)
{
    struct raw_obs o = {0};
    static const struct sg_qmp_client_ops rops = {
        .closed = r_closed, .raw_event = r_event, .write = r_write,
    };
    struct sg_qmp_client *c = sg_qmp_client_new(&rops, &o);
    int p[2];
    assert_int_equal(pipe(p), 0);
    /* before the greeting: held, descriptors included */
    assert_int_equal(fwd(c, "{ \"execute\":\"qom-get\" ,\"id\": [1, 2.50]}", &p[0], 1, &o), 1);
    assert_string_equal(o.wrote, "");
    feed_str(c, "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n"
                "{\"return\": {}, \"id\": \"sg-0\"}\r\n");
    assert_true(sg_qmp_client_ready(c));
    assert_string_equal(o.wrote, "{\"execute\": \"qmp_capabilities\", \"id\": \"sg-0\"}|"
                                 "{ \"execute\":\"qom-get\" ,\"id\": \"sg-1\"}|");
    assert_int_equal(o.wrote_fds, 1);
    /* no id: one is inserted */
    o.wrote[0] = '\0';
    assert_int_equal(fwd(c, "{\"execute\": \"x\", \"arguments\": {\"v\": 1.0e400}}", &p[1], 1, &o), 2);
    assert_string_equal(o.wrote, "{\"id\": \"sg-2\", \"execute\": \"x\", \"arguments\": {\"v\": 1.0e400}}|");
    assert_int_equal(o.wrote_fds, 2);
    feed_str(c, "{\"return\": 18446744073709551552, \"id\": \"sg-1\"}\r\n");
    assert_int_equal(o.replies, 1);
    assert_string_equal(o.last, "{\"return\": 18446744073709551552, \"id\": \"sg-1\"}");
    feed_str(c, "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"X\", "
                "\"data\": {\"f\": 0.10000000000000001}}\r\n");
    assert_int_equal(o.events, 1);
    assert_non_null(strstr(o.last, "0.10000000000000001"));
    /* not JSON: the oldest command (sg-2) gets an error, the link stays */
    feed_str(c, "{\"return\": [1,,2], \"id\": \"sg-2\"}\r\n");
    assert_int_equal(o.failures, 1);
    assert_non_null(strstr(o.why, "not valid JSON"));
    assert_false(sg_qmp_client_closed(c));
    assert_int_equal(sg_qmp_client_pending(c), 0);
    /* a decoded command on the same link */
    struct obs d = {0};
    struct sg_error err = {0};
    assert_int_equal(sg_qmp_client_execute(c, "query-status", NULL, o_reply, &d, &err), 3);
    feed_str(c, "{\"return\": {\"status\": \"running\"}, \"id\": \"sg-3\"}\r\n");
    assert_int_equal(d.replies, 1);
    /* the loss: closed first, then the pending command */
    assert_int_equal(fwd(c, "{\"execute\": \"y\", \"id\": 7}", NULL, 0, &o), 4);
    sg_qmp_client_eof(c, NULL);
    assert_int_equal(o.closed, 1);
    assert_int_equal(o.failures, 2);
    assert_int_equal(o.closed_first, 1);
    assert_non_null(strstr(o.why, "QMP connection closed"));
    assert_true(sg_qmp_client_closed(c));
    sg_qmp_client_free(c);
}

/* Descriptors with the fd helpers: they arrive with their command's bytes. */
static void test_passthrough_fds(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    char dir[] = "/tmp/sg-qmpc-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sock[sizeof dir + 2];
    snprintf(sock, sizeof sock, "%s/s", dir);
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(lfd, 1), 0);
    struct raw_obs o = {0};
    static const struct sg_qmp_client_ops rops = {.closed = r_closed, .raw_event = r_event};
    struct sg_error err = {0};
    struct sg_qmp_client *c = sg_qmp_client_connect(sock, &rops, &o, &err);
    assert_non_null(c);
    int srv = accept(lfd, NULL, NULL);
    assert_true(srv >= 0);
    const char *g = "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n"
                    "{\"return\": {}, \"id\": \"sg-0\"}\r\n";
    assert_int_equal(write(srv, g, strlen(g)), (ssize_t)strlen(g));
    bool never = false;
    sg_qmp_client_wait(c, &never, 200, &err);
    assert_true(sg_qmp_client_ready(c));
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(fwd(c, "{\"execute\": \"getfd\", \"arguments\": {\"fdname\": \"a\"}}", &p[1], 1, &o), 1);
    sg_qmp_client_on_writable(c);
    /* the server side: skip the negotiation line, then the fd with getfd */
    char buf[1024] = "";
    size_t got = 0;
    int passed = -1;
    for (int tries = 0; tries < 100 && !strstr(buf, "getfd"); tries++) {
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(int) * 4)];
        } ctl;
        struct iovec iov = {buf + got, sizeof buf - 1 - got};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
                           .msg_controllen = sizeof ctl.b};
        ssize_t n = recvmsg(srv, &m, 0);
        if (n <= 0) {
            usleep(10000);
            continue;
        }
        for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h))
            if (h->cmsg_type == SCM_RIGHTS) {
                memcpy(&passed, CMSG_DATA(h), sizeof passed);
                assert_non_null(strstr(buf + got, "getfd")); /* came with its command */
            }
        got += (size_t)n;
        buf[got] = '\0';
    }
    assert_true(passed >= 0);
    assert_int_equal(write(passed, "x", 1), 1);  /* the pipe's write end */
    char x;
    assert_int_equal(read(p[0], &x, 1), 1);
    close(passed);
    close(p[0]);
    close(srv);
    close(lfd);
    close(sv[0]);
    close(sv[1]);
    sg_qmp_client_free(c);
    unlink(sock);
    rmdir(dir);
}

/* Keys compare as a JSON decoder sees them: an escaped "id" is the id (so a
 * second one cannot slip past the rewrite), duplicates are refused however
 * they are spelt. */
static void test_top_escaped_keys(void **state)
{
    (void)state;
    struct sg_qmp_top top;
    const char *m = "{\"execute\": \"x\", \"\\u0069d\": 7}";
    sg_qmp_top_scan(m, strlen(m), &top);
    assert_true(top.valid);
    assert_true(top.m[SG_TOP_ID].present);
    assert_false(top.other_keys);
    const char *bad[] = {
        "{\"id\": 1, \"\\u0069d\": 2}",
        "{\"i\\u0064\": 1, \"id\": 2}",
        "{\"a\\u00e9\": 1, \"a\xc3\xa9\": 2}",      /* é escaped and raw */
        "{\"\\ud83d\\ude00\": 1, \"\xf0\x9f\x98\x80\": 2}", /* a pair and raw */
        "{\"a\\/\": 1, \"a/\": 2}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sg_qmp_top_scan(bad[i], strlen(bad[i]), &top);
        assert_false(top.valid);
    }
    const char *ok = "{\"\\u0065xecute\": \"x\", \"a\\u00e9\": 1, \"a\\u00e8\": 2}";
    sg_qmp_top_scan(ok, strlen(ok), &top);
    assert_true(top.valid);
    assert_true(top.m[SG_TOP_EXECUTE].present);
    assert_true(top.other_keys);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sans_io),
        cmocka_unit_test(test_bad_greeting),
        cmocka_unit_test(test_unix_socket),
        cmocka_unit_test(test_passthrough),
        cmocka_unit_test(test_passthrough_fds),
        cmocka_unit_test(test_top_escaped_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

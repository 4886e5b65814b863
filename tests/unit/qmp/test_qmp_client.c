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
#include <sys/stat.h>
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

static const struct sg_qmp_client_ops ops = {o_ready, o_event, o_closed};

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sans_io),
        cmocka_unit_test(test_bad_greeting),
        cmocka_unit_test(test_unix_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

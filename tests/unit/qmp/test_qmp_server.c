/* QMP server: negotiation, request checks, ids, argument schemas, deferred
 * replies, events, fd sessions.  Texts are QEMU 7.2's (checked live by
 * tests/integration/qmp/test_qmp_vs_qemu.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "qmp_server.h"

/* ---- a custom transport that records what the session sends ---------- */
struct rec {
    char *out[64];
    int n;
    bool closed;
};

static void rec_send(void *opaque, const char *text, size_t len)
{
    struct rec *r = opaque;
    assert_true(r->n < 64);
    r->out[r->n++] = strndup(text, len);
}

static void rec_close(void *opaque)
{
    ((struct rec *)opaque)->closed = true;
}

static const struct sg_qmp_transport rec_tr = {rec_send, rec_close};

static void rec_clear(struct rec *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->out[i]);
    r->n = 0;
}

static void input_str(struct sg_qmp_session *s, const char *text)
{
    sg_qmp_session_input(s, text, strlen(text));
}

/* Sends one line and returns the single reply it produced (owned by r). */
static const char *ask(struct sg_qmp_session *s, struct rec *r, const char *line)
{
    int before = r->n;
    sg_qmp_session_input(s, line, strlen(line));
    assert_int_equal(r->n, before + 1);
    return r->out[r->n - 1];
}

/* ---- commands used by the tests ------------------------------------------ */
struct ctx {
    struct sg_qmp_req *deferred[8];
    int ndeferred;
    int calls;
};

static void cmd_echo(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct ctx *c = opaque;
    c->calls++;
    sg_qmp_req_return(req, args ? json_deep_copy(args) : NULL);
}

static void cmd_defer(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct ctx *c = opaque;
    c->deferred[c->ndeferred++] = req;
}

static void cmd_fail(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    sg_qmp_req_errorf(req, SG_ERR_DEVICE_NOT_FOUND, "Device '%s' not found",
                      json_string_value(json_object_get(args, "device")));
}

static const char *const fmt_values[] = {"ppm", "png", NULL};
static const struct sg_qmp_arg str_elem = SG_QMP_ARG(NULL, SG_QMP_T_STR);
static const struct sg_qmp_arg snap_data[] = {
    SG_QMP_ARG("device", SG_QMP_T_STR),
    SG_QMP_ARG("name", SG_QMP_T_STR),
    SG_QMP_ARGS_END,
};
static const char *const action_types[] = {"blockdev-snapshot-internal-sync", NULL};
static const struct sg_qmp_arg action_base[] = {
    {"type", SG_QMP_T_ENUM, .values = action_types},
    SG_QMP_ARGS_END,
};
static const struct sg_qmp_arg action_snap[] = {
    {"data", SG_QMP_T_OBJECT, .members = snap_data},
    SG_QMP_ARGS_END,
};
static const struct sg_qmp_variant action_variants[] = {
    {"blockdev-snapshot-internal-sync", action_snap},
    {.value = NULL},
};
static const struct sg_qmp_arg action_elem = {
    NULL, SG_QMP_T_UNION, .members = action_base, .discriminator = "type",
    .variants = action_variants};
static const struct sg_qmp_arg echo_args[] = {
    SG_QMP_ARG("tag", SG_QMP_T_STR),
    {"count", SG_QMP_T_INT, .optional = true},
    {"flag", SG_QMP_T_BOOL, .optional = true},
    {"threshold", SG_QMP_T_UINT64, .optional = true},
    {"format", SG_QMP_T_ENUM, .optional = true, .values = fmt_values},
    {"devices", SG_QMP_T_ARRAY, .optional = true, .elem = &str_elem},
    {"actions", SG_QMP_T_ARRAY, .optional = true, .elem = &action_elem},
    {"opts", SG_QMP_T_OBJECT, .optional = true},
    {"any", SG_QMP_T_ANY, .optional = true},
    SG_QMP_ARGS_END,
};
static const struct sg_qmp_arg dev_args[] = {SG_QMP_ARG("device", SG_QMP_T_STR), SG_QMP_ARGS_END};

static struct sg_qmp_server *make_server(struct ctx *c)
{
    const struct sg_qmp_command table[] = {
        {"echo", cmd_echo, echo_args, 0, c},
        {"defer", cmd_defer, NULL, SG_QMP_CMD_ARGS_UNCHECKED, c},
        {"fail", cmd_fail, dev_args, 0, c},
        {"noargs", cmd_echo, NULL, 0, c},
        {.name = NULL},
    };
    json_t *ver = json_pack("{s:{s:i,s:i,s:i},s:s}", "qemu", "micro", 3, "minor", 2, "major", 1,
                            "package", "test");
    struct sg_qmp_server *srv = sg_qmp_server_new(ver, NULL, c);
    json_decref(ver);
    struct sg_error err = {0};
    assert_true(sg_qmp_server_add_commands(srv, table, &err));
    assert_false(sg_qmp_server_add_command(srv, &table[0], &err));  /* duplicate */
    return srv;
}

static struct sg_qmp_session *negotiated_session(struct sg_qmp_server *srv, struct rec *r)
{
    struct sg_qmp_session *s = sg_qmp_server_session_new(srv, &rec_tr, r);
    assert_string_equal(ask(s, r, "{\"execute\":\"qmp_capabilities\"}"), "{\"return\": {}}");
    rec_clear(r);
    return s;
}

static void test_greeting_and_negotiation(void **state)
{
    struct ctx c = {0};
    struct rec r = {0};
    struct sg_qmp_server *srv = make_server(&c);
    struct sg_qmp_session *s = sg_qmp_server_session_new(srv, &rec_tr, &r);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.out[0], "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 3, \"minor\": 2, "
                                  "\"major\": 1}, \"package\": \"test\"}, \"capabilities\": []}}");
    assert_false(sg_qmp_session_negotiated(s));
    assert_string_equal(ask(s, &r, "{\"execute\":\"echo\",\"id\":5}"),
                        "{\"id\": 5, \"error\": {\"class\": \"CommandNotFound\", \"desc\": "
                        "\"Expecting capabilities negotiation with 'qmp_capabilities'\"}}");
    assert_string_equal(ask(s, &r, "{\"execute\":\"nope\"}"),
                        "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": "
                        "\"Expecting capabilities negotiation with 'qmp_capabilities'\"}}");
    assert_string_equal(ask(s, &r, "{\"execute\":\"qmp_capabilities\",\"arguments\":{\"x\":1}}"),
                        "{\"error\": {\"class\": \"GenericError\", \"desc\": "
                        "\"Parameter 'x' is unexpected\"}}");
    assert_int_equal(c.calls, 0);
    assert_string_equal(ask(s, &r, "{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[\"oob\"]}}"),
                        "{\"error\": {\"class\": \"GenericError\", \"desc\": "
                        "\"Capability oob not available\"}}");
    assert_false(sg_qmp_session_negotiated(s));
    assert_string_equal(ask(s, &r, "{\"execute\":\"qmp_capabilities\",\"id\":[1,{\"a\":null}]}"),
                        "{\"return\": {}, \"id\": [1, {\"a\": null}]}");
    assert_true(sg_qmp_session_negotiated(s));
    assert_string_equal(ask(s, &r, "{\"execute\":\"qmp_capabilities\"}"),
                        "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": "
                        "\"Capabilities negotiation is already complete, command ignored\"}}");
    sg_qmp_session_free(s);
    sg_qmp_server_free(srv);
    rec_clear(&r);
}

static void test_request_errors_and_ids(void **state)
{
    struct ctx c = {0};
    struct rec r = {0};
    struct sg_qmp_server *srv = make_server(&c);
    struct sg_qmp_session *s = negotiated_session(srv, &r);
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"[1]", "{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input must be a JSON object\"}}"},
        {"{\"id\":3}", "{\"id\": 3, \"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input lacks member 'execute'\"}}"},
        {"{\"execute\":1,\"id\":9}", "{\"id\": 9, \"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input member 'execute' must be a string\"}}"},
        {"{\"execute\":\"echo\",\"arguments\":[]}", "{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input member 'arguments' must be an object\"}}"},
        {"{\"execute\":\"echo\",\"foo\":1,\"id\":\"x\"}", "{\"id\": \"x\", \"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input member 'foo' is unexpected\"}}"},
        {"{\"exec-oob\":\"echo\"}", "{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input member 'exec-oob' is unexpected\"}}"},
        {"{\"execute\":\"nope\",\"id\":null}", "{\"id\": null, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command nope has not been found\"}}"},
        {"{\"id\":1,\"id\":2}", "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, duplicate key\"}}"},
        /* ids of every JSON type come back verbatim */
        {"{\"execute\":\"echo\",\"arguments\":{\"tag\":\"t\"},\"id\":{\"x\":[1.5,true,\"\\u00e9\"]}}", "{\"return\": {\"tag\": \"t\"}, \"id\": {\"x\": [1.5, true, \"\\u00E9\"]}}"},
        {"{\"execute\":\"echo\",\"arguments\":{\"tag\":\"t\"},\"id\":-12}", "{\"return\": {\"tag\": \"t\"}, \"id\": -12}"},
        {"{\"execute\":\"fail\",\"arguments\":{\"device\":\"d9\"},\"id\":\"f\"}", "{\"id\": \"f\", \"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"Device 'd9' not found\"}}"},
        {"{\"execute\":\"noargs\"}", "{\"return\": {}}"},
        {"{\"execute\":\"noargs\",\"arguments\":{}}", "{\"return\": {}}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_string_equal(ask(s, &r, cases[i].in), cases[i].out);
    /* a parse error does not end the session */
    const char *bad = ask(s, &r, "garbage");
    assert_non_null(strstr(bad, "JSON parse error, "));
    assert_false(sg_qmp_session_closing(s));
    assert_string_equal(ask(s, &r, "{\"execute\":\"noargs\",\"id\":1}"), "{\"return\": {}, \"id\": 1}");
    sg_qmp_server_free(srv);  /* frees the session too */
    rec_clear(&r);
}

static void test_argument_schema(void **state)
{
    struct ctx c = {0};
    struct rec r = {0};
    struct sg_qmp_server *srv = make_server(&c);
    struct sg_qmp_session *s = negotiated_session(srv, &r);
    static const struct {
        const char *args, *desc;
    } cases[] = {
        {"{}", "Parameter 'tag' is missing"},
        {"{\"x\":1,\"y\":2}", "Parameter 'tag' is missing"},
        {"{\"tag\":\"t\",\"x\":2}", "Parameter 'x' is unexpected"},
        {"{\"tag\":1}", "Invalid parameter type for 'tag', expected: string"},
        {"{\"tag\":null}", "Invalid parameter type for 'tag', expected: string"},
        {"{\"tag\":\"t\",\"count\":1.5}", "Invalid parameter type for 'count', expected: integer"},
        {"{\"tag\":\"t\",\"count\":null}", "Invalid parameter type for 'count', expected: integer"},
        {"{\"tag\":\"t\",\"flag\":1}", "Invalid parameter type for 'flag', expected: boolean"},
        {"{\"tag\":\"t\",\"threshold\":\"s\"}", "Parameter 'threshold' expects uint64"},
        {"{\"tag\":\"t\",\"format\":\"zz\"}", "Parameter 'format' does not accept value 'zz'"},
        {"{\"tag\":\"t\",\"format\":5}", "Invalid parameter type for 'format', expected: string"},
        {"{\"tag\":\"t\",\"devices\":\"x\"}", "Invalid parameter type for 'devices', expected: array"},
        {"{\"tag\":\"t\",\"devices\":[\"a\",1]}", "Invalid parameter type for 'devices[1]', expected: string"},
        {"{\"tag\":\"t\",\"opts\":[]}", "Invalid parameter type for 'opts', expected: object"},
        {"{\"tag\":\"t\",\"actions\":[{\"data\":{}}]}", "Parameter 'actions[0].type' is missing"},
        {"{\"tag\":\"t\",\"actions\":[{\"type\":5}]}", "Invalid parameter type for 'actions[0].type', expected: string"},
        {"{\"tag\":\"t\",\"actions\":[{\"type\":\"nope\",\"data\":{}}]}", "Parameter 'type' does not accept value 'nope'"},
        {"{\"tag\":\"t\",\"actions\":[{\"type\":\"blockdev-snapshot-internal-sync\"}]}", "Parameter 'actions[0].data' is missing"},
        {"{\"tag\":\"t\",\"actions\":[{\"type\":\"blockdev-snapshot-internal-sync\",\"data\":{\"device\":\"d\"}}]}", "Parameter 'actions[0].data.name' is missing"},
        {"{\"tag\":\"t\",\"actions\":[{\"type\":\"blockdev-snapshot-internal-sync\",\"data\":{\"device\":\"d\",\"name\":\"n\",\"foo\":2}}]}", "Parameter 'actions[0].data.foo' is unexpected"},
        {"{\"tag\":\"t\",\"actions\":[{\"type\":\"blockdev-snapshot-internal-sync\",\"data\":{\"device\":\"d\",\"name\":\"n\"},\"z\":0}]}", "Parameter 'actions[0].z' is unexpected"},
    };
    char line[512], want[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(line, sizeof line, "{\"execute\":\"echo\",\"arguments\":%s}", cases[i].args);
        snprintf(want, sizeof want, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"%s\"}}",
                 cases[i].desc);
        assert_string_equal(ask(s, &r, line), want);
    }
    assert_int_equal(c.calls, 0);
    /* a fully valid call reaches the handler with the arguments */
    const char *ok = ask(s, &r, "{\"execute\":\"echo\",\"arguments\":{\"tag\":\"t\",\"count\":-3,"
                                "\"threshold\":-1,\"format\":\"png\",\"devices\":[\"a\"],"
                                "\"actions\":[{\"type\":\"blockdev-snapshot-internal-sync\","
                                "\"data\":{\"device\":\"d\",\"name\":\"n\"}}],\"opts\":{\"q\":1},"
                                "\"any\":[null]}}");
    assert_non_null(strstr(ok, "\"return\": {\"tag\": \"t\""));
    assert_int_equal(c.calls, 1);
    assert_string_equal(ask(s, &r, "{\"execute\":\"noargs\",\"arguments\":{\"a\":1}}"),
                        "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Parameter 'a' is unexpected\"}}");
    sg_qmp_server_free(srv);
    rec_clear(&r);
}

static void test_deferred_replies(void **state)
{
    struct ctx c = {0};
    struct rec r = {0}, r2 = {0};
    struct sg_qmp_server *srv = make_server(&c);
    struct sg_qmp_session *s = negotiated_session(srv, &r);
    input_str(s, "{\"execute\":\"defer\",\"id\":{\"k\":1}}");
    input_str(s, "{\"execute\":\"defer\",\"arguments\":{\"any\":1},\"id\":\"second\"}");
    assert_int_equal(r.n, 0);
    assert_int_equal(c.ndeferred, 2);
    assert_string_equal(sg_qmp_req_command(c.deferred[0]), "defer");
    assert_int_equal(json_integer_value(json_object_get(sg_qmp_req_id(c.deferred[0]), "k")), 1);
    assert_ptr_equal(sg_qmp_req_session(c.deferred[0]), s);
    /* other commands are answered while those wait */
    assert_string_equal(ask(s, &r, "{\"execute\":\"noargs\",\"id\":3}"), "{\"return\": {}, \"id\": 3}");
    /* completion order, ids kept */
    sg_qmp_req_return(c.deferred[1], json_pack("{s:i}", "n", 2));
    assert_string_equal(r.out[r.n - 1], "{\"return\": {\"n\": 2}, \"id\": \"second\"}");
    struct sg_error err = {0};
    sg_error_set(&err, "Snapshot 't1' already exists");
    sg_qmp_req_error(c.deferred[0], &err);
    assert_string_equal(r.out[r.n - 1], "{\"id\": {\"k\": 1}, \"error\": {\"class\": \"GenericError\", "
                                        "\"desc\": \"Snapshot 't1' already exists\"}}");
    /* a request outlives its client; completing it is harmless */
    struct sg_qmp_session *s2 = negotiated_session(srv, &r2);
    input_str(s2, "{\"execute\":\"defer\",\"id\":7}");
    assert_int_equal(c.ndeferred, 3);
    sg_qmp_session_free(s2);
    assert_null(sg_qmp_req_session(c.deferred[2]));
    sg_qmp_req_return(c.deferred[2], NULL);
    assert_int_equal(r2.n, 0);
    sg_qmp_server_free(srv);
    rec_clear(&r);
    rec_clear(&r2);
}

static void test_events_to_negotiated(void **state)
{
    struct ctx c = {0};
    struct rec a = {0}, b = {0}, raw = {0};
    struct sg_qmp_server *srv = make_server(&c);
    struct sg_qmp_session *sa = negotiated_session(srv, &a);
    negotiated_session(srv, &b);
    struct sg_qmp_session *sr = sg_qmp_server_session_new(srv, &rec_tr, &raw);
    rec_clear(&raw);
    sg_qmp_server_emit_event(srv, "STOP", NULL);
    json_t *ev = sg_qmp_event_new_at("JOB_STATUS_CHANGE", json_pack("{s:s,s:s}", "status",
                                     "created", "id", "j1"), 12, 34);
    sg_qmp_server_broadcast(srv, ev);
    json_decref(ev);
    assert_int_equal(a.n, 2);
    assert_int_equal(b.n, 2);
    assert_int_equal(raw.n, 0);  /* not negotiated: no events */
    json_t *stop = json_loads(a.out[0], 0, NULL);
    json_t *ts = json_object_get(stop, "timestamp");
    assert_true(json_integer_value(json_object_get(ts, "seconds")) > 1600000000);
    assert_true(json_is_integer(json_object_get(ts, "microseconds")));
    assert_string_equal(json_string_value(json_object_get(stop, "event")), "STOP");
    assert_null(json_object_get(stop, "data"));
    json_decref(stop);
    assert_string_equal(b.out[1], "{\"timestamp\": {\"seconds\": 12, \"microseconds\": 34}, "
                                  "\"event\": \"JOB_STATUS_CHANGE\", \"data\": {\"status\": "
                                  "\"created\", \"id\": \"j1\"}}");
    sg_qmp_session_free(sa);
    sg_qmp_server_emit_event(srv, "RESUME", NULL);
    assert_int_equal(b.n, 3);
    (void)sr;
    sg_qmp_server_free(srv);
    rec_clear(&a);
    rec_clear(&b);
    rec_clear(&raw);
}

static void test_custom_fatal_closes(void **state)
{
    struct ctx c = {0};
    struct rec r = {0};
    struct sg_qmp_server *srv = make_server(&c);
    struct sg_qmp_session *s = negotiated_session(srv, &r);
    char deep[200];
    memset(deep, '[', 65);
    memset(deep + 65, ']', 65);
    deep[130] = 0;
    assert_string_equal(ask(s, &r, deep), "{\"error\": {\"class\": \"GenericError\", \"desc\": "
                                          "\"JSON nesting depth limit exceeded\"}}");
    assert_true(r.closed);
    assert_true(sg_qmp_session_closing(s));
    input_str(s, "{}");
    assert_int_equal(r.n, 1);
    sg_qmp_server_free(srv);
    rec_clear(&r);
}

/* ---- fd sessions over socketpairs, driven by the poll helpers ------------ */

static void pump(struct sg_qmp_server *srv)
{
    for (int i = 0; i < 20; i++) {
        struct pollfd fds[16];
        size_t n = sg_qmp_server_pollfds(srv, fds, 16);
        if (poll(fds, n, 0) <= 0)
            return;
        sg_qmp_server_handle_pollfds(srv, fds, n);
    }
}

/* Reads what the peer end has (the server already flushed). */
static char *drain(int fd)
{
    static char buf[1 << 16];
    size_t n = 0;
    for (;;) {
        ssize_t k = recv(fd, buf + n, sizeof buf - 1 - n, MSG_DONTWAIT);
        if (k <= 0)
            break;
        n += (size_t)k;
    }
    buf[n] = 0;
    return buf;
}

static void test_fd_sessions(void **state)
{
    struct ctx c = {0};
    struct sg_qmp_server *srv = make_server(&c);
    int p1[2], p2[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p1), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p2), 0);
    struct sg_error err = {0};
    struct sg_qmp_session *s1 = sg_qmp_server_adopt_fd(srv, p1[0], &err);
    struct sg_qmp_session *s2 = sg_qmp_server_adopt_fd(srv, p2[0], &err);
    assert_non_null(s1);
    assert_non_null(s2);
    assert_int_equal(sg_qmp_session_fd(s1), p1[0]);
    assert_non_null(strstr(drain(p1[1]), "{\"QMP\": {\"version\""));
    assert_non_null(strstr(drain(p2[1]), "\r\n"));
    /* two messages in one write, CRLF, split across writes */
    const char *in = "{\"execute\":\"qmp_capabilities\",\"id\":1}\r\n{\"execute\":\"noargs\",\"id\":2}{\"exe";
    assert_int_equal(write(p1[1], in, strlen(in)), (ssize_t)strlen(in));
    pump(srv);
    assert_string_equal(drain(p1[1]), "{\"return\": {}, \"id\": 1}\r\n{\"return\": {}, \"id\": 2}\r\n");
    assert_int_equal(write(p1[1], "cute\":\"defer\",\"id\":3}\n", 22), 22);
    pump(srv);
    assert_int_equal(c.ndeferred, 1);
    assert_string_equal(drain(p1[1]), "");
    /* deferred reply + event: queued, flushed by the loop */
    sg_qmp_req_return(c.deferred[0], NULL);
    sg_qmp_server_emit_event(srv, "STOP", NULL);
    assert_true(sg_qmp_session_wants_write(s1));
    assert_false(sg_qmp_session_wants_write(s2));  /* not negotiated: no event */
    pump(srv);
    char *got = drain(p1[1]);
    assert_non_null(strstr(got, "{\"return\": {}, \"id\": 3}\r\n{\"timestamp\": {\"seconds\": "));
    assert_non_null(strstr(got, "\"event\": \"STOP\"}\r\n"));
    /* limits: error reply, then the server closes the connection */
    char deep[200];
    memset(deep, '{', 100);
    deep[100] = 0;
    assert_int_equal(write(p2[1], deep, 100), 100);
    pump(srv);
    got = drain(p2[1]);
    assert_string_equal(got, "{\"error\": {\"class\": \"GenericError\", \"desc\": "
                             "\"JSON nesting depth limit exceeded\"}}\r\n");
    char b;
    assert_int_equal(recv(p2[1], &b, 1, MSG_DONTWAIT), 0);  /* EOF */
    /* peer EOF ends the other session */
    close(p1[1]);
    pump(srv);
    assert_int_equal(sg_qmp_server_npollfds(srv), 1);
    close(p2[1]);
    sg_qmp_server_free(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greeting_and_negotiation),
        cmocka_unit_test(test_request_errors_and_ids),
        cmocka_unit_test(test_argument_schema),
        cmocka_unit_test(test_deferred_replies),
        cmocka_unit_test(test_events_to_negotiated),
        cmocka_unit_test(test_custom_fatal_closes),
        cmocka_unit_test(test_fd_sessions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Framing edge cases of the QMP stream decoder and single-message parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "qmp_msg.h"
#include "qmp_stream.h"

/* Collects what the decoder reports, as text, for easy comparison. */
struct sink {
    char *msgs[64];
    int nmsgs;
    char *errs[64];
    int nerrs;
    int stop_after;  /* return false after this many messages (0: never) */
};

static bool on_msg(void *opaque, json_t *msg)
{
    struct sink *k = opaque;
    if (k->nmsgs < 64)
        k->msgs[k->nmsgs++] = sg_qmp_dumps(msg, NULL);
    return !(k->stop_after && k->nmsgs >= k->stop_after);
}

static bool on_invalid(void *opaque, const struct sg_error *err)
{
    struct sink *k = opaque;
    if (k->nerrs < 64)
        k->errs[k->nerrs++] = strdup(err->msg);
    return true;
}

static const struct sg_qmp_decoder_ops ops = {on_msg, on_invalid, NULL};

static void sink_free(struct sink *k)
{
    for (int i = 0; i < k->nmsgs; i++)
        free(k->msgs[i]);
    for (int i = 0; i < k->nerrs; i++)
        free(k->errs[i]);
}

static enum sg_qmp_feed feed_str(struct sg_qmp_decoder *d, const char *s)
{
    struct sg_error err = {0};
    return sg_qmp_decoder_feed(d, s, strlen(s), &err);
}

static void test_two_in_one_read(void **state)
{
    struct sink k = {0};
    struct sg_qmp_decoder *d = sg_qmp_decoder_new(&ops, &k);
    assert_int_equal(feed_str(d, "{\"execute\":\"a\"}{\"execute\":\"b\",\"id\":[1]}\r\n"), SG_QMP_FEED_OK);
    assert_int_equal(k.nmsgs, 2);
    assert_string_equal(k.msgs[0], "{\"execute\": \"a\"}");
    assert_string_equal(k.msgs[1], "{\"execute\": \"b\", \"id\": [1]}");
    assert_int_equal(k.nerrs, 0);
    assert_int_equal(sg_qmp_decoder_pending(d), 0);
    sg_qmp_decoder_free(d);
    sink_free(&k);
}

static void test_byte_at_a_time(void **state)
{
    const char *in = "{\"execute\": \"x\", \"arguments\": {\"s\": \"a}\\\"{[\"}}\r\n"
                     "[1, {\"n\": null}]\n  42\n\"str\"\n";
    struct sink k = {0};
    struct sg_qmp_decoder *d = sg_qmp_decoder_new(&ops, &k);
    for (size_t i = 0; in[i]; i++) {
        struct sg_error err = {0};
        assert_int_equal(sg_qmp_decoder_feed(d, in + i, 1, &err), SG_QMP_FEED_OK);
    }
    assert_int_equal(k.nmsgs, 4);
    assert_string_equal(k.msgs[0], "{\"execute\": \"x\", \"arguments\": {\"s\": \"a}\\\"{[\"}}");
    assert_string_equal(k.msgs[1], "[1, {\"n\": null}]");
    assert_string_equal(k.msgs[2], "42");
    assert_string_equal(k.msgs[3], "\"str\"");
    assert_int_equal(k.nerrs, 0);
    sg_qmp_decoder_free(d);
    sink_free(&k);
}

static void test_split_message(void **state)
{
    struct sink k = {0};
    struct sg_qmp_decoder *d = sg_qmp_decoder_new(&ops, &k);
    assert_int_equal(feed_str(d, "{\"exec"), SG_QMP_FEED_OK);
    assert_int_equal(k.nmsgs, 0);
    assert_int_equal(sg_qmp_decoder_pending(d), 6);
    assert_int_equal(feed_str(d, "ute\": \"q\"}\r"), SG_QMP_FEED_OK);
    assert_int_equal(k.nmsgs, 1);
    assert_int_equal(feed_str(d, "\n{\"a\""), SG_QMP_FEED_OK);
    assert_int_equal(feed_str(d, ": 1}"), SG_QMP_FEED_OK);
    assert_int_equal(k.nmsgs, 2);
    assert_string_equal(k.msgs[1], "{\"a\": 1}");
    sg_qmp_decoder_free(d);
    sink_free(&k);
}

static void test_garbage_then_valid(void **state)
{
    struct sink k = {0};
    struct sg_qmp_decoder *d = sg_qmp_decoder_new(&ops, &k);
    assert_int_equal(feed_str(d, "garbage\n{\"a\":}\n}\n\"open string\n{\"execute\":\"ok\"}\r\n"),
                     SG_QMP_FEED_OK);
    assert_int_equal(k.nerrs, 4);
    for (int i = 0; i < k.nerrs; i++)
        assert_non_null(strstr(k.errs[i], "JSON parse error, "));
    assert_int_equal(k.nmsgs, 1);
    assert_string_equal(k.msgs[0], "{\"execute\": \"ok\"}");
    sg_qmp_decoder_free(d);
    sink_free(&k);
}

static void test_duplicate_key_text(void **state)
{
    struct sink k = {0};
    struct sg_qmp_decoder *d = sg_qmp_decoder_new(&ops, &k);
    assert_int_equal(feed_str(d, "{\"id\":1,\"id\":2}\n"), SG_QMP_FEED_OK);
    assert_int_equal(k.nerrs, 1);
    assert_string_equal(k.errs[0], "JSON parse error, duplicate key");
    sg_qmp_decoder_free(d);
    sink_free(&k);
}

static void test_non_utf8(void **state)
{
    struct sink k = {0};
    struct sg_qmp_decoder *d = sg_qmp_decoder_new(&ops, &k);
    assert_int_equal(feed_str(d, "{\"execute\":\"qu\xff" "ery\"}\n\xfe\n{\"execute\":\"\xc3\xa9\"}\n"),
                     SG_QMP_FEED_OK);
    assert_int_equal(k.nerrs, 2);
    assert_int_equal(k.nmsgs, 1);
    assert_string_equal(k.msgs[0], "{\"execute\": \"\\u00E9\"}");
    sg_qmp_decoder_free(d);
    sink_free(&k);
}

static void test_crlf_and_blank_lines(void **state)
{
    struct sink k = {0};
    struct sg_qmp_decoder *d = sg_qmp_decoder_new(&ops, &k);
    assert_int_equal(feed_str(d, "\r\n\r\n  \t{}\r\n\r\n{}\r\n"), SG_QMP_FEED_OK);
    assert_int_equal(k.nmsgs, 2);
    assert_int_equal(k.nerrs, 0);
    assert_int_equal(sg_qmp_decoder_pending(d), 0);
    sg_qmp_decoder_free(d);
    sink_free(&k);
}

static void test_depth_limit(void **state)
{
    char ok[2 * SG_QMP_MAX_DEPTH + 2], bad[2 * (SG_QMP_MAX_DEPTH + 1) + 2];
    memset(ok, '[', SG_QMP_MAX_DEPTH);
    memset(ok + SG_QMP_MAX_DEPTH, ']', SG_QMP_MAX_DEPTH);
    ok[2 * SG_QMP_MAX_DEPTH] = '\n';
    ok[2 * SG_QMP_MAX_DEPTH + 1] = 0;
    memset(bad, '[', SG_QMP_MAX_DEPTH + 1);
    memset(bad + SG_QMP_MAX_DEPTH + 1, ']', SG_QMP_MAX_DEPTH + 1);
    bad[2 * (SG_QMP_MAX_DEPTH + 1)] = '\n';
    bad[2 * (SG_QMP_MAX_DEPTH + 1) + 1] = 0;

    struct sink k = {0};
    struct sg_qmp_decoder *d = sg_qmp_decoder_new(&ops, &k);
    assert_int_equal(feed_str(d, ok), SG_QMP_FEED_OK);
    assert_int_equal(k.nmsgs, 1);
    struct sg_error err = {0};
    assert_int_equal(sg_qmp_decoder_feed(d, bad, strlen(bad), &err), SG_QMP_FEED_FATAL);
    assert_string_equal(err.msg, "JSON nesting depth limit exceeded");
    /* dead from now on */
    assert_int_equal(feed_str(d, "{}"), SG_QMP_FEED_FATAL);
    assert_int_equal(k.nmsgs, 1);
    sg_qmp_decoder_free(d);
    sink_free(&k);

    json_t *v = NULL;
    struct sg_error e2 = {0};
    assert_int_equal(sg_qmp_parse_message(bad, strlen(bad), &v, &e2), SG_QMP_PARSE_FATAL);
    assert_int_equal(sg_qmp_parse_message(ok, strlen(ok), &v, &e2), SG_QMP_PARSE_OK);
    json_decref(v);
}

static void test_size_limit(void **state)
{
    /* a string member exactly filling the limit passes, one byte more fails */
    size_t n = SG_QMP_MAX_MESSAGE_BYTES;
    char *big = malloc(n + 2);
    assert_non_null(big);
    memcpy(big, "{\"s\":\"", 6);
    memset(big + 6, 'x', n - 8);
    memcpy(big + n - 2, "\"}", 2);
    struct sink k = {0};
    struct sg_qmp_decoder *d = sg_qmp_decoder_new(&ops, &k);
    struct sg_error err = {0};
    assert_int_equal(sg_qmp_decoder_feed(d, big, n, &err), SG_QMP_FEED_OK);
    assert_int_equal(k.nmsgs, 1);
    sg_qmp_decoder_free(d);
    sink_free(&k);

    memset(&k, 0, sizeof k);
    d = sg_qmp_decoder_new(&ops, &k);
    memcpy(big, "{\"s\":\"", 6);
    memset(big + 6, 'x', n - 7);
    memcpy(big + n - 1, "\"}", 2);
    /* fed in pieces: the limit must hit before the message ends */
    enum sg_qmp_feed r = SG_QMP_FEED_OK;
    for (size_t off = 0; off < n + 1 && r == SG_QMP_FEED_OK; off += 1 << 20) {
        size_t len = n + 1 - off < (1u << 20) ? n + 1 - off : (1u << 20);
        r = sg_qmp_decoder_feed(d, big + off, len, &err);
    }
    assert_int_equal(r, SG_QMP_FEED_FATAL);
    assert_string_equal(err.msg, "JSON message size limit exceeded");
    assert_int_equal(k.nmsgs, 0);
    sg_qmp_decoder_free(d);
    free(big);
}

static void test_stop_keeps_rest(void **state)
{
    struct sink k = {.stop_after = 1};
    struct sg_qmp_decoder *d = sg_qmp_decoder_new(&ops, &k);
    assert_int_equal(feed_str(d, "{\"a\":1}{\"b\":2}{\"c\""), SG_QMP_FEED_STOPPED);
    assert_int_equal(k.nmsgs, 1);
    k.stop_after = 0;
    assert_int_equal(feed_str(d, ":3}"), SG_QMP_FEED_OK);
    assert_int_equal(k.nmsgs, 3);
    assert_string_equal(k.msgs[1], "{\"b\": 2}");
    assert_string_equal(k.msgs[2], "{\"c\": 3}");
    sg_qmp_decoder_free(d);
    sink_free(&k);
}

static void test_parse_message(void **state)
{
    json_t *v = NULL;
    struct sg_error err = {0};
    assert_int_equal(sg_qmp_parse_message(" {\"a\": [1]} \r\n", 14, &v, &err), SG_QMP_PARSE_OK);
    assert_true(json_is_object(v));
    json_decref(v);
    assert_int_equal(sg_qmp_parse_message("{} {}", 5, &v, &err), SG_QMP_PARSE_INVALID);
    assert_null(v);
    sg_error_clear(&err);
    assert_int_equal(sg_qmp_parse_message("{\"a\"", 4, &v, &err), SG_QMP_PARSE_INVALID);
    sg_error_clear(&err);
    assert_int_equal(sg_qmp_parse_message("   ", 3, &v, &err), SG_QMP_PARSE_INVALID);
    sg_error_clear(&err);
    assert_int_equal(sg_qmp_parse_message("null", 4, &v, &err), SG_QMP_PARSE_OK);
    assert_true(json_is_null(v));
    json_decref(v);
}

static void test_outbuf(void **state)
{
    struct sg_qmp_outbuf o;
    sg_qmp_outbuf_init(&o);
    json_t *id = json_integer(7);
    json_t *m = sg_qmp_return_reply(json_pack("{s:b}", "running", 1), id);
    assert_true(sg_qmp_outbuf_append_msg(&o, m, NULL));
    json_decref(m);
    json_decref(id);
    const char *want = "{\"return\": {\"running\": true}, \"id\": 7}\r\n";
    assert_int_equal(sg_qmp_outbuf_pending(&o), strlen(want));
    assert_memory_equal(sg_qmp_outbuf_peek(&o), want, strlen(want));
    sg_qmp_outbuf_consume(&o, 5);
    assert_memory_equal(sg_qmp_outbuf_peek(&o), want + 5, strlen(want) - 5);
    sg_qmp_outbuf_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_in_one_read),
        cmocka_unit_test(test_byte_at_a_time),
        cmocka_unit_test(test_split_message),
        cmocka_unit_test(test_garbage_then_valid),
        cmocka_unit_test(test_duplicate_key_text),
        cmocka_unit_test(test_non_utf8),
        cmocka_unit_test(test_crlf_and_blank_lines),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_stop_keeps_rest),
        cmocka_unit_test(test_parse_message),
        cmocka_unit_test(test_outbuf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

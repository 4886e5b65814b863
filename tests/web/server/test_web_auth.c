/* Unit tests of the web server's pure helpers: token generation and syntax,
 * constant-time compare, loopback detection, the JSON nesting guard. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "web_internal.h"

static void token_is_long_random_and_url_safe(void **state)
{
    (void)state;
    char a[SG_WEB_TOKEN_MAX + 1], b[SG_WEB_TOKEN_MAX + 1];
    struct sg_error err = { 0 };
    assert_true(sg_web_token_make(a, sizeof a, &err));
    assert_true(sg_web_token_make(b, sizeof b, &err));
    assert_int_equal(strlen(a), 32);   /* 192 bits */
    assert_true(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == 32);
    assert_string_not_equal(a, b);
    assert_true(sg_web_token_valid_syntax(a));
    char small[8];
    assert_false(sg_web_token_make(small, sizeof small, &err));
    assert_true(err.set);
}

static void token_syntax(void **state)
{
    (void)state;
    assert_false(sg_web_token_valid_syntax(""));
    assert_false(sg_web_token_valid_syntax("short"));
    assert_false(sg_web_token_valid_syntax("abcdefghijklmnopqrstuv+"));   /* '+' not URL safe */
    assert_false(sg_web_token_valid_syntax("abcdefghijklmnopqrstu"));     /* 21 < 22 chars */
    assert_true(sg_web_token_valid_syntax("abcdefghijklmnopqrstuv"));
}

static void token_compare(void **state)
{
    (void)state;
    assert_true(sg_web_token_equal("abcdefghijklmnopqrstuv", "abcdefghijklmnopqrstuv"));
    assert_false(sg_web_token_equal("abcdefghijklmnopqrstuv", "abcdefghijklmnopqrstuw"));
    assert_false(sg_web_token_equal("abcdefghijklmnopqrstuv", "abcdefghijklmnopqrstu"));
    assert_false(sg_web_token_equal("abcdefghijklmnopqrstuv", ""));
}

static void token_file(void **state)
{
    (void)state;
    char path[] = "/tmp/sg_web_tokXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "Good_token-0123456789abc\n", 25), 25);
    close(fd);
    char tok[SG_WEB_TOKEN_MAX + 1];
    struct sg_error err = { 0 };
    assert_true(sg_web_token_load(path, tok, sizeof tok, &err));
    assert_string_equal(tok, "Good_token-0123456789abc");
    FILE *f = fopen(path, "w");
    fputs("too short\n", f);
    fclose(f);
    assert_false(sg_web_token_load(path, tok, sizeof tok, &err));
    assert_non_null(strstr(err.msg, "--web-token-file"));
    unlink(path);
    sg_error_clear(&err);
    assert_false(sg_web_token_load(path, tok, sizeof tok, &err));
    assert_non_null(strstr(err.msg, "No such file"));
}

static void loopback(void **state)
{
    (void)state;
    assert_true(sg_web_addr_is_loopback("127.0.0.1"));
    assert_true(sg_web_addr_is_loopback("127.1.2.3"));
    assert_true(sg_web_addr_is_loopback("::1"));
    assert_true(sg_web_addr_is_loopback("localhost"));
    assert_false(sg_web_addr_is_loopback("0.0.0.0"));
    assert_false(sg_web_addr_is_loopback("192.168.1.2"));
    assert_false(sg_web_addr_is_loopback("::"));
}

static void json_depth(void **state)
{
    (void)state;
    char deep[200];
    memset(deep, '[', 65);
    memset(deep + 65, ']', 65);
    assert_false(sg_web_json_depth_ok(deep, 130, 64));
    assert_true(sg_web_json_depth_ok(deep + 1, 128, 64));
    const char *s = "{\"a\": \"[[[[[[\\\"[[[\"}";
    assert_true(sg_web_json_depth_ok(s, strlen(s), 2));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(token_is_long_random_and_url_safe),
        cmocka_unit_test(token_syntax),
        cmocka_unit_test(token_compare),
        cmocka_unit_test(token_file),
        cmocka_unit_test(loopback),
        cmocka_unit_test(json_depth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

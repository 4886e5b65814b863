/* sg_grow (gateway/util): the doubling byte buffer the gateway's output
 * queues and the WebSocket message assembly share. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "sg_grow.h"

static void grows_by_doubling_from_4k(void **state)
{
    (void)state;
    unsigned char *b = NULL;
    size_t cap = 0;
    assert_true(sg_grow(&b, &cap, 1));
    assert_int_equal(cap, 4096);
    memset(b, 0xab, 4096);
    assert_true(sg_grow(&b, &cap, 4097));
    assert_int_equal(cap, 8192);
    for (size_t i = 0; i < 4096; i++)
        assert_int_equal(b[i], 0xab);   /* contents kept */
    assert_true(sg_grow(&b, &cap, 100000));
    assert_int_equal(cap, 131072);
    free(b);
}

static void enough_already_changes_nothing(void **state)
{
    (void)state;
    unsigned char *b = NULL;
    size_t cap = 0;
    assert_true(sg_grow(&b, &cap, 5000));
    unsigned char *was = b;
    assert_true(sg_grow(&b, &cap, 8192));
    assert_ptr_equal(b, was);
    assert_int_equal(cap, 8192);
    assert_true(sg_grow(&b, &cap, 0));
    assert_int_equal(cap, 8192);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(grows_by_doubling_from_4k),
        cmocka_unit_test(enough_already_changes_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_qemu_argv: snapgate-qemu's reading and rewriting of libvirt's real QEMU command lines,
 * and the libvirt-safe table's answers (pure code; the libvirt test runs the real thing). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "qemu_argv.h"
#include "sg_q72_safe.h"

/* As libvirt 9.0 starts a domain for snapshot-revert (abridged; seen in the domain log). */
static char *domain_start[] = {
    "snapgate-qemu", "-name", "guest=t1,debug-threads=on", "-S", "-machine",
    "pc-i440fx-7.2,usb=off", "-chardev", "socket,id=charmonitor,fd=27,server=on,wait=off",
    "-mon", "chardev=charmonitor,id=monitor,mode=control", "-chardev",
    "file,id=charserial0,path=/dev/fdset/0,append=on", "-loadvm", "s1", "-msg",
    "timestamp=on", NULL,
};
static char *probe[] = {
    "snapgate-qemu", "-S", "-no-user-config", "-nodefaults", "-nographic", "-machine",
    "none,accel=tcg", "-qmp", "unix:/var/lib/libvirt/qemu/qmp-X/qmp.monitor,server=on,wait=off",
    "-pidfile", "/var/lib/libvirt/qemu/qmp-X/qmp.pid", "-daemonize", NULL,
};

static int count(char **v)
{
    int n = 0;
    while (v[n])
        n++;
    return n;
}

static void test_domain_start(void **state)
{
    (void)state;
    struct sg_qemu_start s;
    sg_qemu_scan(count(domain_start), domain_start, 1, &s);
    assert_int_equal(s.monitor_fd, 27);
    assert_int_equal(s.chardev_arg, 7);
    assert_string_equal(s.loadvm, "s1");
    assert_true(s.has_S);
    char **v = sg_qemu_rewrite(count(domain_start), domain_start, 1, &s, "/usr/bin/qemu", 5);
    assert_non_null(v);
    assert_string_equal(v[0], "/usr/bin/qemu");
    assert_string_equal(v[6], "-chardev");
    assert_string_equal(v[7], "socket,id=charmonitor,fd=5,server=on,wait=off");
    for (int i = 0; v[i]; i++)
        assert_string_not_equal(v[i], "-loadvm");
    assert_int_equal(count(v), count(domain_start) - 2);
    sg_qemu_argv_free(v);
}

static void test_loadvm_adds_S(void **state)
{
    (void)state;
    char *a[] = { "x", "-chardev", "socket,id=m,fd=3,server=on,wait=off", "-mon",
                  "chardev=m,mode=control", "-loadvm", "snap", NULL };
    struct sg_qemu_start s;
    sg_qemu_scan(count(a), a, 1, &s);
    assert_false(s.has_S);
    char **v = sg_qemu_rewrite(count(a), a, 1, &s, "q", 9);
    assert_string_equal(v[1], "-S");
    assert_string_equal(v[3], "socket,id=m,fd=9,server=on,wait=off");
    assert_null(v[6]);
    sg_qemu_argv_free(v);
}

static void test_probe_untouched(void **state)
{
    (void)state;
    struct sg_qemu_start s;
    sg_qemu_scan(count(probe), probe, 1, &s);
    assert_int_equal(s.monitor_fd, -1);
    /* a monitor on a path (not a passed fd) is not ours to take either */
    char *a[] = { "x", "-chardev", "socket,id=m,path=/tmp/m.sock,server=on", "-mon",
                  "chardev=m,mode=control", NULL };
    sg_qemu_scan(count(a), a, 1, &s);
    assert_int_equal(s.monitor_fd, -1);
}

static void test_own_options(void **state)
{
    (void)state;
    char *a[] = { "snapgate-qemu", "--qemu", "/opt/q", "--profile", "qemu-7.2", "-S", NULL };
    struct sg_qemu_opts o;
    struct sg_error err = { 0 };
    assert_true(sg_qemu_parse_own(count(a), a, &o, &err));
    assert_string_equal(o.qemu, "/opt/q");
    assert_string_equal(o.profile, "qemu-7.2");
    assert_int_equal(o.first_qemu_arg, 5);
    char *b[] = { "snapgate-qemu", "--bogus", NULL };
    assert_false(sg_qemu_parse_own(count(b), b, &o, &err));
    assert_non_null(strstr(err.msg, "--bogus"));
}

static void test_opt_get(void **state)
{
    (void)state;
    char buf[64];
    assert_true(sg_qemu_opt_get("socket,id=a,,b,server", "id", buf, sizeof buf));
    assert_string_equal(buf, "a,b");
    assert_true(sg_qemu_opt_get("socket,id=a,server", "server", buf, sizeof buf));
    assert_string_equal(buf, "on");
    assert_false(sg_qemu_opt_get("socket,id=a", "fd", buf, sizeof buf));
}

/* What QEMU 7.2 was seen to do (snapgate-hmp(7)): only loadvm of a shadowed tag is refused. */
static void test_safety_table(void **state)
{
    (void)state;
    const struct sg_q72_safety_rule *r =
        sg_q72_safety_rule(&sg_q72_libvirt_safe, "loadvm", SG_Q72_TRAP_TAG_IS_OTHER_ID);
    assert_non_null(r);
    assert_int_equal(r->action, SG_Q72_REFUSE);
    r = sg_q72_safety_rule(&sg_q72_libvirt_safe, "savevm", SG_Q72_TRAP_TAG_IS_OTHER_ID);
    assert_int_equal(r->action, SG_Q72_AS_QEMU);
    r = sg_q72_safety_rule(&sg_q72_libvirt_safe, "delvm", SG_Q72_TRAP_TAG_IS_OTHER_ID);
    assert_int_equal(r->action, SG_Q72_AS_QEMU);
    assert_null(sg_q72_safety_rule(NULL, "loadvm", SG_Q72_TRAP_TAG_IS_OTHER_ID));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_domain_start), cmocka_unit_test(test_loadvm_adds_S),
        cmocka_unit_test(test_probe_untouched), cmocka_unit_test(test_own_options),
        cmocka_unit_test(test_opt_get), cmocka_unit_test(test_safety_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

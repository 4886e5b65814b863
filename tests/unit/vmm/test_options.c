/* snapgate-vmm's command line: what is accepted and the one-line errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "vmm.h"

static bool parse(struct sg_vmm_opts *o, struct sg_error *err, ...)
{
    char *argv[32] = { "snapgate-vmm" };
    int argc = 1;
    va_list ap;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)) && argc < 31;)
        argv[argc++] = a;
    va_end(ap);
    sg_error_clear(err);
    return sg_vmm_parse_args(argc, argv, o, err);
}

static void test_accepts(void **state)
{
    (void)state;
    struct sg_vmm_opts o;
    struct sg_error err = { 0 };
    assert_true(parse(&o, &err, (char *)NULL));
    assert_int_equal(o.ram_size, 256ull << 20);
    assert_string_equal(o.serial, "stdio");
    assert_true(parse(&o, &err, "-m", "1G", "-name", "guest=vm1", "-S", "--smp", "1",
                      "-drive", "file=a,,b.qcow2,node-name=n0,readonly=on,format=qcow2",
                      "-drive", "file=c.raw,format=raw", "-qmp", "unix:/tmp/q,server=on,wait=off",
                      "-append", "dirty=64M", "-loadvm", "t1", (char *)NULL));
    assert_int_equal(o.ram_size, 1ull << 30);
    assert_string_equal(o.name, "vm1");
    assert_true(o.start_paused);
    assert_int_equal(o.nr_drives, 2);
    assert_string_equal(o.drives[0].file, "a,b.qcow2");    /* ",," escapes a comma */
    assert_string_equal(o.drives[0].node_name, "n0");
    assert_true(o.drives[0].readonly);
    assert_string_equal(o.drives[1].format, "raw");
    assert_string_equal(o.loadvm, "t1");
    assert_true(parse(&o, &err, "-kernel", "vmlinuz", "-initrd", "initrd.img", "-append",
                      "console=ttyS0", (char *)NULL));
    assert_string_equal(o.kernel, "vmlinuz");
    assert_string_equal(o.initrd, "initrd.img");
    assert_string_equal(o.append, "console=ttyS0");
    assert_true(parse(&o, &err, "-m", "512", (char *)NULL));   /* plain number: MiB */
    assert_int_equal(o.ram_size, 512ull << 20);
    assert_true(parse(&o, &err, "-daemonize", "-pidfile", "p", (char *)NULL));
    assert_string_equal(o.serial, "none");                    /* a daemon has no console */
}

static void test_rejects(void **state)
{
    (void)state;
    struct sg_vmm_opts o;
    struct sg_error err = { 0 };
    assert_false(parse(&o, &err, "-x", (char *)NULL));
    assert_string_equal(err.msg, "-x: invalid option");
    assert_false(parse(&o, &err, "-drive", (char *)NULL));
    assert_string_equal(err.msg, "-drive: requires an argument");
    assert_false(parse(&o, &err, "-m", "12Q", (char *)NULL));
    assert_string_equal(err.msg, "-m 12Q: invalid RAM size");
    assert_false(parse(&o, &err, "-drive", "file=a,readonly=maybe", (char *)NULL));
    assert_string_equal(err.msg, "-drive: readonly expects 'on' or 'off', not 'maybe'");
    assert_false(parse(&o, &err, "-drive", "file=a,format=vmdk", (char *)NULL));
    assert_string_equal(err.msg, "-drive: unknown format 'vmdk' (qcow2 or raw)");
    assert_false(parse(&o, &err, "-qmp", "tcp:1234", (char *)NULL));
    assert_false(parse(&o, &err, "-initrd", "initrd.img", (char *)NULL));
    assert_string_equal(err.msg, "-initrd is only valid with -kernel");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts),
        cmocka_unit_test(test_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

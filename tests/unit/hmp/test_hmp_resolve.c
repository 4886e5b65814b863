/* The resolver and the device rules of INTERFACES.md section 3 over the
 * snapshot-list fixtures (fixtures.c), without any engine. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "fake_backend.h"
#include "hmp_snap.h"

struct rcase {
    const char *fixture, *vmstate, *name;
    char how;                /* 0, 't', 'i' */
    bool load;
    const char *tag;         /* expected tag, or NULL when an error is expected */
    const char *text;        /* the exact error, or the exact note ("" = none) */
};

static const struct rcase cases[] = {
    /* rule 2: one snapshot with that tag */
    {"single", NULL, "s1", 0, true, "s1", ""},
    /* rule 1: -t matches tags only, -i IDs only */
    {"single", NULL, "s2", 't', true, "s2", ""},
    {"single", NULL, "1", 't', true, NULL, "Snapshot '1' does not exist"},
    {"single", NULL, "2", 'i', true, "s2", "(snapshot ID 2, tag 's2')"},
    {"single", NULL, "s2", 'i', true, NULL, "Snapshot ID 's2' does not exist on 'drive0'"},
    /* rule 4: no tag matches, an ID does */
    {"single", NULL, "2", 0, true, "s2", "(matched snapshot ID 2, tag 's2')"},
    {"single", NULL, "1", 0, false, "s1", "(matched snapshot ID 1, tag 's1')"},
    /* rule 6 */
    {"single", NULL, "nope", 0, true, NULL, "Snapshot 'nope' does not exist"},
    {"empty", NULL, "x", 0, false, NULL, "Snapshot 'x' does not exist"},
    /* rule 3: duplicate tags on one disk (qemu-img made) */
    {"dup", NULL, "dup", 0, true, NULL,
     "Snapshot tag 'dup' is ambiguous: IDs 1, 2 on 'drive0'; delete the ones you do not want with 'delvm -i ID', then 'loadvm dup'"},
    {"dup", NULL, "dup", 't', false, NULL,
     "Snapshot tag 'dup' is ambiguous: IDs 1, 2 on 'drive0'; use 'delvm -i ID'"},
    {"dupvm", NULL, "3", 'i', true, NULL,
     "Snapshot ID 3 cannot be loaded alone: its tag 'dup' is shared by IDs 1, 3 on 'drive0', "
     "and snapshot-load addresses snapshots by tag; delete the other ones first ('delvm -i ID'), "
     "then 'loadvm dup'"},
    {"dupvm", NULL, "ok", 0, true, "ok", ""},
    /* disk-only snapshots cannot be loaded */
    {"dup", NULL, "x", 0, true, NULL,
     "Snapshot 'x' has no VM state (a disk-only snapshot); revert to it offline with qemu-img"},
    {"dup", NULL, "x", 0, false, "x", ""},
    /* rule 5: the tag wins, the note names the ID's snapshot and -i */
    {"collide", NULL, "1", 0, true, "1",
     "(note: '1' is also the ID of snapshot 'alpha' on 'drive0'; use 'loadvm -i 1' for that "
     "one)"},
    {"collide", NULL, "1", 'i', true, "alpha", "(snapshot ID 1, tag 'alpha')"},
    {"collide", NULL, "1", 't', true, "1", ""},
    {"collide", NULL, "2", 0, true, "1", "(matched snapshot ID 2, tag '1')"},
    /* snapshots on only some disks: not loadable, say which disk lacks it */
    {"partial", NULL, "only0", 0, true, NULL,
     "Snapshot 'only0' is not loadable: it is missing on 'drive1'"},
    {"partial", NULL, "only1", 0, true, NULL,
     "Snapshot 'only1' is not loadable: it is missing on 'drive0'"},
    {"partial", NULL, "only1", 0, false, "only1", "(snapshot 'only1' was not on 'drive0')"},
    /* "1" is a tag on drive1 only: the tag rule applies before any ID */
    {"partial", NULL, "1", 0, true, NULL,
     "Snapshot '1' is not loadable: it is missing on 'drive0'"},
    /* IDs differ between disks: an ID is read on the vmstate disk */
    {"idsdiffer", NULL, "1", 'i', false, "a", "(snapshot ID 1, tag 'a')"},
    {"idsdiffer", "disk1", "1", 'i', false, "b", "(snapshot ID 1, tag 'b')"},
    {"idsdiffer", "drive1", "2", 0, false, "a", "(matched snapshot ID 2, tag 'a')"},
    /* read-only disks take no part */
    {"readonly", NULL, "rosnap", 0, true, NULL, "Snapshot 'rosnap' does not exist"},
    {"readonly", NULL, "s1", 0, true, "s1", ""},
    {"rawro", NULL, "s1", 0, true, "s1", ""},
};

static void load(struct fake_vm *vm, struct sg_hmp_disks *d, const char *fx)
{
    fake_init(vm);
    fixture(vm, fx);
    json_t *qb = fake_query_block(vm, false), *nn = fake_named_nodes(vm);
    struct sg_error err = {0};
    assert_true(sg_hmp_disks_from_qmp(d, qb, nn, &err));
    json_decref(qb);
    json_decref(nn);
}

static void test_table(void **s)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct rcase *c = &cases[i];
        struct fake_vm vm;
        struct sg_hmp_disks d;
        load(&vm, &d, c->fixture);
        struct sg_error err = {0};
        int vs = sg_hmp_vmstate_disk(&d, c->vmstate, &err);
        struct sg_hmp_resolved res;
        sg_error_clear(&err);
        bool ok = sg_hmp_resolve(&d, vs, c->name, (enum sg_hmp_match)c->how, c->load,
                                 c->load ? "loadvm" : "delvm", &res, &err);
        print_message("case %zu: %s %s\n", i, c->fixture, c->name);
        if (c->tag) {
            if (!ok)
                print_message("unexpected error: %s\n", err.msg);
            assert_true(ok);
            assert_string_equal(res.tag, c->tag);
            assert_string_equal(res.note, c->text);
        } else {
            assert_false(ok);
            assert_string_equal(err.msg, c->text);
        }
        sg_hmp_disks_clear(&d);
        fake_free(&vm);
    }
}

static void test_devices_and_vmstate(void **s)
{
    static const struct { const char *fx, *override; int vs; const char *err; } t[] = {
        {"single", NULL, 0, NULL},
        {"readonly", NULL, 0, NULL},
        {"idsdiffer", "disk1", 1, NULL},
        {"idsdiffer", "drive1", 1, NULL},
        {"idsdiffer", "nosuch", -1, "vmstate block device 'nosuch' does not exist"},
        {"readonly", "disk1", -1, "vmstate block device 'disk1' does not support snapshots"},
        {"nodisk", NULL, -1, "no block device can store vmstate for snapshot"},
        {"rawonly", NULL, -1, "no block device can store vmstate for snapshot"},
        {"rawrw", NULL, 0, NULL},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct fake_vm vm;
        struct sg_hmp_disks d;
        struct sg_error err = {0};
        load(&vm, &d, t[i].fx);
        assert_int_equal(sg_hmp_vmstate_disk(&d, t[i].override, &err), t[i].vs);
        if (t[i].err)
            assert_string_equal(err.msg, t[i].err);
        sg_hmp_disks_clear(&d);
        fake_free(&vm);
    }
    struct fake_vm vm;
    struct sg_hmp_disks d;
    struct sg_error err = {0};
    load(&vm, &d, "rawrw");
    assert_false(sg_hmp_check_writable(&d, &err));
    assert_string_equal(err.msg, "Device 'drive1' is writable but does not support snapshots");
    sg_hmp_disks_clear(&d);
    fake_free(&vm);
    sg_error_clear(&err);
    load(&vm, &d, "rawro");
    assert_true(sg_hmp_check_writable(&d, &err));
    sg_hmp_disks_clear(&d);
    fake_free(&vm);
}

static void test_plan_devices(void **s)
{
    struct fake_vm vm;
    struct sg_hmp_disks d;
    load(&vm, &d, "readonly");
    struct sg_hmp_plan p = {0};
    unsigned counter = 0;
    assert_true(sg_hmp_plan_add(&p, &d, 0, "save", "my tag's \"x\"", "hmp-", "savevm", &counter));
    assert_true(sg_hmp_plan_add(&p, &d, 0, "delete", "t", "hmp-", "delvm", &counter));
    char *s0 = json_dumps(p.jobs[0].cmd, JSON_SORT_KEYS | JSON_COMPACT);
    assert_string_equal(s0, "{\"arguments\":{\"devices\":[\"disk0\"],\"job-id\":\"hmp-savevm-1\","
                            "\"tag\":\"my tag's \\\"x\\\"\",\"vmstate\":\"disk0\"},"
                            "\"execute\":\"snapshot-save\"}");
    free(s0);
    char *s1 = json_dumps(p.jobs[1].cmd, JSON_SORT_KEYS | JSON_COMPACT);
    assert_string_equal(s1, "{\"arguments\":{\"devices\":[\"disk0\"],\"job-id\":\"hmp-delvm-2\","
                            "\"tag\":\"t\"},\"execute\":\"snapshot-delete\"}");
    free(s1);
    sg_hmp_plan_clear(&p);
    sg_hmp_disks_clear(&d);
    fake_free(&vm);
}

static void test_default_tag(void **s)
{
    struct fake_vm vm;
    struct sg_hmp_disks d;
    load(&vm, &d, "empty");
    char tag[64];
    sg_hmp_default_tag(&d, 1795316193, true, tag, sizeof tag);
    assert_string_equal(tag, "vm-20261122025633");
    sg_hmp_disks_clear(&d);
    fake_snap(&vm.disks[0], "vm-20261122025633", 1, 1, false);
    fake_snap(&vm.disks[0], "vm-20261122025633-2", 1, 1, false);
    json_t *qb = fake_query_block(&vm, true);
    assert_true(sg_hmp_disks_from_qmp(&d, qb, NULL, NULL));
    json_decref(qb);
    sg_hmp_default_tag(&d, 1795316193, true, tag, sizeof tag);
    assert_string_equal(tag, "vm-20261122025633-3");
    sg_hmp_disks_clear(&d);
    fake_free(&vm);
}

static void test_bad_json(void **s)
{
    struct sg_hmp_disks d;
    struct sg_error err = {0};
    json_t *bad = json_pack("{s:i}", "x", 1);
    assert_false(sg_hmp_disks_from_qmp(&d, bad, NULL, &err));
    json_decref(bad);
    /* malformed entries are skipped, not fatal */
    json_t *odd = json_loads("[{\"device\": 5}, {\"inserted\": {\"drv\": 1, \"image\": "
                             "{\"snapshots\": [{\"id\": 1}, 7, {\"id\": \"1\", \"name\": \"ok\"}]}}}]",
                             0, NULL);
    assert_non_null(odd);
    assert_true(sg_hmp_disks_from_qmp(&d, odd, json_true(), &err));
    assert_int_equal(d.n, 2);
    assert_int_equal(d.disk[1].nsnaps, 1);
    sg_hmp_disks_clear(&d);
    json_decref(odd);
}

int main(void)
{
    setenv("TZ", "UTC", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),        cmocka_unit_test(test_devices_and_vmstate),
        cmocka_unit_test(test_plan_devices), cmocka_unit_test(test_default_tag),
        cmocka_unit_test(test_bad_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

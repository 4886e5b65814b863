/* Parser and command table: QEMU 7.2's quoting rules and error texts (as
 * observed on the real QEMU), and the snapgate profile's -t/-i flags. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "hmp_parse.h"
#include "sg_q72.h"
#include "sg_hmp.h"

#define Q72 SG_HMP_PROFILE_QEMU72
#define SG SG_HMP_PROFILE_SNAPGATE

static struct sg_hmp_parsed p;

static void test_names_and_aliases(void **s)
{
    assert_int_equal(sg_hmp_parse("savevm", Q72, &p), SG_HMP_PARSE_OK);
    assert_int_equal(p.def->op, SG_HMP_OP_SAVEVM);
    assert_false(p.has_name);
    assert_int_equal(sg_hmp_parse("  q", Q72, &p), SG_HMP_PARSE_OK);
    assert_int_equal(p.def->op, SG_HMP_OP_QUIT);
    assert_int_equal(sg_hmp_parse("c", Q72, &p), SG_HMP_PARSE_OK);
    assert_int_equal(p.def->op, SG_HMP_OP_CONT);
    assert_int_equal(sg_hmp_parse("s", Q72, &p), SG_HMP_PARSE_OK);
    assert_int_equal(p.def->op, SG_HMP_OP_STOP);
    assert_int_equal(sg_hmp_parse("?", Q72, &p), SG_HMP_PARSE_OK);
    assert_int_equal(p.def->op, SG_HMP_OP_HELP);
    assert_int_equal(sg_hmp_parse("info  status ", Q72, &p), SG_HMP_PARSE_OK);
    assert_int_equal(p.def->op, SG_HMP_OP_INFO_STATUS);
    assert_int_equal(sg_hmp_parse("info", Q72, &p), SG_HMP_PARSE_OK);
    assert_int_equal(p.def->op, SG_HMP_OP_INFO);
    assert_int_equal(sg_hmp_parse("", Q72, &p), SG_HMP_PARSE_EMPTY);
    assert_int_equal(sg_hmp_parse(" \t ", Q72, &p), SG_HMP_PARSE_EMPTY);
}

static void test_unknown(void **s)
{
    assert_int_equal(sg_hmp_parse("SAVEVM x", Q72, &p), SG_HMP_PARSE_UNKNOWN);
    assert_string_equal(p.unknown, "SAVEVM");
    assert_int_equal(sg_hmp_parse("info foo", Q72, &p), SG_HMP_PARSE_UNKNOWN);
    assert_string_equal(p.unknown, "info foo");
    assert_int_equal(sg_hmp_parse("info \"status\"", Q72, &p), SG_HMP_PARSE_UNKNOWN);
    assert_string_equal(p.unknown, "info \"status\"");
    /* QEMU 7.2 has no `info jobs`; snapgate does */
    assert_int_equal(sg_hmp_parse("info jobs", Q72, &p), SG_HMP_PARSE_UNKNOWN);
    assert_string_equal(p.unknown, "info jobs");
    assert_int_equal(sg_hmp_parse("info jobs", SG, &p), SG_HMP_PARSE_OK);
    assert_int_equal(p.def->op, SG_HMP_OP_INFO_JOBS);
    /* info block with QEMU's options goes to the back end */
    assert_int_equal(sg_hmp_parse("info block -v drive0", Q72, &p), SG_HMP_PARSE_UNKNOWN);
    assert_string_equal(p.unknown, "info block");
    assert_int_equal(sg_hmp_parse("block_resize x 1", SG, &p), SG_HMP_PARSE_UNKNOWN);
    assert_string_equal(p.unknown, "block_resize");
}

static void test_quoting(void **s)
{
    assert_int_equal(sg_hmp_parse("savevm \"a b\"", Q72, &p), SG_HMP_PARSE_OK);
    assert_string_equal(p.name, "a b");
    assert_int_equal(sg_hmp_parse("savevm \"a\\\"b\"", Q72, &p), SG_HMP_PARSE_OK);
    assert_string_equal(p.name, "a\"b");
    assert_int_equal(sg_hmp_parse("savevm \"nl\\n\"", Q72, &p), SG_HMP_PARSE_OK);
    assert_string_equal(p.name, "nl\n");
    assert_int_equal(sg_hmp_parse("savevm \"\"", Q72, &p), SG_HMP_PARSE_OK);
    assert_true(p.has_name);
    assert_string_equal(p.name, "");
    assert_int_equal(sg_hmp_parse("savevm\tTAB", Q72, &p), SG_HMP_PARSE_OK);
    assert_string_equal(p.name, "TAB");
    /* the command name ends at '/' */
    assert_int_equal(sg_hmp_parse("savevm/x", Q72, &p), SG_HMP_PARSE_OK);
    assert_string_equal(p.name, "/x");
    assert_int_equal(sg_hmp_parse("loadvm 'c", Q72, &p), SG_HMP_PARSE_OK);
    assert_string_equal(p.name, "'c");
}

static void test_errors_like_qemu(void **s)
{
    static const struct { const char *line, *reply; } t[] = {
        {"savevm 'c d'", "savevm: extraneous characters at the end of line\nTry \"help savevm\" for more information\n"},
        {"savevm a\\ b", "savevm: extraneous characters at the end of line\nTry \"help savevm\" for more information\n"},
        {"savevm \"x\"y", "savevm: extraneous characters at the end of line\nTry \"help savevm\" for more information\n"},
        {"savevm \"abc", "savevm: string expected\nTry \"help savevm\" for more information\n"},
        {"savevm \"a\\qb\"", "savevm: string expected\nTry \"help savevm\" for more information\n"},
        {"savevm \"tab\\tx\"", "savevm: string expected\nTry \"help savevm\" for more information\n"},
        {"loadvm", "loadvm: string expected\nTry \"help loadvm\" for more information\n"},
        {"delvm", "delvm: string expected\nTry \"help delvm\" for more information\n"},
        {"loadvm \"", "loadvm: string expected\nTry \"help loadvm\" for more information\n"},
        {"loadvm -t s1", "loadvm: extraneous characters at the end of line\nTry \"help loadvm\" for more information\n"},
        {"q extra", "quit|q: extraneous characters at the end of line\nTry \"help q\" for more information\n"},
        {"stop x", "stop|s: extraneous characters at the end of line\nTry \"help stop\" for more information\n"},
        {"system_reset now", "system_reset: extraneous characters at the end of line\nTry \"help system_reset\" for more information\n"},
        {"system_powerdown 1", "system_powerdown: extraneous characters at the end of line\nTry \"help system_powerdown\" for more information\n"},
        {"info snapshots extra", "snapshots: extraneous characters at the end of line\nTry \"help info snapshots\" for more information\n"},
        {"pmemsave 0 16", "pmemsave: string expected\nTry \"help pmemsave\" for more information\n"},
        {"pmemsave 0", "unexpected end of expression\nTry \"help pmemsave\" for more information\n"},
        {"pmemsave 0 16 /tmp/x", "invalid char 't' in expression\nTry \"help pmemsave\" for more information\n"},
        {"pmemsave 0 0x100000000 f", "'pmemsave' has failed: integer is for 32-bit values\nTry \"help pmemsave\" for more information\n"},
        {"pmemsave 99999999999999999999 1 f", "number too large\nTry \"help pmemsave\" for more information\n"},
        {"pmemsave 1%0 1 f", "division by zero\nTry \"help pmemsave\" for more information\n"},
        {"pmemsave (1 1 f", "')' expected\nTry \"help pmemsave\" for more information\n"},
        {"pmemsave 'ab' 1 f", "missing terminating ' character\nTry \"help pmemsave\" for more information\n"},
        {"pmemsave 0 1 f g", "pmemsave: extraneous characters at the end of line\nTry \"help pmemsave\" for more information\n"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        assert_int_equal(sg_hmp_parse(t[i].line, Q72, &p), SG_HMP_PARSE_ERROR);
        assert_string_equal(p.error, t[i].reply);
    }
}

/* pmemsave's integers: QEMU's expressions (values checked against QEMU 7.2 by
 * tests/integration/vmm/test_vmm_pmemsave.py) */
static void test_pmemsave_args(void **s)
{
    static const struct { const char *line; uint64_t addr; uint32_t size; const char *file; } t[] = {
        {"pmemsave 0 16 a", 0, 16, "a"},
        {"pmemsave (1+2)*4 1+1&1 \"x y\"", 12, 2, "x y"},
        {"pmemsave 0x10 1|2*2 b", 16, 5, "b"},
        {"pmemsave 010 7-2-1 c", 8, 4, "c"},
        {"pmemsave -1 0xffffffff d", UINT64_MAX, UINT32_MAX, "d"},
        {"pmemsave 'a' ~0&15 e", 'a', 15, "e"},
        {"pmemsave -16/-2 2^3 f", 8, 1, "f"},
        {"pmemsave 0 16abc", 0, 16, "abc"},
        {"pmemsave 0 -1 c.bin", UINT64_MAX, 0, NULL},   /* 0 - 1, then SIZE "c.bin" */
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        enum sg_hmp_parse_status st = sg_hmp_parse(t[i].line, Q72, &p);
        if (!t[i].file) {
            assert_int_equal(st, SG_HMP_PARSE_ERROR);
            assert_string_equal(p.error, "invalid char 'c' in expression\nTry \"help pmemsave\" for more information\n");
            continue;
        }
        assert_int_equal(st, SG_HMP_PARSE_OK);
        assert_int_equal(p.def->op, SG_HMP_OP_PMEMSAVE);
        assert_true(p.addr == t[i].addr);
        assert_int_equal(p.size, t[i].size);
        assert_string_equal(p.name, t[i].file);
    }
    /* a register is the back end's; nesting is bounded */
    assert_int_equal(sg_hmp_parse("pmemsave $eax 16 f", Q72, &p), SG_HMP_PARSE_UNKNOWN);
    assert_string_equal(p.reg, "$eax");
    assert_string_equal(p.unknown, "pmemsave");
    static char deep[4096];
    strcpy(deep, "pmemsave ");
    memset(deep + 9, '(', 2000);
    strcpy(deep + 2009, "1 1 f");
    assert_int_equal(sg_hmp_parse(deep, Q72, &p), SG_HMP_PARSE_ERROR);
    assert_string_equal(p.error, "expression nested too deeply\nTry \"help pmemsave\" for more information\n");
}

static void test_flags(void **s)
{
    assert_int_equal(sg_hmp_parse("loadvm -t s1", SG, &p), SG_HMP_PARSE_OK);
    assert_int_equal(p.flag, 't');
    assert_string_equal(p.name, "s1");
    assert_int_equal(sg_hmp_parse("delvm  -i   4", SG, &p), SG_HMP_PARSE_OK);
    assert_int_equal(p.flag, 'i');
    assert_string_equal(p.name, "4");
    assert_int_equal(sg_hmp_parse("loadvm -i \"my snap\"", SG, &p), SG_HMP_PARSE_OK);
    assert_string_equal(p.name, "my snap");
    /* a quoted "-t" is a name, and so is -tx */
    assert_int_equal(sg_hmp_parse("loadvm \"-t\"", SG, &p), SG_HMP_PARSE_OK);
    assert_int_equal(p.flag, 0);
    assert_string_equal(p.name, "-t");
    assert_int_equal(sg_hmp_parse("loadvm -tx", SG, &p), SG_HMP_PARSE_OK);
    assert_int_equal(p.flag, 0);
    assert_string_equal(p.name, "-tx");
    assert_int_equal(sg_hmp_parse("loadvm -t", SG, &p), SG_HMP_PARSE_ERROR);
    assert_int_equal(sg_hmp_parse("loadvm -t a b", SG, &p), SG_HMP_PARSE_ERROR);
    /* savevm takes no flags: "-t" is its tag */
    assert_int_equal(sg_hmp_parse("savevm -t", SG, &p), SG_HMP_PARSE_OK);
    assert_string_equal(p.name, "-t");
    /* in the qemu-7.2 profile a lone -t is a tag too */
    assert_int_equal(sg_hmp_parse("loadvm -t", Q72, &p), SG_HMP_PARSE_OK);
    assert_string_equal(p.name, "-t");
}

static void test_help_words(void **s)
{
    assert_int_equal(sg_hmp_parse("help info status", Q72, &p), SG_HMP_PARSE_OK);
    assert_string_equal(p.topic, "info");
    assert_string_equal(p.subtopic, "status");
    assert_int_equal(sg_hmp_parse("help \"savevm\" extra", Q72, &p), SG_HMP_PARSE_OK);
    assert_string_equal(p.topic, "savevm");
}

static void test_long_name_truncated(void **s)
{
    char line[3000] = "savevm ";
    memset(line + 7, 'x', 2000);
    line[2007] = 0;
    assert_int_equal(sg_hmp_parse(line, Q72, &p), SG_HMP_PARSE_OK);
    assert_int_equal(strlen(p.name), SG_HMP_NAME_MAX - 1);
}

static void test_help_texts(void **s)
{
    static const struct { const char *topic, *sub, *q72; } t[] = {
        {"savevm", "", "savevm tag -- save a VM snapshot. If no tag is provided, a new snapshot is created\n"},
        {"loadvm", "", "loadvm tag -- restore a VM snapshot from its tag\n"},
        {"delvm", "", "delvm tag -- delete a VM snapshot from its tag\n"},
        {"quit", "", "quit|q  -- quit the emulator\n"},
        {"q", "", "quit|q  -- quit the emulator\n"},
        {"stop", "", "stop|s  -- stop emulation\n"},
        {"cont", "", "cont|c  -- resume emulation\n"},
        {"system_reset", "", "system_reset  -- reset the system\n"},
        {"system_powerdown", "", "system_powerdown  -- send system power down event\n"},
        {"pmemsave", "", "pmemsave addr size file -- save to disk physical memory dump starting at 'addr' of size 'size'\n"},
        {"help", "", "help|? [cmd] -- show the help\n"},
        {"info", "status", "info status  -- show the current VM status (running|paused)\n"},
        {"info", "snapshots", "info snapshots  -- show the currently saved VM snapshots\n"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct sg_strbuf b = {0};
        assert_true(sg_hmp_help(Q72, t[i].topic, t[i].sub, &b));
        assert_string_equal(sg_sb_str(&b), t[i].q72);
        sg_sb_free(&b);
    }
    /* QEMU 7.2's own replies for names it does not know (recorded) */
    static const struct { const char *topic, *sub, *q72; } unknown[] = {
        {"nosuch", "", "unknown command: 'nosuch'\n"},
        {"nosuch", "foo", "unknown command: 'nosuch'\n"},
        {"info", "jobs", "unknown command: 'info jobs'\n"},
        {"info", "nosuch", "unknown command: 'info nosuch'\n"},
    };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        struct sg_strbuf b = {0};
        assert_true(sg_hmp_help(Q72, unknown[i].topic, unknown[i].sub, &b));
        assert_string_equal(sg_sb_str(&b), unknown[i].q72);
        sg_sb_free(&b);
    }
    /* `help` and `info` are QEMU 7.2's whole lists: the entries in order */
    struct sg_strbuf all = {0}, want = {0};
    assert_true(sg_hmp_help(Q72, "", "", &all));
    for (const struct sg_q72_help_entry *e = sg_q72_help_top; e->names; e++)
        sg_sb_puts(&want, e->list);
    assert_string_equal(sg_sb_str(&all), sg_sb_str(&want));
    assert_int_equal(strncmp(sg_sb_str(&all), "announce_self [interfaces] [id] -- ", 35), 0);
    sg_sb_free(&all);
    sg_sb_free(&want);
    assert_true(sg_hmp_help(Q72, "info", "", &all));
    assert_int_equal(strncmp(sg_sb_str(&all), "info balloon  -- show balloon information\n", 42), 0);
    assert_non_null(strstr(sg_sb_str(&all), "info vnc  -- show the vnc server status\n"));
    sg_sb_free(&all);
    struct sg_strbuf b = {0};
    assert_false(sg_hmp_help(SG, "nosuch", "", &b));
    assert_false(sg_hmp_help(SG, "info", "registers", &b));
    assert_true(sg_hmp_help(SG, "loadvm", "", &b));
    assert_non_null(strstr(sg_sb_str(&b), "[-t|-i] NAME"));
    sg_sb_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_aliases), cmocka_unit_test(test_unknown),
        cmocka_unit_test(test_quoting),           cmocka_unit_test(test_errors_like_qemu),
        cmocka_unit_test(test_flags),             cmocka_unit_test(test_help_words),
        cmocka_unit_test(test_long_name_truncated), cmocka_unit_test(test_help_texts),
        cmocka_unit_test(test_pmemsave_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

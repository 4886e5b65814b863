/* Whole HMP flows through sg_hmp_exec against the fake back end: both
 * profiles over the fixtures, QEMU 7.2's exact texts (recorded from the real
 * QEMU), the jobs each line becomes, late/early/missing events, cancel,
 * detach, a dying back end, forwarding, completion and the recorded
 * transcripts in compat/transcripts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_backend.h"
#include "sg_hmp.h"

/* Table rows leave the trailing option fields out. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#define Q72 SG_HMP_PROFILE_QEMU72
#define SG SG_HMP_PROFILE_SNAPGATE

/* Recorded from QEMU 7.2 with the same images (qemu-img snapshot -c). */
#define Q72_DUP \
    "List of snapshots present on all disks:\r\n"\
    "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\r\n"\
    "--        dup                   0 B 2026-11-22 02:56:33 00:00:00.000          0\r\n"\
    "--        dup                   0 B 2026-11-22 02:56:33 00:00:00.000          0\r\n"\
    "--        x                     0 B 2026-11-22 02:56:33 00:00:00.000          0\r\n"
#define Q72_PARTIAL \
    "List of snapshots present on all disks:\r\n"\
    "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\r\n"\
    "--        both                  0 B 2026-11-22 02:56:33 00:00:00.000          0\r\n"\
    "\r\n"\
    "List of partial (non-loadable) snapshots on 'drive0':\r\n"\
    "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\r\n"\
    "1         only0                 0 B 2026-11-22 02:56:33 00:00:00.000          0\r\n"\
    "\r\n"\
    "List of partial (non-loadable) snapshots on 'drive1':\r\n"\
    "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\r\n"\
    "2         only1                 0 B 2026-11-22 02:56:33 00:00:00.000          0\r\n"\
    "3         1                     0 B 2026-11-22 02:56:33 00:00:00.000          0\r\n"
#define Q72_RAWRW \
    "List of snapshots present on all disks:\r\n"\
    "None\r\n"\
    "\r\n"\
    "List of partial (non-loadable) snapshots on 'drive0':\r\n"\
    "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\r\n"\
    "1         s1                451 KiB 2026-11-22 02:56:33 00:00:00.000           \r\n"
#define Q72_RAWRO \
    "List of snapshots present on all disks:\r\n"\
    "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\r\n"\
    "--        s1                451 KiB 2026-11-22 02:56:33 00:00:00.000           \r\n"

#define Q72_BLOCK1 \
    "drive0 (disk0): x.img (qcow2)\r\n" \
    "    Removable device: not locked, tray closed\r\n" \
    "    Cache mode:       writeback\r\n"

static time_t fixed_now(void *o)
{
    (void)o;
    return 1795316193;  /* 2026-11-22 02:56:33 UTC */
}

struct ecase {
    const char *fixture;
    int profile;
    const char *line;
    const char *reply;
    const char *jobs;   /* snapshot commands sent, ";"-joined (NULL: not checked) */
    const char *vmstate;
    bool replaces;
    bool exact;         /* backend_exact_tags */
};

#define SAVE(id, tag, devs, vs) "snapshot-save hmp-savevm-" #id " tag=" tag " devices=" devs " vmstate=" vs
#define DEL(verb, id, tag, devs) "snapshot-delete hmp-" verb "-" #id " tag=" tag " devices=" devs
#define LOAD(id, tag, devs, vs) "snapshot-load hmp-loadvm-" #id " tag=" tag " devices=" devs " vmstate=" vs

static const struct ecase cases[] = {
    /* ---- qemu-7.2 profile: QEMU's texts byte for byte ---- */
    {"empty", Q72, "info snapshots", "There is no snapshot available.\r\n", ""},
    {"empty", Q72, "loadvm x", "Error: Snapshot 'x' does not exist in one or more devices\r\n", ""},
    {"empty", Q72, "delvm x", "", ""},
    {"nodisk", Q72, "savevm s1", "Error: no block device can store vmstate for snapshot\r\n", ""},
    {"nodisk", Q72, "info snapshots", "no block device can store vmstate for snapshot\r\n", ""},
    {"nodisk", Q72, "loadvm s1", "Error: no block device can store vmstate for snapshot\r\n", ""},
    {"nodisk", Q72, "delvm s1", "", ""},
    {"rawonly", Q72, "savevm s1", "Error: Device 'drive0' is writable but does not support snapshots\r\n", ""},
    {"rawonly", Q72, "info snapshots", "no block device can store vmstate for snapshot\r\n", ""},
    {"rawonly", Q72, "loadvm s1", "Error: Device 'drive0' is writable but does not support snapshots\r\n", ""},
    {"rawrw", Q72, "info snapshots", Q72_RAWRW, ""},
    {"rawrw", Q72, "savevm s2", "Error: Device 'drive1' is writable but does not support snapshots\r\n", ""},
    {"rawrw", Q72, "delvm s1", "Error: Device 'drive1' is writable but does not support snapshots\r\n", ""},
    {"rawro", Q72, "info snapshots", Q72_RAWRO, ""},
    {"rawro", Q72, "savevm s1", "", DEL("savevm", 1, "s1", "disk0") ";" SAVE(2, "s1", "disk0", "disk0")},
    {"dup", Q72, "info snapshots", Q72_DUP, ""},
    {"dup", Q72, "loadvm dup", "Error: This is a disk-only snapshot. Revert to it  offline using qemu-img\r\n", ""},
    {"dup", Q72, "savevm dup", "",
     DEL("savevm", 1, "dup", "disk0,disk1") ";" DEL("savevm", 2, "dup", "disk0,disk1") ";"
     SAVE(3, "dup", "disk0,disk1", "disk0")},
    {"dup", Q72, "delvm dup", "", DEL("delvm", 1, "dup", "disk0,disk1")},
    {"partial", Q72, "info snapshots", Q72_PARTIAL, ""},
    {"partial", Q72, "loadvm only0", "Error: Snapshot 'only0' does not exist in one or more devices\r\n", ""},
    {"partial", Q72, "loadvm 1", "Error: Snapshot '1' does not exist in one or more devices\r\n", ""},
    {"partial", Q72, "delvm only1", "", DEL("delvm", 1, "only1", "disk0,disk1")},
    {"readonly", Q72, "savevm s9", "", SAVE(1, "s9", "disk0", "disk0")},
    {"readonly", Q72, "loadvm rosnap", "Error: Snapshot 'rosnap' does not exist in one or more devices\r\n", ""},
    {"single", Q72, "loadvm 1", "Error: Snapshot '1' does not exist in one or more devices\r\n", ""},
    {"single", Q72, "loadvm s1", "", LOAD(1, "s1", "disk0", "disk0")},
    {"single", Q72, "loadvm \"s1\"", "", LOAD(1, "s1", "disk0", "disk0")},
    {"single", Q72, "savevm", "", SAVE(1, "vm-20261122025633", "disk0", "disk0")},
    {"single", Q72, "savevm \"a b\"", "", SAVE(1, "a b", "disk0", "disk0")},
    {"single", Q72, "info status", "VM status: paused (prelaunch)\r\n", ""},
    {"single", Q72, "stop", "", ""},
    {"single", Q72, "cont", "", ""},
    {"single", Q72, "system_reset", "", ""},
    {"single", Q72, "system_powerdown", "", ""},
    {"single", SG, "system_powerdown", "", ""},
    {"single", Q72, "info block", Q72_BLOCK1, ""},
    {"single", Q72, "foo", "unknown command: 'foo'\r\n", ""},
    {"single", Q72, "info jobs", "unknown command: 'info jobs'\r\n", ""},
    {"single", Q72, "help savevm", "savevm tag -- save a VM snapshot. If no tag is provided, a new snapshot is created\r\n", ""},
    {"single", Q72, "help nosuch", "unknown command: 'nosuch'\r\n", ""},
    {"single", Q72, "help info nope", "unknown command: 'info nope'\r\n", ""},
    {"single", Q72, "loadvm", "loadvm: string expected\r\nTry \"help loadvm\" for more information\r\n", ""},
    {"single", Q72, "", "", ""},
    {"single", Q72, "quit", "", ""},
    {"idsdiffer", Q72, "savevm n", "", SAVE(1, "n", "disk0,disk1", "disk1"), "disk1"},
    /* ---- snapgate profile: section 3's rules ---- */
    {"single", SG, "loadvm 2", "(matched snapshot ID 2, tag 's2')\n", LOAD(1, "s2", "disk0", "disk0")},
    {"single", SG, "loadvm -i 1", "(snapshot ID 1, tag 's1')\n", LOAD(1, "s1", "disk0", "disk0")},
    {"single", SG, "loadvm -t 1", "Error: Snapshot '1' does not exist\n", ""},
    {"single", SG, "loadvm nope", "Error: Snapshot 'nope' does not exist\n", ""},
    {"single", SG, "delvm 1", "(matched snapshot ID 1, tag 's1')\n", DEL("delvm", 1, "s1", "disk0")},
    {"single", SG, "savevm s1", "(replaced the existing snapshot 's1')\n",
     DEL("savevm", 1, "s1", "disk0") ";" SAVE(2, "s1", "disk0", "disk0")},
    {"single", SG, "savevm s1", "(replaced the existing snapshot 's1')\n", SAVE(1, "s1", "disk0", "disk0") " x-replace", NULL, true},
    {"single", SG, "savevm", "(snapshot tag 'vm-20261122025633')\n", SAVE(1, "vm-20261122025633", "disk0", "disk0")},
    {"single", SG, "info jobs", "No jobs\n", ""},
    {"single", SG, "info status", "VM status: paused (prelaunch)\n", ""},
    {"single", SG, "info version", "7.2.22Debian 1:7.2+dfsg-7+deb12u18+b3\n", ""},
    {"single", Q72, "info version", "7.2.22Debian 1:7.2+dfsg-7+deb12u18+b3\r\n", ""},
    {"single", SG, "info snapshots",
     "List of snapshots present on all disks:\n"
     "ID        TAG               VM SIZE                DATE     VM CLOCK\n"
     "1         s1                451 KiB 2026-11-22 02:56:33 00:00:00.000\n"
     "2         s2                451 KiB 2026-11-22 02:56:33 00:00:00.000\n", ""},
    {"single", SG, "foo", "unknown command: 'foo' ('help' lists the commands)\n", ""},
    {"single", SG, "info registers",
     "Error: 'info registers' needs a back end with its own human monitor; this back end has "
     "none ('help' lists the commands snapgate runs itself)\n", ""},
    {"dup", SG, "loadvm dup", "Error: Snapshot tag 'dup' is ambiguous: IDs 1, 2 on 'drive0'; delete the ones you do not want with 'delvm -i ID', then 'loadvm dup'\n", ""},
    {"dup", SG, "info snapshots",
     "List of snapshots present on all disks:\n"
     "ID        TAG               VM SIZE                DATE     VM CLOCK\n"
     "--        dup                   0 B 2026-11-22 02:56:33 00:00:00.000\n"
     "--        dup                   0 B 2026-11-22 02:56:33 00:00:00.000\n"
     "--        x                     0 B 2026-11-22 02:56:33 00:00:00.000\n"
     "Note: tag 'dup' is carried by IDs 1, 2 on 'drive0': it is ambiguous ('loadvm -i ID' picks one)\n", ""},
    {"collide", SG, "loadvm 1", "(note: '1' is also the ID of snapshot 'alpha' on 'drive0'; use 'loadvm -i 1' for that one)\n",
     LOAD(1, "1", "disk0", "disk0"), NULL, false, true},
    /* QEMU's qcow2 would restore ID 1 for tag "1": refused unless the back end matches tags exactly */
    {"collide", SG, "loadvm 1", "(note: '1' is also the ID of snapshot 'alpha' on 'drive0'; use 'loadvm -i 1' for that one)\n"
     "Error: Snapshot tag '1' is also the ID of snapshot 'alpha' on 'drive0'; this back end would restore that one "
     "(it looks names up as IDs first), so loadvm refuses. 'loadvm -i 1' loads 'alpha'; to load '1' itself, "
     "delete 'alpha' first ('delvm -i 1'), or revert the disks offline with 'snapgate-img snapshot -a -t 1 FILE' "
     "(without the VM state)\n", ""},
    {"collide", SG, "loadvm 2", "(matched snapshot ID 2, tag '1')\n"
     "Error: Snapshot tag '1' is also the ID of snapshot 'alpha' on 'drive0'; this back end would restore that one "
     "(it looks names up as IDs first), so loadvm refuses. 'loadvm -i 1' loads 'alpha'; to load '1' itself, "
     "delete 'alpha' first ('delvm -i 1'), or revert the disks offline with 'snapgate-img snapshot -a -t 1 FILE' "
     "(without the VM state)\n", ""},
    {"collide", SG, "loadvm -i 1", "(snapshot ID 1, tag 'alpha')\n", LOAD(1, "alpha", "disk0", "disk0")},
    {"collide", SG, "delvm 1", "(note: '1' is also the ID of snapshot 'alpha' on 'drive0'; use 'delvm -i 1' for that one)\n",
     DEL("delvm", 1, "1", "disk0")},
    {"collide", Q72, "loadvm 1", "", LOAD(1, "1", "disk0", "disk0")},
    {"collide", SG, "info snapshots",
     "List of snapshots present on all disks:\n"
     "ID        TAG               VM SIZE                DATE     VM CLOCK\n"
     "1         alpha             451 KiB 2026-11-22 02:56:33 00:00:00.000\n"
     "2         1                 451 KiB 2026-11-22 02:56:33 00:00:00.000\n"
     "Note: '1' is the tag of one snapshot and the ID of snapshot 'alpha'; 'loadvm 1' means the tag, 'loadvm -i 1' the ID\n", ""},
    {"partial", SG, "loadvm only0", "Error: Snapshot 'only0' is not loadable: it is missing on 'drive1'\n", ""},
    {"partial", SG, "delvm only1", "(snapshot 'only1' was not on 'drive0')\n", DEL("delvm", 1, "only1", "disk0,disk1")},
    {"idsdiffer", SG, "info snapshots",
     "List of snapshots present on all disks:\n"
     "ID        TAG               VM SIZE                DATE     VM CLOCK\n"
     "--        a                 451 KiB 2026-11-22 02:56:33 00:00:00.000\n"
     "--        b                 451 KiB 2026-11-22 02:56:33 00:00:00.000\n", ""},
    {"idsdiffer", SG, "delvm -i 1", "(snapshot ID 1, tag 'a')\n", DEL("delvm", 1, "a", "disk0,disk1")},
    {"rawrw", SG, "savevm x", "Error: Device 'drive1' is writable but does not support snapshots\n", ""},
    {"nodisk", SG, "loadvm x", "Error: no block device can store vmstate for snapshot\n", ""},
    {"nodisk", SG, "delvm x", "Error: Snapshot 'x' does not exist\n", ""},
    {"diskonly", SG, "loadvm d", "Error: Snapshot 'd' has no VM state (a disk-only snapshot); revert to it offline with qemu-img\n", ""},
};

static void setup_vm_x(struct fake_vm *vm, const char *fx, const char *vmstate, bool replaces,
                       bool exact)
{
    fake_init(vm);
    fixture(vm, fx);
    struct sg_hmp_backend be = fake_backend(vm);
    struct sg_hmp_options opt = {.vmstate_node = vmstate, .now = fixed_now,
                                 .backend_replaces = replaces, .backend_exact_tags = exact};
    vm->h = sg_hmp_new(&be, &opt);
    vm->replaces = replaces;
    assert_non_null(vm->h);
}

static void setup_vm(struct fake_vm *vm, const char *fx, const char *vmstate, bool replaces)
{
    setup_vm_x(vm, fx, vmstate, replaces, false);
}

static void teardown_vm(struct fake_vm *vm)
{
    sg_hmp_free(vm->h);
    fake_free(vm);
}

static void joblog(struct fake_vm *vm, char *buf, size_t n)
{
    buf[0] = 0;
    for (int i = 0; i < vm->nlog; i++) {
        if (strncmp(vm->log[i], "snapshot-", 9) != 0)
            continue;
        if (buf[0])
            strncat(buf, ";", n - strlen(buf) - 1);
        strncat(buf, vm->log[i], n - strlen(buf) - 1);
    }
}

/* Every job started is dismissed. */
static void assert_all_dismissed(struct fake_vm *vm)
{
    assert_int_equal(json_array_size(vm->jobs), 0);
}

static void run_cases(int mode)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct ecase *c = &cases[i];
        struct fake_vm vm;
        setup_vm_x(&vm, c->fixture, c->vmstate, c->replaces, c->exact);
        vm.defer = mode >= 1;
        vm.events_first = mode == 2;
        vm.no_events = mode == 3;
        print_message("case %zu (mode %d): %s: %s\n", i, mode, c->fixture, c->line);
        const char *got = fake_run(&vm, c->line, c->profile);
        assert_string_equal(got, c->reply);
        assert_int_equal(fake_last_quit, strcmp(c->line, "quit") == 0);
        if (c->jobs) {
            char log[2048];
            joblog(&vm, log, sizeof log);
            assert_string_equal(log, c->jobs);
        }
        assert_all_dismissed(&vm);
        assert_false(sg_hmp_busy(vm.h));
        teardown_vm(&vm);
    }
}

static void test_table_sync(void **s) { run_cases(0); }
static void test_table_deferred(void **s) { run_cases(1); }
static void test_table_events_first(void **s) { run_cases(2); }
static void test_table_no_events(void **s) { run_cases(3); }

/* The state really changes: save, list, load, delete in sequence. */
static void test_sequence(void **s)
{
    struct fake_vm vm;
    setup_vm(&vm, "empty", NULL, false);
    assert_string_equal(fake_run(&vm, "savevm first", SG), "");
    assert_string_equal(fake_run(&vm, "savevm second", SG), "");
    assert_int_equal(vm.disks[0].n, 2);
    assert_string_equal(fake_run(&vm, "loadvm first", SG), "");
    assert_string_equal(fake_run(&vm, "loadvm -i 2", SG), "(snapshot ID 2, tag 'second')\n");
    assert_string_equal(fake_run(&vm, "delvm first", SG), "");
    assert_int_equal(vm.disks[0].n, 1);
    assert_string_equal(vm.disks[0].snaps[0].tag, "second");
    assert_string_equal(fake_run(&vm, "delvm first", SG), "Error: Snapshot 'first' does not exist\n");
    /* job ids never repeat and never come from the tag */
    char log[2048];
    joblog(&vm, log, sizeof log);
    assert_non_null(strstr(log, "hmp-savevm-1 tag=first"));
    assert_non_null(strstr(log, "hmp-savevm-2 tag=second"));
    assert_non_null(strstr(log, "hmp-loadvm-3 tag=first"));
    assert_non_null(strstr(log, "hmp-loadvm-4 tag=second"));
    assert_non_null(strstr(log, "hmp-delvm-5 tag=first"));
    teardown_vm(&vm);
}

static void test_job_failure(void **s)
{
    struct fake_vm vm;
    setup_vm(&vm, "single", NULL, false);
    vm.fail_next_job = "Failed to save snapshot: disk full";
    assert_string_equal(fake_run(&vm, "savevm new", Q72), "Error: Failed to save snapshot: disk full\r\n");
    assert_all_dismissed(&vm);
    /* the QMP reply itself is an error */
    vm.dead = false;
    teardown_vm(&vm);
}

static int done_calls, progress_calls;
static char done_text[4096];
static unsigned long long prog_done, prog_total;

static void on_done(void *o, const char *text, bool quit)
{
    done_calls++;
    snprintf(done_text, sizeof done_text, "%s", text);
}

static void on_progress(void *o, const char *id, unsigned long long d, unsigned long long t)
{
    progress_calls++;
    prog_done = d;
    prog_total = t;
}

static void test_progress_and_cancel(void **s)
{
    struct fake_vm vm;
    setup_vm(&vm, "single", NULL, false);
    vm.defer = true;
    vm.hold_jobs = true;
    done_calls = progress_calls = 0;
    struct sg_hmp_cmd *c = sg_hmp_exec(vm.h, "savevm big", SG, on_done, on_progress, NULL);
    assert_non_null(c);
    fake_drain(&vm);
    assert_true(sg_hmp_busy(vm.h));
    sg_hmp_tick(vm.h);
    sg_hmp_tick(vm.h);   /* one poll at a time */
    fake_drain(&vm);
    assert_int_equal(progress_calls, 1);
    assert_int_equal(prog_done, 10);
    assert_int_equal(prog_total, 100);
    assert_int_equal(done_calls, 0);
    sg_hmp_cancel(c);
    fake_drain(&vm);
    assert_int_equal(vm.cancels, 1);
    assert_int_equal(done_calls, 1);
    assert_string_equal(done_text, "Error: operation cancelled\n");
    assert_all_dismissed(&vm);
    assert_false(sg_hmp_busy(vm.h));
    teardown_vm(&vm);
}

static void test_cancel_before_job(void **s)
{
    struct fake_vm vm;
    setup_vm(&vm, "single", NULL, false);
    vm.defer = true;
    done_calls = 0;
    struct sg_hmp_cmd *c = sg_hmp_exec(vm.h, "savevm x", SG, on_done, NULL, NULL);
    sg_hmp_cancel(c);     /* still gathering the disks */
    fake_drain(&vm);
    assert_int_equal(done_calls, 1);
    assert_string_equal(done_text, "Error: cancelled\n");
    assert_int_equal(vm.nlog, 0);
    teardown_vm(&vm);
}

static void test_detach(void **s)
{
    struct fake_vm vm;
    setup_vm(&vm, "single", NULL, false);
    vm.defer = true;
    vm.hold_jobs = true;
    done_calls = progress_calls = 0;
    struct sg_hmp_cmd *c = sg_hmp_exec(vm.h, "savevm x", Q72, on_done, on_progress, NULL);
    fake_drain(&vm);
    sg_hmp_detach(c);
    sg_hmp_tick(vm.h);
    fake_drain(&vm);
    fake_release_jobs(&vm);
    fake_drain(&vm);
    assert_int_equal(done_calls, 0);
    assert_int_equal(progress_calls, 0);
    assert_all_dismissed(&vm);      /* the job still ended properly */
    assert_int_equal(fake_find(&vm.disks[0], "x"), 2);
    assert_false(sg_hmp_busy(vm.h));
    teardown_vm(&vm);
}

static void test_backend_dies(void **s)
{
    struct fake_vm vm;
    setup_vm(&vm, "single", NULL, false);
    vm.defer = true;
    vm.hold_jobs = true;
    done_calls = 0;
    sg_hmp_exec(vm.h, "savevm x", SG, on_done, NULL, NULL);
    fake_drain(&vm);
    assert_int_equal(done_calls, 0);
    vm.dead = true;                  /* the link closes: pending polls get NULL */
    sg_hmp_tick(vm.h);
    fake_drain(&vm);
    /* the poll's NULL does not end the command; the job's own query does */
    vm.dead = false;
    fake_release_jobs(&vm);
    vm.dead = true;
    fake_drain(&vm);
    assert_int_equal(done_calls, 1);
    assert_string_equal(done_text, "Error: the back end went away (connection closed)\n");
    vm.dead = false;
    teardown_vm(&vm);
    setup_vm(&vm, "single", NULL, false);
    vm.dead = true;
    assert_string_equal(fake_run(&vm, "info status", Q72),
                        "Error: the back end went away (connection closed)\r\n");
    teardown_vm(&vm);
}

static void test_free_with_requests_pending(void **s)
{
    struct fake_vm vm;
    setup_vm(&vm, "single", NULL, false);
    vm.defer = true;
    done_calls = 0;
    sg_hmp_exec(vm.h, "savevm x", SG, on_done, NULL, NULL);
    sg_hmp_exec(vm.h, "info status", SG, on_done, NULL, NULL);
    sg_hmp_free(vm.h);     /* the back end answers later: nothing may break */
    fake_drain(&vm);
    assert_int_equal(done_calls, 0);
    fake_free(&vm);
}

static void test_forwarding(void **s)
{
    struct fake_vm vm;
    setup_vm(&vm, "single", NULL, false);
    vm.has_hmc = true;
    assert_string_equal(fake_run(&vm, "block_resize d 1G", Q72), "forwarded\r\n");
    assert_string_equal(vm.last_hmc, "block_resize d 1G");
    int before = vm.ncmds;
    assert_string_equal(fake_run(&vm, "info mtree", SG), "forwarded\n");
    assert_int_equal(vm.ncmds, before + 1);   /* query-commands is asked once */
    /* QEMU 7.2's own lists, recorded: never forwarded */
    assert_non_null(strstr(fake_run(&vm, "help", Q72), "announce_self [interfaces] [id] -- "));
    assert_string_equal(fake_run(&vm, "help migrate_cancel", Q72),
                        "migrate_cancel  -- cancel the current VM migration\r\n");
    /* the snapgate profile leaves help on QEMU's commands to QEMU */
    assert_string_equal(fake_run(&vm, "help migrate_cancel", SG), "forwarded\n");
    /* our own commands are never forwarded */
    assert_string_equal(fake_run(&vm, "info status", Q72), "VM status: paused (prelaunch)\r\n");
    teardown_vm(&vm);
    setup_vm(&vm, "single", NULL, false);
    const char *h = fake_run(&vm, "help", SG);
    assert_non_null(strstr(h, "loadvm [-t|-i] NAME -- "));
    assert_non_null(strstr(h, "info [subcommand] -- "));
    h = fake_run(&vm, "info", Q72);
    assert_non_null(strstr(h, "info snapshots  -- show the currently saved VM snapshots\r\n"));
    assert_null(strstr(h, "info jobs"));
    teardown_vm(&vm);
}

/* Notes go to the note function as soon as the name is resolved, before
 * the job (deferred back end: nothing has answered the job yet) and are
 * left out of the reply; done_failed tells a failed line from a good one. */
static char note_text[256];
static bool seen_failed;
static struct sg_hmp *note_engine;

static void on_note(void *o, const char *text)
{
    snprintf(note_text, sizeof note_text, "%s", text);
}

static void on_done_failed(void *o, const char *text, bool quit)
{
    on_done(o, text, quit);
    seen_failed = sg_hmp_done_failed(note_engine);
}

static void test_notes_and_failure(void **s)
{
    struct fake_vm vm;
    setup_vm(&vm, "single", NULL, false);
    note_engine = vm.h;
    vm.defer = true;
    vm.hold_jobs = true;
    done_calls = 0;
    note_text[0] = 0;
    struct sg_hmp_cmd *c = sg_hmp_exec(vm.h, "loadvm -i 1", SG, on_done_failed, NULL, NULL);
    assert_non_null(c);
    sg_hmp_set_note(c, on_note);
    fake_drain(&vm);
    assert_int_equal(done_calls, 0);
    assert_string_equal(note_text, "(snapshot ID 1, tag 's1')\n");
    fake_release_jobs(&vm);
    for (int i = 0; i < 50 && !done_calls; i++) {
        fake_drain(&vm);
        sg_hmp_tick(vm.h);
    }
    assert_int_equal(done_calls, 1);
    assert_string_equal(done_text, "");
    assert_false(seen_failed);
    vm.hold_jobs = false;
    c = sg_hmp_exec(vm.h, "loadvm nosuch", SG, on_done_failed, NULL, NULL);
    fake_drain(&vm);
    assert_int_equal(done_calls, 2);
    assert_true(seen_failed);
    sg_hmp_exec(vm.h, "nosuch", SG, on_done_failed, NULL, NULL);
    fake_drain(&vm);
    assert_true(seen_failed);
    sg_hmp_exec(vm.h, "help nosuch", SG, on_done_failed, NULL, NULL);
    fake_drain(&vm);
    assert_false(seen_failed);
    teardown_vm(&vm);
}

static void test_concurrent_lines(void **s)
{
    struct fake_vm vm;
    setup_vm(&vm, "single", NULL, false);
    vm.defer = true;
    vm.hold_jobs = true;
    done_calls = 0;
    sg_hmp_exec(vm.h, "savevm x", SG, on_done, NULL, NULL);
    fake_drain(&vm);
    sg_hmp_exec(vm.h, "info status", SG, on_done, NULL, NULL);
    fake_drain(&vm);
    assert_int_equal(done_calls, 1);     /* not held up by the save */
    assert_string_equal(done_text, "VM status: paused (prelaunch)\n");
    fake_release_jobs(&vm);
    fake_drain(&vm);
    assert_int_equal(done_calls, 2);
    teardown_vm(&vm);
}

static void test_completion(void **s)
{
    struct fake_vm vm;
    setup_vm(&vm, "collide", NULL, false);
    char **v = sg_hmp_complete(vm.h, "", 0, "sa");
    assert_non_null(v);
    assert_string_equal(v[0], "savevm");
    assert_null(v[1]);
    sg_hmp_strv_free(v);
    v = sg_hmp_complete(vm.h, "info s", 5, "s");
    assert_string_equal(v[0], "snapshots");
    assert_string_equal(v[1], "status");
    assert_null(v[2]);
    sg_hmp_strv_free(v);
    /* the cache is empty until the back end was asked */
    assert_null(sg_hmp_complete(vm.h, "loadvm a", 7, "a"));
    sg_hmp_refresh_snapshots(vm.h);
    v = sg_hmp_complete(vm.h, "loadvm a", 7, "a");
    assert_string_equal(v[0], "alpha");
    assert_null(v[1]);
    sg_hmp_strv_free(v);
    v = sg_hmp_complete(vm.h, "loadvm -i ", 10, "");
    assert_string_equal(v[0], "1");
    assert_string_equal(v[1], "2");
    assert_null(v[2]);
    sg_hmp_strv_free(v);
    /* a save through another client: the cache follows the job events */
    fake_snap(&vm.disks[0], "beta", 1, 1, false);
    json_t *ev = json_pack("{s:s, s:{s:s, s:s}}", "event", "JOB_STATUS_CHANGE", "data", "id",
                           "other", "status", "concluded");
    sg_hmp_on_event(vm.h, ev);
    json_decref(ev);
    v = sg_hmp_complete(vm.h, "delvm ", 6, "b");
    assert_string_equal(v[0], "beta");
    sg_hmp_strv_free(v);
    /* names the parser would split come quoted */
    assert_string_equal(fake_run(&vm, "savevm \"my \\\"x\\\"\"", SG), "");
    v = sg_hmp_complete(vm.h, "loadvm ", 7, "\"m");
    assert_non_null(v);
    assert_string_equal(v[0], "\"my \\\"x\\\"\"");
    sg_hmp_strv_free(v);
    assert_int_equal(fake_find(&vm.disks[0], "my \"x\""), 3);
    /* a name with spaces, typed without its quote: the whole argument */
    assert_string_equal(fake_run(&vm, "savevm \"with space\"", SG), "");
    assert_string_equal(fake_run(&vm, "savevm \"with tab\"", SG), "");
    size_t at = 0;
    v = sg_hmp_complete_name(vm.h, "loadvm with sp", 14, &at);
    assert_non_null(v);
    assert_int_equal(at, 7);
    assert_string_equal(v[0], "with space");
    assert_null(v[1]);
    sg_hmp_strv_free(v);
    v = sg_hmp_complete_name(vm.h, "delvm -t \"with ", 15, &at);
    assert_int_equal(at, 9);
    assert_string_equal(v[0], "with space");
    assert_string_equal(v[1], "with tab");
    assert_null(v[2]);
    sg_hmp_strv_free(v);
    assert_null(sg_hmp_complete_name(vm.h, "loadvm nothing like", 19, &at));
    assert_null(sg_hmp_complete_name(vm.h, "info snap", 9, &at));
    char *q = sg_hmp_quote_name("with space", false);
    assert_string_equal(q, "\"with space\"");
    free(q);
    q = sg_hmp_quote_name("with ", true);
    assert_string_equal(q, "\"with ");
    free(q);
    q = sg_hmp_quote_name("plain", false);
    assert_string_equal(q, "plain");
    free(q);
    teardown_vm(&vm);
}

/* compat/transcripts: QEMU 7.2 recordings replayed through the engine. */
static void replay(const char *file)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", SG_TRANSCRIPTS_DIR, file);
    json_error_t jerr;
    json_t *t = json_load_file(path, 0, &jerr);
    if (!t)
        fail_msg("%s: %s", path, jerr.text);
    struct fake_vm vm;
    fake_init(&vm);
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(t, "drives"), i, d) {
        const char *spec = json_string_value(d);
        char id[32] = "", node[32] = "";
        const char *p;
        if ((p = strstr(spec, "id=")) && (p == spec || p[-1] == ','))
            sscanf(p, "id=%31[^,]", id);
        if ((p = strstr(spec, "node-name=")))
            sscanf(p, "node-name=%31[^,]", node);
        fake_disk(&vm, id, node, strstr(spec, "format=raw") ? "raw" : "qcow2",
                  strstr(spec, "readonly=on") != NULL);
    }
    struct sg_hmp_backend be = fake_backend(&vm);
    vm.h = sg_hmp_new(&be, NULL);
    json_t *step;
    unsigned n = 0;
    json_array_foreach(json_object_get(t, "steps"), i, step) {
        const char *line = json_string_value(json_object_get(step, "hmp"));
        if (!line)
            continue;
        print_message("%s: %s\n", file, line);
        assert_string_equal(fake_run(&vm, line, Q72),
                            json_string_value(json_object_get(step, "reply")));
        n++;
    }
    assert_true(n > 0);
    teardown_vm(&vm);
    json_decref(t);
}

static void test_transcripts(void **s)
{
    replay("empty_list.json");
    replay("no_disk.json");
    replay("raw_disk.json");
    replay("readonly_disk.json");
}

int main(void)
{
    setenv("TZ", "UTC", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_sync),
        cmocka_unit_test(test_table_deferred),
        cmocka_unit_test(test_table_events_first),
        cmocka_unit_test(test_table_no_events),
        cmocka_unit_test(test_sequence),
        cmocka_unit_test(test_job_failure),
        cmocka_unit_test(test_progress_and_cancel),
        cmocka_unit_test(test_cancel_before_job),
        cmocka_unit_test(test_detach),
        cmocka_unit_test(test_backend_dies),
        cmocka_unit_test(test_free_with_requests_pending),
        cmocka_unit_test(test_forwarding),
        cmocka_unit_test(test_concurrent_lines),
        cmocka_unit_test(test_notes_and_failure),
        cmocka_unit_test(test_completion),
        cmocka_unit_test(test_transcripts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

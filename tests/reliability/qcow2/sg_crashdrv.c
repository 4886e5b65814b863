/* sg_crashdrv: drives libsgblock through random snapshot and guest-data
 * operations on one qcow2 image for the crash-consistency and fault
 * injection tests (test_qcow2_crash.py, test_qcow2_faults.py).
 *
 *   sg_crashdrv create IMAGE SIZE CLUSTER_BITS
 *   sg_crashdrv run IMAGE JOURNAL SEED GEN_BASE TAG_BASE OPS [options]
 *       --kill-at N        SIGKILL itself before the Nth write-class syscall
 *       --fail-at N        the Nth write-class syscall fails with --errno (EIO)
 *       --errno EIO|ENOSPC --sticky (every later one fails too)
 *       --enospc-above B   pwrite past B bytes of file fails with ENOSPC
 *       --apply-only       every operation is a snapshot apply (a full-disk load)
 *   sg_crashdrv dump IMAGE [SLOTS]  (IMAGE is a scratch copy: it is reverted
 *                                    to every snapshot in turn)
 *   sg_crashdrv classify RAW [SLOTS] (slot generations of a raw file, e.g. one
 *                                    written by qemu-img convert: the oracle)
 *
 * The journal is the contract with the checker: an intent line is written
 * before each operation starts and a done line after it returned, with
 * write(2) on an O_APPEND file, so a SIGKILL never hides a completed step:
 *   W slot gen | Z slot | S (flush starts) | F (flush returned) | C tag vmsize | CD id tag | D id | DD id |
 *   A id | AD id | ERR message | EXIT
 * "done" means the call returned success; the engine's own flushes make a
 * returned snapshot operation durable (CD / DD / AD also imply F). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "block.h"
#include "rl_fault.h"
#include "rl_pattern.h"

#define MAX_SNAPS 6
#define DEFAULT_SLOTS 192u

struct drv {
    struct sg_block *bs;
    int journal;
    uint64_t rng;
    unsigned slots;
    uint32_t gen;         /* last generation handed out */
    uint32_t tag;         /* last tag number handed out */
    char ids[64][128];    /* snapshot IDs, refreshed after each snapshot op */
    int nids;
    bool apply_only;
};

static uint64_t rnd(struct drv *d)
{
    d->rng ^= d->rng << 13;
    d->rng ^= d->rng >> 7;
    d->rng ^= d->rng << 17;
    return d->rng;
}

static void jlog(struct drv *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jlog(struct drv *d, const char *fmt, ...)
{
    char line[1200];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    /* One write per line: a kill leaves whole lines only. */
    ssize_t w = write(d->journal, line, (size_t)n);
    (void)w;
}

static bool refresh_ids(struct drv *d, struct sg_error *err)
{
    struct sg_snapshot_info *list = NULL;
    int n = sg_block_snapshot_list(d->bs, &list, err);
    if (n < 0)
        return false;
    d->nids = 0;
    for (int i = 0; i < n && i < 64; i++)
        snprintf(d->ids[d->nids++], sizeof d->ids[0], "%s", list[i].id);
    sg_snapshot_info_free_list(list, n);
    return true;
}

static bool op_writes(struct drv *d, struct sg_error *err)
{
    uint8_t buf[RL_SLOT_LEN];
    unsigned k = 1 + (unsigned)(rnd(d) % 6);
    for (unsigned i = 0; i < k; i++) {
        unsigned slot = (unsigned)(rnd(d) % d->slots);
        if (rnd(d) % 10 == 0) {
            jlog(d, "Z %u", slot);
            if (!sg_block_discard(d->bs, rl_slot_off(slot), RL_SLOT_LEN, err))
                return false;
            continue;
        }
        uint32_t gen = ++d->gen;
        rl_slot_fill(buf, slot, gen);
        jlog(d, "W %u %u", slot, gen);
        if (!sg_block_write(d->bs, rl_slot_off(slot), buf, RL_SLOT_LEN, err))
            return false;
    }
    if (rnd(d) % 2 == 0) {
        jlog(d, "S");
        if (!sg_block_flush(d->bs, err))
            return false;
        jlog(d, "F");
    }
    return true;
}

static bool op_create(struct drv *d, struct sg_error *err)
{
    uint32_t tag = ++d->tag;
    size_t vs = 0;
    if (rnd(d) % 10 >= 4)
        vs = (size_t)(rnd(d) % 8) * 65536 + (size_t)(rnd(d) % 5000) + 1;
    jlog(d, "C t%u %zu", tag, vs);
    if (vs) {
        uint8_t *state = malloc(vs);
        if (!state) {
            sg_error_set(err, "out of memory");
            return false;
        }
        rl_vmstate_fill(state, vs, tag);
        bool ok = true;
        for (size_t off = 0; ok && off < vs; off += 65536) {
            size_t n = vs - off < 65536 ? vs - off : 65536;
            ok = sg_block_vmstate_write(d->bs, off, state + off, n, err);
        }
        free(state);
        if (!ok)
            return false;
    }
    char name[32];
    snprintf(name, sizeof name, "t%u", tag);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct sg_snapshot_info info = {
        .name = name,
        .vm_state_size = vs,
        .date_sec = (uint64_t)now.tv_sec,
        .date_nsec = (uint32_t)now.tv_nsec,
        .vm_clock_nsec = (uint64_t)tag * 1000000000ull,
        .icount = -1,
    };
    if (!sg_block_snapshot_create(d->bs, &info, err))
        return false;
    jlog(d, "CD %s t%u", info.id, tag);
    return refresh_ids(d, err);
}

static bool op_delete(struct drv *d, struct sg_error *err)
{
    if (!d->nids)
        return true;
    char id[128];
    snprintf(id, sizeof id, "%s", d->ids[rnd(d) % (unsigned)d->nids]);
    jlog(d, "D %s", id);
    if (!sg_block_snapshot_delete(d->bs, id, err))
        return false;
    jlog(d, "DD %s", id);
    return refresh_ids(d, err);
}

static bool op_apply(struct drv *d, struct sg_error *err)
{
    if (!d->nids)
        return true;
    char id[128];
    snprintf(id, sizeof id, "%s", d->ids[rnd(d) % (unsigned)d->nids]);
    jlog(d, "A %s", id);
    if (!sg_block_snapshot_goto(d->bs, id, err))
        return false;
    jlog(d, "AD %s", id);
    return true;
}

static bool one_op(struct drv *d, struct sg_error *err)
{
    if (d->apply_only)
        return op_apply(d, err);
    unsigned r = (unsigned)(rnd(d) % 100);
    if (d->nids >= MAX_SNAPS && r >= 55 && r < 70)
        r = 75;   /* full table: delete instead of create */
    if (r < 55)
        return op_writes(d, err);
    if (r < 70)
        return op_create(d, err);
    if (r < 82)
        return op_delete(d, err);
    if (r < 90)
        return op_apply(d, err);
    jlog(d, "S");
    if (!sg_block_flush(d->bs, err))
        return false;
    jlog(d, "F");
    return true;
}

/* Parses a number; a bad one is reported and clears *ok (checked once the
 * whole command line is read). */
static unsigned long long num(const char *s, const char *what, bool *ok)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end || end == s) {
        fprintf(stderr, "sg_crashdrv: bad %s '%s'\n", what, s);
        *ok = false;
    }
    return v;
}

/* After a failed sync: more flushes, which must all fail without writing
 * (SQLite's pager rule; before issue 17 the next flush re-ran the sync and
 * went on writing tables whose refcounts may not have reached the disk). */
static void probe_after_error(struct drv *d)
{
    int passed = 0;
    for (int i = 0; i < 8; i++) {
        struct sg_error e = {0};
        passed += sg_block_flush(d->bs, &e);
    }
    fprintf(stderr, "sg_crashdrv: after the error: error state %s, %d of 8 flushes succeeded\n",
            sg_block_io_error(d->bs) ? "on" : "off", passed);
}

static int cmd_run(int argc, char **argv)
{
    if (argc < 8) {
        fprintf(stderr, "usage: sg_crashdrv run IMAGE JOURNAL SEED GEN_BASE TAG_BASE OPS [opts]\n");
        return 2;
    }
    struct drv d = {.slots = DEFAULT_SLOTS};
    bool args_ok = true;
    d.rng = num(argv[4], "seed", &args_ok) * 0x9e3779b97f4a7c15ull | 1;
    d.gen = (uint32_t)num(argv[5], "gen base", &args_ok);
    d.tag = (uint32_t)num(argv[6], "tag base", &args_ok);
    unsigned long long ops = num(argv[7], "ops", &args_ok);
    struct rl_fault_plan plan = {.fail_errno = EIO};
    bool probe = false;
    for (int i = 8; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(o, "--sticky")) {
            plan.sticky = true;
            continue;
        }
        if (!strcmp(o, "--probe-after-error")) {
            probe = true;
            continue;
        }
        if (!strcmp(o, "--apply-only")) {
            d.apply_only = true;
            continue;
        }
        if (!strcmp(o, "--kill-at"))
            plan.kill_at = (long)num(v, o, &args_ok);
        else if (!strcmp(o, "--fail-at"))
            plan.fail_at = (long)num(v, o, &args_ok);
        else if (!strcmp(o, "--fail-sync-at")) {
            plan.fail_at = (long)num(v, o, &args_ok);
            plan.sync_only = true;
        }
        else if (!strcmp(o, "--enospc-above"))
            plan.enospc_above = num(v, o, &args_ok);
        else if (!strcmp(o, "--slots"))
            d.slots = (unsigned)num(v, o, &args_ok);
        else if (!strcmp(o, "--errno"))
            plan.fail_errno = !strcmp(v, "ENOSPC") ? ENOSPC : EIO;
        else {
            fprintf(stderr, "sg_crashdrv: unknown option '%s'\n", o);
            return 2;
        }
        i++;
    }
    if (!args_ok || d.slots == 0)
        return 2;
    d.journal = open(argv[3], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (d.journal < 0) {
        fprintf(stderr, "sg_crashdrv: %s: %s\n", argv[3], strerror(errno));
        return 2;
    }
    struct sg_error err = {0};
    d.bs = sg_block_open(argv[2], "qcow2", 0, &err);
    if (d.bs && !refresh_ids(&d, &err)) {
        sg_block_close(d.bs);
        d.bs = NULL;
    }
    if (!d.bs) {
        jlog(&d, "ERR open: %s", err.msg);
        fprintf(stderr, "sg_crashdrv: %s\n", err.msg);
        close(d.journal);
        return 1;
    }
    rl_fault_arm(&plan);
    bool ok = true;
    for (unsigned long long i = 0; ok && i < ops; i++)
        ok = one_op(&d, &err);
    if (!ok) {
        /* The error must name a cause; then the handle is closed with the
         * fault still in force (a full disk stays full) to show close does
         * no harm either. */
        jlog(&d, "ERR %s", err.msg[0] ? err.msg : "(no message)");
        fprintf(stderr, "sg_crashdrv: %s (after %ld write calls, %ld failed)\n", err.msg,
                rl_fault_calls(), rl_fault_failed());
        if (probe)
            probe_after_error(&d);
    }
    sg_block_close(d.bs);
    if (!ok && probe)
        fprintf(stderr, "sg_crashdrv: pwrite calls after the fault: %ld\n",
                rl_fault_writes_after_failure());
    rl_fault_disarm();
    if (ok)
        jlog(&d, "EXIT");
    close(d.journal);
    return ok ? 0 : 1;
}

static int cmd_dump(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: sg_crashdrv dump IMAGE [SLOTS]\n");
        return 2;
    }
    bool args_ok = true;
    unsigned slots = argc > 3 ? (unsigned)num(argv[3], "slots", &args_ok) : DEFAULT_SLOTS;
    if (!args_ok)
        return 2;
    struct sg_error err = {0};
    struct sg_block *bs = sg_block_open(argv[2], "qcow2", 0, &err);
    if (!bs) {
        fprintf(stderr, "sg_crashdrv: %s\n", err.msg);
        return 1;
    }
    uint8_t buf[RL_SLOT_LEN];
    struct sg_snapshot_info *list = NULL;
    int n = sg_block_snapshot_list(bs, &list, &err);
    bool ok = n >= 0;
    for (int pass = -1; ok && pass < n; pass++) {
        if (pass >= 0) {
            printf("snap %s %llu %s\n", list[pass].id,
                   (unsigned long long)list[pass].vm_state_size, list[pass].name);
            ok = sg_block_snapshot_goto(bs, list[pass].id, &err);
        }
        printf("%s%s", pass < 0 ? "active" : "data ", pass < 0 ? "" : list[pass].id);
        for (unsigned s = 0; ok && s < slots; s++) {
            ok = sg_block_read(bs, rl_slot_off(s), buf, RL_SLOT_LEN, &err);
            printf(" %ld", ok ? rl_slot_classify(buf, s) : -2L);
        }
        printf("\n");
        uint64_t vs = pass >= 0 ? list[pass].vm_state_size : 0;
        unsigned tag;
        if (ok && vs && sscanf(list[pass].name, "t%u", &tag) == 1) {
            uint8_t *got = malloc(vs), *want = malloc(vs);
            ok = got && want &&
                 sg_block_vmstate_read_snapshot(bs, list[pass].id, 0, got, vs, &err);
            if (ok) {
                rl_vmstate_fill(want, vs, tag);
                printf("vmstate %s %s\n", list[pass].id, memcmp(got, want, vs) ? "bad" : "ok");
            }
            free(got);
            free(want);
        }
    }
    if (n > 0)
        sg_snapshot_info_free_list(list, n);
    sg_block_close(bs);
    if (!ok) {
        fprintf(stderr, "sg_crashdrv: dump: %s\n", err.msg);
        return 1;
    }
    return 0;
}

static int cmd_classify(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: sg_crashdrv classify RAW [SLOTS]\n");
        return 2;
    }
    bool args_ok = true;
    unsigned slots = argc > 3 ? (unsigned)num(argv[3], "slots", &args_ok) : DEFAULT_SLOTS;
    if (!args_ok)
        return 2;
    int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "sg_crashdrv: %s: %s\n", argv[2], strerror(errno));
        return 1;
    }
    uint8_t buf[RL_SLOT_LEN];
    printf("raw");
    for (unsigned s = 0; s < slots; s++) {
        ssize_t n = pread(fd, buf, RL_SLOT_LEN, (off_t)rl_slot_off(s));
        printf(" %ld", n == (ssize_t)RL_SLOT_LEN ? rl_slot_classify(buf, s) : -2L);
    }
    printf("\n");
    close(fd);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 5 && !strcmp(argv[1], "create")) {
        struct sg_error err = {0};
        bool args_ok = true;
        unsigned long long size = num(argv[3], "size", &args_ok);
        unsigned bits = (unsigned)num(argv[4], "bits", &args_ok);
        if (!args_ok)
            return 2;
        if (!sg_block_create_qcow2(argv[2], size, bits, &err)) {
            fprintf(stderr, "sg_crashdrv: %s\n", err.msg);
            return 1;
        }
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "run"))
        return cmd_run(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "dump"))
        return cmd_dump(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "classify"))
        return cmd_classify(argc, argv);
    fprintf(stderr, "usage: sg_crashdrv create|run|dump ... (see the source)\n");
    return 2;
}

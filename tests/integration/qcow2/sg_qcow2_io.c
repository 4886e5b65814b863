/* sg_qcow2_io: a tiny qemu-io for the integration tests -- runs commands
 * against an image through snapgate's block layer.
 *   sg_qcow2_io FILE CMD [ARGS] [-- CMD [ARGS]]...
 *   write PAT OFF LEN | read PAT OFF LEN | discard OFF LEN |
 *   vmwrite PAT OFF LEN | vmread ID PAT OFF LEN | vmhead ID LEN (hex dump) |
 *   snap TAG [VMSIZE [VMCLOCK_NS [DATE_SEC]]] (prints the ID) | goto ID | del ID |
 *   find [-i|-t] NAME | flush | check (our checker, must be clean) |
 *   vmdiscard (drop the active vmstate, as a cancelled save) |
 *   hold (keep the image open and locked until stdin closes)
 * Exit 0 on success, 1 with a message otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"

static unsigned long long num(const char *s)
{
    return strtoull(s, NULL, 0);
}

static int fail(const char *what, const struct sg_error *err)
{
    fprintf(stderr, "sg_qcow2_io: %s: %s\n", what, err->msg);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: sg_qcow2_io FILE CMD [ARGS] [-- CMD ...]\n");
        return 1;
    }
    struct sg_error err = {0};
    /* SG_IO_RDONLY=1 opens read-only (=2: and with -U's force-share). */
    const char *ro = getenv("SG_IO_RDONLY");
    unsigned flags = !ro ? 0 : SG_BLOCK_RDONLY | (!strcmp(ro, "2") ? SG_BLOCK_FORCE_SHARE : 0);
    struct sg_block *bs = sg_block_open(argv[1], NULL, flags, &err);
    if (!bs)
        return fail("open", &err);
    int rc = 0;
    for (int i = 2; i < argc && rc == 0;) {
        int j = i;
        while (j < argc && strcmp(argv[j], "--") != 0)
            j++;
        char **a = argv + i;
        int n = j - i;
        const char *c = a[0];
        if (!strcmp(c, "write") && n == 4) {
            size_t len = (size_t)num(a[3]);
            char *b = malloc(len ? len : 1);
            memset(b, (int)num(a[1]), len);
            if (!sg_block_write(bs, num(a[2]), b, len, &err))
                rc = fail("write", &err);
            free(b);
        } else if (!strcmp(c, "vmwrite") && n == 4) {
            size_t len = (size_t)num(a[3]);
            char *b = malloc(len ? len : 1);
            memset(b, (int)num(a[1]), len);
            if (!sg_block_vmstate_write(bs, num(a[2]), b, len, &err))
                rc = fail("vmwrite", &err);
            free(b);
        } else if ((!strcmp(c, "read") && n == 4) || (!strcmp(c, "vmread") && n == 5)) {
            bool vm = c[0] == 'v';
            int pat = (int)num(a[vm + 1]);
            unsigned long long off = num(a[vm + 2]);
            size_t len = (size_t)num(a[vm + 3]);
            unsigned char *b = malloc(len ? len : 1);
            bool ok = vm ? sg_block_vmstate_read_snapshot(bs, a[1], off, b, len, &err)
                         : sg_block_read(bs, off, b, len, &err);
            if (!ok) {
                rc = fail(c, &err);
            } else {
                for (size_t k = 0; k < len; k++) {
                    if (b[k] != (unsigned char)pat) {
                        fprintf(stderr, "sg_qcow2_io: %s: byte %llu is %#x, want %#x\n", c,
                                off + k, b[k], (unsigned)pat & 0xff);
                        rc = 1;
                        break;
                    }
                }
            }
            free(b);
        } else if (!strcmp(c, "vmhead") && n == 3) {
            size_t len = (size_t)num(a[2]);
            unsigned char *b = malloc(len ? len : 1);
            if (!sg_block_vmstate_read_snapshot(bs, a[1], 0, b, len, &err))
                rc = fail("vmhead", &err);
            else {
                for (size_t k = 0; k < len; k++)
                    printf("%02x", b[k]);
                printf("\n");
            }
            free(b);
        } else if (!strcmp(c, "discard") && n == 3) {
            if (!sg_block_discard(bs, num(a[1]), num(a[2]), &err))
                rc = fail("discard", &err);
        } else if (!strcmp(c, "snap") && n >= 2 && n <= 5) {
            struct sg_snapshot_info info = {
                .name = a[1],
                .vm_state_size = n > 2 ? num(a[2]) : 0,
                .vm_clock_nsec = n > 3 ? num(a[3]) : 0,
                .date_sec = n > 4 ? num(a[4]) : 1700000000,
            };
            if (!sg_block_snapshot_create(bs, &info, &err))
                rc = fail("snap", &err);
            else
                printf("%s\n", info.id);
        } else if (!strcmp(c, "goto") && n == 2) {
            if (!sg_block_snapshot_goto(bs, a[1], &err))
                rc = fail("goto", &err);
        } else if (!strcmp(c, "del") && n == 2) {
            if (!sg_block_snapshot_delete(bs, a[1], &err))
                rc = fail("del", &err);
        } else if (!strcmp(c, "find") && (n == 2 || n == 3)) {
            enum sg_snapshot_match how = SG_SNAPSHOT_BY_NAME;
            if (n == 3)
                how = !strcmp(a[1], "-i") ? SG_SNAPSHOT_BY_ID : SG_SNAPSHOT_BY_TAG;
            char id[128];
            if (!sg_block_snapshot_find(bs, a[n - 1], how, id, &err))
                rc = fail("find", &err);
            else
                printf("%s\n", id);
        } else if (!strcmp(c, "check") && n == 1) {
            struct sg_block_check_result r;
            if (!sg_block_check(bs, &r, stderr, &err))
                rc = fail("check", &err);
            else if (r.corruptions || r.leaks) {
                fprintf(stderr, "sg_qcow2_io: check: %llu corruptions, %llu leaks\n",
                        (unsigned long long)r.corruptions, (unsigned long long)r.leaks);
                rc = 1;
            }
        } else if (!strcmp(c, "flush") && n == 1) {
            if (!sg_block_flush(bs, &err))
                rc = fail("flush", &err);
        } else if (!strcmp(c, "vmdiscard") && n == 1) {
            if (!sg_block_vmstate_discard(bs, &err))
                rc = fail("vmdiscard", &err);
        } else if (!strcmp(c, "hold") && n == 1) {
            /* Keeps the image open (and locked) until stdin closes. */
            printf("holding\n");
            fflush(stdout);
            while (getchar() != EOF)
                ;
        } else {
            fprintf(stderr, "sg_qcow2_io: bad command '%s' (%d args)\n", c, n - 1);
            rc = 1;
        }
        i = j + 1;
    }
    if (rc == 0 && !sg_block_flush(bs, &err))
        rc = fail("flush", &err);
    sg_block_close(bs);
    return rc;
}

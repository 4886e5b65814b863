/* img_snapshot.c: snapgate-img snapshot -l | -c TAG | -a/-d [-i|-t] NAME */
#include "img.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static int usage(void)
{
    img_error("usage: snapgate-img snapshot -l FILE | -c TAG FILE | "
              "-a [-i|-t] NAME FILE | -d [-i|-t] NAME FILE");
    return 1;
}

int img_snapshot(int argc, char **argv)
{
    char action = 0;
    const char *name = NULL, *file = NULL;
    enum sg_snapshot_match how = SG_SNAPSHOT_BY_NAME;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-l") || !strcmp(a, "-c") || !strcmp(a, "-a") || !strcmp(a, "-d")) {
            if (action)
                return usage();
            action = a[1];
            if (action != 'l') {
                if (++i >= argc)
                    return usage();
                /* "-a -i NAME" / "-d -t NAME" */
                if (action != 'c' && (!strcmp(argv[i], "-i") || !strcmp(argv[i], "-t"))) {
                    how = argv[i][1] == 'i' ? SG_SNAPSHOT_BY_ID : SG_SNAPSHOT_BY_TAG;
                    if (++i >= argc)
                        return usage();
                }
                name = argv[i];
            }
        } else if (!strcmp(a, "-i") || !strcmp(a, "-t")) {
            how = a[1] == 'i' ? SG_SNAPSHOT_BY_ID : SG_SNAPSHOT_BY_TAG;
        } else if (!file) {
            file = a;
        } else {
            return usage();
        }
    }
    if (!action || !file)
        return usage();

    struct sg_error err = {0};
    struct sg_block *bs = img_open(file, action != 'l');
    if (!bs)
        return 1;
    if (!sg_block_can_snapshot(bs)) {
        img_error("Could not open '%s': format '%s' does not support snapshots", file,
                  sg_block_format(bs));
        sg_block_close(bs);
        return 1;
    }
    int rc = 0;
    if (action == 'l') {
        struct sg_snapshot_info *l;
        int n = sg_block_snapshot_list(bs, &l, &err);
        if (n < 0) {
            img_error("%s", err.msg);
            rc = 1;
        } else if (n > 0) {
            /* qemu-img prints nothing at all for an image without snapshots. */
            printf("Snapshot list:\n");
            img_print_snapshots(stdout, l, n);
        }
        sg_snapshot_info_free_list(l, n < 0 ? 0 : n);
    } else if (action == 'c') {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        struct sg_snapshot_info info = {
            .name = (char *)name,
            .date_sec = (uint64_t)tv.tv_sec,
            .date_nsec = (uint32_t)tv.tv_usec * 1000,
        };
        if (!sg_block_snapshot_create(bs, &info, &err)) {
            img_error("Could not create snapshot '%s': %s", name, err.msg);
            rc = 1;
        }
    } else {
        char id[128];
        if (!sg_block_snapshot_find(bs, name, how, id, &err)) {
            img_error("Could not %s snapshot '%s': %s", action == 'a' ? "apply" : "delete",
                      name, err.msg);
            rc = 1;
        } else if (action == 'a' ? !sg_block_snapshot_goto(bs, id, &err)
                                 : !sg_block_snapshot_delete(bs, id, &err)) {
            img_error("Could not %s snapshot '%s': %s", action == 'a' ? "apply" : "delete",
                      name, err.msg);
            rc = 1;
        }
    }
    if (rc == 0 && action != 'l' && !sg_block_flush(bs, &err)) {
        img_error("%s", err.msg);
        rc = 1;
    }
    sg_block_close(bs);
    return rc;
}

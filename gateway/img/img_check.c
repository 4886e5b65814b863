/* img_check.c: snapgate-img check [-r leaks|all] FILE -- exit codes as
 * qemu-img check: 0 clean, 2 corruption, 3 leaks only, 1 when the check
 * cannot run.  After a repair the codes describe the repaired image. */
#include "img.h"

#include <string.h>

static void print_summary(const struct sg_block_check_result *r)
{
    if (r->corruptions == 0 && r->leaks == 0)
        printf("No errors were found on the image.\n");
    if (r->corruptions)
        printf("\n%llu errors were found on the image.\n"
               "Data may be corrupted, or further writes to the image may corrupt it.\n",
               (unsigned long long)r->corruptions);
    if (r->leaks)
        printf("\n%llu leaked clusters were found on the image.\n"
               "This means waste of disk space, but no harm to data.\n",
               (unsigned long long)r->leaks);
    if (r->total_clusters)
        printf("%llu/%llu = %0.2f%% allocated, 0.00%% fragmented, 0.00%% compressed clusters\n",
               (unsigned long long)r->allocated_clusters, (unsigned long long)r->total_clusters,
               100.0 * (double)r->allocated_clusters / (double)r->total_clusters);
    printf("Image end offset: %llu\n", (unsigned long long)r->image_end_offset);
}

int img_check(int argc, char **argv)
{
    unsigned fix = 0;
    bool repair = false;
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-r") && i + 1 < argc) {
            const char *how = argv[++i];
            /* Leaks are the only inconsistency we repair; "all" names the
             * same repair so qemu-img command lines work unchanged. */
            if (strcmp(how, "leaks") != 0 && strcmp(how, "all") != 0) {
                img_error("Unknown option value for -r (expecting 'leaks' or 'all'): %s", how);
                return 1;
            }
            fix = SG_BLOCK_FIX_LEAKS;
            repair = true;
        } else if (!file && argv[i][0] != '-') {
            file = argv[i];
        } else {
            img_error("usage: snapgate-img check [-r leaks|all] FILE");
            return 1;
        }
    }
    if (!file) {
        img_error("usage: snapgate-img check [-r leaks|all] FILE");
        return 1;
    }
    struct sg_error err = {0};
    /* Not img_open(.., true): the repair does its own check and refuses
     * corruption itself, with the report. */
    struct sg_block *bs = sg_block_open(file, NULL, repair ? 0 : SG_BLOCK_RDONLY | img_share(), &err);
    if (!bs) {
        img_error("Could not open '%s': %s", file, err.msg);
        return 1;
    }
    struct sg_block_check_result r;
    if (!repair) {
        if (!sg_block_check(bs, &r, stdout, &err)) {
            img_error("%s", err.msg);
            sg_block_close(bs);
            return 1;
        }
        sg_block_close(bs);
        print_summary(&r);
        return r.corruptions ? 2 : r.leaks ? 3 : 0;
    }

    bool ok = sg_block_check_repair(bs, fix, &r, stdout, &err);
    if (!ok)
        img_error("%s", err.msg);
    if (ok && r.corruptions) {
        /* Nothing was written; the report above describes the image. */
        sg_block_close(bs);
        printf("Leaks are not repaired while the image has errors (the reference counts are "
               "not trustworthy); qemu-img check -r all can repair them.\n");
        print_summary(&r);
        return 2;
    }
    if (ok && r.leaks) {
        printf("The following inconsistencies were found and repaired:\n\n"
               "    %llu leaked clusters\n    0 corruptions\n\n",
               (unsigned long long)r.leaks_fixed);
        if (r.leaks_skipped)
            printf("%llu leaked clusters were left (they would need an OFLAG_COPIED repair).\n\n",
                   (unsigned long long)r.leaks_skipped);
        printf("Double checking the fixed image now...\n");
    }
    /* The verdict and exit code describe the image as it is now. */
    struct sg_error e2 = {0};
    struct sg_block_check_result after;
    if (!sg_block_check(bs, &after, r.leaks ? stdout : NULL, &e2)) {
        img_error("%s", e2.msg);
        sg_block_close(bs);
        return 1;
    }
    sg_block_close(bs);
    print_summary(&after);
    if (!ok && !after.corruptions)
        return 1;
    return after.corruptions ? 2 : after.leaks ? 3 : 0;
}

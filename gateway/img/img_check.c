/* img_check.c: snapgate-img check FILE -- exit codes as qemu-img check:
 * 0 clean, 2 corruption, 3 leaks only, 1 when the check cannot run. */
#include "img.h"

#include <string.h>

int img_check(int argc, char **argv)
{
    if (argc != 2) {
        img_error("usage: snapgate-img check FILE");
        return 1;
    }
    struct sg_error err = {0};
    struct sg_block *bs = sg_block_open(argv[1], NULL, SG_BLOCK_RDONLY, &err);
    if (!bs) {
        img_error("Could not open '%s': %s", argv[1], err.msg);
        return 1;
    }
    struct sg_block_check_result r;
    if (!sg_block_check(bs, &r, stdout, &err)) {
        img_error("%s", err.msg);
        sg_block_close(bs);
        return 1;
    }
    sg_block_close(bs);
    if (r.corruptions == 0 && r.leaks == 0)
        printf("No errors were found on the image.\n");
    if (r.corruptions)
        printf("\n%llu errors were found on the image.\n"
               "Data may be corrupted, or further writes to the image may corrupt it.\n",
               (unsigned long long)r.corruptions);
    if (r.leaks)
        printf("\n%llu leaked clusters were found on the image.\n"
               "This means waste of disk space, but no harm to data.\n",
               (unsigned long long)r.leaks);
    if (r.total_clusters)
        printf("%llu/%llu = %0.2f%% allocated, 0.00%% fragmented, 0.00%% compressed clusters\n",
               (unsigned long long)r.allocated_clusters, (unsigned long long)r.total_clusters,
               100.0 * (double)r.allocated_clusters / (double)r.total_clusters);
    printf("Image end offset: %llu\n", (unsigned long long)r.image_end_offset);
    return r.corruptions ? 2 : r.leaks ? 3 : 0;
}

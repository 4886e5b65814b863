/* img_check.c: snapgate-img check [-r leaks|all] FILE -- exit codes as
 * qemu-img check: 0 clean, 2 corruption, 3 leaks only, 1 when the check
 * cannot run.  After a repair the codes describe the repaired image. */
#include "img.h"

#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
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
    if (r->total_clusters) {
        double a = r->allocated_clusters ? (double)r->allocated_clusters : 1.0;
        printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
               (unsigned long long)r->allocated_clusters, (unsigned long long)r->total_clusters,
               100.0 * (double)r->allocated_clusters / (double)r->total_clusters,
               100.0 * (double)r->fragmented_clusters / a, 100.0 * (double)r->compressed_clusters / a);
    }
    printf("Image end offset: %llu\n", (unsigned long long)r->image_end_offset);
}

/* qemu-img check --output=json: QEMU's ImageCheck, keys in the order
 * qemu-img 7.2 prints them, optional ones only when not zero. */
static void print_json(const char *file, const char *format, const struct sg_block_check_result *r,
                       bool repaired)
{
    json_t *o = json_object();
    if (r->image_end_offset)
        json_object_set_new(o, "image-end-offset", json_integer((json_int_t)r->image_end_offset));
    if (r->compressed_clusters)
        json_object_set_new(o, "compressed-clusters",
                            json_integer((json_int_t)r->compressed_clusters));
    if (r->total_clusters)
        json_object_set_new(o, "total-clusters", json_integer((json_int_t)r->total_clusters));
    if (r->corruptions)
        json_object_set_new(o, "corruptions", json_integer((json_int_t)r->corruptions));
    json_object_set_new(o, "check-errors", json_integer(0));
    if (r->leaks)
        json_object_set_new(o, "leaks", json_integer((json_int_t)r->leaks));
    if (repaired && r->corruptions_fixed)
        json_object_set_new(o, "corruptions-fixed",
                            json_integer((json_int_t)r->corruptions_fixed));
    if (repaired && r->leaks_fixed)
        json_object_set_new(o, "leaks-fixed", json_integer((json_int_t)r->leaks_fixed));
    if (r->allocated_clusters)
        json_object_set_new(o, "allocated-clusters",
                            json_integer((json_int_t)r->allocated_clusters));
    json_object_set_new(o, "filename", json_string(file));
    json_object_set_new(o, "format", json_string(format));
    if (r->fragmented_clusters)
        json_object_set_new(o, "fragmented-clusters",
                            json_integer((json_int_t)r->fragmented_clusters));
    char *s = json_dumps(o, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (s)
        printf("%s\n", s);
    free(s);
}

int img_check(int argc, char **argv)
{
    unsigned fix = 0;
    bool repair = false, json = false, quiet = false, force_share = false;
    const char *fmt = NULL;
    enum { OPT_OUTPUT = 256, OPT_IMAGE_OPTS };
    static const struct option longopts[] = {
        {"help", no_argument, 0, 'h'},
        {"output", required_argument, 0, OPT_OUTPUT},
        {"force-share", no_argument, 0, 'U'},
        {"repair", required_argument, 0, 'r'},
        {"image-opts", no_argument, 0, OPT_IMAGE_OPTS},
        {0, 0, 0, 0},
    };
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":f:hr:T:qU", longopts, NULL)) != -1;) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'q': quiet = true; break;
        case 'U': force_share = true; break;
        case 'T': break;   /* cache mode: the engine has one */
        case 'r':
            /* leaks: refcounts too high; all: also refcounts too low,
             * when they are the only corruption (qcow2_check.c). */
            if (strcmp(optarg, "leaks") != 0 && strcmp(optarg, "all") != 0)
                return img_usage_error(
                    "Unknown option value for -r (expecting 'leaks' or 'all'): %s", optarg);
            fix = SG_BLOCK_FIX_LEAKS;
            if (strcmp(optarg, "all") == 0)
                fix |= SG_BLOCK_FIX_ERRORS;   /* refcounts too low (only) */
            repair = true;
            break;
        case OPT_OUTPUT:
            if (!img_output_format(optarg, &json))
                return 1;
            break;
        case OPT_IMAGE_OPTS:
            img_error("--image-opts is not supported by snapgate-img");
            return 1;
        case 'h': return img_usage_error("check [-q] [-f FMT] [-U] [--output=human|json] "
                                         "[-r leaks|all] FILE");
        default: return img_getopt_error(c, argv);
        }
    }
    if (optind != argc - 1)
        return img_usage_error("Expecting one image file name");
    const char *file = argv[optind];
    if (!img_check_format(file, fmt))
        return 1;
    if (repair && force_share) {
        img_error("Could not open '%s': force-share=on can only be used with read-only images",
                  file);
        return 1;
    }
    struct sg_error err = {0};
    /* A repair does its own check and refuses corruption itself, with the
     * report: no img_open(.., writable) here. */
    struct sg_block *bs = sg_block_open(
        file, fmt, repair ? SG_BLOCK_REPAIR : SG_BLOCK_RDONLY | (force_share ? SG_BLOCK_FORCE_SHARE : 0), &err);
    if (!bs) {
        img_error("Could not open '%s': %s", file, err.msg);
        return 1;
    }
    /* Problems found go to stderr, the verdict to stdout, as qemu-img. */
    FILE *report = stderr;
    const char *format = sg_block_format(bs);
    if (strcmp(format, "qcow2") != 0) {
        sg_block_close(bs);
        img_error("This image format does not support checks");
        return 63;   /* qemu-img's exit code for ENOTSUP */
    }
    if (!repair) {
        struct sg_block_check_result r;
        if (!sg_block_check(bs, &r, report, &err)) {
            img_error("%s", err.msg);
            sg_block_close(bs);
            return 1;
        }
        sg_block_close(bs);
        if (json)
            print_json(file, format, &r, false);
        else if (!quiet)
            print_summary(&r);
        return r.corruptions ? 2 : r.leaks ? 3 : 0;
    }
    if (json || quiet) {
        /* The repair's narrative is human text: keep it off a JSON stdout. */
        struct sg_block_check_result r, after;
        bool ok = sg_block_check_repair(bs, fix, &r, report, &err);
        if (!ok)
            img_error("%s", err.msg);
        struct sg_error e2 = {0};
        bool again = sg_block_check(bs, &after, NULL, &e2);
        sg_block_close(bs);
        if (!again) {
            img_error("%s", e2.msg);
            return 1;
        }
        after.leaks_fixed = ok ? r.leaks_fixed : 0;
        after.corruptions_fixed = ok ? r.corruptions_fixed : 0;
        if (json)
            print_json(file, format, &after, true);
        if (!ok && !after.corruptions)
            return 1;
        return after.corruptions ? 2 : after.leaks ? 3 : 0;
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

    bool ok = sg_block_check_repair(bs, fix, &r, report, &err);
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
    if (ok && (r.leaks || r.corruptions_fixed)) {
        printf("The following inconsistencies were found and repaired:\n\n"
               "    %llu leaked clusters\n    %llu corruptions\n\n",
               (unsigned long long)r.leaks_fixed, (unsigned long long)r.corruptions_fixed);
        if (r.leaks_skipped)
            printf("%llu leaked clusters were left (they would need an OFLAG_COPIED repair).\n\n",
                   (unsigned long long)r.leaks_skipped);
        printf("Double checking the fixed image now...\n");
    }
    /* The verdict and exit code describe the image as it is now. */
    struct sg_error e2 = {0};
    struct sg_block_check_result after;
    if (!sg_block_check(bs, &after, r.leaks || r.corruptions_fixed ? report : NULL, &e2)) {
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

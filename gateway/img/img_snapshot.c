/* img_snapshot.c: snapgate-img snapshot [-q] [-f FMT] [-U]
 *                 -l | -c TAG | -a [-i|-t] NAME | -d [-i|-t] NAME  FILE
 *
 * The command line is qemu-img's (no action opens the image and does
 * nothing, the actions exclude each other, the same messages); -i/-t are ours.  A bare
 * NAME follows INTERFACES.md section 3 (a tag first, then an ID), except
 * when NAME is one snapshot's tag and another's ID: qemu-img 7.2 would
 * apply the ID but delete the tag, so the operator must say which with -t
 * or -i. */
#include "img.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define SNAPSHOT_USAGE "snapshot [-q] [-U] -l | -c TAG | -a [-i|-t] NAME | " \
                       "-d [-i|-t] NAME  FILE"

/* NAME is the tag of one snapshot and the ID of another: names both. */
static bool tag_id_clash(struct sg_block *bs, const char *name, const char *verb)
{
    struct sg_error err = {0};
    struct sg_snapshot_info *l;
    int n = sg_block_snapshot_list(bs, &l, &err);
    if (n < 0)
        return false;   /* the resolution below reports it */
    const struct sg_snapshot_info *by_tag = NULL, *by_id = NULL;
    for (int i = 0; i < n; i++) {
        if (!by_tag && l[i].name && !strcmp(l[i].name, name))
            by_tag = &l[i];
        if (!strcmp(l[i].id, name))
            by_id = &l[i];
    }
    bool clash = by_tag && by_id && by_tag != by_id;
    if (clash)
        img_error("Could not %s snapshot '%s': '%s' is the tag of snapshot ID %s and the ID of "
                  "snapshot '%s'; say which with -t %s (the tag) or -i %s (the ID; qemu-img "
                  "takes the %s)",
                  verb, name, name, by_tag->id, by_id->name ? by_id->name : "", name, name,
                  strcmp(verb, "apply") == 0 ? "ID" : "tag");
    sg_snapshot_info_free_list(l, n);
    return clash;
}

/* qemu-img's wording when NAME names no snapshot at all. */
static void not_found(char action, const char *name, const struct sg_error *err)
{
    if (action == 'a')
        img_error("Could not apply snapshot '%s': %s", name, err->msg);
    else
        img_error("Could not delete snapshot '%s': %s", name, err->msg);
}

int img_snapshot(int argc, char **argv)
{
    char action = 0;
    const char *name = NULL, *fmt = NULL;   /* qemu-img snapshot has no -f: probed */
    bool force_share = false;
    enum sg_snapshot_match how = SG_SNAPSHOT_BY_NAME;
    enum { OPT_IMAGE_OPTS = 256 };
    static const struct option longopts[] = {
        {"help", no_argument, 0, 'h'},
        {"force-share", no_argument, 0, 'U'},
        {"image-opts", no_argument, 0, OPT_IMAGE_OPTS},
        {0, 0, 0, 0},
    };
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":la:c:d:hqUit", longopts, NULL)) != -1;) {
        switch (c) {
        case 'l': case 'a': case 'c': case 'd':
            if (action)
                return img_usage_error("Cannot mix '-l', '-a', '-c', '-d'");
            action = (char)c;
            name = optarg;
            /* "-a -i NAME" / "-d -t NAME": getopt took the flag as NAME */
            if (c != 'c' && c != 'l' && (!strcmp(name, "-i") || !strcmp(name, "-t"))) {
                how = name[1] == 'i' ? SG_SNAPSHOT_BY_ID : SG_SNAPSHOT_BY_TAG;
                if (optind >= argc)
                    return img_usage_error("missing argument for option '-%c'", c);
                name = argv[optind++];
            }
            break;
        case 'i': how = SG_SNAPSHOT_BY_ID; break;
        case 't': how = SG_SNAPSHOT_BY_TAG; break;
        case 'q': break;   /* qemu-img -q: its snapshot commands print nothing else */
        case 'U': force_share = true; break;
        case OPT_IMAGE_OPTS:
            img_error("--image-opts is not supported by snapgate-img");
            return 1;
        case 'h': return img_usage_error(SNAPSHOT_USAGE);
        default: return img_getopt_error(c, argv);
        }
    }
    if (optind != argc - 1)
        return img_usage_error("Expecting one image file name");
    const char *file = argv[optind];
    /* Without an action qemu-img opens the image and does nothing. */
    if (!img_check_format(file, fmt))
        return 1;

    struct sg_error err = {0};
    struct sg_block *bs = img_open(file, fmt, action && action != 'l', force_share);
    if (!bs)
        return 1;
    /* Listing a raw image's snapshots shows none, as qemu-img does. */
    if (!sg_block_can_snapshot(bs) && action && action != 'l') {
        img_error("Could not open '%s': format '%s' does not support snapshots", file,
                  sg_block_format(bs));
        sg_block_close(bs);
        return 1;
    }
    int rc = 0;
    if (!action || !sg_block_can_snapshot(bs)) {
        /* nothing to do */
    } else if (action == 'l') {
        struct sg_snapshot_info *l;
        int n = sg_block_snapshot_list(bs, &l, &err);
        if (n < 0) {
            img_error("%s", err.msg);
            rc = 1;
        } else if (n > 0) {   /* -q does not silence the list, as qemu-img */
            /* qemu-img prints nothing at all for an image without snapshots. */
            printf("Snapshot list:\n");
            img_print_snapshots(stdout, l, n);
        }
        sg_snapshot_info_free_list(l, n < 0 ? 0 : n);
    } else if (action == 'c' && img_refuse_corrupt(bs, file, NULL)) {
        rc = 1;
    } else if (action == 'c') {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        struct sg_snapshot_info info = {
            .name = (char *)name,
            .date_sec = (uint64_t)tv.tv_sec,
            .date_nsec = (uint32_t)tv.tv_usec * 1000,
            .has_icount = true,   /* qemu-img records an instruction count of 0 */
            .icount = 0,
        };
        if (!sg_block_snapshot_create(bs, &info, &err)) {
            img_error("Could not create snapshot '%s': %s", name, err.msg);
            rc = 1;
        }
    } else {
        const char *verb = action == 'a' ? "apply" : "delete";
        char id[128];
        if (how == SG_SNAPSHOT_BY_NAME && tag_id_clash(bs, name, verb)) {
            rc = 1;
        } else if (!sg_block_snapshot_find(bs, name, how, id, &err)) {
            not_found(action, name, &err);
            rc = 1;
        } else if (img_refuse_corrupt(bs, file, id)) {
            rc = 1;
        } else if (action == 'a' ? !sg_block_snapshot_goto(bs, id, &err)
                                 : !sg_block_snapshot_delete(bs, id, &err)) {
            img_error("Could not %s snapshot '%s': %s", verb, name, err.msg);
            rc = 1;
        }
    }
    if (rc == 0 && action && action != 'l' && !sg_block_flush(bs, &err)) {
        img_error("%s", err.msg);
        rc = 1;
    }
    sg_block_close(bs);
    return rc;
}

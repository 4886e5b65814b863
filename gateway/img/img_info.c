/* img_info.c: snapgate-img info, and the snapshot table in qemu-img's
 * exact layout (also used by snapshot -l). */
#include "img.h"
#include "sg_escape.h"
#include "sg_q72.h"

#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The sizes and the snapshot table are QEMU's own formats, shared with the
 * qemu-7.2 HMP profile (compat/sg_q72.h): `snapshot -l` must print exactly
 * what `qemu-img snapshot -l` prints. */
void img_size_str(char *buf, size_t n, unsigned long long v)
{
    sg_q72_size_str(v, buf, n);
}

/* As qemu-img's list, except that a tag with control characters or bytes
 * that are not UTF-8 prints quoted and escaped (sg_escape.h; qemu-img
 * prints it raw): every snapshot one row, nothing sent to the terminal. */
void img_print_snapshots(FILE *f, const struct sg_snapshot_info *l, int n)
{
    char head[256];
    sg_q72_snapshot_header(head, sizeof head, true);
    fprintf(f, "%s\n", head);
    for (int i = 0; i < n; i++) {
        const char *name = l[i].name ? l[i].name : "";
        char *esc = sg_tag_is_plain(name) ? NULL : sg_tag_for_terminal(name);
        struct sg_q72_snapshot s = {
            .id = l[i].id, .tag = esc ? esc : name,
            .vm_state_size = l[i].vm_state_size, .date_sec = (int64_t)l[i].date_sec,
            .vm_clock_nsec = l[i].vm_clock_nsec,
            .has_icount = l[i].icount != -1, .icount = l[i].icount,
        };
        /* A tag may be 64 KiB (the qcow2 field is 16-bit): never cut. */
        char *line = sg_q72_snapshot_row_dup(&s, true);
        if (line)
            fprintf(f, "%s\n", line);
        free(line);
        free(esc);
    }
}

/* The virtual size as QEMU reports it: its block layer counts whole 512-byte
 * sectors, so a raw file's odd tail rounds up. */
static unsigned long long virtual_size(struct sg_block *bs)
{
    unsigned long long v = sg_block_size(bs);
    return strcmp(sg_block_format(bs), "raw") == 0 ? (v + 511) / 512 * 512 : v;
}

static int info_json(struct sg_block *bs, const char *file, struct sg_snapshot_info *l, int n)
{
    json_t *o = json_object();
    if (n > 0) {
        json_t *a = json_array();
        for (int i = 0; i < n; i++) {
            json_t *s = json_object();
            if (l[i].icount != -1)   /* qemu-img leaves it out when unknown */
                json_object_set_new(s, "icount", json_integer(l[i].icount));
            json_object_set_new(s, "vm-clock-nsec",
                                json_integer((json_int_t)(l[i].vm_clock_nsec % 1000000000ULL)));
            char *name = sg_utf8_lossy(l[i].name);   /* as qemu-img: U+FFFD */
            json_object_set_new(s, "name", json_string(name ? name : ""));
            free(name);
            json_object_set_new(s, "date-sec", json_integer((json_int_t)l[i].date_sec));
            json_object_set_new(s, "date-nsec", json_integer((json_int_t)l[i].date_nsec));
            json_object_set_new(s, "vm-clock-sec",
                                json_integer((json_int_t)(l[i].vm_clock_nsec / 1000000000ULL)));
            json_object_set_new(s, "id", json_string(l[i].id));
            json_object_set_new(s, "vm-state-size", json_integer((json_int_t)l[i].vm_state_size));
            json_array_append_new(a, s);
        }
        json_object_set_new(o, "snapshots", a);
    }
    json_object_set_new(o, "virtual-size", json_integer((json_int_t)virtual_size(bs)));
    json_object_set_new(o, "filename", json_string(file));
    if (sg_block_cluster_size(bs))
        json_object_set_new(o, "cluster-size", json_integer((json_int_t)sg_block_cluster_size(bs)));
    json_object_set_new(o, "format", json_string(sg_block_format(bs)));
    json_object_set_new(o, "actual-size", json_integer(sg_block_actual_size(bs)));
    struct sg_block_qcow2_info qi;
    if (sg_block_qcow2_info(bs, &qi)) {
        json_t *d = json_object();
        json_object_set_new(d, "compat", json_string(qi.version >= 3 ? "1.1" : "0.10"));
        json_object_set_new(d, "compression-type", json_string("zlib"));
        if (qi.version >= 3)
            json_object_set_new(d, "lazy-refcounts", json_boolean(qi.lazy_refcounts));
        json_object_set_new(d, "refcount-bits", json_integer(qi.refcount_bits));
        if (qi.version >= 3) {
            json_object_set_new(d, "corrupt", json_boolean(qi.corrupt));
            json_object_set_new(d, "extended-l2", json_false());
        }
        json_t *fs = json_object();
        json_object_set_new(fs, "type", json_string("qcow2"));
        json_object_set_new(fs, "data", d);
        json_object_set_new(o, "format-specific", fs);
    }
    json_object_set_new(o, "dirty-flag", json_false());
    char *s = json_dumps(o, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!s)
        return 1;
    printf("%s\n", s);
    free(s);
    return 0;
}

int img_info(int argc, char **argv)
{
    bool json = false, force_share = false;
    const char *fmt = NULL;
    enum { OPT_OUTPUT = 256, OPT_CHAIN, OPT_IMAGE_OPTS };
    static const struct option longopts[] = {
        {"help", no_argument, 0, 'h'},
        {"output", required_argument, 0, OPT_OUTPUT},
        {"force-share", no_argument, 0, 'U'},
        {"backing-chain", no_argument, 0, OPT_CHAIN},
        {"image-opts", no_argument, 0, OPT_IMAGE_OPTS},
        {0, 0, 0, 0},
    };
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":f:hU", longopts, NULL)) != -1;) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'U': force_share = true; break;
        case OPT_OUTPUT:
            if (!img_output_format(optarg, &json))
                return 1;
            break;
        case OPT_CHAIN: break;   /* snapgate images have no backing files */
        case OPT_IMAGE_OPTS:
            img_error("--image-opts is not supported by snapgate-img");
            return 1;
        case 'h': return img_usage_error("info [-f FMT] [-U] [--output=human|json] FILE");
        default: return img_getopt_error(c, argv);
        }
    }
    if (optind != argc - 1)
        return img_usage_error("Expecting one image file name");
    const char *file = argv[optind];
    if (!img_check_format(file, fmt))
        return 1;
    struct sg_error err = {0};
    struct sg_block *bs = img_open(file, fmt, false, force_share);
    if (!bs)
        return 1;
    struct sg_snapshot_info *l;
    int n = sg_block_snapshot_list(bs, &l, &err);
    if (n < 0) {
        img_error("%s", err.msg);
        sg_block_close(bs);
        return 1;
    }
    int rc = 0;
    if (json) {
        rc = info_json(bs, file, l, n);
    } else {
        char vs[32], ds[32];
        img_size_str(vs, sizeof vs, virtual_size(bs));
        int64_t act = sg_block_actual_size(bs);
        img_size_str(ds, sizeof ds, act < 0 ? 0 : (unsigned long long)act);
        printf("image: %s\nfile format: %s\nvirtual size: %s (%llu bytes)\ndisk size: %s\n",
               file, sg_block_format(bs), vs, virtual_size(bs), ds);
        if (sg_block_cluster_size(bs))
            printf("cluster_size: %llu\n", (unsigned long long)sg_block_cluster_size(bs));
        if (n > 0) {
            printf("Snapshot list:\n");
            img_print_snapshots(stdout, l, n);
        }
        struct sg_block_qcow2_info qi;
        if (sg_block_qcow2_info(bs, &qi)) {
            printf("Format specific information:\n    compat: %s\n    compression type: zlib\n",
                   qi.version >= 3 ? "1.1" : "0.10");
            if (qi.version >= 3)
                printf("    lazy refcounts: %s\n", qi.lazy_refcounts ? "true" : "false");
            printf("    refcount bits: %u\n", qi.refcount_bits);
            if (qi.version >= 3)
                printf("    corrupt: %s\n    extended l2: false\n", qi.corrupt ? "true" : "false");
        }
    }
    sg_snapshot_info_free_list(l, n);
    sg_block_close(bs);
    return rc;
}

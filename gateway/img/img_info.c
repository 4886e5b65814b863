/* img_info.c: snapgate-img info, and the snapshot table in qemu-img's
 * exact layout (also used by snapshot -l). */
#include "img.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void img_size_str(char *buf, size_t n, unsigned long long v)
{
    static const char *const suffix[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    int e;
    /* The exponent of v*1024/1000 picks the unit, so 1000..1023 of a unit
     * already print in the next one (qemu's rule). */
    frexp((double)v / (1000.0 / 1024.0), &e);
    int i = (e - 1) / 10;
    if (i < 0)
        i = 0;
    if (i > 6)
        i = 6;
    unsigned long long div = 1ULL << (i * 10);
    snprintf(buf, n, "%0.3g %s", (double)v / (double)div, suffix[i]);
}

void img_print_snapshots(FILE *f, const struct sg_snapshot_info *l, int n)
{
    fprintf(f, "%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK",
            "ICOUNT");
    for (int i = 0; i < n; i++) {
        char date[64], clock[64], size[32], icount[32] = "";
        time_t t = (time_t)l[i].date_sec;
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
        unsigned long long secs = l[i].vm_clock_nsec / 1000000000ULL;
        snprintf(clock, sizeof clock, "%02d:%02d:%02d.%03d", (int)(secs / 3600),
                 (int)((secs / 60) % 60), (int)(secs % 60),
                 (int)((l[i].vm_clock_nsec / 1000000) % 1000));
        img_size_str(size, sizeof size, (unsigned long long)l[i].vm_state_size);
        if (l[i].icount != -1)
            snprintf(icount, sizeof icount, "%lld", (long long)l[i].icount);
        fprintf(f, "%-9s %-16s %8s%20s%13s%11s\n", l[i].id, l[i].name, size, date, clock,
                icount);
    }
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
            json_object_set_new(s, "name", json_string(l[i].name));
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
    json_object_set_new(o, "virtual-size", json_integer((json_int_t)sg_block_size(bs)));
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
    bool json = false;
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--output=json"))
            json = true;
        else if (!strcmp(argv[i], "--output=human"))
            json = false;
        else if (!strcmp(argv[i], "--output") && i + 1 < argc)
            json = !strcmp(argv[++i], "json");
        else if (!file && argv[i][0] != '-')
            file = argv[i];
        else {
            img_error("usage: snapgate-img info [--output=json] FILE");
            return 1;
        }
    }
    if (!file) {
        img_error("usage: snapgate-img info [--output=json] FILE");
        return 1;
    }
    struct sg_error err = {0};
    struct sg_block *bs = sg_block_open(file, NULL, SG_BLOCK_RDONLY, &err);
    if (!bs) {
        img_error("Could not open '%s': %s", file, err.msg);
        return 1;
    }
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
        img_size_str(vs, sizeof vs, sg_block_size(bs));
        int64_t act = sg_block_actual_size(bs);
        img_size_str(ds, sizeof ds, act < 0 ? 0 : (unsigned long long)act);
        printf("image: %s\nfile format: %s\nvirtual size: %s (%llu bytes)\ndisk size: %s\n",
               file, sg_block_format(bs), vs, (unsigned long long)sg_block_size(bs), ds);
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

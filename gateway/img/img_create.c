/* img_create.c: snapgate-img create [-q] [-f qcow2|raw] [-o OPTIONS] FILE [SIZE]
 *
 * The command line is qemu-img's: sizes as qemu_strtosz reads them
 * ("1.5G", "0.5k"), -o as a comma list whose every key is checked (an
 * unknown one is an error, wherever it stands), and the same messages.
 * Unlike qemu-img, everything is checked before the "Formatting" line,
 * which is printed only once the image exists. */
#include "img.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SIZE_HINT "You may use k, M, G, T, P or E suffixes for\n" \
                  "snapgate-img: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes."

/* qemu_strtosz: digits, an optional fraction, an optional suffix (B, k, M,
 * G, T, P, E, any case; "KiB"/"KB" are accepted too).  A fraction needs a
 * suffix above B.  False for anything else. */
bool img_parse_size(const char *s, uint64_t *out)
{
    return img_parse_size_err(s, out) == 0;
}

int img_parse_size_err(const char *s, uint64_t *out)
{
    if (!isdigit((unsigned char)s[0]) && !(s[0] == '.' && isdigit((unsigned char)s[1])))
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -ERANGE;
    double frac = 0;
    if (*end == '.') {
        const char *f = end;
        frac = strtod(f, &end);
        if (end == f + 1)
            return -EINVAL;   /* "1." */
    }
    unsigned shift = 0;
    switch (*end) {
    case '\0': break;
    case 'b': case 'B': end++; break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    case 'p': case 'P': shift = 50; end++; break;
    case 'e': case 'E': shift = 60; end++; break;
    default: return -EINVAL;
    }
    if (shift && *end == 'i')
        end++;
    if (shift && (*end == 'B' || *end == 'b'))
        end++;
    if (*end || (frac != 0 && !shift))
        return -EINVAL;
    uint64_t mul = 1ULL << shift;
    uint64_t extra = (uint64_t)(frac * (double)mul);
    if (v > (UINT64_MAX - extra) / mul)
        return -ERANGE;
    *out = v * mul + extra;
    return 0;
}

struct create_opts {
    const char *file, *fmt;
    uint64_t size;
    bool has_size;
    unsigned long long cluster_size;
    const char *compat;   /* as given, shown in the Formatting line */
};

static bool size_param(const char *file, const char *key, const char *val, uint64_t *out)
{
    if (val && img_parse_size(val, out))
        return true;
    img_error("%s: Parameter '%s' expects a non-negative number below 2^64\n"
              "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
              "and exabytes, respectively.", file, key);
    return false;
}

/* Keys QEMU 7.2's qcow2 driver knows that snapgate's engine does not do. */
static const char *const qcow2_unsupported[] = {
    "backing_file", "backing_fmt", "encryption", "encrypt.format", "encrypt.key-secret",
    "encrypt.cipher-alg", "encrypt.cipher-mode", "encrypt.ivgen-alg", "encrypt.ivgen-hash-alg",
    "encrypt.hash-alg", "encrypt.iter-time", "data_file", "data_file_raw", NULL,
};

/* One KEY=VALUE of -o. */
static bool create_option(struct create_opts *o, const char *key, const char *val)
{
    bool qcow2 = !strcmp(o->fmt, "qcow2");
    const char *f = o->file;
    if (!strcmp(key, "size"))
        return size_param(f, key, val, &o->size) && (o->has_size = true);
    if (!strcmp(key, "preallocation")) {
        if (val && !strcmp(val, "off"))
            return true;
        img_error("%s: snapgate-img does not preallocate (preallocation=%s)", f, val ? val : "");
        return false;
    }
    if (qcow2 && !strcmp(key, "cluster_size")) {
        uint64_t cs;
        if (!size_param(f, key, val, &cs))
            return false;
        o->cluster_size = cs;
        return true;
    }
    struct { const char *key, *ok1, *ok2; } fixed[] = {
        {"compat", "1.1", "v3"}, {"refcount_bits", "16", NULL}, {"lazy_refcounts", "off", NULL},
        {"extended_l2", "off", NULL}, {"compression_type", "zlib", NULL},
    };
    for (size_t i = 0; qcow2 && i < sizeof fixed / sizeof fixed[0]; i++) {
        if (strcmp(key, fixed[i].key) != 0)
            continue;
        if (val && (!strcmp(val, fixed[i].ok1) || (fixed[i].ok2 && !strcmp(val, fixed[i].ok2)))) {
            if (!strcmp(key, "compat"))   /* `val` lives in a copy freed later */
                o->compat = !strcmp(val, "v3") ? "v3" : "1.1";
            return true;
        }
        img_error("%s: snapgate-img creates qcow2 v3 images with 16-bit refcounts, no lazy "
                  "refcounts, no extended L2 and zlib compression only (%s=%s)",
                  f, key, val ? val : "");
        return false;
    }
    for (size_t i = 0; qcow2 && qcow2_unsupported[i]; i++)
        if (!strcmp(key, qcow2_unsupported[i])) {
            img_error("%s: option '%s' is not supported by snapgate-img", f, key);
            return false;
        }
    img_error("%s: Invalid parameter '%s'", f, key);
    return false;
}

/* -o LIST: every item checked; an empty item is qemu-img's "Invalid option
 * list". */
static bool create_options(struct create_opts *o, const char *list)
{
    size_t n = strlen(list);
    if (!n || list[0] == ',' || list[n - 1] == ',' || strstr(list, ",,")) {
        img_error("Invalid option list: %s", list);
        return false;
    }
    char *copy = strdup(list);
    if (!copy) {
        img_error("out of memory");
        return false;
    }
    bool ok = true;
    for (char *save = NULL, *item = strtok_r(copy, ",", &save); ok && item;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (eq)
            *eq = '\0';
        ok = create_option(o, item, eq ? eq + 1 : NULL);
    }
    free(copy);
    return ok;
}

static bool create_raw(const char *file, uint64_t size, struct sg_error *err)
{
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0 || fsync(fd) != 0) {
        sg_error_set_errno(err, errno, "Could not create '%s'", file);
        if (fd >= 0)
            close(fd);
        return false;
    }
    return close(fd) == 0 || (sg_error_set_errno(err, errno, "%s", file), false);
}

int img_create(int argc, char **argv)
{
    struct create_opts o = { .fmt = "qcow2", .cluster_size = 65536 };
    const char *olist[16];
    int nolist = 0;
    bool quiet = false;
    static const struct option longopts[] = { {"help", no_argument, 0, 'h'}, {0, 0, 0, 0} };
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":f:o:qhF:b:u", longopts, NULL)) != -1;) {
        switch (c) {
        case 'f': o.fmt = optarg; break;
        case 'o':
            if (nolist < (int)(sizeof olist / sizeof olist[0]))
                olist[nolist++] = optarg;
            break;
        case 'q': quiet = true; break;
        case 'F': case 'b': case 'u':
            img_error("backing files are not supported by snapgate-img");
            return 1;
        case 'h': return img_usage_error("create [-q] [-f qcow2|raw] [-o OPTIONS] FILE [SIZE]");
        default: return img_getopt_error(c, argv);
        }
    }
    if (optind >= argc)
        return img_usage_error("Expecting image file name");
    o.file = argv[optind++];
    if (!img_check_format(o.file, o.fmt))
        return 1;
    for (int i = 0; i < nolist; i++)
        if (!create_options(&o, olist[i]))
            return 1;
    if (optind < argc) {
        int e = img_parse_size_err(argv[optind], &o.size);
        if (e == -ERANGE)
            o.size = UINT64_MAX;   /* reported as out of range below */
        else if (e) {
            img_error("Invalid image size specified. " SIZE_HINT);
            return 1;
        }
        o.has_size = true;
        optind++;
    }
    if (optind < argc)
        return img_usage_error("Unexpected argument: %s", argv[optind]);
    if (!o.has_size) {
        img_error("%s: Image creation needs a size parameter", o.file);
        return 1;
    }
    if (o.size > (uint64_t)INT64_MAX) {
        img_error("Invalid image size specified. Must be between 0 and 9223372036854775807.");
        return 1;
    }
    bool qcow2 = !strcmp(o.fmt, "qcow2");
    unsigned cluster_bits = 0;
    if (qcow2) {
        unsigned long long cs = o.cluster_size;
        if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1))) {
            img_error("%s: Cluster size must be a power of two between 512 and 2048k", o.file);
            return 1;
        }
        while ((1ull << cluster_bits) < cs)
            cluster_bits++;
    }
    struct sg_error err = {0};
    /* The engine keeps whole sectors, as QEMU's block layer rounds a
     * qcow2 image's size up to 512 bytes. */
    uint64_t size = qcow2 ? (o.size + 511) / 512 * 512 : o.size;
    bool ok = qcow2 ? sg_block_create_qcow2(o.file, size, cluster_bits, &err)
                    : create_raw(o.file, o.size, &err);
    if (!ok) {
        img_error("%s: %s", o.file, err.msg);
        return 1;
    }
    if (quiet)
        return 0;
    if (qcow2)
        printf("Formatting '%s', fmt=qcow2 cluster_size=%llu extended_l2=off "
               "compression_type=zlib size=%llu%s%s lazy_refcounts=off refcount_bits=16\n",
               o.file, o.cluster_size, (unsigned long long)o.size, o.compat ? " compat=" : "",
               o.compat ? o.compat : "");
    else
        printf("Formatting '%s', fmt=raw size=%llu\n", o.file, (unsigned long long)o.size);
    return 0;
}

/* img_create.c: snapgate-img create FILE SIZE */
#include "img.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* qemu-img's size syntax: a number with an optional binary suffix. */
static bool parse_size(const char *s, uint64_t *out)
{
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || !isdigit((unsigned char)s[0]))
        return false;
    unsigned shift = 0;
    switch (*end) {
    case '\0': break;
    case 'b': case 'B': shift = 0; end++; break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    case 'p': case 'P': shift = 50; end++; break;
    default: return false;
    }
    if (*end == 'i' && end[-1] != 'b' && end[-1] != 'B')
        end++;
    if ((*end == 'B' || *end == 'b') && shift)
        end++;
    if (*end || (shift && v > (~0ULL >> shift)))
        return false;
    *out = (uint64_t)v << shift;
    return true;
}

int img_create(int argc, char **argv)
{
    unsigned cluster_bits = 0;
    int i = 1;
    /* -o cluster_size=N: for tests of small-cluster images. */
    if (i + 1 < argc && !strcmp(argv[i], "-o")) {
        unsigned long cs;
        if (sscanf(argv[i + 1], "cluster_size=%lu", &cs) != 1 || cs == 0 || (cs & (cs - 1))) {
            img_error("invalid option '%s' (only cluster_size=POWER_OF_TWO)", argv[i + 1]);
            return 1;
        }
        while ((1ul << cluster_bits) < cs)
            cluster_bits++;
        i += 2;
    }
    if (argc - i != 2) {
        img_error("usage: snapgate-img create [-o cluster_size=N] FILE SIZE");
        return 1;
    }
    uint64_t size;
    if (!parse_size(argv[i + 1], &size)) {
        img_error("Invalid image size specified: '%s'", argv[i + 1]);
        return 1;
    }
    struct sg_error err = {0};
    unsigned long long cs = 1ULL << (cluster_bits ? cluster_bits : 16);
    printf("Formatting '%s', fmt=qcow2 cluster_size=%llu size=%llu refcount_bits=16\n",
           argv[i], cs, (unsigned long long)size);
    if (!sg_block_create_qcow2(argv[i], size, cluster_bits, &err)) {
        img_error("%s", err.msg);
        return 1;
    }
    return 0;
}

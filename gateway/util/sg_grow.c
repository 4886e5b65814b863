/* sg_grow.c: see sg_grow.h. */
#include "sg_grow.h"

#include <stdlib.h>

bool sg_grow(unsigned char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n = n > (size_t)-1 / 2 ? need : n * 2;
    unsigned char *p = realloc(*buf, n);
    if (!p)
        return false;
    *buf = p;
    *cap = n;
    return true;
}

/* sg_grow.h: a byte buffer that grows by doubling (from 4 KiB). */
#ifndef SG_GROW_H
#define SG_GROW_H

#include <stdbool.h>
#include <stddef.h>

/* Makes *buf (capacity *cap) hold at least `need` bytes, keeping its
 * contents; false (nothing changed) when out of memory. */
bool sg_grow(unsigned char **buf, size_t *cap, size_t need);

#endif

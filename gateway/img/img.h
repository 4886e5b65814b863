/* img.h: shared pieces of snapgate-img's subcommands. */
#ifndef SG_IMG_H
#define SG_IMG_H

#include <stdbool.h>
#include <stdio.h>

#include "block.h"

int img_create(int argc, char **argv);
int img_info(int argc, char **argv);
int img_check(int argc, char **argv);
int img_snapshot(int argc, char **argv);

/* qemu's size_to_str(): "0 B", "1.5 KiB", "451 KiB", "1 GiB". */
void img_size_str(char *buf, size_t n, unsigned long long v);
/* One snapshot table as qemu-img prints it (header line included). */
void img_print_snapshots(FILE *f, const struct sg_snapshot_info *l, int n);
/* img_open.c: takes -U/--force-share out of argv (returns the new argc). */
int img_take_global_options(int argc, char **argv);
/* Opens FILE (locks, -U; a writable open refuses a corrupt image); prints
 * the error and returns NULL on failure. */
struct sg_block *img_open(const char *file, bool writable);
/* SG_BLOCK_FORCE_SHARE when -U was given, else 0. */
unsigned img_share(void);
/* "snapgate-img: MSG" on stderr. */
void img_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif

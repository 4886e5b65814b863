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

/* qemu_strtosz's size syntax ("1.5G", "64k", "512"). */
bool img_parse_size(const char *s, uint64_t *out);
/* The same, telling a bad syntax (-EINVAL) from a size above 2^64 (-ERANGE). */
int img_parse_size_err(const char *s, uint64_t *out);
/* qemu's size_to_str(): "0 B", "1.5 KiB", "451 KiB", "1 GiB". */
void img_size_str(char *buf, size_t n, unsigned long long v);
/* One snapshot table as qemu-img prints it (header line included). */
void img_print_snapshots(FILE *f, const struct sg_snapshot_info *l, int n);
/* Opens FILE as format FMT (NULL: probed) with QEMU's image locks;
 * `force_share` (-U) shares everything and is refused on a writable open,
 * as qemu-img does; a writable open refuses a corrupt image.  Prints the
 * error and returns NULL on failure. */
struct sg_block *img_open(const char *file, const char *fmt, bool writable, bool force_share);
/* Before a change: the targeted check of what the command touches (the
 * active tree, snapshot snap_id if not NULL); true (with the message
 * printed) when the image must be refused. */
bool img_refuse_corrupt(struct sg_block *bs, const char *file, const char *snap_id);
/* "snapgate-img: MSG" on stderr. */
void img_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A usage error as qemu-img words them: MSG, then "Try 'snapgate-img
 * --help' for more information"; returns 1 (the exit code). */
int img_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* getopt returned ':' (missing argument) or '?' (unknown option). */
int img_getopt_error(int c, char **argv);
/* -f FMT: true for qcow2/raw (or none); else an error naming FILE. */
bool img_check_format(const char *file, const char *fmt);
/* --output=human|json: true and *json set, or qemu-img's error. */
bool img_output_format(const char *arg, bool *json);

#endif

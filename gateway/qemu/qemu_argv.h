/* qemu_argv.h: what snapgate-qemu reads and changes in QEMU's command line.  Pure (no I/O),
 * so that libvirt's real command lines can be tested without starting anything. */
#ifndef SG_QEMU_ARGV_H
#define SG_QEMU_ARGV_H

#include <stdbool.h>
#include <stddef.h>

#include "sg_error.h"

struct sg_qemu_opts {
    const char *qemu;        /* --qemu PATH / SNAPGATE_QEMU / /usr/bin/qemu-system-x86_64 */
    const char *snapgate;    /* --snapgate PATH / SNAPGATE_GATEWAY / beside snapgate-qemu */
    const char *profile;     /* --profile P (the gateway's --compat-profile), libvirt-safe */
    int first_qemu_arg;      /* argv index where QEMU's own arguments start */
};

/* The wrapper's own options come first (libvirt passes none: its defaults are what a
 * domain gets).  Returns false with `err` set on a bad one. */
bool sg_qemu_parse_own(int argc, char **argv, struct sg_qemu_opts *o, struct sg_error *err);

/* What a domain start looks like: libvirt's
 *   -chardev socket,id=charmonitor,fd=N,server=on,wait=off
 *   -mon chardev=charmonitor,id=monitor,mode=control
 * and -loadvm NAME / -S. */
struct sg_qemu_start {
    int chardev_arg;         /* index of the -chardev value holding the monitor, or -1 */
    int monitor_fd;          /* its fd=N, or -1 */
    int loadvm_arg;          /* index of -loadvm (its NAME follows), or -1 */
    const char *loadvm;      /* NAME or NULL */
    bool has_S;
};
void sg_qemu_scan(int argc, char **argv, int first, struct sg_qemu_start *s);

/* QEMU's argv for a domain start: argv[first..] with the monitor chardev's fd=N replaced
 * by fd=`private_fd`, -loadvm NAME removed and -S added when missing; argv[0] = `qemu`.
 * malloc'd array (the strings too: free with sg_qemu_argv_free); NULL when out of memory. */
char **sg_qemu_rewrite(int argc, char **argv, int first, const struct sg_qemu_start *s,
                       const char *qemu, int private_fd);
void sg_qemu_argv_free(char **v);

/* The value of option `key` in a QEMU option string "a,key=v,b" (",," is an escaped comma),
 * copied into buf; false when absent. */
bool sg_qemu_opt_get(const char *optstr, const char *key, char *buf, size_t n);

#endif

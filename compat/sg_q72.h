/* sg_q72.h: the QEMU 7.2 compatibility profile — message catalogue and reply
 * formats, learnt by running QEMU 7.2 (see README.md and transcripts/).
 *
 * Everything here is pure formatting: no allocation except sg_q72_crlf_dup,
 * no I/O.  Texts use "\n"; sg_q72_crlf_dup turns a whole reply into QEMU's
 * "\r\n" form at the end (the monitor does the same on its way out). */
#ifndef SG_Q72_H
#define SG_Q72_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Message catalogue (printf formats, no trailing newline unless the
 * QEMU text has a blank line built in) ---------------------------------- */
#define SG_Q72_ERROR_PREFIX      "Error: "
#define SG_Q72_NO_SNAPSHOT       "There is no snapshot available."
#define SG_Q72_NO_VMSTATE_BS     "no block device can store vmstate for snapshot"
#define SG_Q72_NOT_EXIST         "Snapshot '%s' does not exist in one or more devices"
#define SG_Q72_ALREADY_EXISTS    "Snapshot '%s' already exists in one or more devices"
#define SG_Q72_CANNOT_SNAPSHOT   "Device '%s' is writable but does not support snapshots"
#define SG_Q72_VMSTATE_MISSING   "vmstate block device '%s' does not exist"
#define SG_Q72_VMSTATE_CANNOT    "vmstate block device '%s' does not support snapshots"
/* (sic: two spaces, as QEMU 7.2 prints it) */
#define SG_Q72_DISK_ONLY         "This is a disk-only snapshot. Revert to it  offline using qemu-img"
#define SG_Q72_ALL_DISKS         "List of snapshots present on all disks:"
#define SG_Q72_NONE              "None"
#define SG_Q72_PARTIAL           "List of partial (non-loadable) snapshots on '%s':"
#define SG_Q72_UNKNOWN_COMMAND   "unknown command: '%s'"
#define SG_Q72_EXTRANEOUS        "%s: extraneous characters at the end of line"
#define SG_Q72_STRING_EXPECTED   "%s: string expected"
#define SG_Q72_TRY_HELP          "Try \"help %s\" for more information"
/* The integer arguments' expressions (pmemsave ADDR SIZE FILE) */
#define SG_Q72_EXPR_END          "unexpected end of expression"
#define SG_Q72_EXPR_CHAR         "invalid char '%c' in expression"
#define SG_Q72_EXPR_TOO_LARGE    "number too large"
#define SG_Q72_EXPR_PAREN        "')' expected"
#define SG_Q72_EXPR_CHAR_CONST   "character constant expected"
#define SG_Q72_EXPR_QUOTE        "missing terminating ' character"
#define SG_Q72_EXPR_DIV_ZERO     "division by zero"
#define SG_Q72_EXPR_REGISTER     "unknown register"
#define SG_Q72_INT_32BIT         "'%s' has failed: integer is for 32-bit values"
#define SG_Q72_VM_STATUS         "VM status: %s%s"
#define SG_Q72_NO_BLOCK_JOBS     "No active jobs"
#define SG_Q72_TIMEDATE_FMT      "vm-%Y%m%d%H%M%S"

/* QEMU 7.2's help lists (q72_help_table.c, recorded from qemu-system-x86_64
 * by record_q72_help.py): one entry per command, in QEMU's order, ended by
 * an entry whose `names` is NULL.  `list` is the entry's text in `help`
 * (or `info`), lines ended by "\n"; `alone` is what `help NAME` prints
 * when that differs (`help log`), else NULL. */
struct sg_q72_help_entry {
    const char *names;   /* as QEMU shows it, aliases included: "quit|q" */
    const char *list;
    const char *alone;
};
extern const struct sg_q72_help_entry sg_q72_help_top[];
extern const struct sg_q72_help_entry sg_q72_help_info[];
/* The entry of a top-level command (an `info` subcommand when `info`),
 * matched by name or alias as QEMU's compare_cmd does; NULL if QEMU 7.2 has
 * no such command. */
const struct sg_q72_help_entry *sg_q72_help_find(const char *name, bool info);
/* QEMU 7.2's whole reply to `help [A [B]]` (help_cmd) or bare `info`
 * (A = "info"): calls `put` with pieces of text ("\n" ends).  `nargs` words
 * are given in `args` (the rest of the line is ignored, as QEMU does). */
void sg_q72_help_reply(const char *const *args, int nargs, void (*put)(void *opaque, const char *s),
                       void *opaque);

/* ---- info snapshots table ---------------------------------------------- */
struct sg_q72_snapshot {
    const char *id;           /* "--" in the all-disks list */
    const char *tag;
    uint64_t vm_state_size;
    int64_t date_sec;         /* shown in local time */
    uint64_t vm_clock_nsec;
    bool has_icount;          /* qemu-img made snapshots record 0; savevm none */
    int64_t icount;
};
/* QEMU's size_to_str: "%0.3g %sB" with binary suffixes ("451 KiB", "0 B"). */
void sg_q72_size_str(uint64_t v, char *buf, size_t n);
/* "HH:MM:SS.mmm" */
void sg_q72_clock_str(uint64_t nsec, char *buf, size_t n);
/* "%Y-%m-%d %H:%M:%S" in local time */
void sg_q72_date_str(int64_t sec, char *buf, size_t n);
/* Header "%-10s%-17s%8s%20s%13s%11s" and rows "%-9s %-16s %8s%20s%13s%11s"
 * (no newline).  `icount_column` false drops the last column (the snapgate
 * profile's variant). */
void sg_q72_snapshot_header(char *buf, size_t n, bool icount_column);
void sg_q72_snapshot_row(const struct sg_q72_snapshot *s, char *buf, size_t n, bool icount_column);
/* The same row, malloc'd and as long as the tag needs (NULL: out of memory). */
char *sg_q72_snapshot_row_dup(const struct sg_q72_snapshot *s, bool icount_column);

/* A malloc'd copy of `text` with every "\n" turned into "\r\n", blindly,
 * as QEMU's monitor_puts does (a tag holding "\n" comes out as "\r\n").
 * NULL when out of memory. */
char *sg_q72_crlf_dup(const char *text);

#endif

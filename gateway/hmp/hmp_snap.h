/* hmp_snap.h: the disks and their snapshot lists as the back end reports
 * them (query-block + query-named-block-nodes), the rules of INTERFACES.md
 * section 3 over them (devices, vmstate disk, name resolution), and the
 * translation of savevm/loadvm/delvm into snapshot-* job plans.  Pure: no
 * I/O, unit-tested over fixtures. */
#ifndef SG_HMP_SNAP_H
#define SG_HMP_SNAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "hmp_strbuf.h"
#include "sg_error.h"

struct sg_hmp_snap {
    char *id, *tag;
    uint64_t vm_state_size;
    int64_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    bool has_icount;
    int64_t icount;
};

struct sg_hmp_disk {
    char *device;      /* "drive0"; the node name when the device has none */
    char *node;        /* node-name of the root node ("" if none) */
    bool inserted, ro;
    bool can_snapshot; /* the format supports internal snapshots (qcow2) */
    struct sg_hmp_snap *snaps;
    size_t nsnaps;
};

struct sg_hmp_disks {
    struct sg_hmp_disk *disk;   /* in drive order */
    size_t n;
};

/* Builds the model.  `named_nodes` may be NULL (snapshots then come from
 * query-block's inserted.image.snapshots); when given, a node's snapshot list
 * there wins (snapgate-vmm reports them only there).  Both are the "return"
 * values (arrays). */
bool sg_hmp_disks_from_qmp(struct sg_hmp_disks *out, json_t *query_block, json_t *named_nodes,
                           struct sg_error *err);
void sg_hmp_disks_clear(struct sg_hmp_disks *d);

/* A disk takes part in VM snapshots when it is inserted and writable. */
bool sg_hmp_disk_in_snapshot(const struct sg_hmp_disk *d);
/* QEMU's checks, in QEMU's order: a writable disk that cannot snapshot is an
 * error naming it; then the vmstate disk (override or first capable one).
 * Returns its index, or -1 with `err` set (QEMU 7.2's texts). */
bool sg_hmp_check_writable(const struct sg_hmp_disks *d, struct sg_error *err);
int sg_hmp_vmstate_disk(const struct sg_hmp_disks *d, const char *override, struct sg_error *err);
/* Snapshots on disk `i` whose tag is `tag` (count), the first in *first. */
size_t sg_hmp_tag_count(const struct sg_hmp_disk *d, const char *tag, size_t *first);

enum sg_hmp_match {
    SG_HMP_MATCH_ANY = 0,  /* rules 2-6 */
    SG_HMP_MATCH_TAG = 't',
    SG_HMP_MATCH_ID = 'i',
};

struct sg_hmp_resolved {
    char tag[1024];         /* the tag the job will name */
    const struct sg_hmp_snap *on_vmstate;  /* the chosen snapshot there, or NULL */
    bool by_id;             /* rule 4 (or -i) chose it */
    char note[8192];        /* snapgate profile's remark ("" if none) */
    char missing[512];      /* disks lacking the tag: "'drive1', 'drive2'" */
    size_t max_dups;        /* most snapshots with this tag on one disk */
};

/* Resolves NAME for loadvm (`for_load`) or delvm in the snapgate profile.
 * `verb` ("loadvm"/"delvm") goes into hints.  False with `err` set on rule 3
 * / rule 6 errors, IDs that cannot be addressed by tag, and (for_load) a
 * snapshot missing on some disk or without VM state. */
bool sg_hmp_resolve(const struct sg_hmp_disks *d, int vmstate, const char *name,
                    enum sg_hmp_match how, bool for_load, const char *verb,
                    struct sg_hmp_resolved *res, struct sg_error *err);

/* True (with `err` set) when `tag` is the ID of a different snapshot on
 * some disk of the VM: a back end that looks names up as IDs first (QEMU's
 * qcow2 snapshot goto) would restore that other snapshot. */
/* The snapshot whose ID is `tag` but whose tag is not, on the first disk of the VM that has
 * one (its index in *disk), or NULL. */
const struct sg_hmp_snap *sg_hmp_id_shadow(const struct sg_hmp_disks *d, const char *tag,
                                           size_t *disk);
/* Whether a profile's safety table (compat/sg_q72_safe.h) refuses `command` on `tag`: true
 * with `err` set to the table's refusal text. */
struct sg_q72_safety;
bool sg_hmp_safety_refuses(const struct sg_q72_safety *profile, const char *command,
                           const struct sg_hmp_disks *d, const char *tag, struct sg_error *err);
bool sg_hmp_tag_shadowed(const struct sg_hmp_disks *d, const char *tag, struct sg_error *err);

/* Default savevm tag: vm-%Y%m%d%H%M%S of `now` in local time, with "-2",
 * "-3", ... when that tag exists on any disk (the snapgate rule). */
void sg_hmp_default_tag(const struct sg_hmp_disks *d, time_t now, bool unique, char *buf,
                        size_t n);

/* ---- Translation: an HMP snapshot command as a list of QMP jobs ---------- */
struct sg_hmp_job {
    json_t *cmd;    /* {"execute": "snapshot-...", "arguments": {...}} */
    char job_id[64];
};
struct sg_hmp_plan {
    struct sg_hmp_job jobs[8];
    size_t njobs;
    char note[1024];     /* printed once every job succeeded (snapgate profile) */
};
void sg_hmp_plan_clear(struct sg_hmp_plan *p);
/* Appends a job; `kind` is "save"/"load"/"delete", `verb` the HMP command
 * for the id, `*counter` the engine's job counter.  Devices = every writable
 * snapshot-capable disk in drive order. */
bool sg_hmp_plan_add(struct sg_hmp_plan *p, const struct sg_hmp_disks *d, int vmstate,
                     const char *kind, const char *tag, const char *prefix, const char *verb,
                     unsigned *counter);

/* delvm -i ID where the tag of snapshot ID (on the vmstate disk) is carried
 * twice on some disk, so snapshot-delete (which names a tag) cannot pick it:
 * one blockdev-snapshot-delete-internal-sync per disk instead (plan steps
 * with an empty job_id run as plain commands).  On each disk of the VM the
 * copy of that VM snapshot goes (the vmstate disk: that ID; the others:
 * the same tag and date); a disk with two such copies is an error naming
 * it, before anything is deleted.  False with `err` set. */
bool sg_hmp_plan_delete_by_id(struct sg_hmp_plan *p, const struct sg_hmp_disks *d, int vmstate,
                              const char *id, struct sg_error *err);

/* ---- Formatting -------------------------------------------------------- */
/* info snapshots for a profile ("\n" ends). */
/* The snapshot tree of x-snapgate-query-snapshot-tree's reply (nothing
 * when `tree` is NULL or has fewer than one snapshot): each snapshot under
 * its parent, "NOW" under the current one (hmp_tree.c). */
void sg_hmp_format_snapshot_tree(json_t *tree, struct sg_strbuf *out);
void sg_hmp_format_snapshots(const struct sg_hmp_disks *d, const char *vmstate_override,
                             int profile, struct sg_strbuf *out);
void sg_hmp_format_status(json_t *query_status, struct sg_strbuf *out);
void sg_hmp_format_block(json_t *query_block, struct sg_strbuf *out);
void sg_hmp_format_jobs(json_t *query_jobs, struct sg_strbuf *out);
/* QEMU 7.2's hmp_info_version: "MAJOR.MINOR.MICROPACKAGE" (no space). */
void sg_hmp_format_version(json_t *query_version, struct sg_strbuf *out);

#endif

/* gw_current.h: the "current snapshot" — the last VM snapshot saved or
 * loaded successfully through this gateway, from any front end (terminal,
 * QMP human-monitor-command or snapshot-save/snapshot-load jobs, the web
 * page), as libvirt and Proxmox keep one.  qcow2 has no such field, so the
 * gateway learns it from the jobs that pass through it and keeps it in
 * STATE-DIR/current-snapshot.json.
 *
 * It needs no allocation (the state is a fixed part of struct sg_gw), so
 * nothing has to be freed at exit. */
#ifndef SG_GW_CURRENT_H
#define SG_GW_CURRENT_H

#include <stdbool.h>
#include <time.h>

#include <jansson.h>

struct sg_gw;
struct sg_error;

/* Tags are at most 255 bytes (INTERFACES.md 7); the HMP parser's buffer is
 * 1024, so anything a front end can send fits. */
#define GW_CURRENT_TAG_MAX 1024
#define GW_CURRENT_JOBS 8

enum gw_current_how { GW_CUR_NONE = 0, GW_CUR_SAVED, GW_CUR_LOADED };

struct gw_current_job {
    char id[128];              /* "" = free slot */
    enum { GW_JOB_SAVE = 1, GW_JOB_LOAD, GW_JOB_DELETE } kind;
    bool failed;               /* went through "aborting" */
    char tag[GW_CURRENT_TAG_MAX + 1];
};

struct gw_current {
    bool loaded;               /* the persisted file was read */
    enum gw_current_how how;
    time_t when;
    char tag[GW_CURRENT_TAG_MAX + 1];
    struct gw_current_job jobs[GW_CURRENT_JOBS];
    unsigned next_slot;
};

/* Reads STATE-DIR/current-snapshot.json (missing file: no current). */
void gw_current_load(struct sg_gw *gw);
/* Tells the (new) HMP engine the current snapshot. */
void gw_current_publish(struct sg_gw *gw);
/* A command on its way to the back end (hook: every sender).  Remembers the
 * job id and tag of snapshot-save/-load/-delete. */
void gw_current_on_command(struct sg_gw *gw, const char *execute, const json_t *args);
/* Every back-end event, before it is fanned out (so a client that reacts to
 * "concluded" already sees the new current snapshot). */
void gw_current_on_event(struct sg_gw *gw, const json_t *event);
/* {"tag", "how": "saved"|"loaded", "time"} or {} when there is none. */
json_t *gw_current_json(const struct sg_gw *gw);
/* The gateway's own QMP commands (x-snapgate-*), answered for every QMP
 * front end.  Returns false when `execute` is not one of them; otherwise
 * *ret (new reference) or `err` is set. */
bool gw_xsnapgate_command(struct sg_gw *gw, const char *execute, const json_t *args,
                          json_t **ret, struct sg_error *err);

#endif

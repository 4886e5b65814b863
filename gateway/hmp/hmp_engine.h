/* hmp_engine.h: internals shared by hmp_engine.c and hmp_complete.c. */
#ifndef SG_HMP_ENGINE_H
#define SG_HMP_ENGINE_H

#include "hmp_parse.h"
#include "hmp_snap.h"
#include "hmp_strbuf.h"
#include "sg_hmp.h"

struct sg_hmp {
    struct sg_hmp_backend be;
    char *vmstate_node;       /* NULL: section 3's rule */
    char *prefix;
    time_t (*now)(void *);
    void *now_opaque;
    bool backend_replaces;
    bool backend_exact_tags;
    bool no_forward;
    bool done_failed;         /* valid inside a `done` callback */
    unsigned job_counter;
    unsigned outstanding;     /* back-end requests not answered yet */
    bool dead;                /* sg_hmp_free ran; freed when outstanding == 0 */
    struct sg_hmp_cmd *cmds;  /* running commands */
    int hmc;                  /* back end has human-monitor-command: -1 unknown */
    bool polling;             /* tick's query-jobs in flight */
    bool refreshing;
    bool refresh_again;       /* asked for while one ran: its answer may be stale */
    json_t *refresh_qblock;   /* query-block answer while the refresh runs */
    char **tags, **ids;       /* completion cache (NULL-terminated) */
    char *current;            /* sg_hmp_set_current, or NULL */
};

/* Replaces the completion cache with the tags/IDs of `d`. */
void sg_hmp_cache_update(struct sg_hmp *h, const struct sg_hmp_disks *d);
void sg_hmp_cache_clear(struct sg_hmp *h);

#endif

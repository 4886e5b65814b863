/* snapshot_internal.h: the QMP handlers of snapshot_internal.c (internal
 * snapshots of one device, and transaction), registered by snapshot_cmds.c. */
#ifndef SG_VMM_SNAPSHOT_INTERNAL_H
#define SG_VMM_SNAPSHOT_INTERNAL_H

#include <jansson.h>

struct sg_qmp_req;

void sg_snap_cmd_internal_sync(struct sg_qmp_req *req, json_t *args, void *opaque);
void sg_snap_cmd_internal_delete(struct sg_qmp_req *req, json_t *args, void *opaque);
void sg_snap_cmd_transaction(struct sg_qmp_req *req, json_t *args, void *opaque);

#endif

/* gw_unix.h: unix-domain socket helpers for the back-end link and --qmp. */
#ifndef SG_GW_UNIX_H
#define SG_GW_UNIX_H

#include "sg_error.h"

/* Blocking connect; returns the fd (close-on-exec) or -1 with err set. */
int gw_unix_connect(const char *path, struct sg_error *err);
/* Listens on `path` with mode 0600 (a stale socket file is replaced, any
 * other file is an error).  Returns the fd or -1. */
int gw_unix_listen(const char *path, struct sg_error *err);

#endif

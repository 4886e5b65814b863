/* gw_unix.h: unix-domain socket helpers for the back-end link and --qmp. */
#ifndef SG_GW_UNIX_H
#define SG_GW_UNIX_H

#include <stdbool.h>

#include "sg_error.h"

/* Blocking connect; returns the fd (close-on-exec) or -1 with err set. */
int gw_unix_connect(const char *path, struct sg_error *err);
/* Listens on `path` with mode 0600 (a stale socket file is replaced, any
 * other file is an error).  Returns the fd or -1. */
int gw_unix_listen(const char *path, struct sg_error *err);

/* Checks that inherited descriptor `fd` (--qmp fd:N) is a listening stream
 * socket and makes it close-on-exec, so that a child (the bundled VMM) does
 * not inherit it.  Under systemd socket activation (LISTEN_PID names this
 * process) `fd` must be one of the LISTEN_FDS passed from fd 3 on, and the
 * LISTEN_* variables are removed from the environment, as sd_listen_fds(1)
 * does, so that no child takes them as its own. */
bool gw_unix_inherited_listener(int fd, struct sg_error *err);

#endif

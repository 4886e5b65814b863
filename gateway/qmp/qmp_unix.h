/* qmp_unix.h: unix-domain stream sockets, the one implementation every
 * snapgate program uses (the gateway's --connect and --qmp, the VMM's -qmp
 * and -serial unix:).
 *
 * sg_unix_listen() never deletes anything but a stale socket: a path that
 * holds any other kind of file is an error, and so is a socket somebody
 * still listens on.  The new socket is made under a temporary name in the
 * same directory, given mode 0600, put into listen state and only then
 * renamed to PATH, so the name appears already accepting connections (a
 * client started as soon as the file exists never gets ECONNREFUSED) and
 * nobody can connect through a wider mode in between. */
#ifndef SG_QMP_UNIX_H
#define SG_QMP_UNIX_H

#include <stdbool.h>
#include <sys/types.h>

#include "sg_error.h"

/* Listening socket at `path` (close-on-exec, non-blocking when asked), or
 * -1 with `err` set. */
int sg_unix_listen(const char *path, int backlog, bool nonblock, struct sg_error *err);
/* The file a listener made, so that only that one is removed at exit (a
 * socket or file put at the path since then is left alone). */
struct sg_unix_name {
    unsigned long long dev, ino;
};
/* Records what is at `path` now (right after sg_unix_listen). */
void sg_unix_name_get(const char *path, struct sg_unix_name *n);
/* Unlinks `path` only if it still is that socket. */
void sg_unix_name_remove(const char *path, const struct sg_unix_name *n);
/* Blocking connect; the fd (close-on-exec) or -1 with `err` set (may be NULL). */
int sg_unix_connect(const char *path, struct sg_error *err);
/* Checks that inherited descriptor `fd` is a listening stream socket and
 * makes it close-on-exec, so that a child does not inherit it.  Under systemd
 * socket activation (LISTEN_PID names this process) `fd` must be one of the
 * LISTEN_FDS passed from fd 3 on, and the LISTEN_* variables are removed
 * from the environment, as sd_listen_fds(1) does. */
bool sg_unix_inherited_listener(int fd, struct sg_error *err);
/* One sendmsg of `len` bytes with `nfds` descriptors attached (SCM_RIGHTS;
 * none when nfds is 0), MSG_NOSIGNAL, retried on EINTR; sendmsg's result. */
ssize_t sg_unix_send_fds(int fd, const void *buf, size_t len, const int *fds, size_t nfds);

#endif

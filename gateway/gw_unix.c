/* gw_unix.c: unix-domain socket helpers. */
#include "gw_unix.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static bool fill_addr(struct sockaddr_un *a, const char *path, struct sg_error *err)
{
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof a->sun_path) {
        sg_error_set(err, "%s: socket path too long (at most %zu bytes)", path,
                     sizeof a->sun_path - 1);
        return false;
    }
    strcpy(a->sun_path, path);
    return true;
}

int gw_unix_connect(const char *path, struct sg_error *err)
{
    struct sockaddr_un a;
    if (!fill_addr(&a, path, err))
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sg_error_set_errno(err, errno, "socket");
        return -1;
    }
    while (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        if (errno == EINTR)
            continue;
        sg_error_set_errno(err, errno, "cannot connect to %s", path);
        close(fd);
        return -1;
    }
    return fd;
}

int gw_unix_listen(const char *path, struct sg_error *err)
{
    struct sockaddr_un a;
    if (!fill_addr(&a, path, err))
        return -1;
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            sg_error_set(err, "%s exists and is not a socket", path);
            return -1;
        }
        /* Refuse to steal a socket somebody still serves on. */
        int probe = gw_unix_connect(path, NULL);
        if (probe >= 0) {
            close(probe);
            sg_error_set(err, "%s: another program is listening there", path);
            return -1;
        }
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sg_error_set_errno(err, errno, "socket");
        return -1;
    }
    /* umask makes the socket 0600 from birth: no window where others connect. */
    mode_t old = umask(0177);
    int r = bind(fd, (struct sockaddr *)&a, sizeof a);
    int bind_errno = errno;
    umask(old);
    if (r < 0) {
        sg_error_set_errno(err, bind_errno, "cannot bind %s", path);
        close(fd);
        return -1;
    }
    if (chmod(path, 0600) < 0 || listen(fd, 16) < 0) {
        sg_error_set_errno(err, errno, "cannot listen on %s", path);
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

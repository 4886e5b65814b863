/* qmp_unix.c: unix-domain socket helpers (see qmp_unix.h). */
#include "qmp_unix.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static bool fill_addr(struct sockaddr_un *a, const char *path, struct sg_error *err)
{
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    if (!*path || strlen(path) >= sizeof a->sun_path) {
        sg_error_set(err, "%s: socket path empty or too long (at most %zu bytes)", path,
                     sizeof a->sun_path - 1);
        return false;
    }
    strcpy(a->sun_path, path);
    return true;
}

int sg_unix_connect(const char *path, struct sg_error *err)
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

/* "DIR/.sg-PID-N.sock" next to `path`; false when it would not fit. */
static bool temp_name(const char *path, char *out, size_t outlen)
{
    static unsigned counter;
    const char *slash = strrchr(path, '/');
    int dl = slash ? (int)(slash - path + 1) : 0;
    int n = snprintf(out, outlen, "%.*s.sg-%ld-%u.sock", dl, path, (long)getpid(), ++counter);
    return n > 0 && (size_t)n < outlen;
}

int sg_unix_listen(const char *path, int backlog, bool nonblock, struct sg_error *err)
{
    struct sockaddr_un a, t;
    if (!fill_addr(&a, path, err))
        return -1;
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            sg_error_set(err, "%s exists and is not a socket (not replaced)", path);
            return -1;
        }
        /* Refuse to steal a socket somebody still serves on. */
        int probe = sg_unix_connect(path, NULL);
        if (probe >= 0) {
            close(probe);
            sg_error_set(err, "%s: another program is listening there", path);
            return -1;
        }
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) {
        sg_error_set_errno(err, errno, "socket");
        return -1;
    }
    bool renamed = temp_name(path, t.sun_path, sizeof t.sun_path);
    t.sun_family = AF_UNIX;
    const struct sockaddr_un *at = renamed ? &t : &a;
    if (!renamed && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path); /* the stale socket (checked above): no room for a temporary name */
    /* umask makes the socket 0600 from birth; chmod says so explicitly. */
    mode_t old = umask(0177);
    int r = bind(fd, (const struct sockaddr *)at, sizeof *at);
    int bind_errno = errno;
    umask(old);
    if (r < 0) {
        sg_error_set_errno(err, bind_errno, "cannot bind %s", path);
        close(fd);
        return -1;
    }
    if (chmod(at->sun_path, 0600) < 0 || listen(fd, backlog) < 0 ||
        (renamed && rename(t.sun_path, path) < 0)) {
        sg_error_set_errno(err, errno, "cannot listen on %s", path);
        unlink(at->sun_path);
        close(fd);
        return -1;
    }
    return fd;
}

/* systemd's socket-activation protocol: descriptors 3 .. 3+LISTEN_FDS-1 are
 * ours when LISTEN_PID is our pid.  Returns the count, 0 when not activated. */
static long systemd_listen_fds(void)
{
    const char *pid = getenv("LISTEN_PID");
    const char *fds = getenv("LISTEN_FDS");
    if (!pid || !fds || strtol(pid, NULL, 10) != (long)getpid())
        return 0;
    long n = strtol(fds, NULL, 10);
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return n > 0 ? n : 0;
}

bool sg_unix_inherited_listener(int fd, struct sg_error *err)
{
    long activated = systemd_listen_fds();
    if (activated && (fd < 3 || fd >= 3 + activated)) {
        sg_error_set(err, "fd %d is not one of the %ld socket(s) systemd passed (fd 3 to %ld)",
                     fd, activated, 2 + activated);
        return false;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        sg_error_set_errno(err, errno, "fd %d", fd);
        return false;
    }
    if (!S_ISSOCK(st.st_mode)) {
        sg_error_set(err, "fd %d is not a socket", fd);
        return false;
    }
    int type = 0, acc = 0;
    socklen_t l1 = sizeof type, l2 = sizeof acc;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l1) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l2) < 0) {
        sg_error_set_errno(err, errno, "fd %d", fd);
        return false;
    }
    if (type != SOCK_STREAM || !acc) {
        sg_error_set(err, "fd %d is not a listening stream socket", fd);
        return false;
    }
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0) {
        sg_error_set_errno(err, errno, "fd %d", fd);
        return false;
    }
    return true;
}

void sg_unix_name_get(const char *path, struct sg_unix_name *n)
{
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        *n = (struct sg_unix_name){ (unsigned long long)st.st_dev, (unsigned long long)st.st_ino };
    else
        *n = (struct sg_unix_name){ 0, 0 };
}

void sg_unix_name_remove(const char *path, const struct sg_unix_name *n)
{
    struct stat st;
    if (n->ino && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) &&
        (unsigned long long)st.st_dev == n->dev && (unsigned long long)st.st_ino == n->ino)
        unlink(path);
}

ssize_t sg_unix_send_fds(int fd, const void *buf, size_t len, const int *fds, size_t nfds)
{
    struct iovec iov = { (void *)buf, len };
    struct msghdr m = { 0 };
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * 64)];
    } ctl;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (nfds > 64) {
        errno = EINVAL;
        return -1;
    }
    if (nfds) {
        memset(&ctl, 0, sizeof ctl);
        m.msg_control = ctl.b;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *h = CMSG_FIRSTHDR(&m);
        h->cmsg_level = SOL_SOCKET;
        h->cmsg_type = SCM_RIGHTS;
        h->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(h), fds, sizeof(int) * nfds);
    }
    ssize_t n;
    do
        n = sendmsg(fd, &m, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n;
}

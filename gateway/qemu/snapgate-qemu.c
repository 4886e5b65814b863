/* snapgate-qemu: a drop-in emulator for libvirt domains (snapgate-qemu(1)).
 *
 * Anything that is not a domain start (libvirt's capability probes, -version, a start
 * without a passed monitor fd) becomes the real QEMU with the same arguments, so libvirt's
 * capability cache is QEMU's own.  A domain start, where libvirt passes the listening
 * socket of monitor.sock as -chardev socket,...,fd=N: this process
 *   1. makes a private listening socket beside monitor.sock and gives QEMU that one
 *      instead (fd=M in the rewritten -chardev); -loadvm NAME is taken out (and -S added);
 *   2. starts the gateway half, detached from QEMU (a double fork, so no zombie is left
 *      to QEMU): `snapgate --connect unix:PRIVATE --qmp fd:N --no-monitor ...`, under a
 *      small supervisor that logs its exit status and removes the private socket;
 *   3. execs QEMU last, so the PID libvirt forked, tracks, signals and waits for is QEMU's.
 * The gateway's connect succeeds at once (the socket listens before QEMU runs) and it waits
 * for QEMU's greeting, bounded; libvirt's own connects on fd N queue until the gateway
 * serves them, after the -loadvm step, so libvirt never sees the VM half loaded. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qemu_argv.h"

#define PRIVATE_NAME "snapgate-qemu.monitor"
/* How long the gateway waits for QEMU's greeting (QEMU may start slowly on a busy host). */
#define GREETING_WAIT_MS "60000"

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    /* One write, so the line stays whole in the domain log. */
    dprintf(STDERR_FILENO, "snapgate-qemu: %s\n", buf);
}

static int exec_qemu(const char *qemu, char **argv)
{
    execv(qemu, argv);
    say("cannot run %s: %s", qemu, strerror(errno));
    return 127;
}

/* True when fd is a listening AF_UNIX stream socket; its path goes into path. */
static bool unix_listener(int fd, char *path, size_t n)
{
    int on = 0;
    socklen_t len = sizeof on;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) < 0 || !on)
        return false;
    struct sockaddr_un sa;
    len = sizeof sa;
    memset(&sa, 0, sizeof sa);
    if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0 || sa.sun_family != AF_UNIX)
        return false;
    snprintf(path, n, "%s", sa.sun_path);   /* "" for an unnamed or abstract socket */
    return true;
}

/* The private monitor socket: beside libvirt's monitor.sock (the domain's own directory,
 * which a confined QEMU may already use), else in a fresh temp dir. */
static int private_listener(const char *libvirt_path, char *path, size_t n)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", libvirt_path);
    if (libvirt_path[0] == '/') {
        snprintf(path, n, "%s/" PRIVATE_NAME, dirname(dir));
    } else {
        char tmpl[] = "/tmp/snapgate-qemu.XXXXXX";
        if (!mkdtemp(tmpl))
            return -1;
        snprintf(path, n, "%s/" PRIVATE_NAME, tmpl);
    }
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);   /* not CLOEXEC: QEMU inherits it */
    if (fd < 0)
        return -1;
    unlink(path);
    mode_t old = umask(077);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc < 0 || listen(fd, 8) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Everything but stdio and `keep` is closed in the gateway half: libvirt's pidfile lock,
 * log fds and the private listener belong to QEMU. */
static void close_others(int keep)
{
    long max = sysconf(_SC_OPEN_MAX);
    for (int fd = 3; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
        if (fd != keep)
            close(fd);
}

static const char *gateway_path(const char *given, char *buf, size_t n)
{
    if (given)
        return given;
    ssize_t len = readlink("/proc/self/exe", buf, n - 1);
    if (len <= 0)
        return "snapgate";
    buf[len] = '\0';
    char *slash = strrchr(buf, '/');
    snprintf(slash + 1, n - (size_t)(slash + 1 - buf), "snapgate");
    return buf;
}

/* The supervisor: runs the gateway, reports how it ended (the domain log), cleans up. */
static void supervise(const char *snapgate, const char *private_path, int mon_fd,
                      const char *profile, const char *loadvm, bool cont)
{
    char connect[PATH_MAX + 8], qmp[32];
    snprintf(connect, sizeof connect, "unix:%s", private_path);
    snprintf(qmp, sizeof qmp, "fd:%d", mon_fd);
    const char *args[16];
    int k = 0;
    args[k++] = "snapgate";
    args[k++] = "--connect";
    args[k++] = connect;
    args[k++] = "--qmp";
    args[k++] = qmp;
    args[k++] = "--no-monitor";
    args[k++] = "--compat-profile";
    args[k++] = profile;
    args[k++] = "--exit-with-backend";
    if (loadvm) {
        args[k++] = "--loadvm";
        args[k++] = loadvm;
        if (cont)
            args[k++] = "--cont";
    }
    args[k] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        setenv("SNAPGATE_GREETING_TIMEOUT_MS", GREETING_WAIT_MS, 0);
        execv(snapgate, (char **)args);
        say("cannot run %s: %s", snapgate, strerror(errno));
        _exit(127);
    }
    close(mon_fd);
    int st = 0;
    while (pid > 0 && waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    unlink(private_path);
    char how[64];
    if (pid < 0)
        snprintf(how, sizeof how, "could not start (fork: %s)", strerror(errno));
    else if (WIFEXITED(st))
        snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(st));
    else
        snprintf(how, sizeof how, "was killed by signal %d", WTERMSIG(st));
    say("gateway %s", how);
    _exit(pid > 0 && WIFEXITED(st) ? WEXITSTATUS(st) : 1);
}

int main(int argc, char **argv)
{
    struct sg_qemu_opts o;
    struct sg_error err = { 0 };
    if (!sg_qemu_parse_own(argc, argv, &o, &err)) {
        say("%s", err.msg);
        return 1;
    }
    int first = o.first_qemu_arg;
    struct sg_qemu_start s;
    sg_qemu_scan(argc, argv, first, &s);
    char libvirt_path[PATH_MAX];
    if (s.monitor_fd < 0 || !unix_listener(s.monitor_fd, libvirt_path, sizeof libvirt_path)) {
        /* A probe or a start we do not front: QEMU as asked. */
        argv[first - 1] = (char *)o.qemu;
        return exec_qemu(o.qemu, argv + first - 1);
    }
    char private_path[PATH_MAX];
    int priv = private_listener(libvirt_path, private_path, sizeof private_path);
    if (priv < 0) {
        say("cannot make the private monitor socket %s: %s", private_path, strerror(errno));
        return 1;
    }
    char **qargv = sg_qemu_rewrite(argc, argv, first, &s, o.qemu, priv);
    if (!qargv) {
        say("out of memory");
        return 1;
    }
    char gwbuf[PATH_MAX];
    const char *snapgate = gateway_path(o.snapgate, gwbuf, sizeof gwbuf);
    /* libvirt told QEMU to stay stopped (-S): then `cont` is libvirt's; when we added -S
     * for -loadvm, the gateway resumes the VM itself. */
    bool cont = s.loadvm && !s.has_S;
    fflush(stderr);
    pid_t mid = fork();
    if (mid < 0) {
        say("fork: %s", strerror(errno));
        return 1;
    }
    if (mid == 0) {
        /* The middle process only detaches the supervisor from QEMU. */
        setsid();
        if (fork() != 0)
            _exit(0);
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0 && null != STDIN_FILENO) {
            dup2(null, STDIN_FILENO);
            close(null);
        }
        signal(SIGPIPE, SIG_DFL);
        close_others(s.monitor_fd);
        supervise(snapgate, private_path, s.monitor_fd, o.profile, s.loadvm, cont);
    }
    while (waitpid(mid, NULL, 0) < 0 && errno == EINTR)
        ;
    /* QEMU keeps the private listener, not libvirt's. */
    close(s.monitor_fd);
    return exec_qemu(o.qemu, qargv);
}

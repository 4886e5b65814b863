/* gw_vmm.c: the embedded back end — snapgate-vmm started by the gateway.
 *
 * The VMM lives in the state dir: disk0.qcow2 (created on first use), its
 * QMP socket and a lock file so two gateways never drive the same disk.  Its
 * serial console (-serial stdio) is a socketpair kept by the gateway for the
 * web console and --serial-to-terminal; its stderr is a pipe whose lines are
 * printed above the prompt. */
#include "gw_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "qmp_unix.h"

#define GW_DISK_SIZE "64M"
#define GW_VMM_START_TIMEOUT_MS 15000

struct gw_vmm {
    struct sg_gw *gw;
    pid_t pid;
    int status;          /* valid once reaped */
    bool reaped;
    int lock_fd;
    struct sg_gw_fd *serial;
    struct sg_gw_fd *err_pipe;
    char errbuf[512];    /* partial stderr line */
    size_t errlen;
};

/* Directory of the running gateway binary: its siblings are snapgate-vmm and
 * snapgate-img (all programs land in the same build/ or bin/ dir). */
static bool self_dir(char *dir, size_t len, struct sg_error *err)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n < 0) {
        sg_error_set_errno(err, errno, "cannot find the snapgate binary (/proc/self/exe)");
        return false;
    }
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (slash)
        *slash = '\0';
    if ((size_t)snprintf(dir, len, "%s", buf) >= len) {
        sg_error_set(err, "path of the snapgate binary is too long");
        return false;
    }
    return true;
}

static bool sibling(const char *dir, const char *name, char *out, size_t len,
                    struct sg_error *err)
{
    if ((size_t)snprintf(out, len, "%s/%s", dir, name) >= len) {
        sg_error_set(err, "path of %s is too long", name);
        return false;
    }
    if (access(out, X_OK) != 0) {
        sg_error_set_errno(err, errno, "%s (needed for the embedded VMM; "
                                       "or attach with --connect unix:PATH)", out);
        return false;
    }
    return true;
}

static bool run_img_create(const char *img, const char *disk, struct sg_error *err)
{
    pid_t pid = fork();
    if (pid < 0) {
        sg_error_set_errno(err, errno, "fork");
        return false;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, STDOUT_FILENO);
        execl(img, img, "create", disk, GW_DISK_SIZE, (char *)NULL);
        fprintf(stderr, "snapgate: cannot run %s: %s\n", img, strerror(errno));
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) {
            sg_error_set_errno(err, errno, "waitpid");
            return false;
        }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        sg_error_set(err, "%s create %s %s failed", img, disk, GW_DISK_SIZE);
        unlink(disk); /* a half-made image would be reused next time */
        return false;
    }
    return true;
}

static void describe_status(int st, char *how, size_t len)
{
    if (WIFEXITED(st))
        snprintf(how, len, "exited with status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(how, len, "was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(how, len, "ended");
}

bool gw_vmm_exited(struct gw_vmm *v, char *how, size_t len, int wait_ms)
{
    for (int waited = 0;; waited += 10) {
        if (!v->reaped) {
            pid_t r = waitpid(v->pid, &v->status, WNOHANG);
            if (r == v->pid)
                v->reaped = true;
        }
        if (v->reaped) {
            if (how)
                describe_status(v->status, how, len);
            return true;
        }
        if (waited >= wait_ms)
            return false;
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
}

static bool serial_readable(void *opaque, struct sg_gw_fd *f)
{
    struct gw_vmm *v = opaque;
    char buf[4096];
    for (;;) {
        ssize_t n = sg_gw_fd_read(f, buf, sizeof buf);
        if (n > 0) {
            gw_serial_input(v->gw, buf, (size_t)n);
            continue;
        }
        if (n == SG_GW_READ_AGAIN)
            return true;
        return false; /* EOF: the VMM is gone; the QMP link reports it */
    }
}

static void serial_closed(void *opaque, struct sg_gw_fd *f)
{
    struct gw_vmm *v = opaque;
    v->serial = NULL;
}

static const struct sg_gw_fd_ops serial_ops = { serial_readable, NULL, serial_closed };

static void flush_err_line(struct gw_vmm *v)
{
    if (!v->errlen)
        return;
    v->errbuf[v->errlen] = '\0';
    gw_print(v->gw, "%s\n", v->errbuf);
    v->errlen = 0;
}

static bool err_readable(void *opaque, struct sg_gw_fd *f)
{
    struct gw_vmm *v = opaque;
    char buf[1024];
    for (;;) {
        ssize_t n = sg_gw_fd_read(f, buf, sizeof buf);
        if (n == SG_GW_READ_AGAIN)
            return true;
        if (n <= 0) {
            flush_err_line(v);
            return false;
        }
        /* Whole lines only, so a message is never split by the prompt. */
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n') {
                flush_err_line(v);
                continue;
            }
            if (v->errlen == sizeof v->errbuf - 1)
                flush_err_line(v);
            v->errbuf[v->errlen++] = buf[i];
        }
    }
}

static void err_closed(void *opaque, struct sg_gw_fd *f)
{
    struct gw_vmm *v = opaque;
    v->err_pipe = NULL;
}

static const struct sg_gw_fd_ops err_ops = { err_readable, NULL, err_closed };

/* Reads what the VMM printed before dying, for the start-up error. */
static void read_startup_stderr(int fd, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (;;) {
        if (used + 1 >= len)
            break;
        ssize_t n = read(fd, out + used, len - 1 - used);
        if (n <= 0)
            break;
        used += (size_t)n;
    }
    while (used && (out[used - 1] == '\n' || out[used - 1] == '\r'))
        used--;
    out[used] = '\0';
}

struct gw_vmm *gw_vmm_start(struct sg_gw *gw, int *qmp_fd, struct sg_error *err)
{
    const struct sg_gw_options *o = gw->opt;
    char dir[PATH_MAX], vmm_bin[PATH_MAX], img_bin[PATH_MAX];
    char disk[PATH_MAX], sock[PATH_MAX], lock[PATH_MAX];

    if (strchr(o->state_dir, ',')) {
        /* The path goes into "-drive file=...," where a comma separates options. */
        sg_error_set(err, "--state-dir '%s': a comma in the path is not supported", o->state_dir);
        return NULL;
    }
    if (!self_dir(dir, sizeof dir, err) || !sibling(dir, "snapgate-vmm", vmm_bin, sizeof vmm_bin, err))
        return NULL;
    if (mkdir(o->state_dir, 0700) < 0 && errno != EEXIST) {
        sg_error_set_errno(err, errno, "cannot create state dir '%s'", o->state_dir);
        return NULL;
    }
    snprintf(disk, sizeof disk, "%s/disk0.qcow2", o->state_dir);
    snprintf(lock, sizeof lock, "%s/lock", o->state_dir);
    if ((size_t)snprintf(sock, sizeof sock, "%s/qmp.sock", o->state_dir) >=
        sizeof(((struct sockaddr_un *)0)->sun_path)) {
        sg_error_set(err, "--state-dir '%s' is too long for a unix socket path "
                          "(at most 98 bytes)", o->state_dir);
        return NULL;
    }

    struct gw_vmm *v = calloc(1, sizeof *v);
    if (!v) {
        sg_error_set(err, "out of memory");
        return NULL;
    }
    v->gw = gw;
    v->pid = -1;
    v->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (v->lock_fd < 0) {
        sg_error_set_errno(err, errno, "cannot open %s", lock);
        free(v);
        return NULL;
    }
    if (flock(v->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        sg_error_set(err, "state dir '%s' is in use by another snapgate "
                          "(attach to its VM with --connect, or use another --state-dir)",
                     o->state_dir);
        goto fail;
    }
    if (access(disk, F_OK) != 0) {
        if (!sibling(dir, "snapgate-img", img_bin, sizeof img_bin, err) ||
            !run_img_create(img_bin, disk, err))
            goto fail;
    }
    unlink(sock); /* a stale socket from a killed VMM */

    int sv[2], ep[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        sg_error_set_errno(err, errno, "socketpair");
        goto fail;
    }
    if (pipe2(ep, O_CLOEXEC) < 0) {
        sg_error_set_errno(err, errno, "pipe");
        close(sv[0]);
        close(sv[1]);
        goto fail;
    }

    /* argv: the fixed part, then the user's --vmm arguments. */
    char drive[PATH_MAX + 32], qmp[PATH_MAX + 32];
    snprintf(drive, sizeof drive, "file=%s,format=qcow2", disk);
    snprintf(qmp, sizeof qmp, "unix:%s,server=on,wait=off", sock);
    const char *fixed[] = { vmm_bin, "-drive", drive, "-qmp", qmp, "-serial", "stdio" };
    size_t nfixed = sizeof fixed / sizeof fixed[0];
    const char **argv = calloc(nfixed + (size_t)o->vmm_argc + 1, sizeof *argv);
    if (!argv) {
        sg_error_set(err, "out of memory");
        close(sv[0]);
        close(sv[1]);
        close(ep[0]);
        close(ep[1]);
        goto fail;
    }
    memcpy(argv, fixed, sizeof fixed);
    for (int i = 0; i < o->vmm_argc; i++)
        argv[nfixed + (size_t)i] = o->vmm_args[i];

    pid_t parent = getpid();
    v->pid = fork();
    if (v->pid == 0) {
        /* Own process group: Ctrl-C at the monitor cancels a job, it must not
         * kill the VM.  Parent-death signal: no orphaned VMM if we are killed. */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(SIGPIPE, SIG_DFL);
        dup2(sv[1], STDIN_FILENO);
        dup2(sv[1], STDOUT_FILENO);
        dup2(ep[1], STDERR_FILENO);
        execv(vmm_bin, (char *const *)argv);
        fprintf(stderr, "snapgate: cannot run %s: %s\n", vmm_bin, strerror(errno));
        _exit(127);
    }
    int fork_errno = errno;
    free(argv);
    close(sv[1]);
    close(ep[1]);
    if (v->pid < 0) {
        sg_error_set_errno(err, fork_errno, "fork");
        close(sv[0]);
        close(ep[0]);
        goto fail;
    }

    /* Wait for the QMP socket; a VMM that dies first (no /dev/kvm, bad
     * --vmm argument) is reported with what it printed. */
    int fd = -1;
    for (int waited = 0;; waited += 20) {
        char how[128];
        if (gw_vmm_exited(v, how, sizeof how, 0)) {
            char msg[600];
            read_startup_stderr(ep[0], msg, sizeof msg);
            sg_error_set(err, "snapgate-vmm %s%s%s", how, msg[0] ? ": " : "", msg);
            close(sv[0]);
            close(ep[0]);
            goto fail;
        }
        fd = sg_unix_connect(sock, NULL);
        if (fd >= 0)
            break;
        if (waited >= GW_VMM_START_TIMEOUT_MS) {
            sg_error_set(err, "snapgate-vmm did not open its QMP socket %s within %d s",
                         sock, GW_VMM_START_TIMEOUT_MS / 1000);
            close(sv[0]);
            close(ep[0]);
            goto fail;
        }
        struct timespec ts = { 0, 20 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    v->serial = sg_gw_fd_adopt(gw->loop, sv[0], &serial_ops, v, err);
    if (!v->serial) {
        close(sv[0]);
        close(ep[0]);
        close(fd);
        goto fail;
    }
    v->err_pipe = sg_gw_fd_adopt(gw->loop, ep[0], &err_ops, v, err);
    if (!v->err_pipe) {
        close(ep[0]);
        close(fd);
        goto fail;
    }
    *qmp_fd = fd;
    return v;

fail:
    gw_vmm_stop(v);
    return NULL;
}

void gw_vmm_serial_write(struct gw_vmm *v, const void *buf, size_t len)
{
    if (v->serial)
        sg_gw_fd_write(v->serial, buf, len);
}

void gw_vmm_stop(struct gw_vmm *v)
{
    if (!v)
        return;
    if (v->serial)
        sg_gw_fd_detach(v->serial);
    if (v->err_pipe) {
        sg_gw_fd_detach(v->err_pipe);
        flush_err_line(v);
    }
    if (v->pid > 0 && !gw_vmm_exited(v, NULL, 0, 0)) {
        kill(v->pid, SIGTERM);
        if (!gw_vmm_exited(v, NULL, 0, 3000)) {
            kill(v->pid, SIGKILL);
            gw_vmm_exited(v, NULL, 0, 3000);
        }
    }
    if (v->lock_fd >= 0)
        close(v->lock_fd);
    free(v);
}

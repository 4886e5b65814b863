/* main.c: snapgate, the snapshot gateway.  Parses the command line, starts
 * the back end (embedded snapgate-vmm or --connect), the front ends (the
 * monitor, --qmp, --web) and runs the one event loop. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "gw_internal.h"
#include "qmp_unix.h"
#include "sg_hmp.h"
#ifdef SG_HAVE_WEB
#include "web.h"
#endif

struct sig_watch {
    struct sg_gw *gw;
    struct sg_gw_fd *fd;
};

static bool signal_readable(void *opaque, struct sg_gw_fd *f)
{
    struct sig_watch *w = opaque;
    struct signalfd_siginfo si;
    while (read(sg_gw_fd_fd(f), &si, sizeof si) == (ssize_t)sizeof si) {
        struct sg_gw *gw = w->gw;
        switch (si.ssi_signo) {
        case SIGINT:
            /* At the monitor Ctrl-C cancels a job or clears the line;
             * otherwise it ends the gateway like SIGTERM. */
            if (gw->mon && gw_monitor_interrupt(gw->mon))
                break;
            /* fall through */
        case SIGTERM:
        case SIGHUP:
            if (gw->vmm && gw_backend_alive(gw)) {
                gw_quit(gw);
            } else if (gw_backend_alive(gw) && gw->hmp && sg_hmp_busy(gw->hmp) &&
                       !gw->leave_when_idle) {
                /* A back end we attached to outlives us: a snapshot job an
                 * HMP line started (say the terminal hung up during savevm)
                 * is seen to its end and dismissed rather than left behind. */
                gw->leave_when_idle = true;
                gw_print(gw, "snapgate: leaving once the running HMP command has finished "
                             "(signal again to leave now)\n");
                gw_hmp_kick(gw);
            } else {
                gw_exit(gw, SG_GW_EXIT_OK);
            }
            break;
        default:
            break;
        }
    }
    return true;
}

static void signal_closed(void *opaque, struct sg_gw_fd *f)
{
    struct sig_watch *w = opaque;
    w->fd = NULL;
}

static const struct sg_gw_fd_ops signal_ops = { signal_readable, NULL, signal_closed };

static int fail_start(const struct sg_error *err)
{
    fprintf(stderr, "snapgate: %s\n", err->msg);
    return SG_GW_EXIT_USAGE;
}

int main(int argc, char **argv)
{
    struct sg_gw_options opt;
    struct sg_error err = { 0 };

    switch (sg_gw_options_parse(&opt, argc, argv, &err)) {
    case SG_GW_PARSE_HELP:
        return 0;
    case SG_GW_PARSE_ERROR:
        fprintf(stderr, "snapgate: %s\n", err.msg);
        return SG_GW_EXIT_USAGE;
    case SG_GW_PARSE_RUN:
        break;
    }
#ifndef SG_HAVE_WEB
    if (opt.web) {
        fprintf(stderr, "snapgate: --web: this snapgate was built without the web server\n");
        return SG_GW_EXIT_USAGE;
    }
#endif
    /* An inherited --qmp socket is checked (and made close-on-exec) before
     * anything is started, so a child never inherits it. */
    if (opt.qmp_fd >= 0 && !sg_unix_inherited_listener(opt.qmp_fd, &err)) {
        fprintf(stderr, "snapgate: --qmp fd:%d: %s\n", opt.qmp_fd, err.msg);
        return SG_GW_EXIT_USAGE;
    }
    /* The monitor needs a terminal unless the operator asked for it. */
    bool monitor = !opt.no_monitor;
    if (monitor && !isatty(STDIN_FILENO) && (sg_gw_options_has_qmp(&opt) || opt.web))
        monitor = false;

    signal(SIGPIPE, SIG_IGN);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    sigprocmask(SIG_BLOCK, &sigs, NULL);

    struct sg_gw gw;
    memset(&gw, 0, sizeof gw);
    gw.opt = &opt;
    gw.exit_code = SG_GW_EXIT_OK;
    gw.orphan_jobs = json_object();
    gw.loop = sg_gw_loop_new(&err);
    if (!gw.loop)
        return fail_start(&err);
    sg_gw_timer_init(&gw.replay_timer, gw.loop, gw_serial_replay, &gw);

    struct sig_watch sw = { &gw, NULL };
    int sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0 || !(sw.fd = sg_gw_fd_adopt(gw.loop, sfd, &signal_ops, &sw, &err))) {
        if (sfd >= 0)
            close(sfd);
        else
            sg_error_set_errno(&err, errno, "signalfd");
        sg_gw_loop_free(gw.loop);
        return fail_start(&err);
    }

    int rc = SG_GW_EXIT_USAGE;
    int qmp_fd = -1;
    if (opt.connect_path) {
        qmp_fd = sg_unix_connect(opt.connect_path, &err);
        if (qmp_fd < 0)
            sg_error_prefix(&err, "--connect");
    } else {
        gw.vmm = gw_vmm_start(&gw, &qmp_fd, &err);
    }
    if (qmp_fd < 0)
        goto out;
    if (!gw_backend_start(&gw, qmp_fd, &err)) {
        sg_error_prefix(&err, "%s", opt.connect_path ? opt.connect_path : "snapgate-vmm");
        goto out;
    }
    if (!gw_hmp_init(&gw, &err))
        goto out;
    if (opt.loadvm && !gw_loadvm_run(&gw, &err))   /* before anyone is served */
        goto out;
    if (sg_gw_options_has_qmp(&opt) &&
        !(gw.qmp_ep = gw_qmp_endpoint_start(&gw, opt.qmp_path, opt.qmp_fd, &err)))
        goto out;
#ifdef SG_HAVE_WEB
    if (opt.web) {
        struct sg_web_config wc = {
            .addr = opt.web_addr,
            .port = opt.web_port,
            .cert_pem = opt.web_cert,
            .key_pem = opt.web_key,
            .token_file = opt.web_token_file,
            .insecure = opt.web_insecure,
            .docroot = NULL,
            .hmp_style = opt.hmp_style,
            .compat_style = opt.compat_style,
        };
        gw.web = sg_web_start(&gw, &wc, &err);
        if (!gw.web) {
            sg_error_prefix(&err, "--web");
            goto out;
        }
    }
#endif
    if (monitor) {
        if (!gw_monitor_start(&gw, &err))
            goto out;
    } else if (!sg_gw_options_has_qmp(&opt) && !opt.web) {
        sg_error_set(&err, "--no-monitor needs --qmp or --web (nothing would be served)");
        goto out;
    }
    if (!monitor) {
        char be[256];
        sg_gw_backend_describe(&gw, be, sizeof be);
        fprintf(stderr, "snapgate %s: connected to %s\n", SNAPGATE_VERSION, be);
    }

    sg_gw_loop_run(gw.loop);
    rc = gw.exit_code;
    sg_error_clear(&err);

out:
    if (err.set)
        fprintf(stderr, "snapgate: %s\n", err.msg);
    /* The monitor first (the terminal is restored before anything else is
     * printed), then the link (pending callbacks learn it is over while
     * their owners still live), then the other front ends, the engine and
     * the VMM. */
    gw_monitor_free(gw.mon);
    /* Commands still waiting get their error reply now (written at once),
     * so a client whose back end died sees why before its socket closes. */
    gw_backend_free(&gw);
    gw_qmp_endpoint_free(gw.qmp_ep);
#ifdef SG_HAVE_WEB
    if (gw.web)
        sg_web_stop(gw.web);
#endif
    if (gw.hmp)
        sg_hmp_free(gw.hmp);
    sg_gw_timer_cancel(&gw.tick);
    sg_gw_timer_cancel(&gw.quit_timer);
    sg_gw_timer_cancel(&gw.replay_timer);
    gw_vmm_stop(gw.vmm);
    gw_qmp_clients_free_all(&gw);
    if (sw.fd)
        sg_gw_fd_detach(sw.fd);
    sg_gw_loop_free(gw.loop);
    json_decref(gw.backend_version);
    json_decref(gw.orphan_jobs);
    free(gw.serial_subs);
    fflush(stdout);
    return rc;
}

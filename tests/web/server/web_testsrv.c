/* web_testsrv.c: runs the web server against the fake gateway, for the
 * security and browser tests.  Prints the "web console:" line like the real
 * gateway and serves until SIGTERM/SIGINT. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libwebsockets.h>

#include "fake_gw.h"
#include "web.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

int main(int argc, char **argv)
{
    struct sg_web_config cfg = { .addr = "127.0.0.1", .port = 0,
                                 .compat_style = SG_HMP_STYLE_QEMU72 };
    bool serial = true, demo = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-serial")) { serial = false; continue; }
        if (!strcmp(a, "--demo")) { demo = true; continue; }
        if (!strcmp(a, "--insecure")) { cfg.insecure = true; continue; }
        if (!v) {
            fprintf(stderr, "usage: %s [--addr A] [--port P] [--docroot D] [--cert C --key K] "
                    "[--token-file F] [--insecure] [--no-serial] [--demo]\n", argv[0]);
            return 1;
        }
        i++;
        if (!strcmp(a, "--addr")) cfg.addr = v;
        else if (!strcmp(a, "--port")) cfg.port = atoi(v);
        else if (!strcmp(a, "--docroot")) cfg.docroot = v;
        else if (!strcmp(a, "--cert")) cfg.cert_pem = v;
        else if (!strcmp(a, "--key")) cfg.key_pem = v;
        else if (!strcmp(a, "--token-file")) cfg.token_file = v;
        else { fprintf(stderr, "unknown option %s\n", a); return 1; }
    }
    lws_set_log_level(LLL_ERR | LLL_WARN, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.port = CONTEXT_PORT_NO_LISTEN;
    struct lws_context *ctx = lws_create_context(&info);
    if (!ctx) {
        fprintf(stderr, "web_testsrv: lws context failed\n");
        return 1;
    }
    /* Before the URL is printed: a test may signal as soon as it reads it. */
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    struct sg_gw *gw = fake_gw_new(ctx, serial, demo);
    struct sg_error err = { 0 };
    struct sg_web *web = sg_web_start(gw, &cfg, &err);
    if (!web) {
        fprintf(stderr, "web_testsrv: %s\n", err.msg);
        fake_gw_free(gw);
        lws_context_destroy(ctx);
        return 1;
    }
    /* Bounded only by the test's own timeout and the signal. */
    while (!stop_requested && lws_service(ctx, 0) >= 0)
        ;
    sg_web_stop(web);
    /* Let the deferred vhost destruction run before the context goes. */
    for (int i = 0; i < 3; i++)
        lws_service(ctx, -1);
    fake_gw_free(gw);
    lws_context_destroy(ctx);
    return 0;
}

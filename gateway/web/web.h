/* web.h: the HTTP + WebSocket server of the gateway (INTERFACES.md section 5).
 * It creates one libwebsockets vhost inside the gateway's context (the gateway
 * creates the context with LWS_SERVER_OPTION_EXPLICIT_VHOSTS and owns the loop)
 * and reaches the VM only through gw.h. */
#ifndef SG_WEB_H
#define SG_WEB_H

#include <stdbool.h>

#include "gw.h"
#include "sg_error.h"

struct sg_gw;
struct sg_web;

struct sg_web_config {
    const char *addr;        /* default "127.0.0.1" */
    int port;
    const char *cert_pem;    /* --web-cert (https/wss) or NULL */
    const char *key_pem;     /* --web-key */
    const char *token_file;  /* --web-token-file: read the token from it, or NULL: random */
    bool insecure;           /* --web-insecure: allow plain http on a non-loopback address */
    const char *docroot;     /* directory holding index.html; NULL: found next to the binary */
    /* Added by the web area (zero-initialised configs keep working): */
    enum sg_hmp_style hmp_style;    /* /hmp replies (--hmp-profile); 0 = snapgate */
    enum sg_hmp_style compat_style; /* human-monitor-command on /qmp (--compat-profile);
                                       the gateway passes its setting (default qemu-7.2) */
};

/* The URL printed at start ("http[s]://ADDR:PORT/?token=TOKEN"); valid until sg_web_stop. */
const char *sg_web_url(const struct sg_web *web);
/* The port actually bound (useful with port 0: the kernel picks one). */
int sg_web_port(const struct sg_web *web);

/* Starts serving and prints "web console: http://ADDR:PORT/?token=TOKEN" on stdout. */
struct sg_web *sg_web_start(struct sg_gw *gw, const struct sg_web_config *cfg,
                            struct sg_error *err);
/* Closes every connection and the listener; call before lws_context_destroy().
 * Safe with NULL. */
void sg_web_stop(struct sg_web *web);

#endif

/* web.h: the HTTP + WebSocket server of the gateway (INTERFACES.md section 5).
 * It creates one libwebsockets vhost inside the gateway's context (the gateway
 * creates the context with LWS_SERVER_OPTION_EXPLICIT_VHOSTS and owns the loop)
 * and reaches the VM only through gw.h. */
#ifndef SG_WEB_H
#define SG_WEB_H

#include <stdbool.h>

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
};

/* Starts serving and prints "web console: http://ADDR:PORT/?token=TOKEN" on stdout. */
struct sg_web *sg_web_start(struct sg_gw *gw, const struct sg_web_config *cfg,
                            struct sg_error *err);
void sg_web_stop(struct sg_web *web);

#endif

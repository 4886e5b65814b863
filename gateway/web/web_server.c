/* web_server.c: the vhost of the web console inside the gateway's lws context.
 * Start-up checks, the protocol table, and the dispatch of lws callbacks to
 * web_http.c (page), web_auth.c (upgrade checks) and web_conn.c (sockets). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "web_internal.h"

static struct sg_web *web_of(struct lws *wsi)
{
    struct lws_vhost *vh = lws_get_vhost(wsi);
    return vh ? lws_vhost_user(vh) : NULL;
}

static void web_free(struct sg_web *web)
{
    memset(web->token, 0, sizeof web->token);
    free(web);
}

static int cb_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    struct sg_web *web = web_of(wsi);

    switch (reason) {
    case LWS_CALLBACK_PROTOCOL_INIT:
        if (web)
            web->proto_inited = true;
        return 0;
    case LWS_CALLBACK_PROTOCOL_DESTROY:
        /* The last moment lws can call us for this vhost: the deferred
         * destruction that sg_web_stop() started ends here. */
        if (web) {
            while (web->conns)
                sg_web_conn_detach(web->conns);
            web_free(web);
        }
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: {
        if (!web || web->stopping)
            return -1;
        enum sg_web_kind kind = 0;
        int status = sg_web_check_upgrade(web, wsi, &kind);
        if (status)
            return sg_web_deny(wsi, (unsigned)status, "WebSocket upgrade");
        return 0;
    }
    case LWS_CALLBACK_HTTP:
        if (!web || web->stopping)
            return -1;
        return sg_web_serve_http(web, wsi, (const char *)in);
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static int cb_ws(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                 size_t len)
{
    struct sg_web_conn *c = user;
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        /* CONFIRM_UPGRADE checked the path against the offered list; make
         * sure lws bound the same protocol the path asks for. */
        char path[16];
        const struct lws_protocols *pr = lws_get_protocol(wsi);
        if (lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI) <= 0 || path[0] != '/' ||
            strcmp(path + 1, pr->name) != 0)
            return 1;
        return 0;
    }
    case LWS_CALLBACK_ESTABLISHED:
        return sg_web_conn_callback(web_of(wsi), c, wsi, reason, in, len);
    case LWS_CALLBACK_RECEIVE:
    case LWS_CALLBACK_SERVER_WRITEABLE:
    case LWS_CALLBACK_CLOSED:
        if (!c)
            return 0;
        return sg_web_conn_callback(c->web, c, wsi, reason, in, len);
    default:
        return 0;
    }
}

/* Read-only: the per-server state lives in the vhost's user pointer. */
static const struct lws_protocols sg_web_protocols[] = {
    { "http", cb_http, 0, 0, 0, NULL, 0 },
    { "qmp", cb_ws, sizeof(struct sg_web_conn), 65536, SG_WEB_QMP, NULL, 0 },
    { "hmp", cb_ws, sizeof(struct sg_web_conn), 65536, SG_WEB_HMP, NULL, 0 },
    { "serial", cb_ws, sizeof(struct sg_web_conn), 65536, SG_WEB_SERIAL, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 }
};

const char *sg_web_url(const struct sg_web *web)
{
    return web->url;
}

int sg_web_port(const struct sg_web *web)
{
    return web->port;
}

struct sg_web *sg_web_start(struct sg_gw *gw, const struct sg_web_config *cfg,
                            struct sg_error *err)
{
    const char *addr = cfg->addr && *cfg->addr ? cfg->addr : "127.0.0.1";
    bool tls = cfg->cert_pem || cfg->key_pem;

    if (tls && !(cfg->cert_pem && cfg->key_pem)) {
        sg_error_set(err, "--web-cert and --web-key must be given together");
        return NULL;
    }
    if (cfg->port < 0 || cfg->port > 65535) {
        sg_error_set(err, "--web: port %d out of range", cfg->port);
        return NULL;
    }
    if (!sg_web_addr_is_loopback(addr) && !tls && !cfg->insecure) {
        sg_error_set(err, "--web %s:%d: a non-loopback address needs --web-cert and --web-key "
                     "(https/wss), or --web-insecure to serve plain http", addr, cfg->port);
        return NULL;
    }
    if (strlen(addr) >= sizeof ((struct sg_web *)0)->addr) {
        sg_error_set(err, "--web: address too long");
        return NULL;
    }
    for (const char *f = cfg->cert_pem; tls && f; f = f == cfg->cert_pem ? cfg->key_pem : NULL) {
        FILE *fp = fopen(f, "r");
        if (!fp) {
            sg_error_set_errno(err, errno, "%s %s",
                               f == cfg->cert_pem ? "--web-cert" : "--web-key", f);
            return NULL;
        }
        fclose(fp);
    }

    struct sg_web *web = calloc(1, sizeof *web);
    if (!web) {
        sg_error_set(err, "web: out of memory");
        return NULL;
    }
    web->gw = gw;
    web->ctx = sg_gw_lws_context(gw);
    web->tls = tls;
    web->loopback = sg_web_addr_is_loopback(addr);
    web->hmp_style = cfg->hmp_style;
    web->compat_style = cfg->compat_style;
    snprintf(web->addr, sizeof web->addr, "%s", addr);
    if (!web->ctx) {
        sg_error_set(err, "web: the gateway has no event loop");
        goto fail;
    }
    if (!sg_web_find_docroot(cfg->docroot, web->docroot, sizeof web->docroot, err))
        goto fail;
    if (cfg->token_file ? !sg_web_token_load(cfg->token_file, web->token, sizeof web->token, err)
                        : !sg_web_token_make(web->token, sizeof web->token, err))
        goto fail;

    /* Idle links get a ping after 30 s without traffic and are closed when
     * nothing came back for 60 s (a browser tab that vanished). */
    web->idle.secs_since_valid_ping = 30;
    web->idle.secs_since_valid_hangup = 60;

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.vhost_name = "snapgate-web";
    info.port = cfg->port;
    info.iface = addr;
    info.protocols = sg_web_protocols;
    info.user = web;
    info.retry_and_idle_policy = &web->idle;
    info.keepalive_timeout = 5;
    info.timeout_secs = 20;
    /* WebSockets over HTTP/2 take another upgrade path; one is enough. */
    info.alpn = "http/1.1";
    if (tls) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = cfg->cert_pem;
        info.ssl_private_key_filepath = cfg->key_pem;
    }
    web->vhost = lws_create_vhost(web->ctx, &info);
    if (!web->vhost) {
        sg_error_set(err, "--web %s:%d: cannot serve there (address in use or not local%s)", addr,
                     cfg->port, tls ? ", or bad certificate/key" : "");
        goto fail;
    }
    /* lws initialises a vhost created on a running context later, from a
     * timer.  Do it now, so that PROTOCOL_INIT has run before anyone can call
     * sg_web_stop(): otherwise a stop in between freed `web` while the
     * pending init still pointed at it (use after free, then double free). */
    lws_protocol_init(web->ctx);
    web->port = lws_get_vhost_listen_port(web->vhost);
    snprintf(web->url, sizeof web->url, "%s://%s%s%s:%d/?token=%s", tls ? "https" : "http",
             strchr(addr, ':') ? "[" : "", addr, strchr(addr, ':') ? "]" : "", web->port,
             web->token);
    printf("web console: %s\n", web->url);
    fflush(stdout);
    return web;

fail:
    web_free(web);
    return NULL;
}

void sg_web_stop(struct sg_web *web)
{
    if (!web)
        return;
    web->stopping = true;
    for (struct sg_web_conn *c = web->conns; c; c = web->conns)
        sg_web_conn_detach(c);
    if (!web->proto_inited) {
        /* lws never initialised the protocols, so it will not call
         * PROTOCOL_DESTROY either: free here. */
        struct lws_vhost *vh = web->vhost;
        web_free(web);
        lws_vhost_destroy(vh);
        return;
    }
    /* PROTOCOL_DESTROY frees `web` when lws has closed every connection
     * (possibly before lws_vhost_destroy returns). */
    lws_vhost_destroy(web->vhost);
}

/* web_http.c: the static console page.  Only files under the docroot are
 * served, with headers that keep the page (which carries the token in its
 * URL) from being framed, sniffed or leaking the token through Referer.
 * No cookie is ever set (see sg_web_serve_http). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "web_internal.h"

/* xterm.js injects <style> elements for its themes and cell sizes, so styles
 * need 'unsafe-inline'; scripts stay 'self' only (no eval, no inline code).
 * connect-src 'self' covers ws:/wss: to the same host and port. */
static const char csp[] =
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'";

static bool has_index(const char *dir)
{
    char p[PATH_MAX];
    struct stat st;
    if ((size_t)snprintf(p, sizeof p, "%s/index.html", dir) >= sizeof p)
        return false;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

bool sg_web_find_docroot(const char *configured, char *out, size_t outsz, struct sg_error *err)
{
    char tmp[PATH_MAX];
    if (configured) {
        if (!realpath(configured, tmp) || !has_index(tmp)) {
            sg_error_set(err, "web: docroot %s has no index.html", configured);
            return false;
        }
        snprintf(out, outsz, "%s", tmp);
        return true;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0) {
        sg_error_set_errno(err, errno, "web: cannot find the executable's directory");
        return false;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    /* build/snapgate -> ../web (source tree); prefix/bin -> ../share/snapgate/web;
     * then the places the build knows (CMake sets them): the install
     * prefix's page, and the source tree's for a build folder outside it
     * (cmake -B /elsewhere). */
    static const char *const rel[] = { "../web", "../share/snapgate/web", "web", "../../web",
#ifdef SG_WEB_SOURCE_DIR
                                       SG_WEB_SOURCE_DIR,
#endif
#ifdef SG_WEB_INSTALL_DIR
                                       SG_WEB_INSTALL_DIR,
#endif
    };
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
        if ((size_t)snprintf(tmp, sizeof tmp, "%s%s%s", rel[i][0] == '/' ? "" : exe,
                             rel[i][0] == '/' ? "" : "/", rel[i]) >= sizeof tmp)
            continue;
        char real[PATH_MAX];
        if (realpath(tmp, real) && has_index(real)) {
            snprintf(out, outsz, "%s", real);
            return true;
        }
    }
    sg_error_set(err, "web: console page not found (looked in %s/../web and "
                 "%s/../share/snapgate/web)", exe, exe);
    return false;
}

static const char *mime_of(const char *path)
{
    static const struct { const char *ext, *mime; } map[] = {
        { ".html", "text/html; charset=utf-8" },
        { ".js", "text/javascript; charset=utf-8" },
        { ".mjs", "text/javascript; charset=utf-8" },
        { ".css", "text/css; charset=utf-8" },
        { ".map", "application/json" },
        { ".svg", "image/svg+xml" },
        { ".png", "image/png" },
        { ".ico", "image/x-icon" },
    };
    /* Only what the page loads: not package.json, READMEs or CMakeLists.txt. */
    const char *dot = strrchr(path, '.');
    if (!dot || strchr(dot, '/'))
        return NULL;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(dot, map[i].ext) == 0)
            return map[i].mime;
    return NULL;
}

/* Rejects anything that is not a plain relative path of ordinary names: no
 * "..", no hidden files (.git, .npmrc), no backslashes or NULs. */
static bool path_is_clean(const char *uri)
{
    if (uri[0] != '/')
        return false;
    for (const char *p = uri; *p; p++) {
        if (*p == '\\' || (unsigned char)*p < 0x20)
            return false;
        if (*p == '/' && (p[1] == '.' || p[1] == '/'))
            return false;
    }
    return true;
}

static int add_hdr(struct lws *wsi, const char *name, const char *value, unsigned char **p,
                   unsigned char *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                       (const unsigned char *)value, (int)strlen(value), p, end);
}

int sg_web_deny(struct lws *wsi, unsigned status, const char *why)
{
    lwsl_notice("web: refused (%u): %s\n", status, why);
    if (lws_return_http_status(wsi, status, NULL))
        return -1;
    return 1;
}

static int finish(struct lws *wsi, int n)
{
    if (n < 0 || (n > 0 && lws_http_transaction_completed(wsi)))
        return -1;
    return 0;
}

int sg_web_serve_http(struct sg_web *web, struct lws *wsi, const char *uri)
{
    if (!lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI))
        return finish(wsi, sg_web_deny(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED, "not a GET"));
    const char *rel = strcmp(uri, "/") == 0 ? "/index.html" : uri;
    const char *mime = mime_of(rel);
    char path[PATH_MAX], real[PATH_MAX];
    struct stat st;
    size_t rootlen = strlen(web->docroot);

    if (!path_is_clean(rel) || !mime ||
        (size_t)snprintf(path, sizeof path, "%s%s", web->docroot, rel) >= sizeof path ||
        !realpath(path, real) || strncmp(real, web->docroot, rootlen) != 0 ||
        real[rootlen] != '/' || stat(real, &st) != 0 || !S_ISREG(st.st_mode))
        return finish(wsi, lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, NULL) ? -1 : 1);

    unsigned char hbuf[2048], *p = hbuf, *end = hbuf + sizeof hbuf;
    if (add_hdr(wsi, "content-security-policy:", csp, &p, end) ||
        add_hdr(wsi, "x-content-type-options:", "nosniff", &p, end) ||
        add_hdr(wsi, "x-frame-options:", "DENY", &p, end) ||
        add_hdr(wsi, "referrer-policy:", "no-referrer", &p, end) ||
        add_hdr(wsi, "cross-origin-opener-policy:", "same-origin", &p, end) ||
        add_hdr(wsi, "cross-origin-resource-policy:", "same-origin", &p, end) ||
        add_hdr(wsi, "cache-control:", "no-store", &p, end))
        return -1;
    if (web->tls && add_hdr(wsi, "strict-transport-security:", "max-age=31536000", &p, end))
        return -1;

    /* No cookie: cookies are not bound to a port, so one for 127.0.0.1 would
     * be sent to every other local web server (and readable by whoever runs
     * it).  The page keeps the token from /?token= in sessionStorage, which
     * is per origin (scheme, host and port), and sends it in the WebSocket
     * URL. */
    return finish(wsi, lws_serve_http_file(wsi, real, mime, (const char *)hbuf, (int)(p - hbuf)));
}

/* web_auth.c: who may open a WebSocket.  A console that can load and delete VM
 * state must not be reachable from another site's page (cross-site WebSocket
 * hijacking) nor by a local user who did not see the printed URL, hence a
 * secret token plus an exact Origin check on every upgrade. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include <openssl/crypto.h>

#include "web_internal.h"

/* 24 random bytes = 192 bits, comfortably above the 128 the spec asks for. */
#define SG_WEB_TOKEN_BYTES 24
/* A token read from a file must carry at least 128 bits: 22 base64url chars. */
#define SG_WEB_TOKEN_MIN_CHARS 22

static const char b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

bool sg_web_token_make(char *out, size_t outsz, struct sg_error *err)
{
    unsigned char raw[SG_WEB_TOKEN_BYTES];
    size_t got = 0;

    while (got < sizeof raw) {
        ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            sg_error_set_errno(err, errno, "web: cannot get random bytes for the token");
            return false;
        }
        got += (size_t)n;
    }
    if (outsz < sizeof raw / 3 * 4 + 1) {
        sg_error_set(err, "web: token buffer too small");
        return false;
    }
    size_t o = 0;
    for (size_t i = 0; i < sizeof raw; i += 3) {
        unsigned v = (unsigned)raw[i] << 16 | (unsigned)raw[i + 1] << 8 | raw[i + 2];
        out[o++] = b64url[(v >> 18) & 63];
        out[o++] = b64url[(v >> 12) & 63];
        out[o++] = b64url[(v >> 6) & 63];
        out[o++] = b64url[v & 63];
    }
    out[o] = '\0';
    OPENSSL_cleanse(raw, sizeof raw);
    return true;
}

bool sg_web_token_valid_syntax(const char *tok)
{
    size_t n = strlen(tok);
    if (n < SG_WEB_TOKEN_MIN_CHARS || n > SG_WEB_TOKEN_MAX)
        return false;
    return strspn(tok, b64url) == n;
}

bool sg_web_token_load(const char *file, char *out, size_t outsz, struct sg_error *err)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        sg_error_set_errno(err, errno, "--web-token-file %s", file);
        return false;
    }
    char line[SG_WEB_TOKEN_MAX + 8];
    if (!fgets(line, sizeof line, f))
        line[0] = '\0';
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    if (!sg_web_token_valid_syntax(line) || strlen(line) >= outsz) {
        sg_error_set(err, "--web-token-file %s: the token must be %d to %d characters "
                     "from A-Za-z0-9_- on the first line", file, SG_WEB_TOKEN_MIN_CHARS,
                     SG_WEB_TOKEN_MAX);
        return false;
    }
    strcpy(out, line);
    return true;
}

/* Constant time in the token's content: a remote attacker must not learn a
 * prefix from response timing.  The length is not secret (always the same). */
bool sg_web_token_equal(const char *expected, const char *given)
{
    size_t el = strlen(expected), gl = strlen(given);
    if (gl != el) {
        (void)CRYPTO_memcmp(expected, expected, el);
        return false;
    }
    return CRYPTO_memcmp(expected, given, el) == 0;
}

bool sg_web_addr_is_loopback(const char *addr)
{
    return strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0 ||
           strcasecmp(addr, "localhost") == 0;
}

static enum sg_web_kind kind_of_path(const char *path)
{
    if (strcmp(path, "/qmp") == 0)
        return SG_WEB_QMP;
    if (strcmp(path, "/hmp") == 0)
        return SG_WEB_HMP;
    if (strcmp(path, "/serial") == 0)
        return SG_WEB_SERIAL;
    return 0;
}

static const char *kind_name(enum sg_web_kind k)
{
    return k == SG_WEB_QMP ? "qmp" : k == SG_WEB_HMP ? "hmp" : "serial";
}

/* Sec-WebSocket-Protocol is a comma separated list: the endpoint's own name
 * must be in it, so a page cannot talk QMP to /hmp by mistake. */
static bool offers_subprotocol(const char *list, const char *want)
{
    size_t wl = strlen(want);
    const char *p = list;
    while (*p) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, " \t,");
        if (n == wl && strncasecmp(p, want, n) == 0)
            return true;
        p += n;
    }
    return false;
}

/* DNS rebinding: a hostile name resolving to 127.0.0.1 would make the
 * browser's Origin and Host agree; on a loopback bind only loopback names are
 * accepted in Host, so such a page can never even reach the token check. */
static bool host_allowed(struct sg_web *web, const char *host)
{
    if (!web->loopback)
        return true;
    char want[128];
    static const char *const names[] = { "127.0.0.1", "localhost", "[::1]" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(want, sizeof want, "%s:%d", names[i], web->port);
        if (strcasecmp(host, want) == 0)
            return true;
    }
    snprintf(want, sizeof want, strchr(web->addr, ':') ? "[%s]:%d" : "%s:%d", web->addr,
             web->port);
    return strcasecmp(host, want) == 0;
}

static int hdr(struct lws *wsi, enum lws_token_indexes t, char *buf, int len)
{
    buf[0] = '\0';
    if (lws_hdr_total_length(wsi, t) >= len)
        return -1;
    return lws_hdr_copy(wsi, buf, len, t);
}

int sg_web_check_upgrade(struct sg_web *web, struct lws *wsi, enum sg_web_kind *kind)
{
    char path[128], origin[300], host[256], proto[256], tok[SG_WEB_TOKEN_MAX + 8];

    if (hdr(wsi, WSI_TOKEN_GET_URI, path, sizeof path) < 0 || !(*kind = kind_of_path(path)))
        return HTTP_STATUS_NOT_FOUND;
    if (*kind == SG_WEB_SERIAL && !sg_gw_has_serial(web->gw))
        return HTTP_STATUS_NOT_FOUND;

    /* Token first: without it nothing else about the server is revealed. */
    bool ok = false;
    const char *qtok = lws_get_urlarg_by_name(wsi, "token=", tok, sizeof tok);
    if (qtok)
        ok = sg_web_token_equal(web->token, qtok);
    /* Only the URL: a cookie would reach other servers on this host too. */
    OPENSSL_cleanse(tok, sizeof tok);
    if (!ok)
        return HTTP_STATUS_FORBIDDEN;

    if (hdr(wsi, WSI_TOKEN_HOST, host, sizeof host) <= 0 || !host_allowed(web, host))
        return HTTP_STATUS_FORBIDDEN;
    char self[300];
    snprintf(self, sizeof self, "%s://%s", web->tls ? "https" : "http", host);
    if (hdr(wsi, WSI_TOKEN_ORIGIN, origin, sizeof origin) <= 0 || strcasecmp(origin, self) != 0)
        return HTTP_STATUS_FORBIDDEN;

    if (hdr(wsi, WSI_TOKEN_PROTOCOL, proto, sizeof proto) <= 0 ||
        !offers_subprotocol(proto, kind_name(*kind)))
        return HTTP_STATUS_BAD_REQUEST;
    return 0;
}

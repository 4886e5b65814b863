/* web_internal.h: what the files of the web server share (not for other areas). */
#ifndef SG_WEB_INTERNAL_H
#define SG_WEB_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include <libwebsockets.h>

#include "gw.h"
#include "sg_budget.h"
#include "web.h"
#include "web_rx.h"   /* SG_WEB_MAX_MESSAGE, input assembly */

/* Output queued for one client above which we stop reading its input, so a
 * client that sends commands but never reads replies throttles itself ... */
#define SG_WEB_QUEUE_SOFT    (256u * 1024u)
#define SG_WEB_QUEUE_RESUME  (64u * 1024u)
/* ... and above which it is dropped: a stalled browser must not make the
 * gateway buffer guest serial output or events without bound.  Every
 * connection's queue also counts in the gateway's total over all clients
 * (sg_gw_output_budget, 32 MiB): over it, the one holding most is dropped. */
#define SG_WEB_QUEUE_HARD    (8u * 1024u * 1024u)
/* One WebSocket fragment per WRITEABLE callback keeps big replies from
 * being copied into lws' own partial-send buffer. */
#define SG_WEB_FRAGMENT      (16u * 1024u)
/* /serial is a byte stream, and the VMM's UART hands it over a byte at a
 * time: output queued behind a message that has not started going out is
 * appended to it, up to this many bytes, so that a client that was not
 * writable gets what waited in one message instead of one per byte. */
#define SG_WEB_COALESCE      (64u * 1024u)
/* The first allocation of a /serial message, grown by doubling. */
#define SG_WEB_COALESCE_MIN  1024u
#define SG_WEB_TOKEN_MAX     128
/* /hmp lines run one after the other; while one runs (a save can take
 * minutes) the next ones wait here.  A client that keeps sending is closed
 * (1008) past either bound instead of growing the gateway without limit. */
#define SG_WEB_HMP_QUEUE_LINES 64
#define SG_WEB_HMP_QUEUE_BYTES (1024u * 1024u)

enum sg_web_kind { SG_WEB_QMP = 1, SG_WEB_HMP, SG_WEB_SERIAL };

struct sg_web_msg {
    struct sg_web_msg *next;
    size_t len, off;     /* payload length, bytes already written */
    size_t cap;          /* payload room allocated (>= len) */
    bool binary;
    unsigned char buf[]; /* LWS_PRE bytes of header room, then the payload */
};

struct sg_web_hmp_line {
    struct sg_web_hmp_line *next;
    char text[];
};

/* Per WebSocket connection; lws allocates it (per_session_data_size). */
struct sg_web_conn {
    struct sg_web *web;          /* NULL once the server is stopping */
    struct lws *wsi;
    enum sg_web_kind kind;
    struct sg_web_conn *prev, *next;

    struct sg_web_msg *out_head, *out_tail;
    struct sg_web_msg **out_tail_link; /* what points at out_tail (it may move) */
    size_t out_bytes;
    struct sg_budget_member out; /* out_bytes in the gateway's total */
    bool rx_paused;
    bool qmp_paused;             /* /qmp: the proxied client is busy (sg_gw_qmp_client_busy) */
    bool dead;                   /* dropped for being too slow */

    struct sg_web_rx rx;         /* the message being assembled */

    struct sg_gw_qmp_client *qmp;
    struct sg_gw_hmp_req *hmp_req;
    bool hmp_busy, hmp_done_now;
    struct sg_web_hmp_line *hmp_head, *hmp_tail;
    unsigned hmp_queued;         /* lines waiting (not the running one) */
    size_t hmp_queued_bytes;
    bool hmp_quit;
    unsigned serial_sub;
};

struct sg_web {
    struct sg_gw *gw;
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    lws_retry_bo_t idle;
    bool tls, loopback, stopping, proto_inited;
    int port;
    enum sg_hmp_style hmp_style, compat_style;
    char addr[64];
    char token[SG_WEB_TOKEN_MAX + 1];
    char docroot[PATH_MAX];
    char url[512];
    struct sg_web_conn *conns;
};

/* web_auth.c */
bool sg_web_token_make(char *out, size_t outsz, struct sg_error *err);
bool sg_web_token_load(const char *file, char *out, size_t outsz, struct sg_error *err);
bool sg_web_token_valid_syntax(const char *tok);
bool sg_web_token_equal(const char *expected, const char *given);
bool sg_web_addr_is_loopback(const char *addr);
/* 0 when the upgrade may go on, else the HTTP status to answer with. */
int sg_web_check_upgrade(struct sg_web *web, struct lws *wsi, enum sg_web_kind *kind);

/* web_http.c */
bool sg_web_find_docroot(const char *configured, char *out, size_t outsz, struct sg_error *err);
int sg_web_serve_http(struct sg_web *web, struct lws *wsi, const char *uri);
int sg_web_deny(struct lws *wsi, unsigned status, const char *why);

/* web_conn.c */
int sg_web_conn_callback(struct sg_web *web, struct sg_web_conn *c, struct lws *wsi,
                         enum lws_callback_reasons reason, void *in, size_t len);
void sg_web_conn_detach(struct sg_web_conn *c);
bool sg_web_json_depth_ok(const char *text, size_t len, int max_depth);

#endif

/* web_conn.c: one WebSocket connection (/qmp, /hmp or /serial).
 *
 * lws may only write from LWS_CALLBACK_SERVER_WRITEABLE, while the gateway
 * produces output whenever the back end speaks, so every connection has an
 * output queue; WRITEABLE sends one fragment of its head and asks for more.
 * /serial output joins the queued message that has not started going out
 * (up to SG_WEB_COALESCE), so what waited goes out as one message.
 * Input is assembled into whole messages (limit 1 MiB) before it reaches the
 * gateway, because QMP and HMP are one message per frame. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "qmp_msg.h"
#include "web_internal.h"

static void conn_enqueue(struct sg_web_conn *c, const void *data, size_t len, bool binary);

/* ---- output ------------------------------------------------------------- */

static void queue_free(struct sg_web_conn *c)
{
    while (c->out_head) {
        struct sg_web_msg *m = c->out_head;
        c->out_head = m->next;
        free(m);
    }
    c->out_tail = NULL;
    c->out_tail_link = NULL;
    c->out_bytes = 0;
    sg_budget_leave(&c->out);
}

static const char *const kind_names[] = { "?", "/qmp", "/hmp", "/serial" };

/* Over the gateway's total: this connection read least.  Its socket is not
 * writable, so no close frame could go either: dropped asynchronously. */
static void out_evict(struct sg_budget_member *m)
{
    struct sg_web_conn *c = lws_container_of(m, struct sg_web_conn, out);
    char who[64];
    snprintf(who, sizeof who, "WebSocket %s client", kind_names[c->kind]);
    if (c->web)
        sg_gw_output_evicted(c->web->gw, who, m->held);
    c->dead = true;
    queue_free(c);
    if (c->wsi)
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
}

/* A queued message of its own; a /serial one with room to grow. */
static struct sg_web_msg *msg_new(const struct sg_web_conn *c, const void *data, size_t len,
                                  bool binary)
{
    size_t cap = len;
    if (c->kind == SG_WEB_SERIAL && cap < SG_WEB_COALESCE_MIN)
        cap = SG_WEB_COALESCE_MIN;
    struct sg_web_msg *m = malloc(sizeof *m + LWS_PRE + cap);
    if (!m)
        return NULL;
    m->next = NULL;
    m->len = len;
    m->off = 0;
    m->cap = cap;
    m->binary = binary;
    if (len)
        memcpy(m->buf + LWS_PRE, data, len);
    return m;
}

/* /serial: appends to the tail if nothing of it was written yet and the sum
 * stays within SG_WEB_COALESCE.  Byte order is the queue's order either
 * way; only the message boundaries differ, and a byte stream has none.
 * False: the caller queues a message of its own (also when growing fails). */
static bool conn_append(struct sg_web_conn *c, const void *data, size_t len)
{
    struct sg_web_msg *t = c->out_tail;
    if (c->kind != SG_WEB_SERIAL || !t || t->off || !len || t->len + len > SG_WEB_COALESCE)
        return false;
    if (t->len + len > t->cap) {
        size_t cap = t->cap * 2;
        if (cap < t->len + len)
            cap = t->len + len;
        if (cap > SG_WEB_COALESCE)
            cap = SG_WEB_COALESCE;
        struct sg_web_msg *n = realloc(t, sizeof *n + LWS_PRE + cap);
        if (!n)
            return false;
        n->cap = cap;
        *c->out_tail_link = n;
        c->out_tail = t = n;
    }
    memcpy(t->buf + LWS_PRE + t->len, data, len);
    t->len += len;
    return true;
}

static void conn_enqueue(struct sg_web_conn *c, const void *data, size_t len, bool binary)
{
    if (c->dead || !c->wsi)
        return;
    if (c->out_bytes + len > SG_WEB_QUEUE_HARD) {
        /* The client stopped reading.  Its socket is not writable, so no
         * close frame could be sent either: drop it asynchronously. */
        lwsl_warn("web: client too slow (%zu bytes queued), dropping it\n", c->out_bytes);
        c->dead = true;
        queue_free(c);
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
        return;
    }
    if (!conn_append(c, data, len)) {
        struct sg_web_msg *m = msg_new(c, data, len, binary);
        if (!m) {
            c->dead = true;
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
            return;
        }
        c->out_tail_link = c->out_tail ? &c->out_tail->next : &c->out_head;
        *c->out_tail_link = m;
        c->out_tail = m;
    }
    c->out_bytes += len;
    sg_budget_set(&c->out, c->out_bytes);
    if (c->dead)
        return;   /* evicted: the total was over */
    if (!c->rx_paused && c->out_bytes > SG_WEB_QUEUE_SOFT) {
        c->rx_paused = true;
        lws_rx_flow_control(c->wsi, 0);
    }
    lws_callback_on_writable(c->wsi);
}

/* Returns -1 to close the connection. */
static int conn_write_some(struct sg_web_conn *c)
{
    struct sg_web_msg *m = c->out_head;
    if (!m)
        return 0;
    size_t n = m->len - m->off;
    if (n > SG_WEB_FRAGMENT)
        n = SG_WEB_FRAGMENT;
    bool first = m->off == 0, last = m->off + n == m->len;
    int flags = lws_write_ws_flags(m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT, first, last);
    /* Header room for later fragments is the already-sent payload before them. */
    unsigned char *p = m->buf + LWS_PRE + m->off;
    if (lws_write(c->wsi, p, n, (enum lws_write_protocol)flags) < (int)n)
        return -1;
    m->off += n;
    c->out_bytes -= n;
    if (last) {
        c->out_head = m->next;
        if (!c->out_head)
            c->out_tail = NULL;
        if (c->out_tail_link == &m->next)
            c->out_tail_link = &c->out_head;
        free(m);
    }
    /* Less than before, so nothing is evicted here; still checked. */
    sg_budget_set(&c->out, c->out_bytes);
    if (c->dead)
        return -1;
    if (c->rx_paused && c->out_bytes < SG_WEB_QUEUE_RESUME) {
        c->rx_paused = false;
        if (!c->qmp_paused)
            lws_rx_flow_control(c->wsi, 1);
    }
    if (c->out_head)
        lws_callback_on_writable(c->wsi);
    return 0;
}

/* ---- gateway callbacks -------------------------------------------------- */

static void qmp_send(void *opaque, const char *json_text, size_t len)
{
    struct sg_web_conn *c = opaque;
    conn_enqueue(c, json_text, len, false);
    /* A reply went out: the client may send again once it is not busy. */
    if (c->qmp_paused && c->qmp && !sg_gw_qmp_client_busy(c->qmp) && !c->dead) {
        c->qmp_paused = false;
        if (!c->rx_paused)
            lws_rx_flow_control(c->wsi, 1);
    }
}

static void serial_out(void *opaque, const void *bytes, size_t len)
{
    if (len)   /* a stream: nothing to say with an empty message */
        conn_enqueue(opaque, bytes, len, true);
}

static void hmp_done(void *opaque, const char *text, bool quit)
{
    struct sg_web_conn *c = opaque;
    c->hmp_req = NULL;
    c->hmp_busy = false;
    c->hmp_done_now = true;
    c->hmp_quit = quit;
    conn_enqueue(c, text ? text : "", text ? strlen(text) : 0, false);
    /* The next queued line starts from WRITEABLE, not from inside the
     * gateway's own callback. */
    if (c->wsi && !c->dead)
        lws_callback_on_writable(c->wsi);
}

static void hmp_next(struct sg_web_conn *c)
{
    while (!c->hmp_busy && c->hmp_head && c->web && !c->hmp_quit) {
        struct sg_web_hmp_line *l = c->hmp_head;
        c->hmp_head = l->next;
        if (!c->hmp_head)
            c->hmp_tail = NULL;
        c->hmp_queued--;
        c->hmp_queued_bytes -= strlen(l->text);
        c->hmp_busy = true;
        c->hmp_done_now = false;
        struct sg_gw_hmp_req *r = sg_gw_hmp_exec(c->web->gw, l->text, c->web->hmp_style,
                                                 hmp_done, NULL, c);
        free(l);
        /* `done` may already have run inside exec: then the handle is stale. */
        if (!c->hmp_done_now)
            c->hmp_req = r;
    }
}

/* Returns -1 to close the connection (queue over its bounds). */
static int hmp_queue_line(struct sg_web_conn *c, const unsigned char *text, size_t len)
{
    len = sg_web_hmp_line_len(text, len);
    if (c->hmp_queued + 1 > SG_WEB_HMP_QUEUE_LINES ||
        c->hmp_queued_bytes + len > SG_WEB_HMP_QUEUE_BYTES) {
        static const char why[] = "too many HMP lines waiting for the running one";
        lwsl_warn("web: /hmp client closed: %u lines (%zu bytes) queued\n", c->hmp_queued,
                  c->hmp_queued_bytes);
        lws_close_reason(c->wsi, LWS_CLOSE_STATUS_POLICY_VIOLATION, (unsigned char *)why,
                         sizeof why - 1);
        return -1;
    }
    struct sg_web_hmp_line *l = malloc(sizeof *l + len + 1);
    if (!l)
        return -1;
    l->next = NULL;
    memcpy(l->text, text, len);
    l->text[len] = '\0';
    if (c->hmp_tail)
        c->hmp_tail->next = l;
    else
        c->hmp_head = l;
    c->hmp_tail = l;
    c->hmp_queued++;
    c->hmp_queued_bytes += strlen(l->text);   /* what hmp_next subtracts */
    hmp_next(c);
    return 0;
}

/* ---- input -------------------------------------------------------------- */

/* jansson accepts nesting far deeper than QMP allows; reject it before
 * parsing so a hostile frame cannot make the parser recurse deeply. */
bool sg_web_json_depth_ok(const char *text, size_t len, int max_depth)
{
    int depth = 0;
    bool in_str = false, esc = false;
    for (size_t i = 0; i < len; i++) {
        char ch = text[i];
        if (in_str) {
            if (esc)
                esc = false;
            else if (ch == '\\')
                esc = true;
            else if (ch == '"')
                in_str = false;
        } else if (ch == '"') {
            in_str = true;
        } else if (ch == '{' || ch == '[') {
            if (++depth > max_depth)
                return false;
        } else if (ch == '}' || ch == ']') {
            depth--;
        }
    }
    return true;
}

/* One frame is one QMP message, handed to the gateway's proxy as it came
 * (the same code as every message of the unix endpoint's stream, limits
 * and malformed JSON included).  Returns -1 to close. */
static int qmp_message(struct sg_web_conn *c)
{
    if (c->qmp && !sg_gw_qmp_client_input(c->qmp, (const char *)c->rx.buf, c->rx.len, NULL, 0)) {
        lws_close_reason(c->wsi, LWS_CLOSE_STATUS_POLICY_VIOLATION,
                         (unsigned char *)"QMP limit exceeded", 18);
        return -1;
    }
    /* Pipelining is fine, an unbounded backlog is not: the same bounds as
     * the unix endpoint (16 unanswered, 1 MiB waiting).  Busy means a reply
     * is due, and qmp_send resumes then. */
    if (c->qmp && !c->qmp_paused && sg_gw_qmp_client_busy(c->qmp)) {
        c->qmp_paused = true;
        lws_rx_flow_control(c->wsi, 0);
    }
    return 0;
}

static int conn_receive(struct sg_web_conn *c, const void *in, size_t len)
{
    bool serial = c->kind == SG_WEB_SERIAL;
    bool last = lws_is_final_fragment(c->wsi) && !lws_remaining_packet_payload(c->wsi);
    switch (sg_web_rx_feed(&c->rx, lws_is_first_fragment(c->wsi), last,
                           lws_frame_is_binary(c->wsi), serial, in, len)) {
    case SG_WEB_RX_TOO_BIG:
        lws_close_reason(c->wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                         (unsigned char *)"message over 1 MiB", 18);
        return -1;
    case SG_WEB_RX_NOMEM:
        return -1;
    case SG_WEB_RX_MORE:
        /* A byte stream: passed on at once, only counted for the limit. */
        if (serial && c->web && len)
            sg_gw_serial_write(c->web->gw, in, len);
        return 0;
    case SG_WEB_RX_MESSAGE:
        break;
    }
    if (!c->web)
        return 0;
    if (c->kind == SG_WEB_QMP)
        return qmp_message(c);
    return hmp_queue_line(c, c->rx.buf, c->rx.len);
}

/* ---- lifetime ----------------------------------------------------------- */

/* Releases everything the connection holds in the gateway; afterwards no
 * gateway callback can reach it. */
void sg_web_conn_detach(struct sg_web_conn *c)
{
    if (c->qmp) {
        sg_gw_qmp_client_free(c->qmp);
        c->qmp = NULL;
    }
    if (c->hmp_req) {
        sg_gw_hmp_detach(c->hmp_req);
        c->hmp_req = NULL;
    }
    if (c->serial_sub && c->web) {
        sg_gw_serial_unsubscribe(c->web->gw, c->serial_sub);
        c->serial_sub = 0;
    }
    while (c->hmp_head) {
        struct sg_web_hmp_line *l = c->hmp_head;
        c->hmp_head = l->next;
        free(l);
    }
    c->hmp_tail = NULL;
    c->hmp_queued = 0;
    c->hmp_queued_bytes = 0;
    sg_budget_leave(&c->out);
    if (c->web) {
        if (c->prev)
            c->prev->next = c->next;
        else
            c->web->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        c->prev = c->next = NULL;
        c->web = NULL;
    }
}

int sg_web_conn_callback(struct sg_web *web, struct sg_web_conn *c, struct lws *wsi,
                         enum lws_callback_reasons reason, void *in, size_t len)
{
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED: {
        memset(c, 0, sizeof *c);
        const struct lws_protocols *pr = lws_get_protocol(wsi);
        if (!web || web->stopping)
            return -1;
        c->web = web;
        c->wsi = wsi;
        c->kind = (enum sg_web_kind)pr->id;
        c->next = web->conns;
        if (web->conns)
            web->conns->prev = c;
        web->conns = c;
        sg_budget_join(sg_gw_output_budget(web->gw), &c->out, NULL, out_evict);
        if (c->kind == SG_WEB_QMP) {
            c->qmp = sg_gw_qmp_client_new(web->gw, web->compat_style, qmp_send, c);
            if (!c->qmp)
                return -1;
        } else if (c->kind == SG_WEB_SERIAL) {
            c->serial_sub = sg_gw_serial_subscribe(web->gw, serial_out, c);
            if (!c->serial_sub)
                return -1;
        }
        return 0;
    }
    case LWS_CALLBACK_RECEIVE:
        if (c->dead)
            return -1;
        return conn_receive(c, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (c->dead)
            return -1;
        if (conn_write_some(c))
            return -1;
        if (!c->out_head && c->hmp_quit) {
            lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, (unsigned char *)"quit", 4);
            return -1;
        }
        if (c->kind == SG_WEB_HMP)
            hmp_next(c);
        return 0;
    case LWS_CALLBACK_CLOSED:
        sg_web_conn_detach(c);
        queue_free(c);
        sg_web_rx_free(&c->rx);
        c->wsi = NULL;
        return 0;
    default:
        return 0;
    }
}

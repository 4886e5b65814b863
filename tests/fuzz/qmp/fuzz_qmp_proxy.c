/* libFuzzer target: the lossless proxy's byte path (gateway/gw_qmp_client.c
 * and gw_backend.c do exactly this with every message).
 *
 * Input: byte 0 picks the client's id (one of every JSON type, big numbers
 * and escapes included), the rest is a stream that is cut into chunks (sizes
 * from the stream itself) and framed by the raw-mode decoder, as the
 * gateway's endpoint and back-end link frame their sockets.  Each message:
 *   - is judged by sg_qmp_top_scan; jansson accepting it implies the scan
 *     does (the scan must never refuse what QEMU would take), and a scan that
 *     refuses it must be matched by jansson refusing it;
 *   - toward the back end: the id becomes the gateway's own ("4711");
 *     toward the client: the client's id bytes go back in, or the id is
 *     removed when the client sent none;
 *   - the rewritten message is scanned again: valid, its id is exactly the
 *     bytes put in, and with the id removed from both it equals the
 *     original with its id removed: bytes delivered == bytes sent, id aside. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "qmp_stream.h"
#include "qmp_top.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const ids[] = {
    "\"str\"", "42", "-0", "18446744073709551616123", "-1.5e+300", "true", "false", "null",
    "[1, {\"a\": [2.50, \"\\u00e9\"]}]", "{\"k\": \"v\"}", "\"\\ud83d\\ude00 \\\"q\\\"\"", "[]", "{}",
};

static char *without_id(const char *buf, size_t len, size_t *out_len)
{
    struct sg_qmp_top top;
    sg_qmp_top_scan(buf, len, &top);
    return sg_qmp_top_set_id(buf, len, &top, NULL, 0, out_len);
}

static void check_rewrite(const char *msg, size_t len, const struct sg_qmp_top *top,
                          const char *id)
{
    size_t n;
    char *out = sg_qmp_top_set_id(msg, len, top, id, id ? strlen(id) : 0, &n);
    if (!out)
        return; /* out of memory only: top->object holds */
    struct sg_qmp_top t2;
    sg_qmp_top_scan(out, n, &t2);
    if (!t2.valid || !t2.object)
        abort();
    if (id) {
        const struct sg_qmp_span *sp = &t2.m[SG_TOP_ID];
        if (!sp->present || sp->len != strlen(id) || memcmp(out + sp->off, id, sp->len))
            abort();
    } else if (t2.m[SG_TOP_ID].present) {
        abort();
    }
    size_t la, lb;
    char *a = without_id(msg, len, &la), *b = without_id(out, n, &lb);
    if (a && b && (la != lb || memcmp(a, b, la)))
        abort();
    /* the other members are where they were, byte for byte */
    for (int k = 0; k < SG_TOP_NKEYS; k++) {
        if (k == SG_TOP_ID)
            continue;
        const struct sg_qmp_span *x = &top->m[k], *y = &t2.m[k];
        if (x->present != y->present || x->len != y->len ||
            (x->present && memcmp(msg + x->off, out + y->off, x->len)))
            abort();
    }
    free(a);
    free(b);
    free(out);
}

struct ctx {
    const char *client_id;
};

static bool on_span(void *opaque, const char *msg, size_t len)
{
    struct ctx *c = opaque;
    struct sg_qmp_top top;
    sg_qmp_top_scan(msg, len, &top);
    json_error_t jerr;
    json_t *j = json_loadb(msg, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    /* jansson's lexer stops at a NUL byte (it takes "0\0" for 0): no oracle there */
    if (j && !top.valid && !memchr(msg, 0, len)) {
        if (getenv("FUZZ_DEBUG"))
            fprintf(stderr, "scan refused [%.*s]\n", (int)len, msg);
        abort();
    } /* the scan refused JSON that jansson (and QEMU) accept */
    json_decref(j);
    if (!top.object)
        return true;
    check_rewrite(msg, len, &top, "4711");        /* toward the back end */
    check_rewrite(msg, len, &top, c->client_id);  /* toward the client */
    check_rewrite(msg, len, &top, NULL);          /* a client that sent no id */
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct ctx c = { ids[data[0] % (sizeof ids / sizeof ids[0])] };
    static const struct sg_qmp_decoder_ops ops = { NULL, NULL, on_span };
    struct sg_qmp_decoder *d = sg_qmp_decoder_new(&ops, &c);
    if (!d)
        return 0;
    size_t pos = 1;
    while (pos < size) {
        size_t chunk = 1 + data[pos] % 97; /* split messages many ways */
        if (chunk > size - pos)
            chunk = size - pos;
        struct sg_error err = { 0 };
        if (sg_qmp_decoder_feed(d, data + pos, chunk, &err) == SG_QMP_FEED_FATAL)
            break;
        pos += chunk;
    }
    sg_qmp_decoder_free(d);
    return 0;
}

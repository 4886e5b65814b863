/* fuzz_web: libFuzzer target for WebSocket message handling
 * (gateway/web/web_rx.c, the code web_conn.c runs for every RECEIVE): chunks
 * as lws hands them over are assembled into messages under the 1 MiB limit,
 * and each whole message is parsed as its endpoint does: /qmp with the QMP
 * library (the error reply built and printed as web_conn.c does), /hmp cut
 * into a command line, /serial only counted.
 *
 * Input: byte 0 picks the endpoint (% 3: qmp, hmp, serial); then chunks of
 *   u8 flags (bit 0 first fragment, bit 1 final fragment, bit 2 more of the
 *            frame still to come, bit 3 binary)
 *   u16 length (little-endian), u8 repeat (the chunk is fed 1 + repeat % 32
 *            times, so the 1 MiB limit is within reach)
 *   payload (clamped to what is left).
 * A TOO_BIG or NOMEM result closes the "connection"; the rest of the input
 * goes to a new one.  Invariants are checked with __builtin_trap(). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "qmp_msg.h"
#include "web_rx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_message(int kind, const struct sg_web_rx *rx)
{
    if (kind == 0) {
        struct sg_error err = {0};
        json_t *msg = NULL;
        enum sg_qmp_parse r = sg_qmp_parse_message(rx->buf, rx->len, &msg, &err);
        if (r == SG_QMP_PARSE_OK) {
            if (!msg)
                __builtin_trap();
        } else {
            json_t *e = sg_qmp_error_reply(NULL, SG_ERR_GENERIC, err.msg);
            size_t n;
            char *s = e ? sg_qmp_dumps(e, &n) : NULL;
            free(s);
            json_decref(e);
        }
        json_decref(msg);
    } else if (kind == 1) {
        size_t n = sg_web_hmp_line_len(rx->buf, rx->len);
        if (n > rx->len)
            __builtin_trap();
        char *line = malloc(n + 1);
        if (!line)
            return;
        memcpy(line, rx->buf, n);
        line[n] = 0;
        free(line);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int kind = data[0] % 3;
    size_t pos = 1;
    struct sg_web_rx rx = {0};
    size_t expect = 0;     /* bytes since the message's first chunk */
    while (pos + 4 <= size) {
        uint8_t flags = data[pos];
        size_t len = (size_t)data[pos + 1] | (size_t)data[pos + 2] << 8;
        unsigned rep = 1 + data[pos + 3] % 32;
        pos += 4;
        if (len > size - pos)
            len = size - pos;
        const uint8_t *chunk = data + pos;
        pos += len;
        for (unsigned i = 0; i < rep; i++) {
            bool first = (flags & 1) && i == 0;
            bool last = (flags & 2) && !(flags & 4) && i == rep - 1;
            if (first)
                expect = 0;
            enum sg_web_rx_status st = sg_web_rx_feed(&rx, first, last, flags & 8, kind == 2,
                                                      chunk, len);
            if (st == SG_WEB_RX_TOO_BIG || st == SG_WEB_RX_NOMEM) {
                if (st == SG_WEB_RX_TOO_BIG && expect + len <= SG_WEB_MAX_MESSAGE)
                    __builtin_trap();
                sg_web_rx_free(&rx);
                expect = 0;
                break;
            }
            expect += len;
            if (rx.len != expect || rx.len > SG_WEB_MAX_MESSAGE)
                __builtin_trap();
            if (kind != 2 && rx.len && memcmp(rx.buf + rx.len - len, chunk, len) != 0)
                __builtin_trap();
            if (st == SG_WEB_RX_MESSAGE) {
                if (kind == 2)
                    __builtin_trap();
                on_message(kind, &rx);
            }
        }
    }
    sg_web_rx_free(&rx);
    return 0;
}

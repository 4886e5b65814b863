/* web_rx.c: WebSocket message assembly (see web_rx.h).  No lws here: the
 * connection code feeds it, and so does fuzz_web. */
#include "web_rx.h"
#include "sg_grow.h"

#include <stdlib.h>
#include <string.h>

enum sg_web_rx_status sg_web_rx_feed(struct sg_web_rx *rx, bool first, bool last, bool binary,
                                     bool stream, const void *in, size_t len)
{
    if (first) {
        rx->len = 0;
        rx->binary = binary;
    }
    /* Checked before anything is copied, and written so it cannot wrap. */
    if (len > SG_WEB_MAX_MESSAGE || rx->len > SG_WEB_MAX_MESSAGE - len)
        return SG_WEB_RX_TOO_BIG;
    if (stream) {
        rx->len += len;
        return SG_WEB_RX_MORE;
    }
    if (!sg_grow(&rx->buf, &rx->cap, rx->len + len))
        return SG_WEB_RX_NOMEM;
    if (len)
        memcpy(rx->buf + rx->len, in, len);
    rx->len += len;
    return last ? SG_WEB_RX_MESSAGE : SG_WEB_RX_MORE;
}

void sg_web_rx_free(struct sg_web_rx *rx)
{
    free(rx->buf);
    rx->buf = NULL;
    rx->len = rx->cap = 0;
}

size_t sg_web_hmp_line_len(const unsigned char *text, size_t len)
{
    while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        len--;
    return len;
}

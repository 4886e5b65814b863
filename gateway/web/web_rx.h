/* web_rx.h: WebSocket input assembly, apart from any lws connection so that
 * fuzz_web (tests/fuzz/web) can drive exactly the code web_conn.c runs:
 * fragments are joined into one message, the 1 MiB limit is enforced, and
 * a finished /hmp message becomes one command line. */
#ifndef SG_WEB_RX_H
#define SG_WEB_RX_H

#include <stdbool.h>
#include <stddef.h>

/* INTERFACES.md section 5: bigger messages close the connection with 1009. */
#define SG_WEB_MAX_MESSAGE (1024u * 1024u)

struct sg_web_rx {
    unsigned char *buf;   /* the message being assembled (not for /serial) */
    size_t len, cap;
    bool binary;
};

enum sg_web_rx_status {
    SG_WEB_RX_MORE,       /* keep reading */
    SG_WEB_RX_MESSAGE,    /* buf[0..len) is one whole message */
    SG_WEB_RX_TOO_BIG,    /* over SG_WEB_MAX_MESSAGE: close with 1009 */
    SG_WEB_RX_NOMEM,      /* close */
};

/* One chunk from lws.  first: it starts a message (lws_is_first_fragment);
 * last: it ends it (final fragment, nothing of the frame remaining).
 * stream (/serial): nothing is kept, the chunk is only counted against the
 * limit and the caller passes it on at once; never returns MESSAGE. */
enum sg_web_rx_status sg_web_rx_feed(struct sg_web_rx *rx, bool first, bool last, bool binary,
                                     bool stream, const void *in, size_t len);
void sg_web_rx_free(struct sg_web_rx *rx);

/* An /hmp message as a command line: trailing CR/LF dropped.  Returns the
 * length to use (the line may still contain NULs: the HMP parser sees the
 * C string up to the first one, as from the unix HMP socket). */
size_t sg_web_hmp_line_len(const unsigned char *text, size_t len);

#endif

/* gw_options.h: the command line of snapgate (INTERFACES.md section 1.1).
 * Parsing is kept apart from main so that it can be tested alone and so that
 * every usage error carries one message naming the cause. */
#ifndef SG_GW_OPTIONS_H
#define SG_GW_OPTIONS_H

#include <stdbool.h>

#include "gw.h"
#include "sg_error.h"

/* --reconnect: default and upper bound (a day: a bounded wait, yet long
 * enough for any planned restart). */
#define SG_GW_RECONNECT_DEFAULT_S 30
#define SG_GW_RECONNECT_MAX_S 86400

enum sg_gw_parse_result {
    SG_GW_PARSE_RUN,    /* options are valid: start the gateway */
    SG_GW_PARSE_HELP,   /* --help / --version was printed: exit 0 */
    SG_GW_PARSE_ERROR,  /* usage error in err: exit 1 */
};

struct sg_gw_options {
    const char *connect_path;   /* --connect unix:PATH, or NULL: embedded VMM */
    const char **vmm_args;      /* --vmm ARGS... (NULL-terminated, points into argv) */
    int vmm_argc;
    const char *state_dir;      /* --state-dir, default ./snapgate-state */
    const char *qmp_path;       /* --qmp unix:PATH or NULL */
    int qmp_fd;                 /* --qmp fd:N (an inherited listening socket) or -1 */
    bool web;                   /* --web given */
    const char *web_addr;       /* --web [ADDR:]PORT, default 127.0.0.1 */
    int web_port;
    const char *web_cert;
    const char *web_key;
    const char *web_token_file;
    bool web_insecure;
    bool no_monitor;
    bool serial_to_terminal;    /* --serial-to-terminal: guest console above the prompt */
    enum sg_hmp_style hmp_style;     /* --hmp-profile, default snapgate */
    enum sg_hmp_style compat_style;  /* --compat-profile, default qemu-7.2 */
    const char *vmstate_node;   /* --vmstate-node or NULL */
    /* --reconnect SECONDS: how long a lost --connect back end is waited
     * for (0: the gateway exits 2 at once). */
    unsigned reconnect_s;
    char web_addr_buf[256];
};

/* Fills `o` from argv.  `o` may point into argv afterwards (no copies). */
enum sg_gw_parse_result sg_gw_options_parse(struct sg_gw_options *o, int argc, char **argv,
                                            struct sg_error *err);
/* True when --qmp was given in either form. */
static inline bool sg_gw_options_has_qmp(const struct sg_gw_options *o)
{
    return o->qmp_path || o->qmp_fd >= 0;
}
/* The --help text. */
const char *sg_gw_usage(void);

#endif

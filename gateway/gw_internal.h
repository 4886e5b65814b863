/* gw_internal.h: the gateway's own state, shared by its files (not by front
 * ends outside gateway/, which only see gw.h). */
#ifndef SG_GW_INTERNAL_H
#define SG_GW_INTERNAL_H

#include <stdbool.h>
#include <sys/types.h>

#include <jansson.h>

#include "gw.h"
#include "gw_current.h"
#include "gw_loop.h"
#include "gw_options.h"
#include "sg_budget.h"

struct sg_hmp;
struct gw_backend;
struct gw_vmm;
struct gw_monitor;
struct gw_qmp_endpoint;
struct sg_gw_hmp_req;

/* Exit codes of INTERFACES.md 1.1. */
enum { SG_GW_EXIT_OK = 0, SG_GW_EXIT_USAGE = 1, SG_GW_EXIT_BACKEND_DIED = 2 };

struct gw_serial_sub {
    unsigned id;
    sg_gw_serial_fn fn;
    void *opaque;
    bool replay_pending;   /* the backlog is still to be sent to it */
};

/* Recent guest output, replayed to a new subscriber (a web console opened
 * after boot still shows the last screenful). */
#define GW_SERIAL_BACKLOG 16384

/* Text printed for people (events, back-end messages) goes through one sink
 * so that the interactive monitor can put it above the prompt. */
typedef void (*gw_print_fn)(void *opaque, const char *text);

struct sg_gw {
    const struct sg_gw_options *opt;
    struct sg_gw_loop *loop;
    struct gw_backend *be;
    struct sg_hmp *hmp;
    struct gw_vmm *vmm;            /* embedded VMM or NULL with --connect */
    struct gw_monitor *mon;
    struct gw_qmp_endpoint *qmp_ep;
    void *web;                     /* struct sg_web * when built with the web server */
    /* Output queued for all front-end clients (sg_gw_output_budget). */
    struct sg_budget out_budget;

    json_t *backend_version;       /* "version" object of the back end's greeting */
    bool backend_is_vmm;           /* snapgate-vmm (vs. QEMU) */

    /* front-end QMP clients, for event fan-out */
    struct sg_gw_qmp_client **clients;
    size_t n_clients, cap_clients;
    /* Forwarded commands at the back end, and the clients whose commands
     * wait for room there, taken in turn (gw_qmp_client.c): fairness. */
    unsigned fwd_outstanding;
    size_t fwd_unsent_bytes;       /* bytes of all clients' waiting commands */
    bool fwd_dispatching;
    struct sg_gw_qmp_client *turn_head, *turn_tail;
    /* job ids started by clients that went away: dismissed when concluded */
    json_t *orphan_jobs;           /* object: job id -> true */

    struct gw_serial_sub *serial_subs;
    size_t n_serial_subs;
    unsigned next_serial_id;
    char serial_backlog[GW_SERIAL_BACKLOG];  /* ring buffer */
    size_t backlog_len, backlog_head;        /* bytes held; next write position */
    struct sg_gw_timer replay_timer;

    struct sg_gw_timer tick;       /* drives sg_hmp_tick while HMP is busy */
    struct sg_gw_timer quit_timer; /* exit even if the back end ignores quit */
    bool tick_armed;
    /* HMP lines being executed (any front end): ended by the gateway when
     * the back end is lost, since a job they wait for will not report. */
    struct sg_gw_hmp_req *hmp_reqs;
    bool hmp_abort_pending;         /* end them when the link fails its commands */
    unsigned hmp_generation;        /* HMP engines made so far (one per connection) */

    char serial_line[1024];        /* --serial-to-terminal: line being assembled */
    size_t serial_line_len;
    bool serial_raw;               /* the terminal is on the guest console: bytes as they come */
    bool serial_mid_line;          /* ...and the last one shown did not end a line */

    struct gw_current current;     /* last snapshot saved/loaded (gw_current.c) */

    gw_print_fn print;
    void *print_opaque;

    bool leave_when_idle;          /* a signal asked to leave once HMP is idle */
    bool quit_sent;                /* a "quit" went to the back end: its EOF is expected */
    char shutdown_reason[64];      /* reason of the last SHUTDOWN event, "" if none */
    bool exiting;
    int exit_code;
};

/* Prints a message for people (above the prompt if the monitor runs). */
void gw_print(struct sg_gw *gw, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Ends the loop with this exit code (the first call wins). */
void gw_exit(struct sg_gw *gw, int code);

/* ---- back-end link (gw_backend.c) ---- */
typedef void (*gw_reply_fn)(void *opaque, json_t *reply);
/* Takes over the connected QMP socket `fd`, reads the greeting and
 * negotiates (running the loop until done). */
bool gw_backend_start(struct sg_gw *gw, int fd, struct sg_error *err);
/* Sends {"execute", "arguments"} (reference stolen); `cb` gets the reply
 * without id, NULL when the connection was lost after the command was
 * written, or a GenericError "back end not connected (...)" when there was
 * no connection to write it to.  Never calls `cb` before returning. */
void gw_backend_send(struct sg_gw *gw, json_t *cmd, gw_reply_fn cb, void *opaque);
/* A forwarded command's reply: the back end's bytes (its id still in them)
 * with their scan, or `msg` NULL and `why` saying why there is none (link
 * lost after the command was written, not connected, a reply that is not
 * JSON).  Called once, never from inside gw_backend_forward. */
struct sg_qmp_top;
typedef void (*gw_raw_reply_fn)(void *opaque, const char *msg, size_t len,
                                const struct sg_qmp_top *top, const char *why);
/* Sends a client's command as it came (`top` is its scan; only the id is
 * replaced by the link's own), with descriptors passed along with it
 * (owned: closed once sent). */
void gw_backend_forward(struct sg_gw *gw, const char *msg, size_t len,
                        const struct sg_qmp_top *top, int *fds, size_t nfds, gw_raw_reply_fn cb,
                        void *opaque);
/* Bytes queued toward the back end (front ends stop reading above a bound). */
size_t gw_backend_backlog(const struct sg_gw *gw);
/* The back end's queue drained (gw_qmp_endpoint.c resumes its clients). */
void gw_on_backend_drained(struct sg_gw *gw);
void gw_backend_free(struct sg_gw *gw);
bool gw_backend_alive(const struct sg_gw *gw);
/* Why the link died ("" while it lives). */
const char *gw_backend_why(const struct sg_gw *gw);
/* Event from the back end: fans its bytes out to front-end clients and the
 * decoded event (NULL when jansson cannot hold it) to the gateway's own
 * users (gw_core.c). */
void gw_on_backend_event(struct sg_gw *gw, json_t *event, const char *bytes, size_t len);
/* The back end closed the link (gw_core.c): decides between leaving and
 * gw_backend_reconnect. */
void gw_on_backend_lost(struct sg_gw *gw, const char *why);
/* With --connect: tries the socket path again, with growing pauses, for up
 * to `seconds`; then either gw_on_backend_reconnected (greeting and
 * negotiation done) or gw_on_backend_reconnect_failed is called. */
void gw_backend_reconnect(struct sg_gw *gw, unsigned seconds);
void gw_on_backend_reconnected(struct sg_gw *gw, unsigned attempts);
void gw_on_backend_reconnect_failed(struct sg_gw *gw, const char *why, const char *last_attempt);
/* Ends the HMP lines of a lost connection (from the loop, before the link
 * fails its pending commands, so every line gets the same message). */
void gw_lost_abort(struct sg_gw *gw);

/* ---- embedded VMM (gw_vmm.c) ---- */
/* Creates the state dir and disk, starts snapgate-vmm, waits for its QMP
 * socket and returns it connected in *qmp_fd. */
struct gw_vmm *gw_vmm_start(struct sg_gw *gw, int *qmp_fd, struct sg_error *err);
/* Stops the VMM (if it still runs) and frees. */
void gw_vmm_stop(struct gw_vmm *v);
/* Reaps the child if it exited; fills a description of how it ended. */
bool gw_vmm_exited(struct gw_vmm *v, char *how, size_t len, int wait_ms);
void gw_vmm_serial_write(struct gw_vmm *v, const void *buf, size_t len);

/* ---- front ends ---- */
struct gw_monitor *gw_monitor_start(struct sg_gw *gw, struct sg_error *err);
void gw_monitor_free(struct gw_monitor *m);
/* The monitor's printer: puts text above the prompt. */
void gw_monitor_print(void *opaque, const char *text);
/* Ctrl-C (from the signalfd): cancels the running job or clears the line;
 * false when there was nothing to do (no terminal, idle). */
bool gw_monitor_interrupt(struct gw_monitor *m);

/* Serves QMP on a new socket at `path`, or (path NULL) on the inherited
 * listening socket `fd`, which is never unlinked by the gateway. */
struct gw_qmp_endpoint *gw_qmp_endpoint_start(struct sg_gw *gw, const char *path, int fd,
                                              struct sg_error *err);
void gw_qmp_endpoint_free(struct gw_qmp_endpoint *ep);

/* Called when the HMP engine got work, to keep the progress tick running. */
void gw_hmp_kick(struct sg_gw *gw);
bool gw_hmp_init(struct sg_gw *gw, struct sg_error *err);
/* Ends every running HMP line now with `text` as its output (the back end
 * that should finish it is gone). */
void gw_hmp_abort_all(struct sg_gw *gw, const char *text);
/* A new back-end connection: a fresh engine (options follow the new back
 * end's kind; job ids do not repeat those of the previous connection). */
bool gw_hmp_renew(struct sg_gw *gw, struct sg_error *err);
/* Quits the back end, then the gateway (exit 0). */
void gw_quit(struct sg_gw *gw);
/* gw_loadvm.c: --loadvm NAME on the stopped back end (and --cont); false with `err` set
 * after quitting the back end when the engine refuses or the load fails. */
bool gw_loadvm_run(struct sg_gw *gw, struct sg_error *err);

/* Event fan-out to every negotiated front-end QMP client (gw_qmp_client.c),
 * and dismissal of jobs whose client went away. */
void gw_qmp_clients_event(struct sg_gw *gw, json_t *event, const char *bytes, size_t len);
/* After a reconnection: dismisses departed clients' jobs that concluded
 * meanwhile (when the back end is the same process). */
void gw_qmp_clients_reconnected(struct sg_gw *gw);
void gw_qmp_clients_free_all(struct sg_gw *gw);
/* All clients' commands waiting for their turn passed their bound (32 MiB):
 * the --qmp endpoint reads no client until gw_on_backend_drained. */
bool gw_qmp_clients_queue_full(const struct sg_gw *gw);

/* Serial bytes from the VMM (gw_core.c). */
void gw_serial_input(struct sg_gw *gw, const void *buf, size_t len);
/* Timer callback of gw->replay_timer (opaque: the gateway). */
void gw_serial_replay(void *opaque);
/* --serial-to-terminal: `raw` when the terminal is attached to the guest
 * console (the monitor's Ctrl-A c): guest bytes go out as they come, the
 * line assembled so far first (a shell prompt is seen at once); back to the
 * monitor, a line the guest left open is ended so the prompt starts on its
 * own line. */
void gw_serial_terminal_raw(struct sg_gw *gw, bool raw);
/* On the guest console: ends the guest's open line before other text. */
void gw_serial_terminal_break(struct sg_gw *gw);

#endif

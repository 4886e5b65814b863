/* gw_monitor.c: the interactive monitor on the terminal.
 *
 * On a tty: GNU readline in callback mode, fed from the lws loop, prompt
 * "(snapgate) ", history in ~/.snapgate_history, Tab completion from the HMP
 * engine.  While a line runs, readline is uninstalled (the terminal is back
 * in cooked mode, so typing ahead still works and Ctrl-C still raises
 * SIGINT) and the line shows a progress bar instead of the prompt.  Text
 * that arrives meanwhile (events, VMM messages, the guest console) is put
 * above the prompt or the bar, never into the line being typed.
 *
 * Without a tty (a pipe or file on stdin) the same lines run without prompt
 * or readline, one after another, which is what scripts want. */
#include "gw_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "sg_hmp.h"

#define GW_PROMPT "(snapgate) "
#define GW_HISTORY_LINES 1000

struct gw_monitor {
    struct sg_gw *gw;
    struct sg_gw_fd *in;
    bool tty;
    bool rl_installed;
    bool busy;                  /* a line is running */
    bool eof;                   /* end of input seen: leave once idle */
    struct sg_gw_hmp_req *req;
    char bar[160];              /* progress bar being shown while busy ("" = none) */
    char history_path[1024];
    /* lines typed ahead while busy (cooked mode), and a partial one */
    char **queue;
    size_t nqueue;
    char partial[4096];
    size_t partial_len;
    char **completions;         /* candidates of the completion in progress */
    size_t completion_idx;
};

/* readline's callbacks carry no context pointer; the one monitor of the
 * process is reached through this (set while readline is in use). */
static struct gw_monitor *rl_monitor;

static void run_line(struct gw_monitor *m, const char *line);
static void idle(struct gw_monitor *m);
static void rl_line(char *line);

static void out(const char *s)
{
    fputs(s, stdout);
    fflush(stdout);
}

static void install_readline(struct gw_monitor *m)
{
    if (m->rl_installed || !m->tty)
        return;
    m->rl_installed = true;
    rl_callback_handler_install(GW_PROMPT, rl_line);
}

static void remove_readline(struct gw_monitor *m)
{
    if (!m->rl_installed)
        return;
    m->rl_installed = false;
    rl_callback_handler_remove();
}

void gw_monitor_print(void *opaque, const char *text)
{
    struct gw_monitor *m = opaque;
    if (m->rl_installed) {
        rl_clear_visible_line();
        out(text);
        rl_forced_update_display();
    } else if (m->tty && m->bar[0]) {
        out("\r\033[K");
        out(text);
        out(m->bar);
    } else {
        out(text);
    }
}

static void show_bar(struct gw_monitor *m)
{
    if (!m->tty)
        return;
    out("\r\033[K");
    out(m->bar);
}

static void on_progress(void *opaque, const char *job_id, unsigned long long done,
                        unsigned long long total)
{
    struct gw_monitor *m = opaque;
    enum { WIDTH = 20 };
    unsigned pct = total ? (unsigned)(done * 100 / total) : 0;
    if (pct > 100)
        pct = 100;
    char fill[WIDTH + 1];
    unsigned n = pct * WIDTH / 100;
    memset(fill, '#', n);
    memset(fill + n, ' ', WIDTH - n);
    fill[WIDTH] = '\0';
    snprintf(m->bar, sizeof m->bar, "%s [%s] %3u%% %.1f/%.1f MiB, Ctrl-C cancels", job_id,
             fill, pct, (double)done / 1048576.0, (double)total / 1048576.0);
    /* A bar that wraps could not be erased with "\r\033[K": cut it to the
     * terminal's width. */
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 &&
        strlen(m->bar) >= ws.ws_col)
        m->bar[ws.ws_col - 1] = '\0';
    show_bar(m);
}

static void on_done(void *opaque, const char *text, bool quit)
{
    struct gw_monitor *m = opaque;
    m->req = NULL;
    m->busy = false;
    if (m->tty && m->bar[0])
        out("\r\033[K");
    m->bar[0] = '\0';
    /* The qemu-7.2 profile ends lines with "\r\n"; the tty adds its own \r. */
    for (const char *p = text ? text : ""; *p; p++)
        if (!(p[0] == '\r' && p[1] == '\n'))
            putchar(*p);
    fflush(stdout);
    if (quit) {
        m->eof = false; /* the gateway is leaving; nothing more to run */
        return;
    }
    idle(m);
}

static void run_line(struct gw_monitor *m, const char *line)
{
    const char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p) {
        idle(m);
        return;
    }
    if (m->tty) {
        add_history(line);
        if (m->history_path[0])
            append_history(1, m->history_path);
    }
    m->busy = true;
    m->bar[0] = '\0';
    m->req = sg_gw_hmp_exec(m->gw, line, m->gw->opt->hmp_style, on_done, on_progress, m);
}

/* Runs the next typed-ahead line, or gives the prompt back. */
static void idle(struct gw_monitor *m)
{
    while (!m->busy && m->nqueue) {
        char *line = m->queue[0];
        memmove(m->queue, m->queue + 1, (m->nqueue - 1) * sizeof *m->queue);
        m->nqueue--;
        if (m->tty) {
            out(GW_PROMPT);
            out(line);
            out("\n");
        }
        run_line(m, line);
        free(line);
    }
    if (m->busy || m->gw->exiting)
        return;
    if (m->eof) {
        m->eof = false;
        /* End of input: the embedded VMM is ours and goes with us; a back
         * end we attached to keeps running. */
        if (m->gw->vmm)
            gw_quit(m->gw);
        else
            gw_exit(m->gw, SG_GW_EXIT_OK);
        return;
    }
    install_readline(m);
}

static void rl_line(char *line)
{
    struct gw_monitor *m = rl_monitor;
    remove_readline(m);
    if (!line) {
        out("\n");
        m->eof = true;
        idle(m);
        return;
    }
    run_line(m, line);
    free(line);
}

static void queue_line(struct gw_monitor *m, const char *line)
{
    char **q = realloc(m->queue, (m->nqueue + 1) * sizeof *q);
    char *copy = strdup(line);
    if (!q || !copy) {
        free(copy);
        if (q)
            m->queue = q;
        return;
    }
    m->queue = q;
    m->queue[m->nqueue++] = copy;
}

/* Cooked-mode input (busy on a tty, or no tty at all): whole lines. */
static bool read_lines(struct gw_monitor *m, int fd)
{
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (n <= 0) {
        if (m->partial_len) {
            m->partial[m->partial_len] = '\0';
            queue_line(m, m->partial);
            m->partial_len = 0;
        }
        m->eof = true;
        idle(m);
        return false;
    }
    for (ssize_t i = 0; i < n; i++) {
        char c = buf[i];
        if (c == '\n' || m->partial_len == sizeof m->partial - 1) {
            m->partial[m->partial_len] = '\0';
            queue_line(m, m->partial);
            m->partial_len = 0;
            if (c == '\n')
                continue;
        }
        m->partial[m->partial_len++] = c;
    }
    idle(m);
    return true;
}

static bool stdin_readable(void *opaque, struct sg_gw_fd *f)
{
    struct gw_monitor *m = opaque;
    if (m->rl_installed) {
        rl_callback_read_char();
        return true;
    }
    return read_lines(m, sg_gw_fd_fd(f));
}

static void stdin_closed(void *opaque, struct sg_gw_fd *f)
{
    struct gw_monitor *m = opaque;
    m->in = NULL;
    /* lws closes a pipe on POLLHUP without handing us the EOF read. */
    if (!m->eof && !m->gw->exiting) {
        if (m->rl_installed) {
            remove_readline(m);
            out("\n");
        }
        m->eof = true;
        idle(m);
    }
}

static const struct sg_gw_fd_ops stdin_ops = { stdin_readable, NULL, stdin_closed };

bool gw_monitor_interrupt(struct gw_monitor *m)
{
    if (m->busy) {
        if (m->req) {
            gw_monitor_print(m, "^C: cancelling the running job\n");
            sg_gw_hmp_cancel(m->req);
        }
        return true;
    }
    if (m->rl_installed) {
        /* Like a shell: drop the line being typed, fresh prompt. */
        rl_replace_line("", 0);
        out("^C\n");
        rl_on_new_line();
        rl_redisplay();
        return true;
    }
    return false; /* no terminal and nothing running: the caller ends */
}

static char *completion_generator(const char *text, int state)
{
    struct gw_monitor *m = rl_monitor;
    (void)text;
    if (!m->completions || !m->completions[m->completion_idx])
        return NULL;
    return strdup(m->completions[m->completion_idx++]);
}

static char **complete(const char *text, int start, int end)
{
    struct gw_monitor *m = rl_monitor;
    (void)end;
    rl_attempted_completion_over = 1; /* never fall back to file names */
    m->completions = sg_hmp_complete(m->gw->hmp, rl_line_buffer, (size_t)start, text);
    m->completion_idx = 0;
    char **matches = m->completions ? rl_completion_matches(text, completion_generator) : NULL;
    sg_hmp_strv_free(m->completions);
    m->completions = NULL;
    return matches;
}

struct gw_monitor *gw_monitor_start(struct sg_gw *gw, struct sg_error *err)
{
    struct gw_monitor *m = calloc(1, sizeof *m);
    if (!m) {
        sg_error_set(err, "out of memory");
        return NULL;
    }
    m->gw = gw;
    m->tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    /* A duplicate keeps fd 0 itself out of lws' hands. */
    int fd = dup(STDIN_FILENO);
    if (fd < 0) {
        sg_error_set_errno(err, errno, "stdin");
        free(m);
        return NULL;
    }
    m->in = sg_gw_fd_adopt_blocking(gw->loop, fd, &stdin_ops, m, err);
    if (!m->in) {
        close(fd);
        free(m);
        return NULL;
    }
    if (m->tty) {
        rl_monitor = m;
        rl_readline_name = "snapgate";
        rl_catch_signals = 0;   /* SIGINT comes through the loop's signalfd */
        rl_catch_sigwinch = 1;
        rl_attempted_completion_function = complete;
        rl_basic_word_break_characters = " \t";
        const char *home = getenv("HOME");
        if (home && *home) {
            snprintf(m->history_path, sizeof m->history_path, "%s/.snapgate_history", home);
            using_history();
            stifle_history(GW_HISTORY_LINES);
            if (read_history(m->history_path) != 0)
                write_history(m->history_path); /* append_history needs the file */
        }
        /* Like QEMU's monitor banner, plus what we are talking to. */
        const json_t *q = json_object_get(gw->backend_version, "qemu");
        printf("snapgate %s monitor (back end: %s %lld.%lld.%lld) - type 'help' for more "
               "information\n", SNAPGATE_VERSION, sg_gw_backend_kind(gw),
               (long long)json_integer_value(json_object_get(q, "major")),
               (long long)json_integer_value(json_object_get(q, "minor")),
               (long long)json_integer_value(json_object_get(q, "micro")));
        fflush(stdout);
        install_readline(m);
    }
    gw->mon = m;
    gw->print = gw_monitor_print;
    gw->print_opaque = m;
    return m;
}

void gw_monitor_free(struct gw_monitor *m)
{
    if (!m)
        return;
    if (m->req)
        sg_gw_hmp_detach(m->req);
    if (m->tty) {
        remove_readline(m);
        if (m->history_path[0])
            history_truncate_file(m->history_path, GW_HISTORY_LINES);
        rl_monitor = NULL;
    }
    if (m->in)
        sg_gw_fd_detach(m->in);
    for (size_t i = 0; i < m->nqueue; i++)
        free(m->queue[i]);
    free(m->queue);
    if (m->gw->mon == m) {
        m->gw->mon = NULL;
        m->gw->print = NULL;
    }
    free(m);
}

/* gw_monitor.c: the interactive monitor on the terminal.
 *
 * On a tty: GNU readline in callback mode, fed from the lws loop, prompt
 * "(snapgate) ", history in ~/.snapgate_history, Tab completion from the HMP
 * engine (a snapshot name with spaces completes without typing its quote).
 * While a line runs, readline is uninstalled and the terminal is put in
 * non-canonical mode without echo (Ctrl-C still raises SIGINT): what is
 * typed ahead is collected here and shown after the progress bar
 * ("... | > info sta"), so the tty's echo never glues it onto the bar;
 * whole lines are queued and run after the current one, and an unfinished
 * one is handed to readline at the next prompt.  Ctrl-C and a failed
 * command drop the queued lines and say which (a `delvm` typed behind a
 * `loadvm` that failed must not run).  Text that arrives meanwhile
 * (events, VMM messages, the guest console) is put above the prompt or the
 * bar, never into the line being typed.
 *
 * With --serial-to-terminal on a tty the terminal is shared with the guest's
 * serial console as QEMU's "-serial mon:stdio" shares it: it is attached to
 * either the guest console (keys go to the guest's UART through the same
 * path as the web console's /serial input, guest output byte for byte) or
 * the monitor (guest output above the prompt, a line at a time).  Ctrl-A c
 * switches, Ctrl-A x quits, Ctrl-A h lists the keys, Ctrl-A Ctrl-A sends one
 * Ctrl-A.  It starts on the guest console when the guest is a Linux kernel
 * (-kernel among the --vmm arguments: a shell wants the keyboard), on the
 * monitor otherwise.  All keys go through one reader here, which hands
 * readline its bytes (rl_getc_function), so Ctrl-A is seen in every state.
 *
 * Without a tty (a pipe or file on stdin) the same lines run without prompt
 * or readline, one after another, which is what scripts want. */
#include "gw_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "sg_hmp.h"

#define GW_PROMPT "(snapgate) "
#define GW_HISTORY_LINES 1000
#define CTRL_A 0x01

static const char mux_help[] =
    "C-a h    print this help\n"
    "C-a x    exit snapgate (the VM ends, as with the monitor's quit)\n"
    "C-a c    switch between the guest's serial console and the monitor\n"
    "C-a C-a  sends C-a\n";

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
    int esc;                    /* 0, or 1/2 inside an escape sequence (arrow keys) */
    bool raw;                   /* the tty is in the busy mode below */
    bool serial_tio;            /* the tty is in the guest console's raw mode */
    struct termios saved_tio;   /* its settings before either */
    bool mux;                   /* Ctrl-A keys: --serial-to-terminal on a tty */
    bool ctrl_a;                /* Ctrl-A typed: the next key is a mux command */
    bool on_serial;             /* the terminal is attached to the guest console */
    const unsigned char *keys;  /* bytes being handed to readline (key_getc) */
    size_t nkeys;
    char **completions;         /* candidates of the completion in progress */
    size_t completion_idx;
};

/* readline's callbacks carry no context pointer; the one monitor of the
 * process is reached through this (set while readline is in use). */
static struct gw_monitor *rl_monitor;

static void run_line(struct gw_monitor *m, const char *line);
static void idle(struct gw_monitor *m);
static void rl_line(char *line);
static void show_bar(struct gw_monitor *m);

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
    if (m->on_serial) {
        /* On a line of its own, not glued to the guest's prompt. */
        gw_serial_terminal_break(m->gw);
        out(text);
    } else if (m->rl_installed) {
        rl_clear_visible_line();
        out(text);
        rl_forced_update_display();
    } else if (m->raw) {
        out("\r\033[K");
        out(text);
        show_bar(m);
    } else {
        out(text);
    }
}

/* The bar line: the progress bar, the number of queued lines and the line
 * being typed ahead, cut to the terminal's width (a line that wraps could
 * not be erased with "\r\033[K"); the typed text keeps its end. */
static void show_bar(struct gw_monitor *m)
{
    if (!m->raw)
        return;
    char line[sizeof m->bar + 64 + sizeof m->partial];
    /* The hint makes room for what is typed ahead. */
    int n = snprintf(line, sizeof line, "%s%s", m->bar,
                     m->bar[0] && !m->nqueue && !m->partial_len ? ", Ctrl-C cancels" : "");
    if (m->nqueue)
        n += snprintf(line + n, sizeof line - (size_t)n, "%s%zu queued", n ? " | " : "",
                      m->nqueue);
    size_t width = 80;
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1)
        width = ws.ws_col;
    if (m->partial_len) {
        n += snprintf(line + n, sizeof line - (size_t)n, "%s> ", n ? " | " : "");
        size_t room = (size_t)n + 1 < width ? width - 1 - (size_t)n : 0;
        size_t from = m->partial_len > room ? m->partial_len - room : 0;
        while (from < m->partial_len && ((unsigned char)m->partial[from] & 0xc0) == 0x80)
            from++;   /* never start inside a UTF-8 character */
        snprintf(line + n, sizeof line - (size_t)n, "%.*s", (int)(m->partial_len - from),
                 m->partial + from);
    }
    size_t len = strlen(line);
    if (len >= width) {
        len = width - 1;
        while (len && ((unsigned char)line[len] & 0xc0) == 0x80)
            len--;
        line[len] = '\0';
    }
    out("\r\033[K");
    out(line);
}

/* Puts the tty in one of our two modes, from its settings before (kept).
 * Busy (a line runs): no echo, no line editing by the tty (we show what is
 * typed ahead after the bar), signals still on for Ctrl-C.  Guest console:
 * raw as QEMU's stdio back end makes it, every key for the guest (Ctrl-C,
 * Ctrl-Z, Ctrl-S, Enter as CR) but output still post-processed. */
static void tio_enter(struct gw_monitor *m, bool serial)
{
    if (!m->tty || m->raw || m->serial_tio || tcgetattr(STDIN_FILENO, &m->saved_tio) != 0)
        return;
    struct termios t = m->saved_tio;
    t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
    if (serial) {
        t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
        t.c_oflag |= OPOST;
        t.c_lflag &= ~(tcflag_t)(ECHONL | IEXTEN | ISIG);
        t.c_cflag = (t.c_cflag & ~(tcflag_t)(CSIZE | PARENB)) | CS8;
    }
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    if (tcsetattr(STDIN_FILENO, TCSANOW, &t) != 0)
        return;
    m->raw = !serial;
    m->serial_tio = serial;
}

static void tio_leave(struct gw_monitor *m)
{
    if (!m->raw && !m->serial_tio)
        return;
    tcsetattr(STDIN_FILENO, TCSANOW, &m->saved_tio);
    m->raw = m->serial_tio = false;
}

/* Busy mode; not on the guest console, whose mode stays while a line runs. */
static void enter_raw(struct gw_monitor *m)
{
    tio_enter(m, false);
}

static void leave_raw(struct gw_monitor *m)
{
    if (!m->raw)
        return;
    out("\r\033[K");
    tio_leave(m);
}

/* Drops the queued lines after Ctrl-C or a failure, naming them. */
static void drop_queue(struct gw_monitor *m, const char *why)
{
    if (!m->nqueue)
        return;
    char msg[2048];
    size_t n = 0;
    int w = snprintf(msg, sizeof msg, "(%s: dropped %zu typed-ahead line%s:", why, m->nqueue,
                     m->nqueue == 1 ? "" : "s");
    n = w > 0 ? (size_t)w : 0;
    for (size_t i = 0; i < m->nqueue; i++) {
        if (n < sizeof msg) {
            w = snprintf(msg + n, sizeof msg - n, "%s '%s'", i ? "," : "", m->queue[i]);
            n += w > 0 ? (size_t)w : 0;
        }
        free(m->queue[i]);
    }
    m->nqueue = 0;
    if (n > sizeof msg - 8)
        n = sizeof msg - 8;   /* cut: "...)" ends it */
    snprintf(msg + n, sizeof msg - n, "%s)\n", n == sizeof msg - 8 ? "..." : "");
    gw_monitor_print(m, msg);
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
    snprintf(m->bar, sizeof m->bar, "%s [%s] %3u%% %.1f/%.1f MiB", job_id, fill, pct,
             (double)done / 1048576.0, (double)total / 1048576.0);
    show_bar(m);
}

static void on_done(void *opaque, const char *text, bool quit)
{
    struct gw_monitor *m = opaque;
    m->req = NULL;
    m->busy = false;
    bool failed = sg_gw_hmp_done_failed(m->gw) || (text && strncmp(text, "Error:", 6) == 0);
    if (m->raw)
        out("\r\033[K");
    if (m->on_serial)
        gw_serial_terminal_break(m->gw);
    m->bar[0] = '\0';
    /* The qemu-7.2 profile ends lines with "\r\n"; the tty adds its own \r. */
    for (const char *p = text ? text : ""; *p; p++)
        if (!(p[0] == '\r' && p[1] == '\n'))
            putchar(*p);
    fflush(stdout);
    if (quit) {
        m->eof = false; /* the gateway is leaving; nothing more to run */
        leave_raw(m);
        return;
    }
    /* Scripts on a pipe go on after an error, as with QEMU; what a person
     * typed ahead assumed the command would work. */
    if (failed && m->tty)
        drop_queue(m, "the command failed");
    idle(m);
}

static void on_note(void *opaque, const char *text)
{
    gw_monitor_print(opaque, text);
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
    enter_raw(m);
    struct sg_gw_hmp_req *r =
        sg_gw_hmp_exec(m->gw, line, m->gw->opt->hmp_style, on_done, on_progress, m);
    if (m->busy) {
        m->req = r;
        sg_gw_hmp_set_note(r, on_note);
    }
}

/* Runs the next typed-ahead line, or gives the prompt back. */
static void idle(struct gw_monitor *m)
{
    if (m->gw->quit_sent)
        return;   /* leaving: nothing more runs, no prompt again */
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
    leave_raw(m);
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
    if (m->on_serial)
        return;   /* the prompt comes back with Ctrl-A c */
    install_readline(m);
    if (m->rl_installed && m->partial_len) {
        /* What was being typed ahead goes on at the prompt. */
        m->partial[m->partial_len] = '\0';
        rl_insert_text(m->partial);
        m->partial_len = 0;
        rl_redisplay();
    }
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

/* Busy on a tty: one key at a time (see enter_raw). */
static void raw_key(struct gw_monitor *m, unsigned char c)
{
    if (m->esc) {
        /* ESC [ ... final byte (0x40-0x7e), or ESC O x: arrows and the like
         * have no meaning while a line runs. */
        if (m->esc == 1 && (c == '[' || c == 'O'))
            m->esc = 2;
        else if (m->esc == 1 || (c >= 0x40 && c <= 0x7e))
            m->esc = 0;
        return;
    }
    switch (c) {
    case '\r':
    case '\n':
        m->partial[m->partial_len] = '\0';
        queue_line(m, m->partial);
        m->partial_len = 0;
        return;
    case 0x7f:
    case '\b':
        while (m->partial_len && ((unsigned char)m->partial[m->partial_len - 1] & 0xc0) == 0x80)
            m->partial_len--;
        if (m->partial_len)
            m->partial_len--;
        return;
    case 0x15:   /* Ctrl-U */
        m->partial_len = 0;
        return;
    case 0x04:   /* Ctrl-D on an empty line: leave once the queue is done */
        if (!m->partial_len)
            m->eof = true;
        return;
    case 0x1b:
        m->esc = 1;
        return;
    default:
        if (c < 0x20 && c != '\t')
            return;
        if (m->partial_len < sizeof m->partial - 1)
            m->partial[m->partial_len++] = (char)c;
    }
}

/* readline reads its keys from here (rl_getc_function): the bytes the
 * reader below gives it.  Should readline want one more than it was given
 * (it does not in callback mode), it waits on the terminal itself. */
static int key_getc(FILE *f)
{
    struct gw_monitor *m = rl_monitor;
    if (m && m->nkeys) {
        m->nkeys--;
        return *m->keys++;
    }
    return rl_getc(f);
}

static int key_available(void)
{
    return rl_monitor && rl_monitor->nkeys > 0;
}

/* Keys for the monitor: readline's at the prompt, typed ahead while a line
 * runs (a line ended with Enter may start one: what follows is typed
 * ahead). */
static void monitor_keys(struct gw_monitor *m, const unsigned char *b, size_t len)
{
    m->keys = b;
    m->nkeys = len;
    while (m->nkeys) {
        if (m->rl_installed) {
            rl_callback_read_char();
            continue;
        }
        m->nkeys--;
        raw_key(m, *m->keys++);
    }
    m->keys = NULL;
    show_bar(m);
    if (!m->busy)
        idle(m);
}

static void keys(struct gw_monitor *m, const unsigned char *b, size_t len)
{
    if (!len || m->gw->quit_sent || m->gw->exiting)
        return;
    if (m->on_serial)
        sg_gw_serial_write(m->gw, b, len);   /* the path of the web console's input */
    else
        monitor_keys(m, b, len);
}

/* Ctrl-A c: the terminal goes to the guest console.  The line being typed
 * at the prompt waits for the way back (idle() puts it at the prompt). */
static void attach_serial(struct gw_monitor *m)
{
    if (m->rl_installed) {
        size_t n = strlen(rl_line_buffer), room = sizeof m->partial - 1 - m->partial_len;
        memcpy(m->partial + m->partial_len, rl_line_buffer, n < room ? n : room);
        m->partial_len += n < room ? n : room;
        rl_replace_line("", 1);
        remove_readline(m);
        out("\r\033[K");
    }
    leave_raw(m);   /* erases the progress bar */
    m->on_serial = true;
    tio_enter(m, true);
    gw_serial_terminal_raw(m->gw, true);
}

/* Ctrl-A c on the guest console: the prompt (or the running line's bar)
 * comes back on a line of its own. */
static void attach_monitor(struct gw_monitor *m)
{
    tio_leave(m);
    gw_serial_terminal_raw(m->gw, false);
    m->on_serial = false;
    if (m->busy) {
        enter_raw(m);
        show_bar(m);
    } else {
        idle(m);
    }
}

static void mux_command(struct gw_monitor *m, unsigned char c)
{
    switch (c) {
    case 'c':
        if (m->on_serial)
            attach_monitor(m);
        else
            attach_serial(m);
        break;
    case 'x':
        gw_monitor_print(m, "snapgate: terminated (C-a x)\n");
        gw_quit(m->gw);
        break;
    case 'h':
    case '?':
        gw_monitor_print(m, mux_help);
        break;
    default:
        break;   /* as QEMU's mux: any other key after C-a is dropped */
    }
}

/* A tty: every key comes through here, Ctrl-A commands taken out first. */
static bool read_keys(struct gw_monitor *m, int fd)
{
    unsigned char buf[256];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (n <= 0) {
        if (m->rl_installed) {
            remove_readline(m);
            out("\n");
        }
        m->eof = true;
        idle(m);
        return false;
    }
    size_t start = 0;
    for (size_t i = 0; m->mux && i < (size_t)n; i++) {
        if (m->ctrl_a) {
            m->ctrl_a = false;
            if (buf[i] == CTRL_A) {
                start = i;   /* C-a C-a: one C-a, sent with what follows */
                continue;
            }
            start = i + 1;
            mux_command(m, buf[i]);
        } else if (buf[i] == CTRL_A) {
            keys(m, buf + start, i - start);
            m->ctrl_a = true;
            start = i + 1;
        }
    }
    keys(m, buf + start, (size_t)n - start);   /* nothing when it ended on C-a */
    return true;
}

/* Cooked-mode input (no tty): whole lines. */
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
    if (m->tty)
        return read_keys(m, sg_gw_fd_fd(f));
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
        drop_queue(m, "^C");
        m->partial_len = 0;
        show_bar(m);
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

/* Tab: a snapshot name typed with spaces (or after its opening quote) is
 * completed here, the whole argument at once ("loadvm with sp" becomes
 * "loadvm \"with space\" "); everything else is readline's word completion
 * above. */
static int tab_key(int count, int key)
{
    struct gw_monitor *m = rl_monitor;
    size_t arg = 0;
    char **names = sg_hmp_complete_name(m->gw->hmp, rl_line_buffer, (size_t)rl_point, &arg);
    const char *a = rl_line_buffer + arg;
    size_t alen = names && arg <= (size_t)rl_point ? (size_t)rl_point - arg : 0;
    if (!alen || (a[0] != '"' && !memchr(a, ' ', alen) && !memchr(a, '\t', alen))) {
        sg_hmp_strv_free(names);
        return rl_complete(count, key);
    }
    size_t n = 0, common = strlen(names[0]);
    for (; names[n]; n++) {
        size_t k = 0;
        while (k < common && names[n][k] == names[0][k])
            k++;
        common = k;
    }
    while (common && ((unsigned char)names[0][common] & 0xc0) == 0x80)
        common--;   /* a common prefix ends on a character boundary */
    char *prefix = strndup(names[0], common);
    char *text = n == 1 ? sg_hmp_quote_name(names[0], false)
                        : prefix ? sg_hmp_quote_name(prefix, true) : NULL;
    if (text) {
        rl_begin_undo_group();
        rl_delete_text((int)arg, rl_point);
        rl_point = (int)arg;
        rl_insert_text(text);
        if (n == 1)
            rl_insert_text(" ");
        rl_end_undo_group();
    }
    if (n > 1 && prefix) {
        /* rl_display_match_list wants the common part first, then the
         * candidates. */
        char **list = calloc(n + 2, sizeof *list);
        int width = 0;
        if (list) {
            list[0] = prefix;
            for (size_t i = 0; i < n; i++) {
                list[i + 1] = names[i];
                if ((int)strlen(names[i]) > width)
                    width = (int)strlen(names[i]);
            }
            rl_crlf();
            rl_display_match_list(list, (int)n, width);
            rl_forced_update_display();
            free(list);
        }
    }
    free(text);
    free(prefix);
    sg_hmp_strv_free(names);
    return 0;
}

/* A Linux guest (-kernel among the --vmm arguments) gets the terminal at
 * start: its shell wants the keyboard; the demo guest only prints. */
static bool guest_is_kernel(const struct sg_gw_options *o)
{
    for (int i = 0; i < o->vmm_argc; i++)
        if (strcmp(o->vmm_args[i], "-kernel") == 0 || strcmp(o->vmm_args[i], "--kernel") == 0)
            return true;
    return false;
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
        rl_getc_function = key_getc;
        rl_input_available_hook = key_available;
        rl_attempted_completion_function = complete;
        rl_bind_key('\t', tab_key);
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
        char be[256];
        sg_gw_backend_describe(gw, be, sizeof be);
        printf("snapgate %s monitor (back end: %s) - type 'help' for more information\n",
               SNAPGATE_VERSION, be);
        m->mux = gw->opt->serial_to_terminal && sg_gw_has_serial(gw);
        bool serial = m->mux && guest_is_kernel(gw->opt);
        if (m->mux)
            printf("%s: C-a c switches the terminal to the %s and back, C-a h lists the keys\n",
                   serial ? "This terminal is on the guest's serial console"
                          : "The guest's console output is shown above the prompt",
                   serial ? "monitor" : "guest's serial console (its keyboard)");
        fflush(stdout);
        if (serial)
            attach_serial(m);
        else
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
    leave_raw(m);   /* leaving while a line runs: the terminal gets its echo back */
    tio_leave(m);   /* ...or on the guest console */
    if (m->on_serial) {
        m->on_serial = false;
        gw_serial_terminal_raw(m->gw, false);
    }
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

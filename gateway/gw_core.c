/* gw_core.c: what the front ends share — printing for people, leaving the
 * loop, back-end events (fan-out to QMP clients, the HMP engine, the
 * monitor), the guest serial console, and the misc accessors of gw.h. */
#include "gw_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qmp_msg.h"
#include "sg_hmp.h"

void gw_print(struct sg_gw *gw, const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (gw->print)
        gw->print(gw->print_opaque, buf);
    else
        fputs(buf, stderr);
}

void gw_exit(struct sg_gw *gw, int code)
{
    if (gw->exiting)
        return;
    gw->exiting = true;
    gw->exit_code = code;
    sg_gw_loop_stop(gw->loop);
}

/* Job events of the HMP engine's own jobs are shown as a progress bar and a
 * result, not as raw events. */
static bool is_hmp_job_event(json_t *event)
{
    const char *name = json_string_value(json_object_get(event, "event"));
    if (!name || strcmp(name, "JOB_STATUS_CHANGE") != 0)
        return false;
    const char *id = json_string_value(json_object_get(json_object_get(event, "data"), "id"));
    return id && strncmp(id, "hmp-", 4) == 0;
}

static void show_event(struct sg_gw *gw, json_t *event)
{
    if (!gw->mon || is_hmp_job_event(event))
        return;
    const char *name = json_string_value(json_object_get(event, "event"));
    json_t *data = json_object_get(event, "data");
    char *text = data ? sg_qmp_dumps(data, NULL) : NULL;
    gw_print(gw, "[event] %s%s%s\n", name ? name : "?", text ? " " : "", text ? text : "");
    free(text);
}

void gw_on_backend_event(struct sg_gw *gw, json_t *event, const char *bytes, size_t len)
{
    /* Before the fan-out: a client reacting to "concluded" sees the new
     * current snapshot. */
    gw_current_on_event(gw, event);
    gw_qmp_clients_event(gw, event, bytes, len);
    if (!event)
        return;
    const char *name = json_string_value(json_object_get(event, "event"));
    if (name && strcmp(name, "SHUTDOWN") == 0) {
        const char *reason =
            json_string_value(json_object_get(json_object_get(event, "data"), "reason"));
        snprintf(gw->shutdown_reason, sizeof gw->shutdown_reason, "%s", reason ? reason : "");
    }
    if (gw->hmp) {
        sg_hmp_on_event(gw->hmp, event);
        gw_hmp_kick(gw);
    }
    show_event(gw, event);
}

void gw_on_backend_lost(struct sg_gw *gw, const char *why)
{
    if (gw->quit_sent || gw->leave_when_idle) {
        /* We asked it to quit, or were leaving anyway: the expected end. */
        gw_exit(gw, SG_GW_EXIT_OK);
        return;
    }
    if (gw->opt->exit_with_backend) {
        /* snapgate-qemu: QEMU's end (destroy, shutdown, a crash) is ours too. */
        gw_print(gw, "snapgate: the back end ended (%s%s%s); leaving\n", why,
                 gw->shutdown_reason[0] ? ", SHUTDOWN reason " : "", gw->shutdown_reason);
        gw_exit(gw, SG_GW_EXIT_OK);
        return;
    }
    /* The guest powered off (or someone quit the back end over QMP): the
     * back end ending afterwards is an orderly end, not a death. */
    if (strncmp(gw->shutdown_reason, "guest-", 6) == 0 ||
        strcmp(gw->shutdown_reason, "host-qmp-quit") == 0) {
        gw_print(gw, "snapgate: the VM shut down (%s)\n", gw->shutdown_reason);
        gw_exit(gw, SG_GW_EXIT_OK);
        return;
    }
    char how[160] = "";
    if (gw->vmm) {
        char st[128];
        if (gw_vmm_exited(gw->vmm, st, sizeof st, 1000))
            snprintf(how, sizeof how, " (snapgate-vmm %s)", st);
    }
    /* The embedded VMM is ours: nobody restarts it, so its death is the
     * end.  A --connect back end may be restarted by whoever runs it. */
    if (gw->vmm || !gw->opt->connect_path || gw->opt->reconnect_s == 0) {
        gw_print(gw, "snapgate: the back end died: %s%s\n", why, how);
        gw_exit(gw, SG_GW_EXIT_BACKEND_DIED);
        return;
    }
    gw_print(gw, "snapgate: back end connection lost (%s); reconnecting to %s for up to %u s\n",
             why, gw->opt->connect_path, gw->opt->reconnect_s);
    /* HMP lines waiting for a job of the lost back end would wait forever:
     * they are ended from the loop (this may run inside the HMP engine),
     * when the link fails its pending commands. */
    gw->hmp_abort_pending = true;
    gw_backend_reconnect(gw, gw->opt->reconnect_s);
}

void gw_lost_abort(struct sg_gw *gw)
{
    if (!gw->hmp_abort_pending)
        return;
    gw->hmp_abort_pending = false;
    char text[400];
    snprintf(text, sizeof text, "Error: back end connection lost (%s)\n", gw_backend_why(gw));
    gw_hmp_abort_all(gw, text);
}

void gw_on_backend_reconnected(struct sg_gw *gw, unsigned attempts)
{
    /* The last SHUTDOWN reason belonged to the previous back end. */
    gw->shutdown_reason[0] = '\0';
    char be[256];
    sg_gw_backend_describe(gw, be, sizeof be);
    gw_print(gw, "snapgate: back end reconnected to %s (%s) after %u attempt%s\n",
             gw->opt->connect_path, be, attempts, attempts == 1 ? "" : "s");
    struct sg_error err = { 0 };
    if (!gw_hmp_renew(gw, &err)) {
        gw_print(gw, "snapgate: %s\n", err.msg);
        gw_exit(gw, SG_GW_EXIT_BACKEND_DIED);
        return;
    }
    gw_qmp_clients_reconnected(gw);
}

void gw_on_backend_reconnect_failed(struct sg_gw *gw, const char *why, const char *last_attempt)
{
    gw_print(gw, "snapgate: the back end died: %s; no back end answered at %s within %u s "
             "(last attempt: %s)\n", why, gw->opt->connect_path, gw->opt->reconnect_s,
             last_attempt[0] ? last_attempt : "none");
    gw_exit(gw, SG_GW_EXIT_BACKEND_DIED);
}

/* ---- serial console --------------------------------------------------- */

bool sg_gw_has_serial(const struct sg_gw *gw)
{
    return gw->vmm != NULL;
}

/* Sends the backlog to new subscribers from the loop, never from inside
 * sg_gw_serial_subscribe (the caller has not stored its id yet). */
void gw_serial_replay(void *opaque)
{
    struct sg_gw *gw = opaque;
    size_t start = (gw->backlog_head + GW_SERIAL_BACKLOG - gw->backlog_len) % GW_SERIAL_BACKLOG;
    size_t first = gw->backlog_len;
    if (start + first > GW_SERIAL_BACKLOG)
        first = GW_SERIAL_BACKLOG - start;
    for (size_t i = 0; i < gw->n_serial_subs;) {
        struct gw_serial_sub *s = &gw->serial_subs[i];
        unsigned id = s->id;
        if (s->replay_pending) {
            s->replay_pending = false;
            sg_gw_serial_fn fn = s->fn;
            void *op = s->opaque;
            if (first)
                fn(op, gw->serial_backlog + start, first);
            /* The callback may have unsubscribed: look the id up again. */
            if (gw->backlog_len > first && i < gw->n_serial_subs && gw->serial_subs[i].id == id)
                fn(op, gw->serial_backlog, gw->backlog_len - first);
        }
        if (i < gw->n_serial_subs && gw->serial_subs[i].id == id)
            i++;
    }
}

unsigned sg_gw_serial_subscribe(struct sg_gw *gw, sg_gw_serial_fn fn, void *opaque)
{
    if (!gw->vmm)
        return 0;
    struct gw_serial_sub *subs = realloc(gw->serial_subs, (gw->n_serial_subs + 1) * sizeof *subs);
    if (!subs)
        return 0;
    gw->serial_subs = subs;
    unsigned id = ++gw->next_serial_id;
    subs[gw->n_serial_subs++] = (struct gw_serial_sub){ id, fn, opaque, gw->backlog_len > 0 };
    if (gw->backlog_len)
        sg_gw_timer_arm(&gw->replay_timer, 0);
    return id;
}

void sg_gw_serial_unsubscribe(struct sg_gw *gw, unsigned id)
{
    for (size_t i = 0; i < gw->n_serial_subs; i++) {
        if (gw->serial_subs[i].id != id)
            continue;
        memmove(&gw->serial_subs[i], &gw->serial_subs[i + 1],
                (gw->n_serial_subs - i - 1) * sizeof *gw->serial_subs);
        gw->n_serial_subs--;
        return;
    }
}

void sg_gw_serial_write(struct sg_gw *gw, const void *bytes, size_t len)
{
    if (gw->vmm)
        gw_vmm_serial_write(gw->vmm, bytes, len);
}

static void terminal_raw_write(struct sg_gw *gw, const char *buf, size_t len)
{
    if (!len)
        return;
    fwrite(buf, 1, len, stdout);
    fflush(stdout);
    gw->serial_mid_line = buf[len - 1] != '\n';
}

void gw_serial_terminal_raw(struct sg_gw *gw, bool raw)
{
    if (raw == gw->serial_raw)
        return;
    gw->serial_raw = raw;
    if (raw) {
        gw->serial_mid_line = false;
        terminal_raw_write(gw, gw->serial_line, gw->serial_line_len);
        gw->serial_line_len = 0;
    } else {
        gw_serial_terminal_break(gw);
    }
}

void gw_serial_terminal_break(struct sg_gw *gw)
{
    if (gw->serial_mid_line) {
        fputs("\r\n", stdout);
        fflush(stdout);
    }
    gw->serial_mid_line = false;
}

/* Shows the guest console on the terminal: on the guest console (Ctrl-A c)
 * byte for byte; above the monitor's prompt a whole line at a time, so that
 * a line is never cut by the prompt being redrawn. */
static void serial_to_terminal(struct sg_gw *gw, const char *buf, size_t len)
{
    if (gw->serial_raw) {
        terminal_raw_write(gw, buf, len);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (c == '\r')
            continue;
        if (c == '\n' || gw->serial_line_len == sizeof gw->serial_line - 2) {
            gw->serial_line[gw->serial_line_len++] = '\n';
            gw->serial_line[gw->serial_line_len] = '\0';
            if (gw->mon) {
                gw_print(gw, "%s", gw->serial_line);
            } else {
                fputs(gw->serial_line, stdout);
                fflush(stdout);
            }
            gw->serial_line_len = 0;
            if (c == '\n')
                continue;
        }
        gw->serial_line[gw->serial_line_len++] = c;
    }
}

static void backlog_append(struct sg_gw *gw, const char *buf, size_t len)
{
    if (len > GW_SERIAL_BACKLOG) {
        buf += len - GW_SERIAL_BACKLOG;
        len = GW_SERIAL_BACKLOG;
    }
    for (size_t i = 0; i < len; i++) {
        gw->serial_backlog[gw->backlog_head] = buf[i];
        gw->backlog_head = (gw->backlog_head + 1) % GW_SERIAL_BACKLOG;
    }
    gw->backlog_len = gw->backlog_len + len > GW_SERIAL_BACKLOG ? GW_SERIAL_BACKLOG
                                                                : gw->backlog_len + len;
}

void gw_serial_input(struct sg_gw *gw, const void *buf, size_t len)
{
    /* A subscriber still waiting for the backlog gets these bytes as part
     * of it (they are appended first), not twice. */
    backlog_append(gw, buf, len);
    /* A subscriber may unsubscribe itself from its callback: iterate by id. */
    for (size_t i = 0; i < gw->n_serial_subs;) {
        unsigned id = gw->serial_subs[i].id;
        if (!gw->serial_subs[i].replay_pending)
            gw->serial_subs[i].fn(gw->serial_subs[i].opaque, buf, len);
        if (i < gw->n_serial_subs && gw->serial_subs[i].id == id)
            i++;
    }
    if (gw->opt->serial_to_terminal)
        serial_to_terminal(gw, buf, len);
}

/* ---- misc ------------------------------------------------------------- */

struct lws_context *sg_gw_lws_context(struct sg_gw *gw)
{
    return sg_gw_loop_context(gw->loop);
}

const char *sg_gw_backend_kind(const struct sg_gw *gw)
{
    return gw->backend_is_vmm ? "snapgate-vmm" : "qemu";
}

void sg_gw_backend_describe(const struct sg_gw *gw, char *buf, size_t n)
{
    /* snapgate-vmm answers query-version as the QEMU it imitates; its own
     * version is in "package" ("snapgate-vmm 0.1.0"). */
    const json_t *q = json_object_get(gw->backend_version, "qemu");
    const char *pkg = json_string_value(json_object_get(gw->backend_version, "package"));
    char qv[64];
    snprintf(qv, sizeof qv, "%lld.%lld.%lld",
             (long long)json_integer_value(json_object_get(q, "major")),
             (long long)json_integer_value(json_object_get(q, "minor")),
             (long long)json_integer_value(json_object_get(q, "micro")));
    if (gw->backend_is_vmm)
        snprintf(buf, n, "%s, answering QMP as QEMU %s", pkg && *pkg ? pkg : "snapgate-vmm", qv);
    else
        snprintf(buf, n, "QEMU %s", qv);
}

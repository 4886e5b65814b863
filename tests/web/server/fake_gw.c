/* fake_gw.c: a test-only implementation of gateway/gw.h with canned replies.
 * It lets the web server be built and tested (and the page be driven in a
 * browser) without a VM: a fake VM with two disks, snapshots, jobs that
 * progress on a timer, HMP savevm/loadvm/delvm/info snapshots, and a serial
 * port that echoes input and prints a line per second. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libwebsockets.h>

#include "fake_gw.h"
#include "qmp_msg.h"
#include "sg_budget.h"

#define MAX_SNAPS 32
#define MAX_CLIENTS 64
#define MAX_SUBS 16
#define JOB_STEPS 12
#define JOB_STEP_US (150 * LWS_US_PER_MS)

struct fsnap {
    unsigned id;
    char tag[1100];
    unsigned long long vm_size;      /* vmstate bytes on disk0 */
    long long date;
    unsigned long long clock_ns;
    bool on_disk1;
};

struct sg_gw_qmp_client {
    struct sg_gw *gw;
    sg_gw_send_fn send;
    void *opaque;
    bool negotiated;
};

struct sg_gw_hmp_req {
    struct sg_gw *gw;
    sg_gw_hmp_done_fn done;
    void *opaque;
    bool detached;
};

struct sg_gw {
    struct lws_context *ctx;
    struct sg_budget out_budget;
    bool serial;
    bool running;
    struct fsnap snaps[MAX_SNAPS];
    int nsnaps;
    unsigned next_id;
    struct sg_gw_qmp_client *clients[MAX_CLIENTS];
    struct { unsigned id; sg_gw_serial_fn fn; void *opaque; } subs[MAX_SUBS];
    unsigned next_sub;
    unsigned long long ticks;
    lws_sorted_usec_list_t tick_sul, job_sul;
    /* the one job at a time */
    struct sg_gw_hmp_req *job_req;
    char job_id[32], job_type[32], job_tag[1100], job_status[16];
    int job_step, job_seq;
    bool job_cancelled;
    char cur_tag[1100], cur_how[8];   /* the current snapshot ("" = none) */
    long long cur_time;
    char line_buf[256];
};

/* ---- helpers ------------------------------------------------------------ */

static void send_json(struct sg_gw_qmp_client *c, json_t *msg)
{
    char *s = json_dumps(msg, JSON_COMPACT);
    if (s) {
        c->send(c->opaque, s, strlen(s));
        free(s);
    }
}

static void broadcast_event(struct sg_gw *gw, const char *name, json_t *data)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    json_t *ev = json_pack("{s:s,s:{s:I,s:I}}", "event", name, "timestamp", "seconds",
                           (json_int_t)ts.tv_sec, "microseconds", (json_int_t)(ts.tv_nsec / 1000));
    if (data)
        json_object_set_new(ev, "data", data);
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (gw->clients[i] && gw->clients[i]->negotiated)
            send_json(gw->clients[i], ev);
    json_decref(ev);
}

static void serial_emit(struct sg_gw *gw, const char *text, size_t len)
{
    for (int i = 0; i < MAX_SUBS; i++)
        if (gw->subs[i].id)
            gw->subs[i].fn(gw->subs[i].opaque, text, len);
}

static struct fsnap *find_tag(struct sg_gw *gw, const char *tag)
{
    for (int i = 0; i < gw->nsnaps; i++)
        if (strcmp(gw->snaps[i].tag, tag) == 0)
            return &gw->snaps[i];
    return NULL;
}

static json_t *snap_list(struct sg_gw *gw, int disk)
{
    json_t *a = json_array();
    for (int i = 0; i < gw->nsnaps; i++) {
        struct fsnap *s = &gw->snaps[i];
        if (disk == 1 && !s->on_disk1)
            continue;
        json_array_append_new(a, json_pack("{s:s,s:I,s:I,s:i,s:I,s:I}",
            "name", s->tag,
            "vm-state-size", (json_int_t)(disk == 0 ? s->vm_size : 0),
            "date-sec", (json_int_t)s->date, "date-nsec", 0,
            "vm-clock-sec", (json_int_t)(s->clock_ns / 1000000000ull),
            "vm-clock-nsec", (json_int_t)(s->clock_ns % 1000000000ull)));
        char id[16];
        snprintf(id, sizeof id, "%u", s->id);
        json_object_set_new(json_array_get(a, json_array_size(a) - 1), "id", json_string(id));
    }
    return a;
}

static json_t *image_info(struct sg_gw *gw, int disk)
{
    char fn[64];
    snprintf(fn, sizeof fn, "/fake/disk%d.qcow2", disk);
    json_t *img = json_pack("{s:s,s:s,s:I,s:I}", "filename", fn, "format", "qcow2",
                            "virtual-size", (json_int_t)(disk ? 256 : 1024) << 20,
                            "cluster-size", (json_int_t)65536);
    json_t *sn = snap_list(gw, disk);
    if (json_array_size(sn))
        json_object_set_new(img, "snapshots", sn);
    else
        json_decref(sn);
    return img;
}

/* Completion as the engine does it, for the few words the page tries:
 * command names, then tags (quoted when they hold a space or a quote). */
static json_t *fake_complete(struct sg_gw *gw, const char *line)
{
    static const char *const cmds[] = { "delvm", "help", "info", "loadvm", "quit", "savevm" };
    size_t start = strlen(line);
    while (start > 0 && line[start - 1] != ' ')
        start--;
    const char *word = line + start;
    json_t *c = json_array();
    if (!strchr(line, ' ')) {
        for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
            if (!strncmp(cmds[i], word, strlen(word)))
                json_array_append_new(c, json_string(cmds[i]));
    } else if (!strncmp(line, "loadvm ", 7) || !strncmp(line, "delvm ", 6)) {
        for (int i = 0; i < gw->nsnaps; i++) {
            char q[1200];
            const char *t = gw->snaps[i].tag;
            if (strpbrk(t, " \"\\"))
                snprintf(q, sizeof q, "\"%s\"", t);
            else
                snprintf(q, sizeof q, "%s", t);
            if (!strncmp(q, word, strlen(word)))
                json_array_append_new(c, json_string(q));
        }
    }
    return json_pack("{s:s,s:o}", "word", word, "candidates", c);
}

static json_t *qmp_command(struct sg_gw *gw, const char *cmd, json_t *args, json_t **err)
{
    if (!strcmp(cmd, "query-status")) {
        /* As QEMU: the VM is stopped in save-vm / restore-vm while the job runs. */
        bool save = gw->job_id[0] && !strcmp(gw->job_type, "snapshot-save");
        bool load = gw->job_id[0] && !strcmp(gw->job_type, "snapshot-load");
        return json_pack("{s:s,s:b,s:b}", "status",
                         save ? "save-vm" : load ? "restore-vm" : gw->running ? "running" : "paused",
                         "running", gw->running && !save && !load, "singlestep", 0);
    }
    if (!strcmp(cmd, "stop") || !strcmp(cmd, "cont")) {
        bool run = !strcmp(cmd, "cont");
        if (run != gw->running) {
            gw->running = run;
            broadcast_event(gw, run ? "RESUME" : "STOP", NULL);
        }
        return json_object();
    }
    if (!strcmp(cmd, "query-named-block-nodes")) {
        json_t *a = json_array();
        for (int d = 0; d < 2; d++) {
            char node[16];
            snprintf(node, sizeof node, "disk%d", d);
            json_t *n = json_pack("{s:s,s:s,s:b,s:o}", "node-name", node, "drv", "qcow2", "ro", 0,
                                  "image", image_info(gw, d));
            json_object_set_new(n, "file", json_string(d ? "/fake/disk1.qcow2" : "/fake/disk0.qcow2"));
            json_array_append_new(a, n);
        }
        return a;
    }
    if (!strcmp(cmd, "query-block")) {
        json_t *a = json_array();
        for (int d = 0; d < 2; d++) {
            char dev[16], node[16];
            snprintf(dev, sizeof dev, "drive%d", d);
            snprintf(node, sizeof node, "disk%d", d);
            json_array_append_new(a, json_pack("{s:s,s:b,s:{s:s,s:b,s:s,s:o}}", "device", dev,
                "locked", 0, "inserted", "node-name", node, "ro", 0, "drv", "qcow2",
                "image", image_info(gw, d)));
        }
        return a;
    }
    if (!strcmp(cmd, "query-jobs")) {
        json_t *a = json_array();
        if (gw->job_id[0])
            json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:I,s:I}", "id", gw->job_id,
                "type", gw->job_type, "status", gw->job_status,
                "current-progress", (json_int_t)gw->job_step << 20,
                "total-progress", (json_int_t)JOB_STEPS << 20));
        return a;
    }
    if (!strcmp(cmd, "x-snapgate-query-current-snapshot")) {
        if (!gw->cur_tag[0])
            return json_object();
        return json_pack("{s:s,s:s,s:I}", "tag", gw->cur_tag, "how", gw->cur_how, "time",
                         (json_int_t)gw->cur_time);
    }
    if (!strcmp(cmd, "x-snapgate-hmp-complete")) {
        const char *line = json_string_value(json_object_get(args, "line"));
        if (!line) {
            *err = json_pack("{s:s,s:s}", "class", "GenericError", "desc",
                             "Parameter 'line' is missing");
            return NULL;
        }
        return fake_complete(gw, line);
    }
    if (!strcmp(cmd, "job-cancel")) {
        const char *id = json_string_value(json_object_get(args, "id"));
        if (!id || !gw->job_id[0] || strcmp(id, gw->job_id) != 0) {
            *err = json_pack("{s:s,s:s}", "class", "GenericError", "desc", "Job not found");
            return NULL;
        }
        gw->job_cancelled = true;
        return json_object();
    }
    if (!strcmp(cmd, "query-version"))
        return json_pack("{s:{s:i,s:i,s:i},s:s}", "qemu", "major", 7, "minor", 2, "micro", 0,
                         "package", "fake");
    (void)args;
    *err = json_pack("{s:s,s:s}", "class", "CommandNotFound", "desc", "The command has not been found");
    return NULL;
}

/* ---- QMP front-end clients --------------------------------------------- */

struct sg_gw_qmp_client *sg_gw_qmp_client_new(struct sg_gw *gw, enum sg_hmp_style hmp_style,
                                              sg_gw_send_fn send, void *opaque)
{
    (void)hmp_style;
    for (int i = 0; i < MAX_CLIENTS; i++) {
        if (gw->clients[i])
            continue;
        struct sg_gw_qmp_client *c = calloc(1, sizeof *c);
        if (!c)
            return NULL;
        c->gw = gw;
        c->send = send;
        c->opaque = opaque;
        gw->clients[i] = c;
        json_t *g = json_pack("{s:{s:{s:{s:i,s:i,s:i},s:s},s:[]}}", "QMP", "version", "qemu",
                              "major", 7, "minor", 2, "micro", 0, "package", "fake-gw",
                              "capabilities");
        send_json(c, g);
        json_decref(g);
        return c;
    }
    return NULL;
}

static void client_input_json(struct sg_gw_qmp_client *c, json_t *msg)
{
    json_t *id = json_object_get(msg, "id");
    const char *cmd = json_string_value(json_object_get(msg, "execute"));
    json_t *reply, *err = NULL, *ret = NULL;
    if (!json_is_object(msg) || !cmd) {
        err = json_pack("{s:s,s:s}", "class", "GenericError", "desc",
                        "QMP input must be a JSON object");
    } else if (!strcmp(cmd, "qmp_capabilities")) {
        c->negotiated = true;
        ret = json_object();
    } else if (!c->negotiated) {
        err = json_pack("{s:s,s:s}", "class", "CommandNotFound", "desc",
                        "Expecting capabilities negotiation with 'qmp_capabilities'");
    } else {
        ret = qmp_command(c->gw, cmd, json_object_get(msg, "arguments"), &err);
    }
    reply = err ? json_pack("{s:o}", "error", err) : json_pack("{s:o}", "return", ret);
    if (id)
        json_object_set(reply, "id", id);
    send_json(c, reply);
    json_decref(reply);
}

/* The gateway's proxy takes each message's bytes (it forwards them
 * unchanged); this fake decodes them, answering bad JSON as the gateway does. */
bool sg_gw_qmp_client_input(struct sg_gw_qmp_client *c, const char *bytes, size_t len, int *fds,
                            size_t nfds)
{
    (void)fds;
    (void)nfds;
    json_t *msg = NULL;
    struct sg_error err = { 0 };
    enum sg_qmp_parse r = sg_qmp_parse_message(bytes, len, &msg, &err);
    if (r != SG_QMP_PARSE_OK) {
        json_t *e = sg_qmp_error_reply(NULL, SG_ERR_GENERIC, err.msg);
        send_json(c, e);
        json_decref(e);
        return r != SG_QMP_PARSE_FATAL;
    }
    client_input_json(c, msg);
    json_decref(msg);
    return true;
}

size_t sg_gw_qmp_client_inflight(const struct sg_gw_qmp_client *c)
{
    (void)c;
    return 0;
}

bool sg_gw_qmp_client_busy(const struct sg_gw_qmp_client *c)
{
    (void)c;
    return false;  /* answers at once: never a backlog */
}

void sg_gw_qmp_client_free(struct sg_gw_qmp_client *c)
{
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (c->gw->clients[i] == c)
            c->gw->clients[i] = NULL;
    free(c);
}

/* ---- HMP ---------------------------------------------------------------- */

static void job_event(struct sg_gw *gw, const char *status)
{
    snprintf(gw->job_status, sizeof gw->job_status, "%s", status);
    broadcast_event(gw, "JOB_STATUS_CHANGE",
                    json_pack("{s:s,s:s}", "status", status, "id", gw->job_id));
}

static void hmp_finish(struct sg_gw_hmp_req *r, const char *text, bool quit)
{
    if (!r->detached)
        r->done(r->opaque, text, quit);
    free(r);
}

/* QEMU's state machine: a failed job passes through "aborting". */
static void job_end(struct sg_gw *gw, const char *msg, bool ok)
{
    static const char *const good[] = { "waiting", "pending", "concluded", "null" };
    static const char *const bad[] = { "aborting", "concluded", "null" };
    for (size_t i = 0; i < (ok ? 4u : 3u); i++)
        job_event(gw, ok ? good[i] : bad[i]);
    gw->job_id[0] = '\0';
    struct sg_gw_hmp_req *r = gw->job_req;
    gw->job_req = NULL;
    hmp_finish(r, msg, false);
}

static void job_step(lws_sorted_usec_list_t *sul)
{
    struct sg_gw *gw = lws_container_of(sul, struct sg_gw, job_sul);
    if (++gw->job_step < JOB_STEPS) {
        lws_sul_schedule(gw->ctx, 0, &gw->job_sul, job_step, JOB_STEP_US);
        return;
    }
    char msg[1400] = "";
    bool fails = gw->job_cancelled ||
                 (!strcmp(gw->job_type, "snapshot-load") && !strncmp(gw->job_tag, "fails", 5));
    if (fails) {
        if (gw->job_cancelled)
            snprintf(msg, sizeof msg, "Error: Snapshot job cancelled\n");
        else
            snprintf(msg, sizeof msg, "Error: Device 'drive1' does not have the requested snapshot "
                     "'%s': the fake gateway refuses every load of a tag that begins with 'fails', "
                     "so that the page's error banner can be checked with a long message that must "
                     "not be cut\n", gw->job_tag);
        gw->job_cancelled = false;
        job_end(gw, msg, false);
        return;
    }
    if (!strcmp(gw->job_type, "snapshot-save") || !strcmp(gw->job_type, "snapshot-load")) {
        snprintf(gw->cur_tag, sizeof gw->cur_tag, "%s", gw->job_tag);
        snprintf(gw->cur_how, sizeof gw->cur_how, "%s", gw->job_type[9] == 's' ? "saved" : "loaded");
        gw->cur_time = time(NULL);
    } else if (!strcmp(gw->cur_tag, gw->job_tag)) {
        gw->cur_tag[0] = '\0';
    }
    if (!strcmp(gw->job_type, "snapshot-save")) {
        struct fsnap *s = find_tag(gw, gw->job_tag);
        if (!s && gw->nsnaps < MAX_SNAPS)
            s = &gw->snaps[gw->nsnaps++];
        if (s) {
            s->id = gw->next_id++;
            snprintf(s->tag, sizeof s->tag, "%s", gw->job_tag);
            s->vm_size = 70ull << 20;
            s->date = time(NULL);
            s->clock_ns = gw->ticks * 1000000000ull;
            s->on_disk1 = true;
        }
    } else if (!strcmp(gw->job_type, "snapshot-load")) {
        struct fsnap *s = find_tag(gw, gw->job_tag);
        if (s) {
            gw->ticks = s->clock_ns / 1000000000ull;
            char line[128];
            int n = snprintf(line, sizeof line, "\r\n[fake guest] restored '%s': tick %llu\r\n",
                             s->tag, gw->ticks);
            serial_emit(gw, line, (size_t)n);
        }
    } else {
        struct fsnap *s = find_tag(gw, gw->job_tag);
        if (s) {
            memmove(s, s + 1, (size_t)(gw->snaps + gw->nsnaps - (s + 1)) * sizeof *s);
            gw->nsnaps--;
        }
    }
    job_end(gw, msg, true);
}

static bool start_job(struct sg_gw *gw, struct sg_gw_hmp_req *r, const char *type,
                      const char *verb, const char *tag)
{
    gw->job_req = r;
    gw->job_step = 0;
    snprintf(gw->job_id, sizeof gw->job_id, "hmp-%s-%d", verb, ++gw->job_seq);
    snprintf(gw->job_type, sizeof gw->job_type, "%s", type);
    snprintf(gw->job_tag, sizeof gw->job_tag, "%s", tag);
    job_event(gw, "created");
    job_event(gw, "running");
    lws_sul_schedule(gw->ctx, 0, &gw->job_sul, job_step, JOB_STEP_US);
    return true;
}

/* The name argument with QEMU's quoting ("..." with \\ \" \n \r); false
 * on a bad quote or anything after the name (QEMU: extraneous characters). */
static bool arg_name(const char *rest, char *out, size_t outsz)
{
    size_t n = 0;
    while (*rest == ' ')
        rest++;
    if (!strncmp(rest, "-t ", 3) || !strncmp(rest, "-i ", 3))
        rest += 3;
    while (*rest == ' ')
        rest++;
    if (*rest == '"') {
        for (rest++; *rest && *rest != '"'; rest++) {
            char ch = *rest;
            if (ch == '\\') {
                ch = *++rest;
                ch = ch == 'n' ? '\n' : ch == 'r' ? '\r' : ch;
                if (!ch)
                    return false;
            }
            if (n + 1 < outsz)
                out[n++] = ch;
        }
        if (*rest++ != '"')
            return false;
    } else {
        while (*rest && *rest != ' ' && n + 1 < outsz)
            out[n++] = *rest++;
    }
    out[n] = '\0';
    while (*rest == ' ')
        rest++;
    return *rest == '\0';
}

static void info_snapshots(struct sg_gw *gw, char *out, size_t outsz)
{
    size_t o = (size_t)snprintf(out, outsz, "List of snapshots present on all disks:\n"
                                "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n");
    for (int i = 0; i < gw->nsnaps && o < outsz; i++) {
        struct fsnap *s = &gw->snaps[i];
        char date[32];
        time_t t = (time_t)s->date;
        strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", localtime(&t));
        o += (size_t)snprintf(out + o, outsz - o, "--        %-17s %7llu MiB %s %02llu:%02llu:%02llu.000\n",
                              s->tag, s->vm_size >> 20, date, s->clock_ns / 3600000000000ull,
                              s->clock_ns / 60000000000ull % 60, s->clock_ns / 1000000000ull % 60);
    }
}

struct sg_gw_hmp_req *sg_gw_hmp_exec(struct sg_gw *gw, const char *line, enum sg_hmp_style style,
                                     sg_gw_hmp_done_fn done, sg_gw_hmp_progress_fn progress,
                                     void *opaque)
{
    (void)style;
    (void)progress;
    struct sg_gw_hmp_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->gw = gw;
    r->done = done;
    r->opaque = opaque;
    char out[4096];
    while (*line == ' ')
        line++;
    bool busy = gw->job_req != NULL;
    if (!strncmp(line, "savevm", 6) || !strncmp(line, "loadvm", 6) || !strncmp(line, "delvm", 5)) {
        bool save = line[0] == 's', load = line[0] == 'l';
        char name[1100], tag[1100];
        bool syntax_ok = arg_name(line + (save || load ? 6 : 5), name, sizeof name);
        if (save && !*name) {
            time_t now = time(NULL);
            strftime(tag, sizeof tag, "vm-%Y%m%d%H%M%S", localtime(&now));
        } else {
            snprintf(tag, sizeof tag, "%s", name);
        }
        if (!syntax_ok) {
            snprintf(out, sizeof out, "Error: extraneous characters at the end of line\n");
        } else if (busy) {
            snprintf(out, sizeof out, "Error: job '%s' is running\n", gw->job_id);
        } else if (!save && !find_tag(gw, tag)) {
            snprintf(out, sizeof out, "Error: Snapshot '%s' does not exist\n", tag);
        } else {
            start_job(gw, r, save ? "snapshot-save" : load ? "snapshot-load" : "snapshot-delete",
                      save ? "savevm" : load ? "loadvm" : "delvm", tag);
            return r;
        }
    } else if (!strcmp(line, "info snapshots")) {
        info_snapshots(gw, out, sizeof out);
    } else if (!strcmp(line, "info status")) {
        snprintf(out, sizeof out, "VM status: %s\n", gw->running ? "running" : "paused");
    } else if (!strcmp(line, "quit")) {
        hmp_finish(r, "", true);
        return r;
    } else if (!*line) {
        out[0] = '\0';
    } else {
        snprintf(out, sizeof out, "unknown command: '%.*s'\n", (int)strcspn(line, " "), line);
    }
    hmp_finish(r, out, false);
    return r;
}

void sg_gw_hmp_cancel(struct sg_gw_hmp_req *req)
{
    (void)req;
}

void sg_gw_hmp_detach(struct sg_gw_hmp_req *req)
{
    req->detached = true;
}

/* ---- serial ------------------------------------------------------------- */

bool sg_gw_has_serial(const struct sg_gw *gw)
{
    return gw->serial;
}

unsigned sg_gw_serial_subscribe(struct sg_gw *gw, sg_gw_serial_fn fn, void *opaque)
{
    for (int i = 0; i < MAX_SUBS; i++) {
        if (!gw->subs[i].id) {
            gw->subs[i].id = ++gw->next_sub;
            gw->subs[i].fn = fn;
            gw->subs[i].opaque = opaque;
            return gw->subs[i].id;
        }
    }
    return 0;
}

void sg_gw_serial_unsubscribe(struct sg_gw *gw, unsigned id)
{
    for (int i = 0; i < MAX_SUBS; i++)
        if (gw->subs[i].id == id)
            gw->subs[i].id = 0;
}

/* "\x1b[sg-burst N]" typed: N bytes (i % 251) as the VMM's UART hands them
 * over, one callback per byte, all before the loop runs again, as a guest
 * printing fast while the client is not writable (web_serial_coalesce). */
static bool serial_burst(struct sg_gw *gw, const void *bytes, size_t len)
{
    static const char cmd[] = "\x1b[sg-burst ";
    char text[32];
    if (len < sizeof cmd || len >= sizeof text || memcmp(bytes, cmd, sizeof cmd - 1))
        return false;
    memcpy(text, bytes, len);
    text[len] = '\0';
    char *end;
    unsigned long n = strtoul(text + sizeof cmd - 1, &end, 10);
    if (strcmp(end, "]") || n > 64ul << 20)
        return false;
    for (unsigned long i = 0; i < n; i++) {
        unsigned char b = (unsigned char)(i % 251);
        serial_emit(gw, (const char *)&b, 1);
    }
    return true;
}

void sg_gw_serial_write(struct sg_gw *gw, const void *bytes, size_t len)
{
    if (serial_burst(gw, bytes, len))
        return;
    /* A guest tty echoes what is typed. */
    serial_emit(gw, bytes, len);
}

static void tick(lws_sorted_usec_list_t *sul)
{
    struct sg_gw *gw = lws_container_of(sul, struct sg_gw, tick_sul);
    if (gw->running) {
        char line[64];
        int n = snprintf(line, sizeof line, "[fake guest] tick %llu\r\n", ++gw->ticks);
        serial_emit(gw, line, (size_t)n);
    }
    lws_sul_schedule(gw->ctx, 0, &gw->tick_sul, tick, LWS_US_PER_SEC);
}

struct sg_budget *sg_gw_output_budget(struct sg_gw *gw)
{
    if (!gw->out_budget.limit)
        sg_budget_init(&gw->out_budget, 32u << 20);
    return &gw->out_budget;
}

void sg_gw_output_evicted(struct sg_gw *gw, const char *who, size_t held)
{
    (void)gw;
    fprintf(stderr, "fake gateway: %s dropped holding %zu bytes\n", who, held);
}

struct lws_context *sg_gw_lws_context(struct sg_gw *gw)
{
    return gw->ctx;
}

const char *sg_gw_backend_kind(const struct sg_gw *gw)
{
    (void)gw;
    return "snapgate-vmm";
}

/* ---- the fake itself ---------------------------------------------------- */

struct sg_gw *fake_gw_new(struct lws_context *ctx, bool serial, bool demo_snapshots)
{
    struct sg_gw *gw = calloc(1, sizeof *gw);
    if (!gw)
        return NULL;
    gw->ctx = ctx;
    gw->serial = serial;
    gw->running = true;
    gw->next_id = 1;
    if (demo_snapshots) {
        static const struct fsnap demo[] = {
            { 1, "base", 64ull << 20, 1763700000, 12000000000ull, true },
            { 2, "disk-only", 0, 1763703600, 95000000000ull, true },
            { 3, "partial", 70ull << 20, 1763707200, 130000000000ull, false },
            { 4, "fails to load", 70ull << 20, 1763708200, 140000000000ull, true },
        };
        memcpy(gw->snaps, demo, sizeof demo);
        gw->nsnaps = 4;
        gw->next_id = 5;
    }
    if (serial)
        lws_sul_schedule(ctx, 0, &gw->tick_sul, tick, LWS_US_PER_SEC);
    return gw;
}

void fake_gw_free(struct sg_gw *gw)
{
    if (!gw)
        return;
    lws_sul_cancel(&gw->tick_sul);
    lws_sul_cancel(&gw->job_sul);
    if (gw->job_req)
        free(gw->job_req);
    for (int i = 0; i < MAX_CLIENTS; i++)
        free(gw->clients[i]);
    free(gw);
}

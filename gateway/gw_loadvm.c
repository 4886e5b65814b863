/* gw_loadvm.c: --loadvm NAME, the start-up load snapgate-qemu asks for in place of QEMU's
 * own -loadvm (which would bypass the HMP engine and its name rules).  It runs once the
 * back end is connected and still stopped, before any front end is served, so nobody sees
 * the VM between its boot state and the snapshot.  On a refusal or a failed load the back
 * end is told to quit (a half-started domain must not run on) and the gateway exits 1 with
 * the reason, which libvirt shows from the domain log.  Also --cont and
 * --exit-with-backend, the other options a supervisor running both halves needs. */
#include "gw_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_options.h"

#define SG_LOADVM_ERROR "Error: "

bool gw_loadvm_option(struct sg_gw_options *o, const char *name, const char *val, bool *ok,
                      struct sg_error *err)
{
    if (strcmp(name, "--loadvm") == 0) {
        if (!*val) {
            sg_error_set(err, "--loadvm: empty snapshot name");
            *ok = false;
        }
        o->loadvm = val;
    } else if (strcmp(name, "--cont") == 0) {
        o->cont = true;
    } else if (strcmp(name, "--exit-with-backend") == 0) {
        o->exit_with_backend = true;
    } else {
        return false;
    }
    return true;
}

struct wait {
    struct sg_gw *gw;
    bool done;
    char *text;      /* the failure, or NULL */
};

static void finished(struct wait *w, const char *failure)
{
    w->done = true;
    if (failure)
        w->text = strdup(failure);
    sg_gw_loop_stop(w->gw->loop);
}

static void hmp_done(void *opaque, const char *text, bool quit)
{
    (void)quit;
    /* As libvirt reads HMP replies: "Error: " anywhere means failure. */
    const char *e = text ? strstr(text, SG_LOADVM_ERROR) : NULL;
    finished(opaque, e ? e + strlen(SG_LOADVM_ERROR) : NULL);
}

static void cont_done(void *opaque, json_t *reply)
{
    json_t *e = reply ? json_object_get(reply, "error") : NULL;
    const char *desc = e ? json_string_value(json_object_get(e, "desc")) : NULL;
    finished(opaque, !reply ? "the back end went away" : e ? (desc ? desc : "error") : NULL);
}

/* Runs the loop until `w` is done or the gateway is told to leave (a signal). */
static bool wait_done(struct sg_gw *gw, struct wait *w)
{
    while (!w->done && !gw->exiting) {
        sg_gw_loop_run(gw->loop);
        sg_gw_loop_restart(gw->loop);
    }
    sg_gw_loop_restart(gw->loop);
    return w->done;
}

/* Writes "loadvm NAME" with NAME quoted as HMP reads a string argument. */
static bool loadvm_line(const char *name, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "loadvm \"");
    for (const char *p = name; *p && k + 3 < n; p++) {
        if (*p == '"' || *p == '\\')
            buf[k++] = '\\';
        buf[k++] = *p;
    }
    if (k + 2 >= n)
        return false;
    buf[k++] = '"';
    buf[k] = '\0';
    return true;
}

static void stop_backend(struct sg_gw *gw)
{
    gw_quit(gw);
    /* gw_quit ends the loop once QEMU has answered or gone (bounded by its timer). */
    if (!gw->exiting)
        sg_gw_loop_run(gw->loop);
    sg_gw_loop_restart(gw->loop);
}

bool gw_loadvm_run(struct sg_gw *gw, struct sg_error *err)
{
    const char *name = gw->opt->loadvm;
    char line[2200];
    if (!loadvm_line(name, line, sizeof line)) {
        sg_error_set(err, "--loadvm: snapshot name too long");
        stop_backend(gw);
        return false;
    }
    struct wait w = { gw, false, NULL };
    sg_gw_hmp_exec(gw, line, gw->opt->compat_style, hmp_done, NULL, &w);
    if (!wait_done(gw, &w)) {
        sg_error_set(err, "-loadvm %s: interrupted", name);
        return false;
    }
    if (!w.text && gw->opt->cont) {
        w.done = false;
        gw_backend_send(gw, json_pack("{s:s}", "execute", "cont"), cont_done, &w);
        if (!wait_done(gw, &w)) {
            sg_error_set(err, "-loadvm %s: interrupted", name);
            return false;
        }
    }
    if (!w.text) {
        fprintf(stderr, "snapgate: loaded snapshot '%s'%s\n", name,
                gw->opt->cont ? " and resumed the VM" : "");
        return true;
    }
    w.text[strcspn(w.text, "\r\n")] = '\0';
    sg_error_set(err, "-loadvm %s: %s; the VM was not started (the back end was told to quit)", name, w.text);
    free(w.text);
    stop_backend(gw);
    return false;
}

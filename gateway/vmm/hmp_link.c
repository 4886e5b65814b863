/* hmp_link.c: human-monitor-command for snapgate-vmm, through the shared
 * HMP engine (gateway/hmp) — no second HMP parser here.  The engine talks
 * QMP to this very server over an in-process session: its commands enter
 * the same dispatch as a socket client's, replies come back by id, and
 * every event the server broadcasts reaches the engine too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmp_link.h"
#include "qmp_server.h"
#include "sg_hmp.h"
#include "vmm.h"

#define MAX_PENDING 64

struct pending {
    long long id;
    sg_hmp_reply_fn cb;
    void *cb_opaque;
};

struct sg_hmp_link {
    struct sg_vmm *vmm;
    struct sg_qmp_session *session;
    struct sg_hmp *hmp;
    struct pending pending[MAX_PENDING];
    int n_pending;
    long long next_id;
    uint64_t last_tick_ns;
};

/* Everything the server sends to the engine's session: replies and events. */
static void link_send(void *opaque, const char *text, size_t len)
{
    struct sg_hmp_link *l = opaque;
    json_t *msg = json_loadb(text, len, 0, NULL);
    if (!msg)
        return;
    if (json_object_get(msg, "event")) {
        if (l->hmp)
            sg_hmp_on_event(l->hmp, msg);
    } else if (json_is_integer(json_object_get(msg, "id"))) {
        long long id = json_integer_value(json_object_get(msg, "id"));
        for (int i = 0; i < l->n_pending; i++) {
            if (l->pending[i].id != id)
                continue;
            struct pending p = l->pending[i];
            l->pending[i] = l->pending[--l->n_pending];
            json_object_del(msg, "id");
            p.cb(p.cb_opaque, msg);
            break;
        }
    }
    json_decref(msg);
}

static void link_qmp(void *opaque, json_t *cmd, sg_hmp_reply_fn cb, void *cb_opaque)
{
    struct sg_hmp_link *l = opaque;
    if (!l->session || l->n_pending >= MAX_PENDING) {
        json_decref(cmd);
        cb(cb_opaque, NULL);
        return;
    }
    long long id = ++l->next_id;
    l->pending[l->n_pending++] = (struct pending){ id, cb, cb_opaque };
    json_object_set_new(cmd, "id", json_integer(id));
    sg_qmp_session_input_json(l->session, cmd);   /* may answer synchronously */
    json_decref(cmd);
}

struct hmc_call {
    struct sg_qmp_req *req;
    struct sg_vmm *vmm;
};

static void hmc_done(void *opaque, const char *text, bool quit)
{
    struct hmc_call *call = opaque;
    struct sg_vmm *vmm = call->vmm;
    sg_qmp_req_return(call->req, json_string(text));
    free(call);
    if (quit) {
        sg_vmm_stop(vmm, false);
        sg_qmp_server_emit_event(vmm->qmp, "SHUTDOWN",
                                 json_pack("{s:b, s:s}", "guest", 0, "reason", "host-qmp-quit"));
        vmm->quit = true;
    }
}

static void cmd_hmc(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    const char *line = json_string_value(json_object_get(args, "command-line"));
    if (!vmm->hmp_link || !vmm->hmp_link->hmp) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "HMP is not available");
        return;
    }
    if (sg_qmp_req_session(req) && sg_qmp_req_session(req) == vmm->hmp_link->session) {
        /* The engine forwards lines it does not know to the back end, and
         * the back end is us: answer as QEMU does for an unknown command. */
        size_t n = strcspn(line, " \t");
        char *msg = NULL;
        if (asprintf(&msg, "unknown command: '%.*s'\r\n", (int)n, line) < 0)
            msg = NULL;
        sg_qmp_req_return(req, json_string(msg ? msg : ""));
        free(msg);
        return;
    }
    struct hmc_call *call = malloc(sizeof(*call));
    if (!call) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "out of memory");
        return;
    }
    *call = (struct hmc_call){ req, vmm };
    /* QMP clients get QEMU 7.2's replies byte for byte (INTERFACES.md 3). */
    sg_hmp_exec(vmm->hmp_link->hmp, line, SG_HMP_PROFILE_QEMU72, hmc_done, NULL, call);
}

static const struct sg_qmp_arg hmc_args[] = {
    { "command-line", SG_QMP_T_STR },
    { "cpu-index", SG_QMP_T_INT, .optional = true },
    { NULL },
};

bool sg_hmp_link_init(struct sg_vmm *vmm, struct sg_error *err)
{
    struct sg_hmp_link *l = calloc(1, sizeof(*l));
    if (!l) {
        sg_error_set(err, "out of memory");
        return false;
    }
    l->vmm = vmm;
    static const struct sg_qmp_transport t = { .send = link_send };
    l->session = sg_qmp_server_session_new(vmm->qmp, &t, l);
    json_t *neg = json_pack("{s:s}", "execute", "qmp_capabilities");
    if (l->session && neg)
        sg_qmp_session_input_json(l->session, neg);
    json_decref(neg);
    struct sg_hmp_backend be = { .qmp = link_qmp, .opaque = l };
    struct sg_hmp_options opt = {
        .job_id_prefix = "hmp-",
        /* snapshot-save x-replace: savevm over a tag keeps the old snapshot
         * until the new one is committed. */
        .backend_replaces = true,
        .backend_exact_tags = true,   /* snapshot-load matches tags only */
        .no_forward = true,           /* our human-monitor-command is this engine */
    };
    l->hmp = sg_hmp_new(&be, &opt);
    vmm->hmp_link = l;
    if (!l->session || !l->hmp) {
        sg_error_set(err, "out of memory");
        return false;
    }
    const struct sg_qmp_command cmd = { "human-monitor-command", cmd_hmc, hmc_args, 0, vmm };
    return sg_qmp_server_add_command(vmm->qmp, &cmd, err);
}

void sg_hmp_link_tick(struct sg_vmm *vmm)
{
    struct sg_hmp_link *l = vmm->hmp_link;
    if (!l || !l->hmp || !sg_hmp_busy(l->hmp))
        return;
    uint64_t now = sg_now_ns();
    if (now - l->last_tick_ns >= 100000000ull) {
        l->last_tick_ns = now;
        sg_hmp_tick(l->hmp);
    }
}

bool sg_hmp_link_busy(struct sg_vmm *vmm)
{
    return vmm->hmp_link && vmm->hmp_link->hmp && sg_hmp_busy(vmm->hmp_link->hmp);
}

void sg_hmp_link_free(struct sg_vmm *vmm)
{
    struct sg_hmp_link *l = vmm->hmp_link;
    if (!l)
        return;
    if (l->hmp)
        sg_hmp_free(l->hmp);
    /* Unanswered engine requests: the engine is gone, drop them. */
    l->n_pending = 0;
    free(l);
    vmm->hmp_link = NULL;
}

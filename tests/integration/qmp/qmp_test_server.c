/* qmp_test_server: a tiny server built on the library, with a few commands
 * declared with QEMU 7.2's argument schemas, so a test can send the same
 * malformed and negotiation inputs to it and to real QEMU and compare.
 * Usage: qmp_test_server SOCKET_PATH.  Runs until stdin closes, "quit", or
 * 120 s (bounded, for tests). */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "qmp_server.h"

struct state {
    bool running, quit;
    struct sg_qmp_server *srv;
};

static void cmd_query_status(struct sg_qmp_req *req, json_t *args, void *op)
{
    struct state *s = op;
    sg_qmp_req_return(req, json_pack("{s:s, s:b, s:b}", "status", s->running ? "running" : "paused",
                                     "singlestep", 0, "running", s->running));
}

static void cmd_stop(struct sg_qmp_req *req, json_t *args, void *op)
{
    struct state *s = op;
    if (s->running) {
        s->running = false;
        sg_qmp_server_emit_event(s->srv, "STOP", NULL);
    }
    sg_qmp_req_return(req, NULL);
}

static void cmd_cont(struct sg_qmp_req *req, json_t *args, void *op)
{
    struct state *s = op;
    if (!s->running) {
        s->running = true;
        sg_qmp_server_emit_event(s->srv, "RESUME", NULL);
    }
    sg_qmp_req_return(req, NULL);
}

static void cmd_quit(struct sg_qmp_req *req, json_t *args, void *op)
{
    ((struct state *)op)->quit = true;
    sg_qmp_req_return(req, NULL);
}

static void cmd_hmp(struct sg_qmp_req *req, json_t *args, void *op)
{
    struct state *s = op;
    const char *line = json_string_value(json_object_get(args, "command-line"));
    if (!strcmp(line, "info status"))
        sg_qmp_req_return(req, json_string(s->running ? "VM status: running\r\n"
                                                      : "VM status: paused\r\n"));
    else
        sg_qmp_req_return(req, json_string(""));
}

static void cmd_not_found(struct sg_qmp_req *req, json_t *args, void *op)
{
    /* every schema-checked command here ends like QEMU's with no such device */
    const char *dev = json_string_value(json_object_get(args, "node-name"));
    if (!dev)
        dev = json_string_value(json_object_get(args, "name"));
    sg_qmp_req_errorf(req, SG_ERR_GENERIC, "Device '%s' not found", dev ? dev : "");
}

static const struct sg_qmp_arg str_elem = SG_QMP_ARG(NULL, SG_QMP_T_STR);
static const struct sg_qmp_arg hmp_args[] = {
    SG_QMP_ARG("command-line", SG_QMP_T_STR),
    SG_QMP_OPT("cpu-index", SG_QMP_T_INT),
    SG_QMP_ARGS_END,
};
static const struct sg_qmp_arg save_args[] = {
    SG_QMP_ARG("job-id", SG_QMP_T_STR),
    SG_QMP_ARG("tag", SG_QMP_T_STR),
    SG_QMP_ARG("vmstate", SG_QMP_T_STR),
    {.name = "devices", .type = SG_QMP_T_ARRAY, .elem = &str_elem},
    SG_QMP_ARGS_END,
};
static const struct sg_qmp_arg threshold_args[] = {
    SG_QMP_ARG("node-name", SG_QMP_T_STR),
    SG_QMP_ARG("write-threshold", SG_QMP_T_UINT64),
    SG_QMP_ARGS_END,
};
static const struct sg_qmp_arg set_link_args[] = {
    SG_QMP_ARG("name", SG_QMP_T_STR),
    SG_QMP_ARG("up", SG_QMP_T_BOOL),
    SG_QMP_ARGS_END,
};
static const struct sg_qmp_arg internal_snap[] = {
    SG_QMP_ARG("device", SG_QMP_T_STR),
    SG_QMP_ARG("name", SG_QMP_T_STR),
    SG_QMP_ARGS_END,
};
static const char *const action_types[] = {"blockdev-snapshot-internal-sync", NULL};
static const struct sg_qmp_arg action_base[] = {
    {.name = "type", .type = SG_QMP_T_ENUM, .values = action_types},
    SG_QMP_ARGS_END,
};
static const struct sg_qmp_arg action_internal[] = {
    {.name = "data", .type = SG_QMP_T_OBJECT, .members = internal_snap},
    SG_QMP_ARGS_END,
};
static const struct sg_qmp_variant action_variants[] = {
    {"blockdev-snapshot-internal-sync", action_internal},
    {.value = NULL},
};
static const struct sg_qmp_arg action_elem = {
    .type = SG_QMP_T_UNION, .members = action_base, .discriminator = "type",
    .variants = action_variants,
};
static const struct sg_qmp_arg transaction_args[] = {
    {.name = "actions", .type = SG_QMP_T_ARRAY, .elem = &action_elem},
    SG_QMP_ARGS_END,
};

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: qmp_test_server SOCKET\n");
        return 1;
    }
    struct state st = {.running = false};
    const struct sg_qmp_command cmds[] = {
        {.name = "query-status", .fn = cmd_query_status},
        {.name = "stop", .fn = cmd_stop},
        {.name = "cont", .fn = cmd_cont},
        {.name = "quit", .fn = cmd_quit},
        {.name = "human-monitor-command", .fn = cmd_hmp, .args = hmp_args},
        {.name = "snapshot-save", .fn = cmd_not_found, .args = save_args},
        {.name = "block-set-write-threshold", .fn = cmd_not_found, .args = threshold_args},
        {.name = "set_link", .fn = cmd_not_found, .args = set_link_args},
        {.name = "transaction", .fn = cmd_not_found, .args = transaction_args},
        {.name = NULL},
    };
    json_t *ver = json_pack("{s:{s:i, s:i, s:i}, s:s}", "qemu", "micro", 0, "minor", 1, "major", 0,
                            "package", "qmp_test_server");
    struct sg_error err = {0};
    st.srv = sg_qmp_server_new(ver, NULL, &st);
    json_decref(ver);
    if (!sg_qmp_server_add_commands(st.srv, cmds, &err) || !sg_qmp_server_listen(st.srv, argv[1], &err)) {
        fprintf(stderr, "qmp_test_server: %s\n", err.msg);
        sg_qmp_server_free(st.srv);
        return 1;
    }
    time_t end = time(NULL) + 120;
    while (!st.quit && time(NULL) < end) {
        size_t max = sg_qmp_server_npollfds(st.srv) + 1;
        struct pollfd *fds = calloc(max, sizeof *fds);
        if (!fds)
            break;
        size_t n = sg_qmp_server_pollfds(st.srv, fds, max - 1);
        fds[n] = (struct pollfd){.fd = 0, .events = POLLIN};
        int r = poll(fds, n + 1, 1000);
        if (r > 0) {
            sg_qmp_server_handle_pollfds(st.srv, fds, n);
            if (fds[n].revents & (POLLIN | POLLHUP)) {
                char b[64];
                if (read(0, b, sizeof b) <= 0)
                    st.quit = true;
            }
        }
        free(fds);
    }
    sg_qmp_server_free(st.srv);
    return 0;
}

/* libFuzzer target: QMP stream framing + request checks + argument schemas.
 *
 * The input is cut into chunks (sizes taken from the first bytes) and fed
 * to a server session on a discarding transport, so the decoder sees the
 * same bytes split many ways; every complete message goes through the
 * request checks and, for the "check" command, a nested schema. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "qmp_server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void discard(void *opaque, const char *text, size_t len)
{
    (void)opaque;
    (void)text;
    (void)len;
}

static void ok(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    (void)args;
    (void)opaque;
    sg_qmp_req_return(req, NULL);
}

static const struct sg_qmp_arg str_elem = SG_QMP_ARG(NULL, SG_QMP_T_STR);
static const struct sg_qmp_arg inner[] = {
    SG_QMP_ARG("device", SG_QMP_T_STR),
    SG_QMP_OPT("n", SG_QMP_T_UINT64),
    SG_QMP_ARGS_END,
};
static const char *const kinds[] = {"a", "b", NULL};
static const struct sg_qmp_arg base[] = {
    {.name = "type", .type = SG_QMP_T_ENUM, .values = kinds},
    SG_QMP_ARGS_END,
};
static const struct sg_qmp_arg var_a[] = {
    {.name = "data", .type = SG_QMP_T_OBJECT, .members = inner},
    SG_QMP_ARGS_END,
};
static const struct sg_qmp_variant variants[] = {{"a", var_a}, {"b", NULL}, {.value = NULL}};
static const struct sg_qmp_arg action = {
    .type = SG_QMP_T_UNION, .members = base, .discriminator = "type", .variants = variants};
static const struct sg_qmp_arg check_args[] = {
    SG_QMP_ARG("tag", SG_QMP_T_STR),
    SG_QMP_OPT("flag", SG_QMP_T_BOOL),
    SG_QMP_OPT("num", SG_QMP_T_NUMBER),
    {.name = "devices", .type = SG_QMP_T_ARRAY, .optional = true, .elem = &str_elem},
    {.name = "actions", .type = SG_QMP_T_ARRAY, .optional = true, .elem = &action},
    SG_QMP_ARGS_END,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct sg_qmp_transport tr = {discard, NULL};
    const struct sg_qmp_command cmds[] = {
        {.name = "check", .fn = ok, .args = check_args},
        {.name = "any", .fn = ok, .flags = SG_QMP_CMD_ARGS_UNCHECKED},
        {.name = NULL},
    };
    struct sg_qmp_server *srv = sg_qmp_server_new(NULL, NULL, NULL);
    if (!srv)
        return 0;
    sg_qmp_server_add_commands(srv, cmds, NULL);
    struct sg_qmp_session *s = sg_qmp_server_session_new(srv, &tr, NULL);
    /* negotiate first so the fuzzer reaches dispatch without finding it */
    static const char caps[] = "{\"execute\":\"qmp_capabilities\"}";
    if (size > 0 && (data[0] & 1))
        sg_qmp_session_input(s, caps, sizeof caps - 1);
    size_t hdr = size < 4 ? size : 4;
    size_t off = hdr;
    for (unsigned i = 0; off < size; i++) {
        size_t chunk = hdr ? (size_t)data[i % hdr] % 64 + 1 : size;
        if (chunk > size - off)
            chunk = size - off;
        sg_qmp_session_feed(s, data + off, chunk);
        off += chunk;
    }
    sg_qmp_server_free(srv);

    /* the one-message-per-frame path on the same bytes */
    json_t *v = NULL;
    if (sg_qmp_parse_message(data, size, &v, NULL) == SG_QMP_PARSE_OK) {
        sg_qmp_check_args(check_args, json_object_get(v, "arguments"), NULL);
        json_decref(v);
    }
    return 0;
}

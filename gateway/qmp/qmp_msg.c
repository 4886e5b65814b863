#include "qmp_msg.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "qmp_scan.h"

char *sg_qmp_dumps(const json_t *msg, size_t *len)
{
    /* jansson's non-compact separators are QEMU's ", " and ": ", and
     * ENSURE_ASCII matches QEMU escaping everything above 0x7e as \uXXXX. */
    char *s = json_dumps(msg, JSON_ENSURE_ASCII | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    if (s && len)
        *len = strlen(s);
    return s;
}

static void parse_error(struct sg_error *err, const json_error_t *jerr)
{
    if (json_error_code(jerr) == json_error_duplicate_key) {
        sg_error_set(err, "JSON parse error, duplicate key");
        return;
    }
    sg_error_set(err, "JSON parse error, %s", jerr->text);
}

enum sg_qmp_parse sg_qmp_parse_message(const void *data, size_t len, json_t **out,
                                       struct sg_error *err)
{
    const unsigned char *p = data;
    struct sg_qmp_scan sc = {0};
    *out = NULL;
    /* Limits first, so jansson never sees a hostile nesting. */
    switch (sg_qmp_scan(&sc, p, len)) {
    case SG_SCAN_DEPTH:
        sg_error_set(err, "JSON nesting depth limit exceeded");
        return SG_QMP_PARSE_FATAL;
    case SG_SCAN_SIZE:
        sg_error_set(err, "JSON message size limit exceeded");
        return SG_QMP_PARSE_FATAL;
    case SG_SCAN_MORE:
        if (sc.state == SG_SCAN_IDLE) {
            sg_error_set(err, "JSON parse error, expecting value");
            return SG_QMP_PARSE_INVALID;
        }
        /* an unterminated value or a bare token at the end: let jansson say */
        break;
    case SG_SCAN_SPAN:
        break;
    }
    json_error_t jerr;
    size_t start = sc.start;
    json_t *v = json_loadb((const char *)p + start, len - start,
                           JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES, &jerr);
    if (!v) {
        parse_error(err, &jerr);
        return SG_QMP_PARSE_INVALID;
    }
    for (size_t i = start + (size_t)jerr.position; i < len; i++) {
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n') {
            json_decref(v);
            sg_error_set(err, "JSON parse error, more than one value in a message");
            return SG_QMP_PARSE_INVALID;
        }
    }
    *out = v;
    return SG_QMP_PARSE_OK;
}

json_t *sg_qmp_return_reply(json_t *ret, const json_t *id)
{
    json_t *r = json_object();
    if (!r) {
        json_decref(ret);
        return NULL;
    }
    json_object_set_new(r, "return", ret ? ret : json_object());
    if (id)
        json_object_set_new(r, "id", json_deep_copy(id));
    return r;
}

json_t *sg_qmp_error_reply(const json_t *id, const char *cls, const char *desc)
{
    json_t *r = json_object();
    if (!r)
        return NULL;
    if (id)
        json_object_set_new(r, "id", json_deep_copy(id));
    json_object_set_new(r, "error", json_pack("{s:s, s:s}", "class", cls ? cls : SG_ERR_GENERIC,
                                              "desc", desc ? desc : ""));
    return r;
}

json_t *sg_qmp_error_reply_err(const json_t *id, const struct sg_error *err)
{
    const char *cls = err && err->set && err->cls[0] ? err->cls : SG_ERR_GENERIC;
    const char *desc = err && err->set ? err->msg : "Unknown error";
    return sg_qmp_error_reply(id, cls, desc);
}

json_t *sg_qmp_event_new_at(const char *name, json_t *data, int64_t seconds, int64_t usec)
{
    json_t *e = json_object();
    if (!e) {
        json_decref(data);
        return NULL;
    }
    json_object_set_new(e, "timestamp", json_pack("{s:I, s:I}", "seconds", (json_int_t)seconds,
                                                  "microseconds", (json_int_t)usec));
    json_object_set_new(e, "event", json_string(name));
    if (data)
        json_object_set_new(e, "data", data);
    return e;
}

json_t *sg_qmp_event_new(const char *name, json_t *data)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return sg_qmp_event_new_at(name, data, tv.tv_sec, tv.tv_usec);
}

json_t *sg_qmp_greeting(const json_t *version)
{
    json_t *v = version ? json_deep_copy(version)
                        : json_pack("{s:{s:i, s:i, s:i}, s:s}", "qemu", "micro", 0, "minor", 1,
                                    "major", 0, "package", "snapgate");
    return json_pack("{s:{s:o, s:[]}}", "QMP", "version", v, "capabilities");
}

bool sg_qmp_request_parse(json_t *msg, struct sg_qmp_request *req, struct sg_error *err)
{
    memset(req, 0, sizeof *req);
    if (!json_is_object(msg)) {
        sg_error_set(err, "QMP input must be a JSON object");
        return false;
    }
    req->id = json_object_get(msg, "id");
    /* QEMU walks the members and reports the first bad one; jansson keeps
     * insertion order, so "first" is the client's order. */
    const char *key;
    json_t *val;
    json_object_foreach(msg, key, val) {
        if (!strcmp(key, "execute")) {
            if (!json_is_string(val)) {
                sg_error_set(err, "QMP input member 'execute' must be a string");
                return false;
            }
            req->command = json_string_value(val);
        } else if (!strcmp(key, "arguments")) {
            if (!json_is_object(val)) {
                sg_error_set(err, "QMP input member 'arguments' must be an object");
                return false;
            }
            req->args = val;
        } else if (strcmp(key, "id") != 0) {
            /* exec-oob too: we never offer the oob capability */
            sg_error_set(err, "QMP input member '%s' is unexpected", key);
            return false;
        }
    }
    if (!req->command) {
        sg_error_set(err, "QMP input lacks member 'execute'");
        return false;
    }
    return true;
}

bool sg_qmp_is_reply(const json_t *msg)
{
    return json_is_object(msg) &&
           (json_object_get(msg, "return") || json_object_get(msg, "error"));
}

bool sg_qmp_reply_error(const json_t *msg, struct sg_error *err)
{
    json_t *e = json_object_get(msg, "error");
    if (!e)
        return false;
    const char *cls = json_string_value(json_object_get(e, "class"));
    const char *desc = json_string_value(json_object_get(e, "desc"));
    sg_error_set_class(err, cls ? cls : SG_ERR_GENERIC, "%s", desc ? desc : "");
    return true;
}

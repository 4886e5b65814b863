/* qemu_argv.c: reading and rewriting QEMU's command line for snapgate-qemu. */
#include "qemu_argv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SG_QEMU_DEFAULT "/usr/bin/qemu-system-x86_64"

bool sg_qemu_parse_own(int argc, char **argv, struct sg_qemu_opts *o, struct sg_error *err)
{
    const char *env = getenv("SNAPGATE_QEMU");
    o->qemu = env && *env ? env : SG_QEMU_DEFAULT;
    env = getenv("SNAPGATE_GATEWAY");
    o->snapgate = env && *env ? env : NULL;
    o->profile = "libvirt-safe";
    int i = 1;
    while (i < argc && strncmp(argv[i], "--", 2) == 0) {
        const char *a = argv[i];
        const char **dst = strcmp(a, "--qemu") == 0       ? &o->qemu
                           : strcmp(a, "--snapgate") == 0 ? &o->snapgate
                           : strcmp(a, "--profile") == 0  ? &o->profile
                                                          : NULL;
        if (!dst) {
            /* QEMU's options start with one dash; anything else here is a mistake. */
            sg_error_set(err, "unknown option '%s' (snapgate-qemu takes --qemu PATH, "
                              "--snapgate PATH and --profile P before QEMU's arguments)", a);
            return false;
        }
        if (i + 1 >= argc || !*argv[i + 1]) {
            sg_error_set(err, "%s needs a value", a);
            return false;
        }
        *dst = argv[i + 1];
        i += 2;
    }
    o->first_qemu_arg = i;
    return true;
}

bool sg_qemu_opt_get(const char *optstr, const char *key, char *buf, size_t n)
{
    size_t klen = strlen(key);
    const char *p = optstr;
    while (*p) {
        /* One comma-separated item, ",," kept as a literal comma. */
        size_t len = 0;
        char item[1024];
        while (*p && !(*p == ',' && p[1] != ',')) {
            if (*p == ',' && p[1] == ',')
                p++;
            if (len + 1 < sizeof item)
                item[len++] = *p;
            p++;
        }
        item[len] = '\0';
        if (*p == ',')
            p++;
        if (strncmp(item, key, klen) == 0 && item[klen] == '=') {
            snprintf(buf, n, "%s", item + klen + 1);
            return true;
        }
        if (strcmp(item, key) == 0) {   /* a bare flag, "server" = "server=on" */
            snprintf(buf, n, "on");
            return true;
        }
    }
    return false;
}

static bool is_on(const char *v)
{
    return strcmp(v, "on") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "true") == 0 ||
           strcmp(v, "y") == 0;
}

void sg_qemu_scan(int argc, char **argv, int first, struct sg_qemu_start *s)
{
    memset(s, 0, sizeof *s);
    s->chardev_arg = s->monitor_fd = s->loadvm_arg = -1;
    char mon_id[256] = "";
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        char buf[256];
        if (strcmp(a, "-S") == 0) {
            s->has_S = true;
        } else if (strcmp(a, "-loadvm") == 0 && v) {
            s->loadvm_arg = i;
            s->loadvm = v;
            i++;
        } else if (strcmp(a, "-mon") == 0 && v) {
            if (sg_qemu_opt_get(v, "mode", buf, sizeof buf) && strcmp(buf, "control") == 0 &&
                sg_qemu_opt_get(v, "chardev", buf, sizeof buf))
                snprintf(mon_id, sizeof mon_id, "%s", buf);
            i++;
        } else if ((strcmp(a, "-chardev") == 0) && v) {
            i++;
        }
    }
    if (!mon_id[0])
        return;
    for (int i = first; i + 1 < argc; i++) {
        if (strcmp(argv[i], "-chardev") != 0)
            continue;
        const char *v = argv[++i];
        char buf[256];
        if (strncmp(v, "socket,", 7) != 0 || !sg_qemu_opt_get(v, "id", buf, sizeof buf) ||
            strcmp(buf, mon_id) != 0)
            continue;
        if (!sg_qemu_opt_get(v, "server", buf, sizeof buf) || !is_on(buf) ||
            !sg_qemu_opt_get(v, "fd", buf, sizeof buf))
            return;   /* a monitor we cannot take over: leave QEMU's argv alone */
        char *end;
        long fd = strtol(buf, &end, 10);
        if (*end || fd < 0 || fd > 65535)
            return;
        s->chardev_arg = i;
        s->monitor_fd = (int)fd;
        return;
    }
}

/* The chardev value with fd=N replaced (other items byte for byte as given). */
static char *with_fd(const char *v, int fd)
{
    size_t n = strlen(v) + 16;
    char *out = malloc(n);
    if (!out)
        return NULL;
    size_t k = 0;
    const char *p = v;
    while (*p) {
        const char *item = p;
        while (*p && !(*p == ',' && p[1] != ','))
            p += (*p == ',' && p[1] == ',') ? 2 : 1;
        if (strncmp(item, "fd=", 3) == 0)
            k += (size_t)snprintf(out + k, n - k, "fd=%d", fd);
        else {
            memcpy(out + k, item, (size_t)(p - item));
            k += (size_t)(p - item);
        }
        if (*p == ',')
            out[k++] = *p++;
    }
    out[k] = '\0';
    return out;
}

char **sg_qemu_rewrite(int argc, char **argv, int first, const struct sg_qemu_start *s,
                       const char *qemu, int private_fd)
{
    char **v = calloc((size_t)(argc - first) + 3, sizeof *v);
    if (!v)
        return NULL;
    size_t k = 0;
    bool ok = (v[k++] = strdup(qemu)) != NULL;
    if (ok && s->loadvm && !s->has_S)
        ok = (v[k++] = strdup("-S")) != NULL;
    for (int i = first; ok && i < argc; i++) {
        if (i == s->loadvm_arg) {
            i++;   /* -loadvm NAME goes through the gateway instead */
            continue;
        }
        v[k] = i == s->chardev_arg ? with_fd(argv[i], private_fd) : strdup(argv[i]);
        ok = v[k++] != NULL;
    }
    if (!ok) {
        sg_qemu_argv_free(v);
        return NULL;
    }
    return v;
}

void sg_qemu_argv_free(char **v)
{
    if (!v)
        return;
    for (size_t i = 0; v[i]; i++)
        free(v[i]);
    free(v);
}

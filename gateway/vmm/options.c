/* options.c: snapgate-vmm's QEMU-like command line (INTERFACES.md 1.2).
 * Unknown options and malformed values are errors: a typo must not start
 * a VM that silently ignores it. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm.h"

/* QEMU's -m: a plain number is MiB; suffixes K, M, G, T. */
static bool parse_mem(const char *s, uint64_t *out)
{
    char *end;
    if (!isdigit((unsigned char)*s))
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    uint64_t mul = 1ull << 20;
    if (*end) {
        switch (toupper((unsigned char)*end)) {
        case 'K': mul = 1ull << 10; break;
        case 'M': mul = 1ull << 20; break;
        case 'G': mul = 1ull << 30; break;
        case 'T': mul = 1ull << 40; break;
        default: return false;
        }
        if (end[1] && !(toupper((unsigned char)end[1]) == 'B' && !end[2]))
            return false;
    }
    if (v > (1ull << 42) / mul)
        return false;
    *out = v * mul;
    return true;
}

static bool copy(char *dst, size_t cap, const char *src, const char *what, struct sg_error *err)
{
    if (strlen(src) >= cap) {
        sg_error_set(err, "%s: value too long", what);
        return false;
    }
    memcpy(dst, src, strlen(src) + 1);
    return true;
}

/* -drive file=PATH[,format=qcow2|raw][,node-name=NAME][,readonly=on|off].
 * QEMU's ",," escape for commas inside values is honoured. */
static bool parse_drive(const char *spec, struct sg_drive_opt *d, struct sg_error *err)
{
    memset(d, 0, sizeof(*d));
    const char *p = spec;
    while (*p) {
        char key[32], val[512];
        size_t kl = 0, vl = 0;
        while (*p && *p != '=' && *p != ',') {
            if (kl + 1 >= sizeof(key)) {
                sg_error_set(err, "-drive: option name too long");
                return false;
            }
            key[kl++] = *p++;
        }
        key[kl] = 0;
        if (*p != '=') {
            sg_error_set(err, "-drive %s: expected KEY=VALUE at '%s'", spec, key);
            return false;
        }
        p++;
        while (*p) {
            if (*p == ',') {
                if (p[1] != ',')
                    break;
                p++;
            }
            if (vl + 1 >= sizeof(val)) {
                sg_error_set(err, "-drive: value of '%s' too long", key);
                return false;
            }
            val[vl++] = *p++;
        }
        val[vl] = 0;
        if (*p == ',')
            p++;
        if (!strcmp(key, "file")) {
            if (!copy(d->file, sizeof(d->file), val, "-drive file", err))
                return false;
        } else if (!strcmp(key, "format")) {
            if (strcmp(val, "qcow2") && strcmp(val, "raw")) {
                sg_error_set(err, "-drive: unknown format '%s' (qcow2 or raw)", val);
                return false;
            }
            strcpy(d->format, val);
        } else if (!strcmp(key, "node-name")) {
            if (!*val || !copy(d->node_name, sizeof(d->node_name), val, "-drive node-name", err)) {
                sg_error_set(err, "-drive: invalid node-name '%s'", val);
                return false;
            }
        } else if (!strcmp(key, "readonly")) {
            if (!strcmp(val, "on") || !strcmp(val, "true"))
                d->readonly = true;
            else if (!strcmp(val, "off") || !strcmp(val, "false"))
                d->readonly = false;
            else {
                sg_error_set(err, "-drive: readonly expects 'on' or 'off', not '%s'", val);
                return false;
            }
        } else if (!strcmp(key, "if") && !strcmp(val, "virtio")) {
            /* the only interface there is */
        } else {
            sg_error_set(err, "-drive: unsupported option '%s'", key);
            return false;
        }
    }
    if (!d->file[0]) {
        sg_error_set(err, "-drive %s: file= is required", spec);
        return false;
    }
    return true;
}

bool sg_vmm_parse_args(int argc, char **argv, struct sg_vmm_opts *o, struct sg_error *err)
{
    memset(o, 0, sizeof(*o));
    o->ram_size = 256ull << 20;
    o->smp = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        /* QEMU accepts --opt as -opt. */
        if (a[0] == '-' && a[1] == '-' && a[2])
            a++;
        if (!strcmp(a, "-h") || !strcmp(a, "-help")) {
            o->help = true;
            return true;
        }
        if (!strcmp(a, "-version")) {
            o->version = true;
            return true;
        }
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes_arg = !strcmp(a, "-m") || !strcmp(a, "-smp") || !strcmp(a, "-name") ||
                         !strcmp(a, "-kernel") || !strcmp(a, "-initrd") || !strcmp(a, "-append") ||
                         !strcmp(a, "-drive") || !strcmp(a, "-qmp") || !strcmp(a, "-serial") ||
                         !strcmp(a, "-loadvm") || !strcmp(a, "-pidfile");
        if (takes_arg && !next) {
            sg_error_set(err, "%s: requires an argument", a);
            return false;
        }
        if (!strcmp(a, "-m")) {
            const char *v = next;
            if (!strncmp(v, "size=", 5))
                v += 5;
            if (!parse_mem(v, &o->ram_size)) {
                sg_error_set(err, "-m %s: invalid RAM size", next);
                return false;
            }
            i++;
        } else if (!strcmp(a, "-smp")) {
            const char *v = next;
            if (!strncmp(v, "cpus=", 5))
                v += 5;
            if (strcmp(v, "1")) {
                sg_error_set(err, "-smp %s: only 1 vCPU is supported", next);
                return false;
            }
            i++;
        } else if (!strcmp(a, "-name")) {
            const char *v = next;
            if (!strncmp(v, "guest=", 6))
                v += 6;
            if (!copy(o->name, sizeof(o->name), v, "-name", err))
                return false;
            i++;
        } else if (!strcmp(a, "-kernel")) {
            if (!copy(o->kernel, sizeof(o->kernel), next, "-kernel", err))
                return false;
            i++;
        } else if (!strcmp(a, "-initrd")) {
            if (!copy(o->initrd, sizeof(o->initrd), next, "-initrd", err))
                return false;
            i++;
        } else if (!strcmp(a, "-append")) {
            if (!copy(o->append, sizeof(o->append), next, "-append", err))
                return false;
            i++;
        } else if (!strcmp(a, "-drive")) {
            if (o->nr_drives >= SG_VM_MAX_DRIVES) {
                sg_error_set(err, "-drive: at most %d drives", SG_VM_MAX_DRIVES);
                return false;
            }
            if (!parse_drive(next, &o->drives[o->nr_drives], err))
                return false;
            o->nr_drives++;
            i++;
        } else if (!strcmp(a, "-qmp")) {
            if (strncmp(next, "unix:", 5)) {
                sg_error_set(err, "-qmp %s: only unix:PATH[,server=on][,wait=off] is supported", next);
                return false;
            }
            if (strstr(next, "wait=on") || strstr(next, "server=off")) {
                sg_error_set(err, "-qmp %s: only server=on,wait=off is supported", next);
                return false;
            }
            if (!copy(o->qmp, sizeof(o->qmp), next, "-qmp", err))
                return false;
            i++;
        } else if (!strcmp(a, "-serial")) {
            if (strcmp(next, "stdio") && strcmp(next, "none") && strncmp(next, "file:", 5) &&
                strncmp(next, "unix:", 5)) {
                sg_error_set(err, "-serial %s: expected stdio, none, file:PATH or unix:PATH", next);
                return false;
            }
            if (!copy(o->serial, sizeof(o->serial), next, "-serial", err))
                return false;
            i++;
        } else if (!strcmp(a, "-S")) {
            o->start_paused = true;
        } else if (!strcmp(a, "-loadvm")) {
            if (!copy(o->loadvm, sizeof(o->loadvm), next, "-loadvm", err))
                return false;
            i++;
        } else if (!strcmp(a, "-daemonize")) {
            o->daemonize = true;
        } else if (!strcmp(a, "-pidfile")) {
            if (!copy(o->pidfile, sizeof(o->pidfile), next, "-pidfile", err))
                return false;
            i++;
        } else {
            sg_error_set(err, "%s: invalid option", argv[i]);
            return false;
        }
    }
    if (o->daemonize && !strcmp(o->serial, "stdio")) {
        sg_error_set(err, "-daemonize cannot be used with -serial stdio");
        return false;
    }
    if (o->initrd[0] && !o->kernel[0]) {
        sg_error_set(err, "-initrd is only valid with -kernel");
        return false;
    }
    if (!o->serial[0])   /* a daemon has no terminal to print on */
        strcpy(o->serial, o->daemonize ? "none" : "stdio");
    return true;
}

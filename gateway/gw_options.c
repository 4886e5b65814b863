/* gw_options.c: snapgate's command-line parser. */
#include "gw_options.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "Usage: snapgate [--connect unix:PATH | --vmm [VMM-ARGS...] [--]] [--state-dir DIR]\n"
    "                [--qmp unix:PATH|fd:N] [--web [ADDR:]PORT] [--web-cert PEM --web-key PEM]\n"
    "                [--web-token-file FILE] [--web-insecure] [--no-monitor]\n"
    "                [--serial-to-terminal]\n"
    "                [--hmp-profile P] [--compat-profile P]   (P: snapgate|qemu-7.2|libvirt-safe)\n"
    "                [--vmstate-node NODE] [--reconnect SECONDS]\n"
    "                [--loadvm NAME [--cont]] [--exit-with-backend]\n"
    "\n"
    "The snapshot gateway: an HMP monitor whose savevm/loadvm/delvm become QMP jobs.\n"
    "\n"
    "  --connect unix:PATH     attach to a running snapgate-vmm or QEMU >= 6.0 QMP socket\n"
    "  --reconnect SECONDS     with --connect: when the back end goes away, keep the\n"
    "                          front ends and reconnect for up to SECONDS (default 30;\n"
    "                          0 = exit 2 at once)\n"
    "  --vmm [ARGS...] [--]    start the bundled snapgate-vmm (the default) with extra\n"
    "                          arguments; they run up to a lone \"--\" or the end\n"
    "  --state-dir DIR         where the bundled VMM keeps disk0.qcow2 and its QMP socket\n"
    "                          (default ./snapgate-state)\n"
    "  --qmp unix:PATH         serve QMP for scripts on PATH (mode 0600)\n"
    "  --qmp fd:N              serve QMP on the inherited listening socket N\n"
    "                          (libvirt; systemd socket activation: fd:3)\n"
    "  --web [ADDR:]PORT       serve the web console (default address 127.0.0.1)\n"
    "  --web-cert PEM, --web-key PEM   use https/wss\n"
    "  --web-token-file FILE   read the web access token from FILE\n"
    "  --web-insecure          allow plain http on a non-loopback address\n"
    "  --no-monitor            no interactive monitor on the terminal\n"
    "  --serial-to-terminal    share the terminal between the bundled guest's serial\n"
    "                          console and the monitor (Ctrl-A c switches, Ctrl-A h help)\n"
    "  --hmp-profile P         output style of the monitor and web HMP (default snapgate)\n"
    "  --compat-profile P      style of human-monitor-command on --qmp (default qemu-7.2)\n"
    "  --vmstate-node NODE     disk that receives the VM state\n"
    "  --loadvm NAME           once connected, run 'loadvm NAME' (--compat-profile) on the\n"
    "                          stopped back end before serving anyone; failure: quit it, exit 1\n"
    "  --cont                  after --loadvm, resume the VM (cont)\n"
    "  --exit-with-backend     the back end ending is an orderly end (exit 0), as for\n"
    "                          a supervisor that runs both (snapgate-qemu)\n"
    "  --help, --version       print this text or the version and exit\n"
    "\n"
    "Exit status: 0 after quit or end of input, 1 on usage or start-up errors,\n"
    "2 when the back end dies (with --connect: when it does not come back within\n"
    "--reconnect seconds).\n";

const char *sg_gw_usage(void)
{
    return usage_text;
}

static bool parse_profile(const char *opt, const char *v, enum sg_hmp_style *out,
                          struct sg_error *err)
{
    if (strcmp(v, "snapgate") == 0) {
        *out = SG_HMP_STYLE_SNAPGATE;
        return true;
    }
    if (strcmp(v, "qemu-7.2") == 0) {
        *out = SG_HMP_STYLE_QEMU72;
        return true;
    }
    if (strcmp(v, "libvirt-safe") == 0) {
        *out = SG_HMP_STYLE_LIBVIRT_SAFE;
        return true;
    }
    sg_error_set(err, "%s: unknown profile '%s' (expected snapgate, qemu-7.2 or libvirt-safe)",
                 opt, v);
    return false;
}

static bool parse_unix(const char *opt, const char *v, const char **path, struct sg_error *err)
{
    if (strncmp(v, "unix:", 5) != 0 || v[5] == '\0') {
        sg_error_set(err, "%s: expected unix:PATH, got '%s'", opt, v);
        return false;
    }
    /* sun_path holds 108 bytes including the terminating NUL. */
    if (strlen(v + 5) > 107) {
        sg_error_set(err, "%s: socket path is longer than 107 bytes", opt);
        return false;
    }
    *path = v + 5;
    return true;
}

/* --qmp takes unix:PATH or fd:N (a listening socket the parent made). */
static bool parse_qmp(struct sg_gw_options *o, const char *v, struct sg_error *err)
{
    if (strncmp(v, "fd:", 3) != 0)
        return parse_unix("--qmp", v, &o->qmp_path, err);
    char *end;
    errno = 0;
    long n = strtol(v + 3, &end, 10);
    if (errno || end == v + 3 || *end || n < 0 || n > 1000000) {
        sg_error_set(err, "--qmp: bad descriptor number in '%s' (expected fd:N)", v);
        return false;
    }
    o->qmp_fd = (int)n;
    o->qmp_path = NULL;
    return true;
}

static bool parse_web(struct sg_gw_options *o, const char *v, struct sg_error *err)
{
    const char *colon = strrchr(v, ':');
    const char *port_s = v;
    if (colon) {
        size_t n = (size_t)(colon - v);
        /* "[::1]:8080" style brackets are dropped: lws wants the bare address. */
        if (n >= 2 && v[0] == '[' && v[n - 1] == ']') {
            v++;
            n -= 2;
        }
        if (n == 0 || n >= sizeof o->web_addr_buf) {
            sg_error_set(err, "--web: bad address in '%s'", v);
            return false;
        }
        memcpy(o->web_addr_buf, v, n);
        o->web_addr_buf[n] = '\0';
        o->web_addr = o->web_addr_buf;
        port_s = colon + 1;
    }
    char *end;
    errno = 0;
    long port = strtol(port_s, &end, 10);
    /* Port 0 lets the kernel pick one (the printed URL tells which). */
    if (errno || end == port_s || *end || port < 0 || port > 65535) {
        sg_error_set(err, "--web: bad port '%s' (expected 0-65535)", port_s);
        return false;
    }
    o->web = true;
    o->web_port = (int)port;
    return true;
}

static bool parse_seconds(const char *opt, const char *v, unsigned *out, struct sg_error *err)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < 0 || n > SG_GW_RECONNECT_MAX_S) {
        sg_error_set(err, "%s: bad number of seconds '%s' (expected 0-%d)", opt, v,
                     SG_GW_RECONNECT_MAX_S);
        return false;
    }
    *out = (unsigned)n;
    return true;
}

/* Options that take a value; --opt=VALUE and --opt VALUE are both accepted. */
static const char *const valued[] = {
    "--connect", "--state-dir", "--qmp", "--web", "--web-cert", "--web-key",
    "--web-token-file", "--hmp-profile", "--compat-profile", "--vmstate-node", "--reconnect",
    "--loadvm", NULL,
};

static bool takes_value(const char *name)
{
    for (int i = 0; valued[i]; i++)
        if (strcmp(valued[i], name) == 0)
            return true;
    return false;
}

enum sg_gw_parse_result sg_gw_options_parse(struct sg_gw_options *o, int argc, char **argv,
                                            struct sg_error *err)
{
    memset(o, 0, sizeof *o);
    o->state_dir = "./snapgate-state";
    o->web_addr = "127.0.0.1";
    o->hmp_style = SG_HMP_STYLE_SNAPGATE;
    o->compat_style = SG_HMP_STYLE_QEMU72;
    o->reconnect_s = SG_GW_RECONNECT_DEFAULT_S;
    o->qmp_fd = -1;
    bool vmm_given = false;
    bool reconnect_given = false;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        char name[64];
        const char *val = NULL;

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(usage_text, stdout);
            return SG_GW_PARSE_HELP;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("snapgate %s\n", SNAPGATE_VERSION);
            return SG_GW_PARSE_HELP;
        }
        if (strcmp(arg, "--vmm") == 0) {
            vmm_given = true;
            int first = i + 1, j = first;
            while (j < argc && strcmp(argv[j], "--") != 0)
                j++;
            o->vmm_args = (const char **)&argv[first];
            o->vmm_argc = j - first;
            i = j; /* skips the "--" too */
            continue;
        }
        if (strncmp(arg, "--", 2) != 0) {
            sg_error_set(err, "unexpected argument '%s' (see --help)", arg);
            return SG_GW_PARSE_ERROR;
        }
        const char *eq = strchr(arg, '=');
        size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
        if (nlen >= sizeof name) {
            sg_error_set(err, "unknown option '%s' (see --help)", arg);
            return SG_GW_PARSE_ERROR;
        }
        memcpy(name, arg, nlen);
        name[nlen] = '\0';
        if (takes_value(name)) {
            if (eq) {
                val = eq + 1;
            } else if (i + 1 < argc) {
                val = argv[++i];
            } else {
                sg_error_set(err, "option %s needs a value (see --help)", name);
                return SG_GW_PARSE_ERROR;
            }
        } else if (eq) {
            sg_error_set(err, "option %s takes no value", name);
            return SG_GW_PARSE_ERROR;
        }

        bool ok = true;
        if (strcmp(name, "--connect") == 0) {
            ok = parse_unix(name, val, &o->connect_path, err);
        } else if (strcmp(name, "--state-dir") == 0) {
            if (!*val) {
                sg_error_set(err, "--state-dir: empty directory name");
                ok = false;
            }
            o->state_dir = val;
        } else if (strcmp(name, "--qmp") == 0) {
            o->qmp_fd = -1;
            ok = parse_qmp(o, val, err);
        } else if (strcmp(name, "--web") == 0) {
            ok = parse_web(o, val, err);
        } else if (strcmp(name, "--web-cert") == 0) {
            o->web_cert = val;
        } else if (strcmp(name, "--web-key") == 0) {
            o->web_key = val;
        } else if (strcmp(name, "--web-token-file") == 0) {
            o->web_token_file = val;
        } else if (strcmp(name, "--hmp-profile") == 0) {
            ok = parse_profile(name, val, &o->hmp_style, err);
        } else if (strcmp(name, "--compat-profile") == 0) {
            ok = parse_profile(name, val, &o->compat_style, err);
        } else if (strcmp(name, "--vmstate-node") == 0) {
            if (!*val) {
                sg_error_set(err, "--vmstate-node: empty node name");
                ok = false;
            }
            o->vmstate_node = val;
        } else if (strcmp(name, "--reconnect") == 0) {
            ok = parse_seconds(name, val, &o->reconnect_s, err);
            reconnect_given = true;
        } else if (strcmp(name, "--web-insecure") == 0) {
            o->web_insecure = true;
        } else if (strcmp(name, "--no-monitor") == 0) {
            o->no_monitor = true;
        } else if (strcmp(name, "--serial-to-terminal") == 0) {
            o->serial_to_terminal = true;
        } else if (gw_loadvm_option(o, name, val, &ok, err)) {
            /* --loadvm, --cont, --exit-with-backend (gw_loadvm.c) */
        } else {
            sg_error_set(err, "unknown option '%s' (see --help)", name);
            ok = false;
        }
        if (!ok)
            return SG_GW_PARSE_ERROR;
    }

    if (o->connect_path && vmm_given) {
        sg_error_set(err, "--connect and --vmm exclude each other: "
                          "--connect attaches to a running back end");
        return SG_GW_PARSE_ERROR;
    }
    if (reconnect_given && !o->connect_path) {
        sg_error_set(err, "--reconnect needs --connect (a bundled VMM that dies is not "
                          "restarted)");
        return SG_GW_PARSE_ERROR;
    }
    if (o->connect_path && o->serial_to_terminal) {
        sg_error_set(err, "--serial-to-terminal needs the bundled VMM (not --connect)");
        return SG_GW_PARSE_ERROR;
    }
    if (!!o->web_cert != !!o->web_key) {
        sg_error_set(err, "--web-cert and --web-key must be given together");
        return SG_GW_PARSE_ERROR;
    }
    if ((o->web_cert || o->web_token_file || o->web_insecure) && !o->web) {
        sg_error_set(err, "--web-cert, --web-key, --web-token-file and --web-insecure need --web");
        return SG_GW_PARSE_ERROR;
    }
    return SG_GW_PARSE_RUN;
}

/* The command table.  Only the commands snapgate implements itself live
 * here; anything else goes to the back end's human-monitor-command. */
#include "hmp_cmds.h"

#include <stdio.h>
#include <string.h>

#include "sg_hmp.h"
#include "sg_q72.h"

static const struct sg_hmp_cmd_def top_cmds[] = {
    {"help|?", SG_HMP_OP_HELP, SG_HMP_ARGS_REST, false, false, "[cmd]", "show the help"},
    {"savevm", SG_HMP_OP_SAVEVM, SG_HMP_ARGS_OPT_NAME, false, false, "[TAG]",
     "save a VM snapshot of every writable disk; without TAG it is named vm-YYYYMMDDhhmmss; "
     "an existing TAG is replaced"},
    {"loadvm", SG_HMP_OP_LOADVM, SG_HMP_ARGS_NAME, false, false, "[-t|-i] NAME",
     "restore a VM snapshot (-t: NAME is a tag, -i: NAME is an ID on the vmstate disk; "
     "otherwise a tag, then an ID)"},
    {"delvm", SG_HMP_OP_DELVM, SG_HMP_ARGS_NAME, false, false, "[-t|-i] NAME",
     "delete a VM snapshot from every disk (-t/-i as for loadvm)"},
    {"info", SG_HMP_OP_INFO, SG_HMP_ARGS_NONE, false, false, "[subcommand]",
     "show various information about the system state"},
    {"stop|s", SG_HMP_OP_STOP, SG_HMP_ARGS_NONE, false, false, "", "stop emulation"},
    {"cont|c", SG_HMP_OP_CONT, SG_HMP_ARGS_NONE, false, false, "", "resume emulation"},
    {"system_reset", SG_HMP_OP_SYSTEM_RESET, SG_HMP_ARGS_NONE, false, false, "",
     "reset the system"},
    {"system_powerdown", SG_HMP_OP_SYSTEM_POWERDOWN, SG_HMP_ARGS_NONE, false, false, "",
     "send system power down event (the ACPI power button)"},
    {"pmemsave", SG_HMP_OP_PMEMSAVE, SG_HMP_ARGS_ADDR_SIZE_FILE, false, false, "addr size file",
     "save to disk physical memory dump starting at 'addr' of size 'size'"},
    {"quit|q", SG_HMP_OP_QUIT, SG_HMP_ARGS_NONE, false, false, "", "quit the monitor"},
};

static const struct sg_hmp_cmd_def info_cmds[] = {
    {"block", SG_HMP_OP_INFO_BLOCK, SG_HMP_ARGS_NONE, true, false, "",
     "show the block devices"},
    {"jobs", SG_HMP_OP_INFO_JOBS, SG_HMP_ARGS_NONE, true, true, "",
     "show the back end's jobs and their progress"},
    {"snapshots", SG_HMP_OP_INFO_SNAPSHOTS, SG_HMP_ARGS_NONE, true, false, "",
     "show the currently saved VM snapshots"},
    {"status", SG_HMP_OP_INFO_STATUS, SG_HMP_ARGS_NONE, true, false, "",
     "show the current VM status (running|paused)"},
    {"version", SG_HMP_OP_INFO_VERSION, SG_HMP_ARGS_NONE, true, false, "",
     "show the version of QEMU"},
};

#define COUNT(a) (unsigned)(sizeof(a) / sizeof((a)[0]))

static bool names_match(const char *names, const char *name)
{
    size_t len = strlen(name);
    const char *p = names;
    for (;;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && memcmp(p, name, n) == 0)
            return true;
        if (!bar)
            return false;
        p = bar + 1;
    }
}

const struct sg_hmp_cmd_def *sg_hmp_cmd_table(bool is_info, unsigned *n)
{
    *n = is_info ? COUNT(info_cmds) : COUNT(top_cmds);
    return is_info ? info_cmds : top_cmds;
}

const struct sg_hmp_cmd_def *sg_hmp_cmd_find(const char *name, bool is_info)
{
    unsigned n;
    const struct sg_hmp_cmd_def *t = sg_hmp_cmd_table(is_info, &n);
    for (unsigned i = 0; i < n; i++)
        if (names_match(t[i].names, name))
            return &t[i];
    return NULL;
}

void sg_hmp_cmd_primary(const struct sg_hmp_cmd_def *d, char *buf, unsigned n)
{
    const char *bar = strchr(d->names, '|');
    int len = bar ? (int)(bar - d->names) : (int)strlen(d->names);
    snprintf(buf, n, "%.*s", len, d->names);
}

static void help_one(const struct sg_hmp_cmd_def *d, struct sg_strbuf *out)
{
    sg_sb_printf(out, "%s%s %s -- %s\n", d->is_info ? "info " : "", d->names, d->params, d->help);
}

static void help_table(bool is_info, struct sg_strbuf *out)
{
    unsigned n;
    const struct sg_hmp_cmd_def *t = sg_hmp_cmd_table(is_info, &n);
    for (unsigned i = 0; i < n; i++)
        help_one(&t[i], out);
}

static void put_sb(void *opaque, const char *s)
{
    sg_sb_puts(opaque, s);
}

bool sg_hmp_help(int profile, const char *topic, const char *subtopic, struct sg_strbuf *out)
{
    if (profile == SG_HMP_PROFILE_QEMU72) {
        const char *args[2] = { topic ? topic : "", subtopic ? subtopic : "" };
        int nargs = !*args[0] ? 0 : !*args[1] ? 1 : 2;
        sg_q72_help_reply(args, nargs, put_sb, out);
        return true;
    }
    if (!topic || !*topic) {
        help_table(false, out);
        sg_sb_puts(out, "Other commands are passed to the back end when it has a human "
                        "monitor.\n");
        return true;
    }
    const struct sg_hmp_cmd_def *d = sg_hmp_cmd_find(topic, false);
    if (!d)
        return false;
    if (d->op == SG_HMP_OP_INFO) {
        if (!subtopic || !*subtopic) {
            help_table(true, out);
            return true;
        }
        const struct sg_hmp_cmd_def *s = sg_hmp_cmd_find(subtopic, true);
        if (!s)
            return false;
        help_one(s, out);
        return true;
    }
    help_one(d, out);
    return true;
}

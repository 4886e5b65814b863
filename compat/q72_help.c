/* `help CMD` texts of QEMU 7.2 (hmp-commands.hx / hmp-commands-info.hx) for
 * the commands snapgate implements itself, copied from its output. */
#include "sg_q72.h"

#include <stdio.h>
#include <string.h>

static const struct sg_q72_help top[] = {
    {"help|?", "[cmd]", "show the help"},
    {"quit|q", "", "quit the emulator"},
    {"stop|s", "", "stop emulation"},
    {"cont|c", "", "resume emulation"},
    {"system_reset", "", "reset the system"},
    {"savevm", "tag", "save a VM snapshot. If no tag is provided, a new snapshot is created"},
    {"loadvm", "tag", "restore a VM snapshot from its tag"},
    {"delvm", "tag", "delete a VM snapshot from its tag"},
    {"info", "[subcommand]", "show various information about the system state"},
};

static const struct sg_q72_help info[] = {
    {"block", "[-n] [-v] [device]",
     "show info of one block device or all block devices (-n: show named nodes; -v: show "
     "details)"},
    {"block-jobs", "", "show progress of ongoing block device operations"},
    {"snapshots", "", "show the currently saved VM snapshots"},
    {"status", "", "show the current VM status (running|paused)"},
};

/* "quit|q" matches "quit" and "q", as QEMU's compare_cmd does. */
static bool name_matches(const char *names, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = names; *p;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && memcmp(p, name, n) == 0)
            return true;
        if (!bar)
            break;
        p = bar + 1;
    }
    return false;
}

const struct sg_q72_help *sg_q72_help_lookup(const char *name, bool is_info)
{
    const struct sg_q72_help *t = is_info ? info : top;
    size_t n = is_info ? sizeof info / sizeof info[0] : sizeof top / sizeof top[0];
    for (size_t i = 0; i < n; i++)
        if (name_matches(t[i].name, name))
            return &t[i];
    return NULL;
}

void sg_q72_help_line(const struct sg_q72_help *h, bool is_info, char *buf, size_t n)
{
    snprintf(buf, n, "%s%s %s -- %s", is_info ? "info " : "", h->name, h->params, h->text);
}

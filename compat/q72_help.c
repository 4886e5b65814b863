/* QEMU 7.2's `help` (monitor/hmp.c help_cmd / help_cmd_dump) over the
 * recorded lists in q72_help_table.c: a whole list, one entry, or
 * "unknown command: 'A B'" naming the words up to the one not found. */
#include "sg_q72.h"

#include <stdio.h>
#include <string.h>

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

const struct sg_q72_help_entry *sg_q72_help_find(const char *name, bool info)
{
    for (const struct sg_q72_help_entry *e = info ? sg_q72_help_info : sg_q72_help_top;
         e->names; e++)
        if (name_matches(e->names, name))
            return e;
    return NULL;
}

void sg_q72_help_reply(const char *const *args, int nargs, void (*put)(void *opaque, const char *s),
                       void *opaque)
{
    bool info = false;
    for (int i = 0;; i++) {
        if (i >= nargs) {
            /* No (more) words: the whole table at this level. */
            for (const struct sg_q72_help_entry *e = info ? sg_q72_help_info : sg_q72_help_top;
                 e->names; e++)
                put(opaque, e->list);
            return;
        }
        const struct sg_q72_help_entry *e = sg_q72_help_find(args[i], info);
        if (!e) {
            put(opaque, "unknown command: '");
            for (int k = 0; k <= i; k++) {
                if (k)
                    put(opaque, " ");
                put(opaque, args[k]);
            }
            put(opaque, "'\n");
            return;
        }
        if (!info && strcmp(e->names, "info") == 0) {
            info = true;   /* `info` has a sub-table: go on with the next word */
            continue;
        }
        put(opaque, e->alone ? e->alone : e->list);
        return;
    }
}
